"""Politeness of a real Crawler against a loopback site: spacing, Crawl-delay, back-off."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from crawl_helpers import RequestLog, add_get, logging_app, serve

from rhizome.crawler import Crawler, CrawlerConfig, ParsedPage
from rhizome.crawler.frontier import DONE, FAILED
from rhizome.crawler.politeness import HostSlot

# Scheduling jitter allowance: the server stamps arrival, the crawler stamps departure.
SLACK = 0.03


class RecordingSink:
    """Commits every page at once, as a fast index would."""

    def __init__(self) -> None:
        self.crawler: Crawler | None = None
        self.pages: list[ParsedPage] = []
        self.removed: list[str] = []

    async def submit(self, page: ParsedPage) -> None:
        self.pages.append(page)
        assert self.crawler is not None
        await self.crawler.committed([page.url, *page.aliases])

    async def remove(self, url: str) -> None:
        self.removed.append(url)


def site_app(
    log: RequestLog,
    pages: int,
    *,
    robots: bytes | None = None,
    extra: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] | None = None,
) -> web.Application:
    """``/`` links to /p1 … /p{pages-1}; every page links home and to the next page."""
    app = logging_app(log)
    in_flight = 0

    async def page(request: web.Request) -> web.StreamResponse:
        nonlocal in_flight
        in_flight += 1
        log.max_in_flight = max(log.max_in_flight, in_flight)
        try:
            await asyncio.sleep(0.01)
            name = request.match_info.get("n", "0")
            n = int(name)
            links = (
                "".join(f'<a href="/p{i}">page {i}</a>' for i in range(1, pages))
                if n == 0
                else (f'<a href="/">home</a><a href="/p{(n + 1) % pages or 1}">next</a>')
            )
            body = f"<html><title>Page {n}</title><body><p>Text {n}</p>{links}</body></html>"
            return web.Response(text=body, content_type="text/html")
        finally:
            in_flight -= 1

    add_get(app, "/", page)
    add_get(app, "/p{n}", page)
    if robots is not None:
        add_get(app, "/robots.txt", lambda r: web.Response(body=robots, content_type="text/plain"))
    for path, handler in (extra or {}).items():
        add_get(app, path, handler)
    return app


async def crawl(config: CrawlerConfig, seed: str, *, within: float = 8.0) -> RecordingSink:
    sink = RecordingSink()
    crawler = Crawler(config, sink)
    sink.crawler = crawler
    await crawler.start()
    try:
        await crawler.add_seeds([seed])
        deadline = time.monotonic() + within
        while not await crawler.is_idle():
            assert time.monotonic() < deadline, "crawl did not go idle"
            await asyncio.sleep(0.05)
    finally:
        await crawler.stop()
    return sink


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def test_requests_to_one_host_are_spaced_by_crawl_delay(tmp_path: Path) -> None:
    log = RequestLog()
    async with serve(site_app(log, 10)) as base:
        config = CrawlerConfig(
            data_dir=tmp_path,
            allow_private_networks=True,
            crawl_delay=0.3,
            host_concurrency=1,
            parse_workers=1,
        )
        sink = await crawl(config, base + "/")
    page_paths = [p for p in log.paths() if p != "/robots.txt"]
    assert sorted(page_paths) == sorted(["/", *(f"/p{i}" for i in range(1, 10))])
    assert len(page_paths) == len(set(page_paths))  # every page fetched once
    assert sorted(p.url for p in sink.pages) == sorted(base + p for p in page_paths)
    spacing = gaps(log.times(exclude=("/robots.txt",)))
    assert min(spacing) >= 0.3 - SLACK, spacing
    assert log.max_in_flight == 1
    # Every request identifies the crawler.
    assert all(h.headers["User-Agent"].startswith("RhizomeBot/") for h in log.hits)


async def test_one_request_at_a_time_with_host_concurrency_1(tmp_path: Path) -> None:
    log = RequestLog()
    app = site_app(log, 6)
    async with serve(app) as base:
        config = CrawlerConfig(
            data_dir=tmp_path,
            allow_private_networks=True,
            crawl_delay=0.0,
            host_concurrency=1,
            parse_workers=1,
        )
        sink = await crawl(config, base + "/")
    assert len(sink.pages) == 6
    assert log.max_in_flight == 1


async def test_robots_crawl_delay_respected(tmp_path: Path) -> None:
    log = RequestLog()
    robots = b"User-agent: *\nCrawl-delay: 1\n"
    async with serve(site_app(log, 3, robots=robots)) as base:
        config = CrawlerConfig(
            data_dir=tmp_path,
            allow_private_networks=True,
            crawl_delay=0.1,
            host_concurrency=4,  # robots' delay of >= 1 s forces one at a time
            parse_workers=1,
        )
        sink = await crawl(config, base + "/")
    assert len(sink.pages) == 3
    assert log.count("/robots.txt") == 1
    spacing = gaps(log.times(exclude=("/robots.txt",)))
    assert len(spacing) == 2
    assert min(spacing) >= 1.0 - SLACK, spacing


async def test_robots_disallow_respected_by_crawler(tmp_path: Path) -> None:
    log = RequestLog()
    robots = b"User-agent: *\nDisallow: /p2\n"
    async with serve(site_app(log, 4, robots=robots)) as base:
        config = CrawlerConfig(
            data_dir=tmp_path, allow_private_networks=True, crawl_delay=0.0, parse_workers=1
        )
        sink = await crawl(config, base + "/")
    assert log.count("/p2") == 0
    assert sorted(p.url for p in sink.pages) == [base + "/", base + "/p1", base + "/p3"]


async def test_429_with_retry_after_backs_off_and_retries_later(tmp_path: Path) -> None:
    log = RequestLog()
    busy = {"on": True}

    async def home(request: web.Request) -> web.StreamResponse:
        if busy["on"]:
            return web.Response(status=429, headers={"Retry-After": "30"})
        return web.Response(text="<title>Home</title><p>back</p>", content_type="text/html")

    app = logging_app(log)
    add_get(app, "/", home)
    config = CrawlerConfig(
        data_dir=tmp_path,
        allow_private_networks=True,
        crawl_delay=0.1,
        host_concurrency=1,
        parse_workers=1,
    )
    async with serve(app) as base:
        sink = await crawl(config, base + "/")
        await asyncio.sleep(1.0)  # would a hammering crawler come back at once?
        assert log.count("/") == 1
        assert sink.pages == []

        # The frontier remembers the failure and a retry time at least Retry-After away.
        db = sqlite3.connect(tmp_path / "frontier.sqlite3")
        try:
            state, attempts, next_fetch = db.execute(
                "SELECT state, attempts, next_fetch FROM urls WHERE url=?", (base + "/",)
            ).fetchone()
            assert (state, attempts) == (FAILED, 1)
            assert next_fetch - time.time() >= 30 - 2

            # Let the clock "pass" the retry time, then run a fresh crawler on the same data.
            db.execute("UPDATE urls SET next_fetch=? WHERE url=?", (time.time() - 1, base + "/"))
            db.commit()
        finally:
            db.close()
        busy["on"] = False
        sink2 = RecordingSink()
        crawler = Crawler(config, sink2)
        sink2.crawler = crawler
        await crawler.start()
        try:
            assert await crawler.frontier.state_of(base + "/") == (FAILED, 1)
            deadline = time.monotonic() + 5
            while not await crawler.is_idle():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert await crawler.frontier.state_of(base + "/") == (DONE, 0)
        finally:
            await crawler.stop()
    assert log.count("/") == 2
    assert [p.title for p in sink2.pages] == ["Home"]


def test_host_slot_back_off_honours_retry_after(tmp_path: Path) -> None:
    config = CrawlerConfig(data_dir=tmp_path, crawl_delay=0.3)
    slot = HostSlot("example.com", config)
    assert slot.delay == 0.3
    slot.back_off(30.0)
    assert slot.delay >= 30.0
    slot.back_off(None)
    assert slot.delay >= 30.0  # a second 429 never shortens the wait
    for _ in range(20):
        slot.observe(0.01, ok=True)
    assert slot.delay == 0.3  # recovered after successes


async def test_crawl_delay_learnt_after_first_turn_applies_to_the_next(tmp_path: Path) -> None:
    # The crawler takes its first turn before robots.txt is known; the Crawl-delay read
    # during that turn must still separate it from the second request.
    slot = HostSlot("example.com", CrawlerConfig(data_dir=tmp_path, crawl_delay=0.1))
    await slot.wait_turn()
    first = time.monotonic()
    slot.apply_robots_delay(1.0)
    await slot.wait_turn()
    assert time.monotonic() - first >= 1.0 - SLACK
    assert slot.concurrency == 1
