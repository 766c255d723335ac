"""Disk, memory and amplification bounds against hostile key holders and clients (issue #12,
threat rows 5 and 9), on real nodes over loopback.

Row 5: a key holder fills a holder's disk (200,000 terms x 64 KB a publisher, 8 publishers
an address) and expired copies are never removed; one address bursts 120 x 16 MB pushes.
Row 9: anyone makes a node send hundreds of datagrams and HTTP requests per /api/search.
"""

from __future__ import annotations

import http.client
import socket
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from rhizome.api.client_quotas import SearchQuota
from rhizome.dht import Identity
from rhizome.federation.phases import MAX_QUERY_TERMS, QueryPlan
from rhizome.federation.shard_store import OVER_HOLDER_BYTES, OVER_PUBLISHER_BYTES, WAL_LIMIT
from rhizome.federation.wire import sign_push
from rhizome.index import IndexStore
from tests.conftest import NodeFactory, NodeHandle
from tests.test_hostile_peers_dht import call_http
from tests.test_network import dht_address

MIB = 1024 * 1024
BUDGET_MB = 2
RECORD_PAYLOAD = 40_000  # bytes of one attacker record (MAX_SHARD_BYTES is 64 KB)


def _holder(factory: NodeFactory, *flags: str) -> NodeHandle:
    node = factory.start("--dht", "127.0.0.1:0", "--max-depth", "0", *flags)
    dht_address(node)
    return node


def _push(
    node: NodeHandle, key: Identity, source: str, terms: list[str], ttl: float, size: int
) -> tuple[int, Any]:
    items = [(term, {"filler": term * (size // len(term))}) for term in terms]
    status, _, body = call_http(
        node,
        "POST",
        "/api/peer/shards",
        source=source,
        body=sign_push(key, items, time.time() + ttl),
    )
    return status, body


def _disk(node: NodeHandle) -> int:
    return sum(
        p.stat().st_size
        for p in node.data_dir.glob("shards.sqlite3*")
        if not p.name.endswith("-shm")  # the WAL index, 32 KB, memory-mapped
    )


def _held(node: NodeHandle) -> dict[str, Any]:
    network: dict[str, Any] = node.status()["network"]
    return network


def _wait(predicate: Any, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_disk_filler_is_held_to_its_budget_and_others_still_push(
    node_factory: NodeFactory,
) -> None:
    """32 keys from 4 addresses (8 each, the per-address cap) push 40 KB records with a
    short life until refused, 30 MB in all, into a holder with a 2 MiB budget: each key is
    stopped at its share (1/16), the holder at its budget; the file stays under budget +
    WAL; the node answers searches; an honest publisher is told the holder is full, and
    once the filler's copies expire its push is stored. Catches a holder that stores
    whatever keys send (the old code held all 30 MB, for 24 h)."""
    node = _holder(node_factory, "--held-shards-mb", str(BUDGET_MB), "--shard-expiry-interval", "1")
    refusals: dict[str, int] = {}
    for a in range(4):
        for k in range(8):
            key = Identity.generate()
            terms = [f"fill{a}x{k}x{i}" for i in range(24)]  # ~1 MB a key
            status, body = _push(node, key, f"127.0.0.{21 + a}", terms, 8.0, RECORD_PAYLOAD)
            assert status == 200, body
            for reason, count in body.get("why", {}).items():
                refusals[reason] = refusals.get(reason, 0) + count
            assert body["stored"] + body.get("refused", 0) == len(terms)
    assert refusals.get(OVER_PUBLISHER_BYTES, 0) > 0 and refusals.get(OVER_HOLDER_BYTES, 0) > 0
    held = _held(node)
    assert held["shards_held_bytes"] <= BUDGET_MB * MIB
    on_disk = _disk(node)
    assert on_disk <= BUDGET_MB * MIB + WAL_LIMIT + MIB, on_disk
    assert node.get("/api/search", q="fill", scope="network").status == 200
    honest = Identity.generate()
    honest_terms = [f"honest{i}" for i in range(5)]
    status, body = _push(node, honest, "127.0.0.29", honest_terms, 3600.0, 20_000)
    assert status == 200 and body["why"].get(OVER_HOLDER_BYTES, 0) >= 4, body
    _wait(lambda: _held(node)["shards_held"] <= 1, 20.0, "the filler's copies did not expire")
    status, body = _push(node, honest, "127.0.0.29", honest_terms, 3600.0, 20_000)
    assert status == 200 and body == {"stored": 5}, body
    print(f"disk under the flood: {on_disk / MIB:.2f} MiB; refusals {refusals}")
    node.assert_alive()


def test_expired_copies_are_removed_and_their_space_reused(node_factory: NodeFactory) -> None:
    """Copies pushed with a 3 s life are deleted by the expiry task (shards_held drops to
    0 in the operator status) and the file shrinks back; a second round of the same size
    reuses that space instead of growing the file. Catches a store that only hides expired
    rows from readers (the old code kept every copy on disk for ever)."""
    node = _holder(node_factory, "--shard-expiry-interval", "1")
    empty = _disk(node)
    sizes = []
    for round_no in range(2):
        key = Identity.generate()
        terms = [f"brief{round_no}x{i}" for i in range(100)]
        status, body = _push(node, key, "127.0.0.31", terms, 3.0, 20_000)
        assert status == 200 and body == {"stored": 100}, body
        assert _held(node)["shards_held"] == 100
        full = _disk(node)
        assert full > empty + MIB
        _wait(lambda: _held(node)["shards_held"] == 0, 20.0, "expired copies were not removed")
        assert _held(node)["shards_held_bytes"] == 0
        _wait(lambda f=full: _disk(node) < f // 4, 5.0, "the space was not given back")
        sizes.append(full)
    assert sizes[1] <= sizes[0] * 1.2, sizes
    node.assert_alive()


def _get(node: NodeHandle, path: str, source: str) -> tuple[int, dict[str, str], str]:
    host, port = node.url.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        return resp.status, headers, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def test_one_client_cannot_make_a_node_send_unbounded_queries(node_factory: NodeFactory) -> None:
    """One address asks for network searches as fast as it can: after the burst (30) it
    gets 429 with Retry-After, as JSON from the API and as a page from the web UI, while
    another address is still served. Catches a node that sends lookups and peer requests
    for every request anyone makes (the old code answered all 80)."""
    node = _holder(node_factory)
    statuses = []
    refused: tuple[dict[str, str], str] | None = None
    for i in range(80):
        status, headers, text = _get(node, f"/api/search?q=word{i}&scope=network", "127.0.0.41")
        statuses.append(status)
        if status == 429 and refused is None:
            refused = (headers, text)
    assert refused is not None, statuses
    assert 30 <= statuses.count(200) <= 45, statuses
    assert statuses[-1] == 429
    headers, text = refused
    assert int(headers["retry-after"]) >= 1 and "too many searches" in text
    status, headers, text = _get(node, "/?q=moon", "127.0.0.41")
    assert status == 429 and headers["content-type"].startswith("text/html"), text
    assert "Too many searches" in text and int(headers["retry-after"]) >= 1
    assert _get(node, "/api/search?q=moon&scope=network", "127.0.0.42")[0] == 200
    assert _get(node, "/?q=moon", "127.0.0.42")[0] == 200


async def test_a_long_query_looks_up_a_bounded_number_of_terms() -> None:
    """A query of 500 words (cut to 512 chars: 85 distinct terms) looks up at most
    MAX_QUERY_TERMS terms' shards: each is a DHT lookup and holder requests. Catches a
    plan whose lookups grow with the query's length."""
    with tempfile.TemporaryDirectory() as tmp:
        store = IndexStore(Path(tmp) / "index")
        await store.start()
        try:
            words = " ".join(f"w{i:03d}x" for i in range(500))
            query = store.prepare(words)
            assert len(query.focus) > 2 * MAX_QUERY_TERMS
            plan = QueryPlan(query, 10, 0, 10)
            assert plan.terms == query.focus[:MAX_QUERY_TERMS]
        finally:
            await store.stop()


def _slow_push(node: NodeHandle, source: str, first: int = 0) -> socket.socket:
    """A push that declares 15 MB and sends only its first ``first`` bytes."""
    length = 15 * MIB
    host, port = node.url.split("//", 1)[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=5, source_address=(source, 0))
    sock.sendall(
        (
            f"POST /api/peer/shards HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
        ).encode()
        + b"\0" * first
    )
    return sock


def _status_within(sock: socket.socket, seconds: float) -> tuple[int, str]:
    sock.settimeout(seconds)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        return 0, ""
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return int(head.split(" ", 2)[1]), head.lower()


def _peak_rss(node: NodeHandle) -> int:
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_concurrent_push_flood_is_answered_503_not_buffered(node_factory: NodeFactory) -> None:
    """Two slow 15 MB uploads hold the push slots; then 24 more uploads from 4 addresses
    (and a second one from a slot holder's address) are answered 503 with Retry-After at
    once, before their bodies are sent, a sender of a whole body reads the 503 too, and
    the node's peak RSS barely moves; once the slow
    uploads give up, an honest push is stored. Catches a holder that buffers every upload
    side by side (the old code waited for each 15 MB body)."""
    node = _holder(node_factory)
    holding = [_slow_push(node, f"127.0.0.{51 + i}", first=65_536) for i in range(2)]
    time.sleep(0.5)  # both handlers are reading their bodies
    before = _peak_rss(node)
    flood = [_slow_push(node, f"127.0.0.{53 + i % 4}") for i in range(24)]
    flood.append(_slow_push(node, "127.0.0.51"))
    started = time.monotonic()
    answers = [_status_within(sock, 3.0) for sock in flood]
    took = time.monotonic() - started
    assert all(status == 503 and "retry-after:" in head for status, head in answers), answers
    assert took < 3.0, took
    # A publisher sending its whole body meanwhile reads the 503 (not a reset), so it
    # knows the holder is up and only busy.
    status, headers, _ = call_http(
        node, "POST", "/api/peer/shards", source="127.0.0.58", body=b"\0" * (2 * MIB)
    )
    assert status == 503 and int(headers["retry-after"]) >= 1
    grew = _peak_rss(node) - before
    assert grew < 40 * MIB, grew
    for sock in [*holding, *flood]:
        sock.close()
    honest = Identity.generate()

    def pushed() -> bool:
        status, body = _push(node, honest, "127.0.0.59", ["honestterm"], 3600.0, 100)
        return status == 200 and body == {"stored": 1}

    _wait(pushed, 10.0, "the push slots were not given back")
    out = node.output()
    assert "unhandled error" not in out and "Traceback" not in out, out[-3000:]
    print(f"peak RSS grew {grew / MIB:.1f} MiB under {len(flood)} refused uploads")


def _request_from(remote: str, forwarded: str | None = None) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (remote, 40000) if name == "peername" else default
    )
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    return make_mocked_request("GET", "/api/search?q=x", headers=headers, transport=transport)


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    """A client names itself in X-Forwarded-For: ignored unless the request comes from a
    trusted proxy, whose own rightmost entry then is the client (entries further left are
    the client's words). Catches a limit any client escapes by sending the header."""
    plain = SearchQuota(2.0)
    assert plain.client(_request_from("203.0.113.9", "198.51.100.1")) == "203.0.113.9/32"
    behind = SearchQuota(2.0, ("127.0.0.1",))
    spoofed = "198.51.100.1, 203.0.113.9"  # the client wrote the first, the proxy the last
    assert behind.client(_request_from("127.0.0.1", spoofed)) == "203.0.113.9/32"
    assert behind.client(_request_from("127.0.0.1", "2001:db8::1")) == "2001:db8::/64"
    assert behind.client(_request_from("127.0.0.1")) == "127.0.0.1/32"
    assert behind.client(_request_from("192.0.2.7", "203.0.113.9")) == "192.0.2.7/32"
