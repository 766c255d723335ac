"""Threats from shard holders and publishers (issue #12, rows 2, 3, 6 and 8), with real
subprocess nodes on loopback and real hostile peers (``tests/liar_peer.py``).

Node keys are chosen before the nodes start so that, for every term of the query, the
hostile holder is the term's closest node and the querying node is not a holder at all:
the querier must read the term from holders over HTTP, and the hostile one is among the
first it asks (on the old code, the only one).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import nacl.signing
import pytest

from rhizome.dht import Identity, compress, sign_record
from rhizome.federation.membership import term_key
from rhizome.federation.wire import (
    group_bodies,
    shard_body,
    sign_batch,
    sign_push,
    speaks_for,
    verify_copies,
)
from rhizome.index import SHARD_FIELDS, Posting, TermShard, build_analyzer
from tests.conftest import FixtureSite, NodeFactory, NodeHandle
from tests.liar_peer import liar_stats, lie_urls, start_liar
from tests.test_network import dht_address, network_search, network_status, wait_until

QUERY = "Titan methane lakes"
ANSWER = "/moons.html"
TERMS = list(dict.fromkeys(build_analyzer().analyze(QUERY)))


def _key() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey.generate()


def _id(key: nacl.signing.SigningKey) -> int:
    return int.from_bytes(Identity(key).node_id, "big")


def _distance(key: nacl.signing.SigningKey, term: str) -> int:
    return _id(key) ^ int.from_bytes(term_key(term), "big")


def _distances(key: nacl.signing.SigningKey) -> list[int]:
    return [_distance(key, t) for t in TERMS]


def ground_keys() -> dict[str, nacl.signing.SigningKey]:
    """Keys for A (asks), B (publishes the site), C (holds) and H (hostile holder) such
    that for every query term H is the closest node and A the farthest: with 3 replicas
    of 4 nodes, the term's holders are H, B and C."""
    while True:  # some B, C leave no room (one is already the closest or farthest)
        b, c = _key(), _key()
        near = [min(_distance(b, t), _distance(c, t)) for t in TERMS]
        far = [max(_distance(b, t), _distance(c, t)) for t in TERMS]
        hs = (_key() for _ in range(300))
        h = next((k for k in hs if all(map(int.__lt__, _distances(k), near))), None)
        as_ = (_key() for _ in range(300))
        a = next((k for k in as_ if all(map(int.__gt__, _distances(k), far))), None)
        if h is not None and a is not None:
            return {"a": a, "b": b, "c": c, "h": h}


def _place_key(data_dir: Path, key: nacl.signing.SigningKey) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "node.key"
    path.write_bytes(bytes(key))
    os.chmod(path, 0o600)


@pytest.fixture
def hostile_network(
    request: pytest.FixtureRequest, tmp_path: Path, fixture_site: FixtureSite
) -> Iterator[tuple[NodeHandle, str, str, str]]:
    """A, C and the hostile holder H, then B crawling the site; returns (A, H's URL, H's id,
    B's id) once B's shards are placed."""
    mode: str = request.param
    keys = ground_keys()
    for name, key in keys.items():
        _place_key(tmp_path / name, key)
    factory = NodeFactory(tmp_path)
    site = fixture_site
    common = ("--dht", "127.0.0.1:0", "--max-depth", "0", "--pin-host", site.split("/", 3)[2])
    liar = None
    try:
        a = factory.start(*common, data_dir=tmp_path / "a")
        c = factory.start(*common, "--bootstrap", dht_address(a), data_dir=tmp_path / "c")
        victim = bytes(keys["b"].verify_key).hex()
        liar, liar_url, liar_id = start_liar(
            tmp_path / "h", dht_address(a), site, holder=mode, victim_key=victim
        )
        b = factory.start(
            *common,
            "--bootstrap",
            dht_address(a),
            data_dir=tmp_path / "b",
            seeds=[site + "/moons.html", site + "/planets.html", site + "/nebulae.html"],
        )
        dht_address(b)
        for node in (a, b, c):
            wait_until(lambda n=node: network_status(n)["peers"] >= 3, what="all four to meet")
        wait_until(lambda: b.status()["idle"], what="B's crawl and placement")
        yield a, liar_url, liar_id, Identity(keys["b"]).node_id.hex()
    finally:
        if liar is not None:
            liar.kill()
            liar.wait()
        factory.close()


@pytest.mark.parametrize("hostile_network", ["forge"], indirect=True)
def test_a_holder_that_forges_copies_under_a_publishers_name_shows_no_forged_page(
    hostile_network: tuple[NodeHandle, str, str, str], fixture_site: FixtureSite
) -> None:
    """H answers every lookup with copies claiming to be B's: unsigned pairs naming B's
    id, records bearing B's key that B never signed, and garbage. The querier uses only
    what B signed (read from another holder), shows none of H's pages, and says that H
    left out B's copy."""
    a, liar_url, liar_id, b_id = hostile_network
    result = network_search(a, QUERY)
    assert liar_stats(liar_url).get("get_shards", 0) >= 1, "the hostile holder was never asked"
    urls = [r["url"] for r in result["results"]]
    assert not set(urls) & set(lie_urls(fixture_site)), urls
    assert urls and urls[0] == fixture_site + ANSWER, result
    assert all(r["peers"] == [b_id] for r in result["results"]), result
    named = {d["holder"] for d in result["replicas_disagree"] if b_id in d["omits"]}
    assert named == {liar_id}, result["replicas_disagree"]
    assert liar_id not in result["unresponsive_peers"]  # garbage is dropped, not fatal


@pytest.mark.parametrize("hostile_network", ["omit"], indirect=True)
def test_a_holder_that_withholds_a_publishers_copy_is_outvoted_and_named(
    hostile_network: tuple[NodeHandle, str, str, str], fixture_site: FixtureSite
) -> None:
    """H serves only a copy of its own and withholds B's: B's pages are still found (from
    the second holder read), and the answer names H as leaving B out, term by term."""
    a, liar_url, liar_id, _ = hostile_network
    result = network_search(a, QUERY)
    assert liar_stats(liar_url).get("get_shards", 0) >= 1, "the hostile holder was never asked"
    assert fixture_site + ANSWER in [r["url"] for r in result["results"]], result
    omitted = {d["term"] for d in result["replicas_disagree"] if d["holder"] == liar_id}
    assert omitted == set(TERMS), result["replicas_disagree"]
    page = a.request("GET", "/?" + urlencode({"q": QUERY, "scope": "network"}))
    assert "Copies of the index disagree" in page.text


# --- row 3: one bad copy must not spoil a lookup -------------------------------------------


def test_a_malformed_pushed_shard_does_not_spoil_lookups_of_its_term(
    node_factory: NodeFactory,
) -> None:
    """A publisher pushes a record whose shard is not JSON (and, in the old line format,
    a line that is not): the holder's lookup answer stays valid JSON and an honest
    publisher's copy of the same term still verifies. On the old code the bad line was
    spliced into the answer, so every lookup of the term failed at the querier."""
    node = node_factory.start("--dht", "127.0.0.1:0", "--max-depth", "0")
    dht_address(node)
    headers = {"Content-Type": "application/octet-stream"}
    now = time.time()
    honest, vandal = Identity.generate(), Identity.generate()
    honest_push = sign_push(honest, [("titan", _honest_shard())], now + 600)
    assert node.request("POST", "/api/peer/shards", body=honest_push, headers=headers).status == 200
    bad = shard_body(vandal, "titan", b"[1,}", now, now + 600)
    bad_push = sign_batch(vandal, group_bodies(vandal, ["titan"], [bad], [1]), now + 600)
    node.request("POST", "/api/peer/shards", body=bad_push, headers=headers)
    old_style = sign_record(  # the unsigned-line format this node's predecessor stored raw
        vandal,
        kind="shards/3",
        key=b"batch",
        payload=compress(b"titan\t[1,}]"),
        issued_at=now,
        expires_at=now + 600,
    )
    node.request("POST", "/api/peer/shards", body=old_style, headers=headers)
    answer = node.request("GET", "/api/peer/shards?terms=titan,lake")
    assert answer.status == 200
    held = json.loads(answer.text)  # parses: the bad copy did not break the answer
    copies = verify_copies("titan", map(base64.b64decode, held["titan"]), time.time())
    assert [c.publisher for c in copies] == [honest.node_id.hex()]


def _honest_shard() -> list[object]:
    fields = len(SHARD_FIELDS)
    posting = Posting("http://x.test/t", "Titan", (1.0,) * fields)
    return TermShard("titan", 1, 10, (1,) * fields, (posting,)).to_json()


# --- row 6: peer answers are read within a byte budget -------------------------------------


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_an_owner_answering_a_gzip_bomb_costs_the_querier_no_memory(
    node_factory: NodeFactory, fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """An owner the shards make A ask answers with 256 MiB of gzip in ~250 KB. A reads at
    most MAX_OWNER_ANSWER_BYTES of it, names the owner unresponsive and answers from its
    own pages; its peak memory does not grow by the bomb (the old client decoded it all)."""
    site = fixture_site
    # Its only peer is a fake one that dials nobody back: public, as loopback is.
    common = ("--dht", "127.0.0.1:0", "--max-depth", "0", "--pin-host", site.split("/", 3)[2])
    a = node_factory.start(*common, "--reachability", "public", seeds=[site + "/moons.html"])
    wait_until(lambda: a.status()["idle"], what="the crawl and placement")
    liar, liar_url, liar_id = start_liar(tmp_path / "bomb", dht_address(a), site, a.url, bomb=True)
    try:
        wait_until(lambda: network_status(a)["peers"] >= 1, what="A to know the bomber")
        network_search(a, "galileo observation")  # warm (the model, caches); not a lie term
        before = _peak_rss_mb(a.proc.pid)
        page = network_search(a, QUERY)
        assert liar_stats(liar_url).get("search", 0) >= 1, "the bomber was never asked"
        assert liar_id in page["unresponsive_peers"], page
        assert any(r["url"] == site + ANSWER for r in page["results"]), page
        # The old client decoded the 256 MiB whole: +543 MB of peak memory.
        assert _peak_rss_mb(a.proc.pid) - before < 128, "the bomb was decoded"
    finally:
        liar.kill()
        liar.wait(10)


# --- row 8: statistics one liar cannot bend, titles from the host's crawler -------------------


def test_a_publisher_inflating_a_words_counts_or_retitling_a_page_changes_little(
    node_factory: NodeFactory, fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """A stranger's shards claim "methane" (and its other lie words) is on all of 10^8
    pages, and name A's eclipses page under a title of their own. The old node counted the
    claim in full (the word's IDF, and with it every methane page's score, fell to ~0) and
    let the first publisher to name a page title it. Now the stranger counts at most twice
    the rest of the network, and A, the page's crawler, titles its own page."""
    site = fixture_site
    host = site.split("/", 3)[2]
    seeds = [site + p for p in ("/moons.html", "/eclipses.html", "/planets.html")]
    a = node_factory.start(
        "--dht", "127.0.0.1:0", "--max-depth", "0", "--pin-host", host, seeds=seeds
    )
    wait_until(lambda: a.status()["idle"], what="the crawl and placement")
    a_id = network_status(a)["node_id"]
    eclipses = site + "/eclipses.html"
    while True:  # a stranger farther than A from the page's host key
        key = _key()
        if speaks_for(a_id, Identity(key).node_id.hex(), eclipses):
            break
    _place_key(tmp_path / "stranger", key)
    honest = network_search(a, "methane")["results"]
    assert honest and honest[0]["url"] == site + ANSWER, honest
    title = next(
        r["title"] for r in network_search(a, "eclipses")["results"] if r["url"] == eclipses
    )
    liar, _url, _id = start_liar(tmp_path / "stranger", dht_address(a), site, a.url, inflate=True)
    try:
        time.sleep(31)  # the 30 s shard cache: the next searches read the stranger's copies
        lied = network_search(a, "methane")["results"]
        moons = next(r for r in lied if r["url"] == site + ANSWER)
        assert moons["score"] >= 0.1 * honest[0]["score"], (moons, honest[0])
        both = network_search(a, "methane eclipses")["results"]
        assert next(r["title"] for r in both if r["url"] == eclipses) == title, both
    finally:
        liar.kill()
        liar.wait(10)
