"""Threats from peers' URLs and dead holders (issue #12, row 11), with real subprocess
nodes on loopback, a real hostile DHT member (``tests/liar_peer.py --hello-url``) and a
plain HTTP server that is no Rhizome node (the victim).
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from pathlib import Path

from aiohttp import web

from rhizome.crawler import parse_html
from rhizome.dht.placement import distance
from rhizome.federation.membership import term_key
from rhizome.federation.proof import RETRY_SECONDS
from rhizome.federation.wire import PATH_WHOAMI, verify_copies
from rhizome.index import build_analyzer
from tests.conftest import MACHINE_SEARCH_RATE, SITE_DIR, FixtureSite, NodeFactory, SiteServer
from tests.liar_peer import start_liar
from tests.test_network import dht_address, network_search, network_status, wait_until
from tests.test_spot_check import closed_port


class VictimServer(SiteServer):
    """Someone's web server: answers 200 to anything, counts requests and bytes sent."""

    def __init__(self) -> None:
        super().__init__({})
        self.methods: Counter[tuple[str, str]] = Counter()
        self.bytes_in = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        with self._lock:
            self.methods[(request.method, request.path)] += 1
            self.bytes_in += len(body)
        return web.Response(text="<html>my blog</html>", content_type="text/html")

    def seen(self) -> tuple[Counter[tuple[str, str]], int]:
        with self._lock:
            return Counter(self.methods), self.bytes_in


def test_a_hello_pointing_at_someone_elses_server_gets_no_pushes(
    node_factory: NodeFactory, fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """Threat row 11: a member whose signed hello names a victim's web server. With three
    replicas and three members it is a holder of every term, so on the old code both
    honest nodes POSTed their shards there (and a server answering 200 took them as
    placed), and queries read shards from it. Now the URL must prove it serves the
    member's node id first: the victim gets the proof requests, nothing else, and the
    publishers place the terms on the nodes that remain."""
    site = fixture_site
    common = (
        *("--dht", "127.0.0.1:0", "--max-depth", "0", "--pin-host", site.split("/", 3)[2]),
        # The test polls network searches until the liar is dropped: a machine's rate.
        *("--search-rate", str(MACHINE_SEARCH_RATE)),
    )
    a = node_factory.start(*common, seeds=[site + "/moons.html", site + "/planets.html"])
    b = node_factory.start(
        *common,
        "--bootstrap",
        dht_address(a),
        seeds=[site + "/nebulae.html", site + "/comets.html"],
    )
    dht_address(b)
    wait_until(lambda: network_status(a)["peers"] >= 1 and network_status(b)["peers"] >= 1)
    wait_until(lambda: a.status()["idle"] and b.status()["idle"], what="crawls and placement")
    victim = VictimServer().start()
    liar = None
    try:
        liar, _liar_url, liar_id = start_liar(
            tmp_path / "liar", dht_address(a), site, hello_url=victim.url + "/"
        )
        for node in (a, b):
            wait_until(lambda n=node: network_status(n)["peers"] >= 2, what="both to know it")
        started = time.monotonic()

        def replaced() -> bool:
            requests, _received = victim.seen()
            assert set(requests) <= {("GET", PATH_WHOAMI)}, requests  # fail now, not at timeout
            network_search(a, "Titan methane lakes")
            network_search(b, "nebula star clusters")
            return all(
                n.status()["idle"] and liar_id in network_status(n).get("dropped_holders", [])
                for n in (a, b)
            )

        wait_until(replaced, timeout=60, what="the member with someone else's URL dropped")
        minutes = 1 + (time.monotonic() - started) // RETRY_SECONDS
        requests, received = victim.seen()
        assert set(requests) <= {("GET", PATH_WHOAMI)}, requests
        assert received == 0, received
        assert requests[("GET", PATH_WHOAMI)] <= 2 * 2 * minutes, requests  # per node a minute
        page = network_search(a, "Titan methane lakes")
        assert any(r["url"] == site + "/moons.html" for r in page["results"]), page
    finally:
        if liar is not None:
            liar.kill()
            liar.wait(10)
        victim.stop()


def test_a_holder_that_keeps_failing_is_replaced(
    node_factory: NodeFactory, fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """Row 11's other half: a member alive in the DHT whose HTTP URL is dead (a closed
    port) is among a term's closest nodes. On the old code the publisher retried it
    forever (a growing pause, never idle) and its terms never reached the next closest
    node. Now, after a few misses in a row, they do."""
    site = fixture_site
    common = ("--dht", "127.0.0.1:0", "--max-depth", "0", "--pin-host", site.split("/", 3)[2])
    a = node_factory.start(*common)
    others = [node_factory.start(*common, "--bootstrap", dht_address(a)) for _ in range(2)]
    liar, _url, liar_id = start_liar(
        tmp_path / "dead", dht_address(a), site, hello_url=f"http://127.0.0.1:{closed_port()}/"
    )
    try:
        nodes = [a, *others]
        for node in nodes:
            wait_until(lambda n=node: network_status(n)["peers"] >= 3, what="all four to meet")
        ids = [bytes.fromhex(network_status(n)["node_id"]) for n in nodes]
        ids.append(bytes.fromhex(liar_id))
        page = parse_html(
            site + "/eclipses.html",
            (SITE_DIR / "eclipses.html").read_bytes(),
            content_type="text/html; charset=utf-8",
        )
        words = build_analyzer().analyze(" ".join((page.title, page.description, page.text)))
        # Terms the dead member (index 3) should hold, whose next closest node is B or C.
        spare_terms: dict[int, list[str]] = {1: [], 2: []}
        for t in dict.fromkeys(words):
            ranked = sorted(range(4), key=lambda i, t=t: distance(ids[i], term_key(t)))
            if 3 in ranked[:3] and ranked[3] in spare_terms:
                spare_terms[ranked[3]].append(t)
        d, terms = max(spare_terms.items(), key=lambda kv: len(kv[1]))
        assert terms, "no term fits the layout"
        terms, spare = terms[:5], nodes[d]
        a.seed(site + "/eclipses.html")

        def placed_on_spare() -> bool:
            held = spare.get_json("/api/peer/shards", terms=",".join(terms))
            publishers = {
                t: {c.publisher for c in verify_copies(t, map(base64.b64decode, cs), time.time())}
                for t, cs in held.items()
            }
            return all(ids[0].hex() in publishers.get(t, set()) for t in terms)

        wait_until(placed_on_spare, timeout=60, what="the dead holder's terms on the next node")
        wait_until(lambda: a.status()["idle"], what="A's placement complete")
        assert liar_id in network_status(a)["dropped_holders"]
    finally:
        liar.kill()
        liar.wait(10)
