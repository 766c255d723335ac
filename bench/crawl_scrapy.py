"""The anchor: Scrapy crawling the same corpus hosts (64 concurrent, robots.txt obeyed,
links followed within the seed hosts, title and text extracted). Prints JSON."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import scrapy
from scrapy.crawler import CrawlerProcess
from scrapy.linkextractors import LinkExtractor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import CORPUS_SEEDS, ensure_corpus

RESULT: dict[str, Any] = {}


class CorpusSpider(scrapy.Spider):
    name = "corpus"
    start_urls = CORPUS_SEEDS

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        # allow_domains does not match IP hosts with ports; a URL pattern does the same job.
        self.links = LinkExtractor(allow=r"^http://127\.0\.0\.1[1-5]:8080/")
        self.pages = 0

    def parse(self, response: Any) -> Any:
        if not hasattr(response, "css"):
            return
        self.pages += 1
        yield {
            "url": response.url,
            "title": response.css("title::text").get(default=""),
            "text": " ".join(response.xpath("//body//text()").getall())[:1000],
        }
        for link in self.links.extract_links(response):
            yield response.follow(link, callback=self.parse)

    def closed(self, reason: str) -> None:
        RESULT["pages"] = self.pages


def run() -> dict[str, Any]:
    ensure_corpus()
    process = CrawlerProcess(
        settings={
            "CONCURRENT_REQUESTS": 64,
            "CONCURRENT_REQUESTS_PER_DOMAIN": 64,
            "DOWNLOAD_DELAY": 0,
            "ROBOTSTXT_OBEY": True,
            "LOG_LEVEL": "WARNING",
            "TELNETCONSOLE_ENABLED": False,
            "ITEM_PIPELINES": {},
            "REQUEST_FINGERPRINTER_IMPLEMENTATION": "2.7",
        }
    )
    process.crawl(CorpusSpider)
    started = time.perf_counter()
    process.start()
    elapsed = time.perf_counter() - started
    pages = RESULT.get("pages", 0)
    return {"pages": pages, "seconds": round(elapsed, 2), "pages_per_s": round(pages / elapsed, 1)}


if __name__ == "__main__":
    print(json.dumps(run()))
