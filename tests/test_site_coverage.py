"""A real Crawler takes a documentation site whole: the shapes that hid 19% of the large
corpus from it (an entry page that is a meta refresh, index pages with thousands of links)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiohttp import web
from crawl_helpers import RequestLog, add_get, logging_app, serve

from rhizome.crawler import Crawler, CrawlerConfig, ParsedPage

ITEMS = 2_500  # links of the index page: more than the old cap of 1,000
CRAWL_WITHIN = 60.0


class RecordingSink:
    """Commits every page at once, as a fast index would."""

    def __init__(self) -> None:
        self.crawler: Crawler | None = None
        self.indexed: set[str] = set()
        self.stubs: set[str] = set()

    async def submit(self, page: ParsedPage) -> None:
        (self.stubs if page.noindex else self.indexed).add(page.url)
        assert self.crawler is not None
        await self.crawler.committed([page.url, *page.aliases])

    async def remove(self, url: str) -> None:
        self.stubs.add(url)


def doc_site(log: RequestLog) -> web.Application:
    """``/`` meta-refreshes to /docs/index.html (as LilyPond's entry page does), which links
    a guide and an all-items page; only the all-items page links the ITEMS item pages."""
    app = logging_app(log)

    def html(body: str, head: str = "") -> web.Response:
        return web.Response(
            text=f"<html><head>{head}</head><body>{body}</body></html>", content_type="text/html"
        )

    add_get(
        app,
        "/",
        lambda r: html(
            "Redirecting to the documentation index...",
            '<META HTTP-EQUIV="refresh" content="0;URL=docs/index.html"><title>Redirecting</title>',
        ),
    )
    add_get(
        app,
        "/docs/index.html",
        lambda r: html('<h1>Docs</h1><a href="guide.html">Guide</a> <a href="all.html">All</a>'),
    )
    add_get(app, "/docs/guide.html", lambda r: html("<p>The guide.</p>"))
    items = "".join(f'<a href="item/{i}.html">item {i}</a> ' for i in range(ITEMS))
    add_get(app, "/docs/all.html", lambda r: html(items))
    add_get(
        app,
        "/docs/item/{n}.html",
        lambda r: html(f"<p>Item {r.match_info['n']}</p><a href='../all.html'>all</a>"),
    )
    return app


async def test_a_site_behind_a_meta_refresh_with_a_large_index_is_crawled_whole(
    tmp_path: Path,
) -> None:
    log = RequestLog()
    async with serve(doc_site(log)) as base:
        config = CrawlerConfig(
            data_dir=tmp_path,
            allow_private_networks=True,
            crawl_delay=0.0,
            parse_workers=1,
            seed_hosts_only=True,
        )
        sink = RecordingSink()
        crawler = Crawler(config, sink)
        sink.crawler = crawler
        await crawler.start()
        try:
            await crawler.add_seeds([base + "/"])
            deadline = time.monotonic() + CRAWL_WITHIN
            while not await crawler.is_idle():
                assert time.monotonic() < deadline, "crawl did not go idle"
                await asyncio.sleep(0.05)
        finally:
            await crawler.stop()
    docs = {f"{base}/docs/{p}" for p in ("index.html", "guide.html", "all.html")}
    items = {f"{base}/docs/item/{i}.html" for i in range(ITEMS)}
    assert sink.indexed == docs | items
    # The stub is a redirect: its target is indexed, the "Redirecting..." page is not.
    assert sink.stubs == {base + "/"}
    assert all(log.count(p) == 1 for p in log.paths())  # no page fetched twice
