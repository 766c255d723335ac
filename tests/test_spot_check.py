"""Spot-checks of peers' claimed results (issue #5, hostile peers).

The checker is tested with real parts: the crawler's Fetcher and RobotsCache against a
real HTTP fixture site, a real ShardStore, and, end to end, two real nodes plus a real
hostile peer process (``tests/liar_peer.py``) that joins the DHT with its own identity and
lies about pages in signed shards and in its search answers.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import time
import urllib.request
from pathlib import Path

from aiohttp import web

from rhizome.crawler import CrawlerConfig
from rhizome.crawler.config import DEFAULT_USER_AGENT_NAME
from rhizome.crawler.fetch import Fetcher
from rhizome.crawler.robots import RobotsCache
from rhizome.dht import Identity
from rhizome.federation.settings import DEFAULT_SETTINGS
from rhizome.federation.shard_store import ShardStore
from rhizome.federation.spot_check import (
    CHECK_BURST,
    PUBLISHER_BURST,
    QUEUE_SIZE,
    STRIKES_TO_DISTRUST,
    Claim,
    SpotChecker,
    Verdict,
)
from rhizome.federation.wire import sign_held, verify_copies
from rhizome.index import SHARD_FIELDS, Posting, TermShard, build_analyzer
from rhizome.index.bm25 import MAX_FIELD_WEIGHT
from tests.conftest import (
    SITE_DIR,
    FixtureSite,
    NodeFactory,
    SiteServer,
    load_site,
    serve_site,
)
from tests.liar_peer import liar_stats, lie_urls, signed_batch, start_liar
from tests.test_network import dht_address, network_search, network_status, wait_until

# Publishers whose shards this node holds, as signed records (``federation.wire``).
HONEST_KEY, LIAR_KEY = Identity.generate(), Identity.generate()
HONEST = HONEST_KEY.node_id.hex()
LIAR = LIAR_KEY.node_id.hex()
TITLE_LIKE = [MAX_FIELD_WEIGHT / 2] + [0.0] * (len(SHARD_FIELDS) - 1)
ANCHOR_ONLY = [0.0] * len(SHARD_FIELDS)
ANCHOR_ONLY[SHARD_FIELDS.index("anchor")] = 1.0


def retitled(path: str, title: str) -> tuple[bytes, str]:
    """A fixture page whose title changed since it was crawled (the body did not)."""
    body = (SITE_DIR / path.lstrip("/")).read_bytes()
    return re.sub(rb"<title>.*?</title>", f"<title>{title}</title>".encode(), body), (
        "text/html; charset=utf-8"
    )


def changed_site() -> dict[str, tuple[bytes, str]]:
    pages = load_site(SITE_DIR)
    # Case and a site-name suffix: the same title to a person, not to ==.
    pages["/moons.html"] = retitled("/moons.html", "MOONS OF THE SOLAR SYSTEM | Backyard Sky Guide")
    # Reworded beyond a suffix: only the terms still say it is the page.
    pages["/nebulae.html"] = retitled("/nebulae.html", "Clouds Where Stars Are Born")
    return pages


def claim(
    publisher: str,
    url: str,
    title: str,
    terms: tuple[str, ...],
    *,
    attributed: bool = True,
    require_all: bool = True,
) -> Claim:
    return Claim(publisher, url, title, terms, require_all, attributed)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Checker:
    """A SpotChecker wired to real, started parts, as api/node.py wires it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.fetcher = Fetcher(CrawlerConfig(data_dir=tmp, allow_private_networks=True))
        self.robots = RobotsCache(self.fetcher.fetch_robots, "RhizomeBot")
        self.shards = ShardStore(tmp / "shards.sqlite3")
        self.checker = SpotChecker(tmp, "0" * 40)

    async def __aenter__(self) -> Checker:
        await self.fetcher.start()
        await self.shards.open()
        await self.checker.start(self.fetcher, self.robots, self.shards)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.checker.stop()
        await self.fetcher.close()
        await self.shards.close()


async def test_verdicts_strike_lies_and_never_honest_pages_that_changed(tmp_path: Path) -> None:
    """Would catch: a checker that compares titles with == (case, suffix), needs the title
    AND the terms, strikes on unreachable, robots-forbidden or gone (404, seen from one
    address) pages, believes a holder's unsigned copy (framing), or lets an invented title
    through."""
    with serve_site(changed_site()) as site:
        async with Checker(tmp_path) as parts:
            checker = parts.checker
            moons, nebulae = site + "/moons.html", site + "/nebulae.html"
            honest = {
                "case and suffix": claim(HONEST, moons, "Moons of the Solar System", ("titan",)),
                "reworded title, terms on the page": claim(
                    HONEST, nebulae, "Nebulae and Star Clusters", ("nebula", "star cluster")
                ),
                "title only (terms from anchors elsewhere)": claim(
                    HONEST, site + "/comets.html", "Comets and Meteor Showers", ("backyardsky",)
                ),
                "query terms, any of them": claim(
                    HONEST, moons, "old title", ("titan", "perseid"), require_all=False
                ),
            }
            for what, c in honest.items():
                outcome = await checker.check(c)
                assert outcome.verdict is Verdict.PASSED, (what, outcome)

            lies = {
                "invented title, absent terms": claim(
                    LIAR, site + "/eclipses.html", "Titan Methane Lakes", ("titan", "methan")
                ),
                "one true term is not enough": claim(
                    LIAR, moons, "Titan Tours", ("titan", "perseid", "nebula")
                ),
            }
            for what, c in lies.items():
                outcome = await checker.check(c)
                assert outcome.verdict is Verdict.FAILED, (what, outcome)

            proves_nothing = {
                "unreachable": claim(LIAR, f"http://127.0.0.1:{closed_port()}/x", "X", ("x",)),
                "robots.txt forbids": claim(
                    LIAR, site + "/private/dome-access.html", "Lies", ("titan",)
                ),
                "not http": claim(LIAR, "file:///etc/passwd", "Lies", ("root",)),
                # To this address only, perhaps: the site may be framing the publisher.
                "gone": claim(LIAR, site + "/titan-lakes.html", "Titan Lakes", ("titan",)),
            }
            for what, c in proves_nothing.items():
                outcome = await checker.check(c)
                assert outcome.verdict is Verdict.INCONCLUSIVE, (what, outcome)

            # A claim only a remote holder reports: it could be the holder framing the
            # publisher, so nothing is fetched and nobody is struck.
            before = site.hits("/eclipses.html")
            framed = claim(
                HONEST, site + "/eclipses.html", "Titan Lakes", ("titan",), attributed=False
            )
            assert (await checker.check(framed)).verdict is Verdict.UNATTRIBUTABLE
            assert site.hits("/eclipses.html") == before
            # The same claim backed by the publisher's signed copy in our own store counts.
            shard = TermShard(
                "titan",
                1,
                10,
                (1,) * len(SHARD_FIELDS),
                (Posting(site + "/eclipses.html", "Titan Lakes", tuple(TITLE_LIKE)),),
            )
            await parts.shards.put(LIAR, sign_held(LIAR_KEY, [shard], time.time() + 60))
            own = claim(LIAR, site + "/eclipses.html", "whatever", ("titan",), attributed=False)
            assert (await checker.check(own)).verdict is Verdict.FAILED
            assert (await checker.check(framed)).verdict is Verdict.UNATTRIBUTABLE


async def test_strikes_distrust_a_liar_persistently_and_spare_a_mostly_right_publisher(
    tmp_path: Path,
) -> None:
    """Would catch: distrust after a single failure, distrust of a publisher whose few
    rewritten pages are a small share of its checks, distrust kept only in memory, or shards
    of the distrusted publisher left in the store."""
    with serve_site(changed_site()) as site:
        async with Checker(tmp_path) as parts:
            checker = parts.checker
            shard = TermShard("titan", 1, 10, (1,) * len(SHARD_FIELDS), ())
            await parts.shards.put(LIAR, sign_held(LIAR_KEY, [shard], time.time() + 60))
            await parts.shards.put(HONEST, sign_held(HONEST_KEY, [shard], time.time() + 60))
            lies = [
                claim(LIAR, site + page, "Titan Methane Lakes", ("titan", "methan"))
                for page in ("/eclipses.html", "/telescopes.html")
            ]
            for i, lie in enumerate(lies[:STRIKES_TO_DISTRUST]):
                assert LIAR not in checker.distrusted
                await checker.record(lie, await checker.check(lie))
                assert checker.strikes()[LIAR] == i + 1
            assert LIAR in checker.distrusted
            held = await parts.shards.get(["titan"])
            assert [c.publisher for c in held["titan"]] == [HONEST]
            assert not checker.offer(claim(LIAR, site + "/moons.html", "Moons", ("titan",)))

            # An honest publisher with two pages rewritten since its crawl among many good ones.
            good = claim(HONEST, site + "/moons.html", "Moons of the Solar System", ("titan",))
            for _ in range(4):
                await checker.record(good, await checker.check(good))
            for page in ("/eclipses.html", "/telescopes.html"):
                stale = claim(HONEST, site + page, "Old page", ("titan",))
                await checker.record(stale, await checker.check(stale))
            assert checker.strikes()[HONEST] == 2
            assert HONEST not in checker.distrusted

    reloaded = SpotChecker(tmp_path, "0" * 40)
    assert set(reloaded.distrusted) == {LIAR}


GONE_TO_CHECKER = {"/moons.html": 404, "/nebulae.html": 410, "/comets.html": 404}


def plain_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return int(resp.status)


class FramingSite(SiteServer):
    """A site that frames publishers: its pages answer 404 (or 410) to the checker's
    User-Agent only, as a site could to the checkers' addresses; everyone else gets them."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        status = GONE_TO_CHECKER.get(request.path)
        if status and DEFAULT_USER_AGENT_NAME in request.headers.get("User-Agent", ""):
            with self._lock:
                self.requests[request.path] += 1
            return web.Response(status=status, text="not found")
        return await super()._handle(request)


async def test_a_site_that_404s_only_to_the_checker_cannot_frame_an_honest_publisher(
    tmp_path: Path,
) -> None:
    """Threat row 7 (issue #12): on the old code a gone page was a failed check, so two
    checks of pages the site 404s to the checker alone distrusted an honest publisher and
    purged its shards. One address's 404 proves nothing: no strike, no distrust."""
    server = FramingSite(load_site(SITE_DIR)).start()
    try:
        site = FixtureSite(server)
        for path in GONE_TO_CHECKER:  # the pages are there for everyone else
            assert await asyncio.to_thread(plain_status, site + path) == 200
        async with Checker(tmp_path) as parts:
            checker = parts.checker
            shard = TermShard("titan", 1, 10, (1,) * len(SHARD_FIELDS), ())
            await parts.shards.put(HONEST, sign_held(HONEST_KEY, [shard], time.time() + 60))
            true_claims = [
                claim(HONEST, site + "/moons.html", "Moons of the Solar System", ("titan",)),
                claim(HONEST, site + "/nebulae.html", "Nebulae and Star Clusters", ("nebula",)),
                claim(HONEST, site + "/comets.html", "Comets and Meteor Showers", ("comet",)),
            ]
            assert len(true_claims) > STRIKES_TO_DISTRUST
            for c in true_claims:
                outcome = await checker.check(c)
                assert outcome.verdict is Verdict.INCONCLUSIVE, (c.url, outcome)
                await checker.record(c, outcome)
            assert all(site.hits(p) >= 1 for p in GONE_TO_CHECKER)  # checked
            assert HONEST not in checker.distrusted
            assert HONEST not in checker.strikes()
            held = await parts.shards.get(["titan"])
            assert [c.publisher for c in held["titan"]] == [HONEST]
    finally:
        server.stop()


async def test_rate_limits_cap_fetches_however_many_claims_are_offered(tmp_path: Path) -> None:
    """Would catch: a checker without a global cap (a peer could make the node fetch its
    URLs as fast as it answers queries), without a per-publisher budget, or with an
    unbounded queue."""
    with serve_site() as site:
        pages = [f"/{p.name}" for p in SITE_DIR.glob("*.html")]
        tool = Checker(tmp_path)
        checker = tool.checker
        one = [claim(HONEST, site + p, "t", ("x",)) for p in pages]
        assert sum(checker.offer(c) for c in one) == PUBLISHER_BURST
        many = [
            claim(f"{i + 1:040x}", f"{site}{pages[i % len(pages)]}?{i}", "t", ("x",))
            for i in range(500)
        ]
        accepted = sum(checker.offer(c) for c in many)
        assert accepted == QUEUE_SIZE - PUBLISHER_BURST
        assert checker.counts["dropped"] == len(one) - PUBLISHER_BURST + len(many) - accepted

        def page_fetches() -> int:
            return sum(n for path, n in site.requests.items() if path != "/robots.txt")

        async with tool:
            for _poll in range(300):
                if page_fetches() >= CHECK_BURST:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)  # time enough for many more, were there no cap
            assert page_fetches() == CHECK_BURST
            assert checker.stats()["queued"] >= QUEUE_SIZE - CHECK_BURST - 1


# --- end to end: two honest nodes and a liar ------------------------------------------------


QUERIES = ("Titan methane lakes", "nebula star clusters", "perseid meteor shower", "titan moons")


def test_a_lying_peer_is_distrusted_purged_and_stays_so_and_an_honest_one_never(
    node_factory: NodeFactory, fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """Would catch: lies that are never checked, a checker that strikes honest pages whose
    title changed case or wording, distrust that does not remove the liar's results, keep
    asking it, keep its shards, accept its pushes, or forget it on restart."""
    site = fixture_site
    lies = set(lie_urls(site))
    common = ("--dht", "127.0.0.1:0", "--max-depth", "0", "--pin-host", site.split("/", 3)[2])
    a = node_factory.start(*common, seeds=[site + "/planets.html", site + "/comets.html"])
    b = node_factory.start(
        *common, "--bootstrap", dht_address(a), seeds=[site + "/moons.html", site + "/nebulae.html"]
    )
    dht_address(b)
    wait_until(lambda: network_status(a)["peers"] >= 1 and network_status(b)["peers"] >= 1)
    wait_until(lambda: a.status()["idle"] and b.status()["idle"], what="crawls and placement")
    liar, liar_url, liar_id = start_liar(tmp_path / "liar", dht_address(a), site, a.url, b.url)
    try:
        b_id = network_status(b)["node_id"]
        wait_until(lambda: network_status(a)["peers"] >= 2, what="A to know the liar")
        # B's pages change after its crawl: a naive checker would call B a liar now.
        for path, (body, ctype) in changed_site().items():
            site.server.pages[path] = (body, ctype)

        first = network_search(a, QUERIES[0])
        assert {r["url"] for r in first["results"]} & lies, first  # the lie surfaces
        assert any(r["url"] == site + "/moons.html" for r in first["results"]), first

        def caught() -> bool:
            for q in QUERIES:
                network_search(a, q)
            status = network_status(a)
            assert b_id not in status["distrusted_peers"], status  # fail now, not at timeout
            return liar_id in status["distrusted_peers"] and status["spot_checks"]["passed"] >= 2

        wait_until(caught, timeout=30, what="the liar distrusted and B checked twice")
        status = network_status(a)
        assert b_id not in status["distrusted_peers"], status
        assert b_id not in status["spot_checks"]["strikes"], status
        assert status["spot_checks"]["failed"] >= STRIKES_TO_DISTRUST, status

        asked = liar_stats(liar_url).get("search", 0)
        for q in QUERIES:
            result = network_search(a, q)
            assert not {r["url"] for r in result["results"]} & lies, result
            assert all(liar_id not in r["peers"] for r in result["results"]), result
        moons = network_search(a, QUERIES[0])["results"]
        assert moons[0]["url"] == site + "/moons.html", moons
        assert liar_stats(liar_url).get("search", 0) == asked  # no longer asked
        held = a.get_json("/api/peer/shards", terms="titan,methan,lake")
        publishers = {
            c.publisher
            for term, copies in held.items()
            for c in verify_copies(term, map(base64.b64decode, copies), time.time())
        }
        assert publishers and liar_id not in publishers, held
        refused = a.request(
            "POST",
            "/api/peer/shards",
            body=signed_batch(
                Identity.load_or_create(tmp_path / "liar"),
                site,
                list(build_analyzer().analyze("titan")),
            ),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert refused.status == 400 and "distrusted" in refused.text, refused
        assert re.search(r"^rhizome_distrusted_peers 1\.0$", a.get("/metrics").text, re.M)

        # Restart A: the distrust is on disk; B and the liar still hold the liar's shards.
        a.stop()
        a2 = node_factory.start(*common, "--bootstrap", dht_address(b), data_dir=a.data_dir)
        dht_address(a2)
        assert liar_id in network_status(a2)["distrusted_peers"]
        wait_until(
            lambda: any(
                r["url"] == site + "/moons.html" for r in network_search(a2, QUERIES[0])["results"]
            ),
            what="A to find B's page again",
        )
        for q in QUERIES:
            result = network_search(a2, q)
            assert not {r["url"] for r in result["results"]} & lies, result
        assert liar_stats(liar_url).get("search", 0) == asked
    finally:
        liar.kill()
        liar.wait(10)


def test_a_peer_that_accepts_and_never_answers_costs_one_deadline_then_nothing(
    node_factory: NodeFactory, fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """A peer that takes the connection and then stalls (not a dead one, which loopback
    refuses at once): its shards claim the best pages for the query, so the querying node
    must ask it. Would catch a query with no per-peer timeout or overall deadline (it would
    hang), one that drops its own results when a peer is late, or one that asks the slow
    peer again on every query instead of backing it off."""
    site = fixture_site
    # Its only peer is a fake one that dials nobody back: public, as loopback is.
    common = ("--dht", "127.0.0.1:0", "--max-depth", "0", "--pin-host", site.split("/", 3)[2])
    a = node_factory.start(*common, "--reachability", "public", seeds=[site + "/moons.html"])
    wait_until(lambda: a.status()["idle"], what="the crawl and placement")
    staller, staller_url, staller_id = start_liar(
        tmp_path / "staller", dht_address(a), site, a.url, stall=60.0
    )
    try:
        wait_until(lambda: network_status(a)["peers"] >= 1, what="A to know the staller")
        started = time.monotonic()
        first = network_search(a, QUERIES[0])
        took = time.monotonic() - started
        assert took < DEFAULT_SETTINGS.query_deadline + 1.0, took
        # It was asked (for its shards as a holder, or for results as their owner), stalled.
        stats = liar_stats(staller_url)
        assert stats.get("search", 0) + stats.get("get_shards", 0) >= 1, stats
        assert staller_id in first["unresponsive_peers"] and first["partial"], first
        assert any(r["url"] == site + "/moons.html" for r in first["results"]), first
        asked = liar_stats(staller_url)
        started = time.monotonic()
        second = network_search(a, QUERIES[0] + " moons")
        assert time.monotonic() - started < 1.0  # backed off: not waited for again
        assert any(r["url"] == site + "/moons.html" for r in second["results"]), second
        assert liar_stats(staller_url) == asked
        print(f"\nstalling peer: first query {took * 1000:.0f} ms, then skipped")
    finally:
        staller.kill()
        staller.wait(10)


def test_an_owner_answering_garbage_json_leaves_the_query_whole(
    node_factory: NodeFactory, fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """An owner the shards make the querying node ask answers with JSON that is no answer
    (a list; results that are not objects). Would catch a query that fails (500) on it
    instead of answering from everyone else."""
    site = fixture_site
    # Its only peer is a fake one that dials nobody back: public, as loopback is.
    common = ("--dht", "127.0.0.1:0", "--max-depth", "0", "--pin-host", site.split("/", 3)[2])
    a = node_factory.start(*common, "--reachability", "public", seeds=[site + "/moons.html"])
    wait_until(lambda: a.status()["idle"], what="the crawl and placement")
    liar, liar_url, _liar_id = start_liar(
        tmp_path / "garbage", dht_address(a), site, a.url, garbage=True
    )
    try:
        wait_until(lambda: network_status(a)["peers"] >= 1, what="A to know the liar")
        for query in (QUERIES[0], QUERIES[0] + " list"):
            page = network_search(a, query)
            assert any(r["url"] == site + "/moons.html" for r in page["results"]), page
        assert liar_stats(liar_url).get("search", 0) >= 2  # it was asked both times
    finally:
        liar.kill()
        liar.wait(10)


def test_a_claim_never_asks_for_the_proximity_phrase_key_as_a_word(tmp_path: Path) -> None:
    """An owner's weights carry the proximity phrase under "~ w1 w2"; a checker that took
    "~" for a claimed word struck honest owners (seen under load in the suite)."""
    from rhizome.federation.wire import PeerAnswer, ResultRow
    from rhizome.index import PageWeights
    from rhizome.index.query import near_key

    checker = SpotChecker(tmp_path, "aa" * 20)
    url = "http://b.example/moons.html"
    weights = PageWeights(
        {
            url: {
                "titan": (0.0, 1.0, 0.0, 0.0, 0.0),
                near_key(("titan", "lake")): (0.0, 1.0, 0.0, 0.0, 0.0),
            }
        },
        {},
        (0.0,) * 5,
    )
    answer = PeerAnswer("bb" * 20, [ResultRow(url=url, title="Moons", peers=["bb" * 20])], weights)
    assert checker.offer_page(answer.results, [answer], ["titan", "lake"]) == 1
    claim = checker._queue.get_nowait()
    assert claim.require_all and "~" not in claim.terms
    assert claim.terms == ("titan",)  # the words its own units claim, nothing else
