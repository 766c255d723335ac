"""End to end: a real ``rhizome node`` subprocess crawls a real web server on loopback.

Covers crawl → index → search, robots.txt and noindex, restart on the same data directory,
and recovery from SIGKILL in the middle of a crawl without refetching committed pages.
"""

from __future__ import annotations

import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import tantivy
from conftest import (
    SITE_INDEXABLE,
    SITE_NOINDEX,
    SITE_PRIVATE,
    FixtureSite,
    NodeFactory,
    NodeHandle,
    serve_site,
)

pytestmark = pytest.mark.timeout(90)


def path_of(url: str) -> str:
    return urllib.parse.urlsplit(url).path


def result_paths(data: dict[str, Any]) -> list[str]:
    return [path_of(r["url"]) for r in data["results"]]


# --- crawl → search --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("jupiter great red spot", "/planets.html"),
        ("europa icy crust", "/moons.html"),
        ("perseid meteor shower august", "/comets.html"),
        ("dobsonian reflector aperture", "/telescopes.html"),
        ("star hopping polaris", "/constellations.html"),
        ("pleiades open cluster", "/nebulae.html"),
        ("totality eclipse glasses", "/eclipses.html"),
        ("parsec albedo azimuth", "/glossary.html"),
        ("virgo cluster galaxy season", "/deep/log-spring.html"),
        ("noctilucent clouds", "/deep/log-summer.html"),
        ("andromeda", "/deep/log-autumn.html"),
        ("betelgeuse castor frost", "/deep/log-winter.html"),
        ("backyard sky guide", "/index.html"),
    ],
)
def test_distinctive_words_rank_their_page_first(
    crawled_node: NodeHandle, query: str, expected: str
) -> None:
    data = crawled_node.search(query)
    assert data["query"] == query
    assert data["results"], f"no results for {query!r}"
    assert result_paths(data)[0] == expected, data["results"][:3]
    top = data["results"][0]
    assert top["title"] and top["content"]
    assert top["score"] > 0
    assert isinstance(data["took_ms"], int | float)


def test_deep_chain_is_crawled_to_the_end(crawled_node: NodeHandle) -> None:
    data = crawled_node.search("observing log", limit=10)
    assert {p for p in result_paths(data) if p.startswith("/deep/")} == {
        "/deep/log-spring.html",
        "/deep/log-summer.html",
        "/deep/log-autumn.html",
        "/deep/log-winter.html",
    }


def test_phrase_query_matches_only_the_exact_phrase(crawled_node: NodeHandle) -> None:
    loose = crawled_node.search("ring fire")
    assert {"/eclipses.html", "/planets.html"} <= set(result_paths(loose))
    phrase = crawled_node.search('"ring of fire"')
    assert result_paths(phrase) == ["/eclipses.html"]
    assert phrase["number_of_results"] == 1
    assert crawled_node.search('"fire of ring"')["results"] == []


def test_site_filter(crawled_node: NodeHandle) -> None:
    assert crawled_node.site is not None
    host = urllib.parse.urlsplit(crawled_node.site.url).netloc  # 127.0.0.1:PORT
    everything = crawled_node.search(f"site:{host}", limit=100)
    assert everything["number_of_results"] == len(SITE_INDEXABLE)
    assert sorted(result_paths(everything)) == sorted(SITE_INDEXABLE)
    by_ip = crawled_node.search("site:127.0.0.1 telescope")
    assert by_ip["results"] and all(r["host"] == host for r in by_ip["results"])
    assert result_paths(by_ip)[0] == "/telescopes.html"
    assert crawled_node.search("site:example.org telescope")["results"] == []
    assert crawled_node.search("telescope -site:127.0.0.1")["results"] == []


def test_noindex_page_is_fetched_but_never_searchable(crawled_node: NodeHandle) -> None:
    assert crawled_node.site is not None
    assert crawled_node.site.hits(SITE_NOINDEX) == 1  # seen, so its meta robots was honoured
    assert crawled_node.search("gegenschein")["results"] == []
    for r in crawled_node.search("zodiacal light draft notes", limit=100)["results"]:
        assert path_of(r["url"]) != SITE_NOINDEX


def test_robots_disallowed_page_is_never_fetched(crawled_node: NodeHandle) -> None:
    site = crawled_node.site
    assert site is not None
    assert site.hits("/robots.txt") == 1
    assert site.hits(SITE_PRIVATE) == 0
    assert not any(path.startswith("/private/") for path in site.requests)
    assert crawled_node.search("observatory padlock keypad")["results"] == []
    assert all("RhizomeBot" in ua for ua in site.server.user_agents), site.server.user_agents


def test_every_page_fetched_once_and_document_count(crawled_node: NodeHandle) -> None:
    site = crawled_node.site
    assert site is not None
    requests = site.requests
    for path in (*SITE_INDEXABLE, SITE_NOINDEX):
        assert requests[path] == 1, (path, requests)
    status = crawled_node.status()
    assert status["idle"] is True
    assert status["documents"] == len(SITE_INDEXABLE)
    assert status["index"]["pending"] == 0
    assert status["crawl"]["in_flight"] == 0
    assert status["crawl"]["fetched"] == len(SITE_INDEXABLE) + 1  # + the noindex page


def test_pages_of_results_are_disjoint_and_complete(crawled_node: NodeHandle) -> None:
    seen: list[str] = []
    for offset in range(0, 15, 5):
        data = crawled_node.search("backyard", limit=5, offset=offset)
        assert data["limit"] == 5 and data["offset"] == offset
        assert data["number_of_results"] == len(SITE_INDEXABLE)
        assert [r["positions"] for r in data["results"]] == [
            [offset + i + 1] for i in range(len(data["results"]))
        ]
        seen += result_paths(data)
    assert sorted(seen) == sorted(SITE_INDEXABLE)  # no page twice, none missing


# --- restart ---------------------------------------------------------------------------------


def _comparable(data: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(r["url"], r["title"], r["content"], r["score"]) for r in data["results"]]


def test_restart_serves_the_same_results_at_once(
    node_factory: NodeFactory, fixture_site: FixtureSite
) -> None:
    node = node_factory.start(site=fixture_site)
    assert node.status()["documents"] == 0
    accepted = node.seed(f"{fixture_site}/index.html")
    assert accepted == {"accepted": [f"{fixture_site}/index.html"], "rejected": 0, "blocked": []}
    node.wait_idle(60, min_documents=len(SITE_INDEXABLE))
    queries = ["telescope", '"ring of fire"', "site:127.0.0.1", "backyard", "glossary"]
    before = {q: _comparable(node.search(q, limit=20)) for q in queries}
    fetched = fixture_site.requests
    assert node.stop() == 0, node.output()

    again = node_factory.start(data_dir=node.data_dir, site=fixture_site)
    # The very first requests, before any crawling could have happened.
    assert again.status()["documents"] == len(SITE_INDEXABLE)
    after = {q: _comparable(again.search(q, limit=20)) for q in queries}
    assert after == before
    status = again.wait_idle(20)
    assert status["documents"] == len(SITE_INDEXABLE)
    time.sleep(0.5)
    assert fixture_site.requests == fetched, "a restart must not fetch anything again"


# --- SIGKILL mid-crawl -----------------------------------------------------------------------

SLOW_PAGES = 40


def slow_site_pages() -> dict[str, tuple[bytes, str]]:
    """An index linking to SLOW_PAGES pages, each with its own marker word."""
    html = "text/html; charset=utf-8"
    links = "".join(f'<li><a href="/p/{i}.html">Page {i}</a></li>' for i in range(SLOW_PAGES))
    pages = {
        "/index.html": (
            f"<!doctype html><title>Slow site</title><main><p>Index of the slow site.</p>"
            f"<ul>{links}</ul></main>".encode(),
            html,
        )
    }
    for i in range(SLOW_PAGES):
        nxt = (i + 1) % SLOW_PAGES
        pages[f"/p/{i}.html"] = (
            f"<!doctype html><title>Slow page {i}</title><main><p>Page {i} of the slow site. "
            f"Its marker word is {marker(i)}.</p><p><a href='/p/{nxt}.html'>next</a> "
            f"<a href='/index.html'>index</a></p></main>".encode(),
            html,
        )
    return pages


def marker(i: int) -> str:
    return f"uniq{i:03d}tok"


def committed_urls(data_dir: Path) -> set[str]:
    """The URLs in the node's on-disk index (read directly, with no node running)."""
    index = tantivy.Index.open(str(data_dir / "index"))
    searcher = index.searcher()
    hits = searcher.search(tantivy.Query.all_query(), limit=10_000).hits
    return {searcher.doc(address)["url"][0] for _, address in hits}


def frontier_done(data_dir: Path) -> set[str]:
    db = sqlite3.connect(data_dir / "frontier.sqlite3")
    try:
        return {row[0] for row in db.execute("SELECT url FROM urls WHERE state = 2")}
    finally:
        db.close()


def test_sigkill_mid_crawl_loses_nothing_and_refetches_nothing_committed(
    node_factory: NodeFactory,
) -> None:
    with serve_site(slow_site_pages(), delay=0.05) as site:
        # Commits once a second: at the kill, some fetched pages are not committed yet.
        node = node_factory.start(
            "--commit-interval", "1.0", seeds=[f"{site}/index.html"], site=site, crawl_delay=0.15
        )
        deadline = time.monotonic() + 30
        while (status := node.status())["documents"] < 8:
            assert time.monotonic() < deadline, f"{status}\n{node.output()}"
            time.sleep(0.02)
        time.sleep(0.45)  # half-way to the next commit: pages fetched, not yet committed
        node.kill()
        fetched_before = site.requests
        total = SLOW_PAGES + 1
        committed = committed_urls(node.data_dir)
        done = frontier_done(node.data_dir)
        assert 8 <= len(committed) < total, "kill the node while it is still crawling"
        deadline = time.monotonic() + 10
        while node.live_workers():
            assert time.monotonic() < deadline, "parser workers outlived the killed node"
            time.sleep(0.05)
        assert done <= committed, "the frontier marks a URL done only after the index commit"

        again = node_factory.start(data_dir=node.data_dir, site=site, crawl_delay=0.15)
        # Everything committed before the kill is searchable at once.
        assert again.status()["documents"] >= len(committed)
        for url in committed:
            path = path_of(url)
            slow_index = '"index of the slow site"'
            query = marker(int(path[3:-5])) if path.startswith("/p/") else slow_index
            assert url in [r["url"] for r in again.search(query)["results"]], (url, query)

        status = again.wait_idle(60, min_documents=total)
        assert status["documents"] == total
        requests = site.requests
        expected = {"/index.html", *(f"/p/{i}.html" for i in range(SLOW_PAGES))}
        assert expected <= set(requests)
        for url in done:
            path = path_of(url)
            assert requests[path] == 1, f"{path} was committed before the kill but fetched again"
        for path, count in requests.items():
            if path != "/robots.txt":
                assert count <= 2, (path, count)
        assert sum(requests.values()) > sum(fetched_before.values()), "crawl did not resume"
        for i in (0, SLOW_PAGES // 2, SLOW_PAGES - 1):
            assert result_paths(again.search(marker(i))) == [f"/p/{i}.html"]
