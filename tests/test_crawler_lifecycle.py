"""Starting and stopping a Crawler and its worker processes always finishes, and leaves no
worker process behind, whatever the worker on the other side of the socketpair does."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from crawl_helpers import serve

from rhizome.crawler import Crawler, CrawlerConfig, ParsedPage
from rhizome.crawler import workers as workers_module
from rhizome.crawler.errors import BlockedAddress
from rhizome.crawler.workers import CrawlWorkers, WorkerDied, _Worker

# Far above what a stop takes on a loaded machine, far below pytest's own timeout.
STOP_WITHIN = 30.0
# A port nothing listens on; without allow_private_networks the fetch is refused anyway.
LOOPBACK_URL = "http://127.0.0.1:9/"


class NullSink:
    async def submit(self, page: ParsedPage) -> None:
        pass

    async def remove(self, url: str) -> None:
        pass


async def test_stop_right_after_add_seeds_stops_the_supervisor(tmp_path: Path) -> None:
    """Catches a supervisor that swallows the cancel stop() sends: add_seeds wakes it, and
    asyncio.wait_for (Python 3.11) dropped a cancel arriving before the woken supervisor
    resumed, so stop() waited for it forever (a hung test under CPU load)."""
    crawler = Crawler(CrawlerConfig(data_dir=tmp_path, parse_workers=1), NullSink())
    await crawler.start()
    # Two frontier round trips: the supervisor's first query, queued between them on the
    # frontier's one thread, has been answered, so the supervisor now waits to be woken.
    for _ in range(2):
        assert await crawler.is_idle()
    await crawler.add_seeds([LOOPBACK_URL])  # wakes it; stop() cancels it in the same turn
    async with asyncio.timeout(STOP_WITHIN):
        await crawler.stop()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "crawl-supervisor"]


async def test_worker_that_is_not_ready_in_time_is_not_left_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers_module, "READY_TIMEOUT", 0.001)
    worker = _Worker(0)
    with pytest.raises(TimeoutError):
        await worker.start(CrawlerConfig(data_dir=tmp_path))
    assert worker.proc is not None
    assert worker.proc.returncode is not None


async def test_wedged_worker_is_killed_and_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches a crawl that waits forever for a worker process that stopped answering."""
    monkeypatch.setattr(workers_module, "PARSE_ALLOWANCE", 0.5)
    config = CrawlerConfig(data_dir=tmp_path, fetch_timeout=0.1, max_redirects=0)
    workers = CrawlWorkers(config, 1)
    await workers.start()
    try:
        (wedged,) = workers._workers
        assert wedged.proc is not None
        os.kill(wedged.proc.pid, signal.SIGSTOP)
        async with asyncio.timeout(STOP_WITHIN):
            with pytest.raises(WorkerDied):
                await workers.crawl(LOOPBACK_URL)
            assert await wedged.proc.wait() == -signal.SIGKILL
            # The next URL goes to a fresh worker, which answers (the SSRF guard's refusal).
            with pytest.raises(BlockedAddress):
                await workers.crawl(LOOPBACK_URL)
        assert workers._workers[0] is not wedged
    finally:
        async with asyncio.timeout(STOP_WITHIN):
            await workers.close()


class CommittingSink:
    """Commits every page at once, as a fast index would."""

    def __init__(self) -> None:
        self.crawler: Crawler | None = None
        self.urls: list[str] = []

    async def submit(self, page: ParsedPage) -> None:
        self.urls.append(page.url)
        assert self.crawler is not None
        await self.crawler.committed([page.url, *page.aliases])

    async def remove(self, url: str) -> None:
        pass


async def _until(predicate: Callable[[], Awaitable[bool]], within: float) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, f"not true within {within} s"
        await asyncio.sleep(0.05)


async def test_idle_crawler_stops_its_parser_workers_and_starts_them_for_new_work(
    tmp_path: Path,
) -> None:
    """Each parser process holds 45-95 MB; an idle node must not keep them, and must
    still crawl what comes later."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=f"<p>{request.path}</p>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{name}", page)
    config = CrawlerConfig(
        data_dir=tmp_path,
        allow_private_networks=True,
        crawl_delay=0.0,
        parse_workers=1,
        worker_idle_stop=0.3,
    )
    sink = CommittingSink()
    crawler = Crawler(config, sink)
    sink.crawler = crawler
    async with serve(app) as base:
        await crawler.start()
        try:
            await crawler.add_seeds([base + "/first"])
            await _until(crawler.is_idle, STOP_WITHIN)
            (worker,) = crawler._workers._workers
            assert worker.proc is not None
            await _until(lambda: _done(worker.proc), STOP_WITHIN)  # stopped while idle
            assert not crawler._workers.running
            await crawler.add_seeds([base + "/later"])
            await _until(crawler.is_idle, STOP_WITHIN)
        finally:
            async with asyncio.timeout(STOP_WITHIN):
                await crawler.stop()
    assert sink.urls == [base + "/first", base + "/later"]


async def _done(proc: asyncio.subprocess.Process) -> bool:
    return proc.returncode is not None
