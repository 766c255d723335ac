"""robots.txt through RobotsCache, fetched by a real Fetcher from a loopback server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from crawl_helpers import RequestLog, add_get, logging_app, serve

from rhizome.crawler import CrawlerConfig
from rhizome.crawler.config import MAX_CRAWL_DELAY
from rhizome.crawler.fetch import Fetcher
from rhizome.crawler.robots import RobotsCache, parse_robots

UA = "RhizomeBot"

ROBOTS = b"""\
User-agent: *
Disallow: /private/
Disallow: /tmp

User-agent: RhizomeBot
Disallow: /secret/
Allow: /secret/open.html
Crawl-delay: 2.5

Sitemap: http://example.com/sitemap.xml
Sitemap: http://example.com/news-sitemap.xml.gz
"""


@pytest.fixture
async def fetcher(tmp_path: Path) -> AsyncIterator[Fetcher]:
    f = Fetcher(CrawlerConfig(data_dir=tmp_path, allow_private_networks=True))
    await f.start()
    yield f
    await f.close()


def robots_cache(fetcher: Fetcher) -> RobotsCache:
    async def fetch(url: str) -> bytes:
        return (await fetcher.fetch(url, html_only=False)).body

    return RobotsCache(fetch, UA)


def robots_app(
    log: RequestLog, *, status: int = 200, body: bytes = ROBOTS, delay: float = 0.0
) -> web.Application:
    app = logging_app(log)

    async def robots(request: web.Request) -> web.Response:
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, body=body, content_type="text/plain")

    add_get(app, "/robots.txt", robots)
    return app


async def test_group_for_our_agent_applies(fetcher: Fetcher) -> None:
    log = RequestLog()
    async with serve(robots_app(log)) as base:
        cache = robots_cache(fetcher)
        assert not await cache.allowed(base + "/secret/page.html")
        assert await cache.allowed(base + "/secret/open.html")
        assert await cache.allowed(base + "/")
        assert await cache.allowed(base + "/about?x=1")
        # Our own group replaces the * group (RFC 9309 §2.2.1): /private/ is not ours.
        assert await cache.allowed(base + "/private/x")
        policy = await cache.policy(base)
    assert policy.crawl_delay == 2.5
    assert policy.sitemaps == (
        "http://example.com/sitemap.xml",
        "http://example.com/news-sitemap.xml.gz",
    )
    assert not policy.disallow_all and not policy.unreachable
    assert log.paths() == ["/robots.txt"]  # cached after the first call


async def test_star_group_when_no_group_names_us(fetcher: Fetcher) -> None:
    body = b"User-agent: *\nDisallow: /private/\nCrawl-delay: 3\n"
    async with serve(robots_app(RequestLog(), body=body)) as base:
        cache = robots_cache(fetcher)
        assert not await cache.allowed(base + "/private/page")
        assert await cache.allowed(base + "/public/page")
        assert (await cache.policy(base)).crawl_delay == 3.0


async def test_disallow_all(fetcher: Fetcher) -> None:
    async with serve(robots_app(RequestLog(), body=b"User-agent: *\nDisallow: /\n")) as base:
        cache = robots_cache(fetcher)
        assert not await cache.allowed(base + "/")
        assert not await cache.allowed(base + "/anything")


@pytest.mark.parametrize("status", [404, 401, 403, 410])
async def test_4xx_robots_allows_everything(fetcher: Fetcher, status: int) -> None:
    async with serve(robots_app(RequestLog(), status=status, body=b"Disallow: /")) as base:
        cache = robots_cache(fetcher)
        assert await cache.allowed(base + "/secret/page")
        policy = await cache.policy(base)
    assert not policy.disallow_all and not policy.unreachable
    assert policy.crawl_delay is None


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_5xx_or_429_robots_disallows_everything(fetcher: Fetcher, status: int) -> None:
    async with serve(robots_app(RequestLog(), status=status, body=b"")) as base:
        cache = robots_cache(fetcher)
        assert not await cache.allowed(base + "/")
        assert not await cache.allowed(base + "/index.html")
        assert (await cache.policy(base)).disallow_all


async def test_missing_robots_route_is_404_allow_all(fetcher: Fetcher) -> None:
    log = RequestLog()
    async with serve(logging_app(log)) as base:  # no /robots.txt route at all
        assert await robots_cache(fetcher).allowed(base + "/page")
    assert log.paths() == ["/robots.txt"]


async def test_unreachable_server_disallows_and_is_marked(fetcher: Fetcher) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    cache = robots_cache(fetcher)
    origin = f"http://127.0.0.1:{port}"
    assert not await cache.allowed(origin + "/")
    policy = await cache.policy(origin)
    assert policy.unreachable and policy.disallow_all


async def test_robots_redirect_followed(fetcher: Fetcher) -> None:
    log = RequestLog()
    app = logging_app(log)

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/real-robots.txt")

    add_get(app, "/robots.txt", moved)
    add_get(app, "/real-robots.txt", lambda r: web.Response(body=b"User-agent: *\nDisallow: /x\n"))
    async with serve(app) as base:
        cache = robots_cache(fetcher)
        assert not await cache.allowed(base + "/x")
        assert await cache.allowed(base + "/y")


async def test_origins_are_cached_separately(fetcher: Fetcher) -> None:
    log_a, log_b = RequestLog(), RequestLog()
    async with (
        serve(robots_app(log_a, body=b"User-agent: *\nDisallow: /a\n")) as a,
        serve(robots_app(log_b, body=b"User-agent: *\nDisallow: /b\n")) as b,
    ):
        cache = robots_cache(fetcher)
        assert not await cache.allowed(a + "/a") and await cache.allowed(a + "/b")
        assert not await cache.allowed(b + "/b") and await cache.allowed(b + "/a")
    assert log_a.count("/robots.txt") == 1 and log_b.count("/robots.txt") == 1


async def test_concurrent_policy_calls_make_one_request(fetcher: Fetcher) -> None:
    log = RequestLog()
    # A slow robots.txt keeps the first fetch in flight while the others arrive.
    async with serve(robots_app(log, delay=0.2)) as base:
        cache = robots_cache(fetcher)
        policies = await asyncio.gather(*(cache.policy(base) for _ in range(20)))
        allowed = await asyncio.gather(*(cache.allowed(f"{base}/secret/{i}") for i in range(20)))
    assert log.count("/robots.txt") == 1
    assert all(p is policies[0] for p in policies)
    assert policies[0].crawl_delay == 2.5
    assert not any(allowed)


async def test_concurrent_callers_all_see_the_failure_once(fetcher: Fetcher) -> None:
    log = RequestLog()
    async with serve(robots_app(log, status=503, body=b"", delay=0.2)) as base:
        cache = robots_cache(fetcher)
        policies = await asyncio.gather(*(cache.policy(base) for _ in range(10)))
    assert log.count("/robots.txt") == 1
    assert all(p.disallow_all for p in policies)


async def test_cancelled_first_caller_does_not_break_other_waiters(fetcher: Fetcher) -> None:
    log = RequestLog()
    async with serve(robots_app(log, delay=0.3)) as base:
        cache = robots_cache(fetcher)
        first = asyncio.create_task(cache.policy(base))
        await asyncio.sleep(0.05)  # the first call is now fetching
        others = [asyncio.create_task(cache.policy(base)) for _ in range(5)]
        await asyncio.sleep(0.05)
        first.cancel()
        results = await asyncio.gather(*others, return_exceptions=True)
    assert all(not isinstance(r, BaseException) for r in results), results
    assert all(r.crawl_delay == 2.5 for r in results)  # type: ignore[union-attr]


def test_crawl_delay_clamped_and_garbage_tolerated() -> None:
    policy = parse_robots(b"User-agent: *\nCrawl-delay: 86400\n", UA, now=0.0)
    assert policy.crawl_delay == MAX_CRAWL_DELAY
    junk = bytes(range(256)) * 50 + b"\nUser-agent: *\nDisallow: /x\n"
    policy = parse_robots(junk, UA, now=0.0)
    assert policy.allows("http://example.com/", UA)
