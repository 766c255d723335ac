"""Crawl budgets that match the web: per registrable domain, in total, and bounded memory.

A real Crawler (frontier, worker processes, fetcher) against a loopback server that answers
any Host: ``*.spam.test`` is a farm of 10,000 wildcard subdomains whose every page links 50
others, ``good.test`` an honest site. The names reach 127.0.0.1 through the crawler's
``resolve`` overrides, as a wildcard DNS record would send them to one server.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web
from crawl_helpers import RequestLog, logging_app, serve

from rhizome.crawler import Crawler, CrawlerConfig, ParsedPage
from rhizome.crawler.budgets import Budgets
from rhizome.crawler.domains import domain_of, registrable_domain
from rhizome.crawler.frontier import Frontier

FARM_HOSTS = 10_000
FARM_LINKS = 50  # other subdomains each farm page links
GOOD_PAGES = 30
RESOLVE = (("*.spam.test", "127.0.0.1"), ("good.test", "127.0.0.1"))


class Sink:
    """Commits every page at once, as a fast index would."""

    def __init__(self) -> None:
        self.crawler: Crawler | None = None
        self.pages: list[ParsedPage] = []

    async def submit(self, page: ParsedPage) -> None:
        self.pages.append(page)
        assert self.crawler is not None
        await self.crawler.committed([page.url, *page.aliases])

    async def remove(self, url: str) -> None:
        pass


class Farm:
    """Answers any Host: the farm's subdomains, good.test, and robots.txt for both."""

    def __init__(self) -> None:
        self.log = RequestLog()
        self.in_flight: Counter[str] = Counter()  # farm host -> requests being answered
        self.most_farm_hosts_at_once = 0
        self.hosts_seen: set[str] = set()

    def app(self) -> web.Application:
        app = logging_app(self.log)
        app.router.add_get("/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name, _, port = request.host.partition(":")
        if request.path == "/robots.txt":
            # Every host's robots.txt names a sitemap: the crawler remembers reading it.
            return web.Response(
                text=f"User-agent: *\nAllow: /\nSitemap: http://{request.host}/sitemap.xml\n",
                content_type="text/plain",
            )
        if request.path == "/sitemap.xml":
            return web.Response(
                text=f"<urlset><url><loc>http://{request.host}/</loc></url></urlset>",
                content_type="application/xml",
            )
        if name == "good.test":
            n = int(request.path.strip("/p") or 0)
            links = "".join(f'<a href="/p{i}">page {i}</a>' for i in range(1, GOOD_PAGES))
            return _html(f"Honest page {n}", f"goodword{n}", links if n == 0 else "")
        if not name.endswith(".spam.test"):
            return web.Response(status=404)
        self.hosts_seen.add(name)
        self.in_flight[name] += 1
        self.most_farm_hosts_at_once = max(self.most_farm_hosts_at_once, len(self.in_flight))
        try:
            await asyncio.sleep(0.02)  # long enough for requests to overlap
        finally:
            self.in_flight[name] -= 1
            if not self.in_flight[name]:
                del self.in_flight[name]
        rng = random.Random(name + request.path)
        links = "".join(
            f'<a href="http://s{rng.randrange(FARM_HOSTS)}.spam.test:{port}/">more</a>'
            for _ in range(FARM_LINKS)
        )
        return _html(f"Spam {name}", "spamword", links)

    def farm_pages(self) -> list[str]:
        return [
            h.headers.get("Host", "") + h.path
            for h in self.log.hits
            if h.headers.get("Host", "").split(":")[0].endswith(".spam.test")
            and h.path not in ("/robots.txt", "/sitemap.xml")
        ]


def _html(title: str, word: str, links: str) -> web.Response:
    body = f"<html><head><title>{title}</title></head><body><p>{word}</p>{links}</body></html>"
    return web.Response(text=body, content_type="text/html")


async def crawl(
    config: CrawlerConfig, seeds: list[str], *, within: float = 60.0
) -> tuple[Crawler, Sink]:
    sink = Sink()
    crawler = Crawler(config, sink)
    sink.crawler = crawler
    await crawler.start()
    try:
        await crawler.add_seeds(seeds)
        deadline = time.monotonic() + within
        while not await crawler.is_idle():
            assert time.monotonic() < deadline, "crawl did not go idle"
            await asyncio.sleep(0.05)
    finally:
        await crawler.stop()
    return crawler, sink


def farm_config(tmp_path: Path, **overrides: object) -> CrawlerConfig:
    settings: dict[str, object] = {
        "data_dir": tmp_path,
        "allow_private_networks": True,
        "crawl_delay": 0.0,
        "host_concurrency": 2,
        "parse_workers": 1,
        "resolve": RESOLVE,
        **overrides,
    }
    return CrawlerConfig(**settings)  # type: ignore[arg-type]


async def test_a_farm_of_10000_wildcard_subdomains_is_held_to_its_domains_budget(
    tmp_path: Path,
) -> None:
    """Catches a budget per host (each of the 10,000 subdomains would get its own) and
    politeness per host (the farm would have every active-host slot, and other domains
    none): the farm gets at most its domain's budget of pages and two hosts at a time,
    while the honest domain is crawled whole."""
    budget = 40
    farm = Farm()
    async with serve(farm.app()) as base:
        port = base.rsplit(":", 1)[1]
        crawler, sink = await crawl(
            farm_config(tmp_path, max_urls_per_domain=budget),
            [f"http://s0.spam.test:{port}/", f"http://good.test:{port}/"],
        )
    pages = farm.farm_pages()
    assert len(pages) <= budget, len(pages)
    assert len(farm.hosts_seen) > 10  # it did wander into the farm, host after host
    assert farm.most_farm_hosts_at_once <= 2
    good = {p.url for p in sink.pages if "://good.test" in p.url}
    assert len(good) == GOOD_PAGES
    assert crawler.frontier.budgets.dropped["domain_budget"] > FARM_LINKS


async def test_maps_keyed_by_crawled_hosts_stay_bounded(tmp_path: Path) -> None:
    """Catches an in-memory map that grows with every host the crawl meets: with room for
    20 hosts, a crawl of 150 farm hosts (each with a robots.txt, a sitemap and politeness
    state) leaves at most 20 entries in each, and still keeps the farm's budget."""
    farm = Farm()
    async with serve(farm.app()) as base:
        port = base.rsplit(":", 1)[1]
        crawler, _sink = await crawl(
            farm_config(tmp_path, max_urls_per_domain=150, host_memory=20, max_active_hosts=8),
            [f"http://s0.spam.test:{port}/"],
        )
    assert len(farm.hosts_seen) > 100
    assert len(farm.farm_pages()) <= 150
    sizes = crawler.map_sizes()
    for name in ("host_state", "robots", "sitemaps_read", "host_counts", "domain_counts"):
        assert 0 < sizes[name] <= 20, sizes


async def test_host_budgets_hold_when_their_counts_are_forgotten(tmp_path: Path) -> None:
    """Catches a budget kept only in memory: 500 hosts pass through a count cache of 20,
    and each host still queues exactly its 2 URLs (the forgotten counts are read back)."""
    frontier = Frontier(
        tmp_path / "f.sqlite3",
        max_urls_per_host=2,
        max_depth=5,
        budgets=Budgets(per_host=2, max_hosts=20),
    )
    await frontier.open()
    try:
        for round_ in range(3):
            await frontier.add(
                [(f"http://h{h}.example{h}.org/{round_}", 1) for h in range(500)], now=1.0
            )
        assert frontier.map_sizes()["host_counts"] <= 20
        assert frontier.map_sizes()["domain_counts"] <= 20
        assert (await frontier.counts()).queued == 1000
        assert frontier.budgets.dropped["host_budget"] == 500
    finally:
        await frontier.close()


async def test_the_hosts_of_a_registrable_domain_share_its_budget(tmp_path: Path) -> None:
    frontier = Frontier(
        tmp_path / "f.sqlite3",
        max_urls_per_host=100,
        max_depth=5,
        budgets=Budgets(per_host=100, per_domain=5),
    )
    await frontier.open()
    try:
        farm = [(f"http://s{i}.spam.example/", 1) for i in range(50)]
        # Different owners under one public suffix: each its own domain.
        others = [(f"http://{n}.co.uk/{i}", 1) for n in ("alpha", "beta") for i in range(5)]
        hosts = await frontier.add([*farm, *others], now=1.0)
        assert sum(1 for h in hosts if h.endswith(".spam.example")) == 5
        assert {"alpha.co.uk", "beta.co.uk"} <= set(hosts)
        assert frontier.budgets.dropped["domain_budget"] == 45
        # The operator's seed is never over budget.
        assert await frontier.add([("http://seed.spam.example/", 0)], force=True, now=1.0)
    finally:
        await frontier.close()


async def test_a_frontier_from_before_domain_budgets_counts_its_domains_on_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.sqlite3"
    frontier = Frontier(path, max_urls_per_host=100, max_depth=5)
    await frontier.open()
    await frontier.add([(f"http://s{i}.spam.example/", 1) for i in range(8)], now=1.0)
    await frontier.close()
    with sqlite3.connect(path) as db:  # as an older version left it
        db.execute("DROP TABLE domains")
        db.execute("PRAGMA user_version=0")
    frontier = Frontier(
        path, max_urls_per_host=100, max_depth=5, budgets=Budgets(per_host=100, per_domain=10)
    )
    await frontier.open()
    try:
        hosts = await frontier.add([(f"http://t{i}.spam.example/", 1) for i in range(8)], now=1.0)
        assert len(hosts) == 2  # 8 of its 10 were used before
    finally:
        await frontier.close()


async def test_the_frontier_stops_queueing_at_its_total_budget(tmp_path: Path) -> None:
    """Catches a frontier that grows without end, and one that stays full after URLs
    leave the queue (its count must follow leases, and survive a restart)."""
    path = tmp_path / "f.sqlite3"

    def open_frontier() -> Frontier:
        return Frontier(
            path, max_urls_per_host=1000, max_depth=5, budgets=Budgets(per_host=1000, max_queued=50)
        )

    frontier = open_frontier()
    await frontier.open()
    urls = [(f"http://h{i % 7}.example{i % 7}.net/{i}", 1) for i in range(80)]
    await frontier.add(urls, now=1.0)
    assert (await frontier.counts()).queued == 50
    assert frontier.budgets.dropped["frontier_full"] == 30
    assert await frontier.add([("http://operator.example/", 0)], force=True, now=1.0)
    leased = await frontier.lease("h0.example0.net", 5)
    await frontier.mark_done([(lease.url, 1) for lease in leased], 3600)
    more = [(f"http://fresh.example/{i}", 1) for i in range(10)]
    await frontier.add(more, now=1.0)
    assert frontier.budgets.dropped["frontier_full"] == 30 + 6  # room for 4 of the 10
    await frontier.close()

    frontier = open_frontier()
    await frontier.open()
    try:
        await frontier.add([("http://after.example/restart", 1)], now=1.0)
        assert frontier.budgets.dropped["frontier_full"] == 1
    finally:
        await frontier.close()


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("a.spam.example", "spam.example"),
        ("x.y.z.spam.example", "spam.example"),
        ("www.bbc.co.uk", "bbc.co.uk"),
        ("alice.github.io", "alice.github.io"),  # a private suffix: each user a domain
        ("github.io", "github.io"),
        ("WWW.Example.COM.", "example.com"),
        ("localhost", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("xn--bcher-kva.example.de", "example.de"),
    ],
)
def test_registrable_domain_by_the_public_suffix_list(host: str, domain: str) -> None:
    assert registrable_domain(host) == domain


def test_a_names_port_is_not_its_own_domain_but_an_ip_literals_is() -> None:
    assert domain_of("a.spam.example:8080") == domain_of("b.spam.example") == "spam.example"
    assert domain_of("127.0.0.1:8080") == "127.0.0.1:8080"
    assert domain_of("[::1]:8080") == "[::1]:8080"
