"""Real UDP DHT nodes on 127.0.0.1 in one process: lookups, robustness, restarts, hellos."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import umsgpack  # type: ignore[import-untyped]

from rhizome.dht import DhtNode, DhtSettings, Identity, Peer
from rhizome.dht.contacts import make_contact_record

FAST = DhtSettings(rpc_timeout=0.3)
NETWORK_SIZE = 20


async def start_node(
    data_dir: Path,
    bootstrap: list[tuple[str, int]] | None = None,
    *,
    settings: DhtSettings = FAST,
    identity: Identity | None = None,
) -> DhtNode:
    node = DhtNode(
        data_dir, http_url=f"http://{data_dir.name}.test:8080", settings=settings, identity=identity
    )
    await node.start("127.0.0.1", 0, bootstrap or [])
    return node


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[list[DhtNode]]:
    nodes = [await start_node(tmp_path / "n0")]
    try:
        for i in range(1, NETWORK_SIZE):
            # A hostname on purpose: it must be resolved before any sendto (uvloop).
            nodes.append(await start_node(tmp_path / f"n{i}", [("localhost", nodes[0].port)]))
        # Hellos run in the background; let them land so every peer's endpoint is known.
        await wait_for(lambda: all(len(n.contacts) == NETWORK_SIZE - 1 for n in nodes))
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


def xor_top(ids: list[bytes], key: bytes, count: int) -> list[bytes]:
    target = int.from_bytes(key, "big")
    return sorted(ids, key=lambda i: int.from_bytes(i, "big") ^ target)[:count]


def send_raw(port: int, *datagrams: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, ("127.0.0.1", port))


WAIT_LIMIT = 3.0  # seconds for background RPCs (hellos, moves, hand-overs) to land


POLL = 0.02


async def wait_for(predicate: Callable[[], bool]) -> None:
    # Polling: these states change inside the kademlia library, which signals nothing.
    for _ in range(int(WAIT_LIMIT / POLL)):
        if predicate():
            return
        await asyncio.sleep(POLL)
    raise AssertionError(f"condition not reached in {WAIT_LIMIT} s")


async def test_closest_nodes_match_brute_force_from_every_node(network: list[DhtNode]) -> None:
    ids = [node.node_id for node in network]
    assert len(set(ids)) == NETWORK_SIZE
    for i in range(8):
        key = hashlib.sha1(f"term-{i}".encode()).digest()
        want = xor_top(ids, key, 3)
        for node in network:
            got = await node.closest_nodes(key, 3)
            assert [p.node_id for p in got] == want
            # Every answer carries the address and the HTTP endpoint that peer signed for.
            for peer in got:
                holder = network[ids.index(peer.node_id)]
                assert (peer.ip, peer.port) == ("127.0.0.1", holder.port)
                assert peer.http_url == holder.http_url


async def test_lookup_crawls_beyond_a_tiny_routing_table(tmp_path: Path) -> None:
    # k = 2: each node holds few contacts, so lookups must walk the network.
    tiny = DhtSettings(ksize=2, rpc_timeout=0.3)
    nodes = [await start_node(tmp_path / "t0", settings=tiny)]
    try:
        for i in range(1, 12):
            nodes.append(
                await start_node(tmp_path / f"t{i}", [("127.0.0.1", nodes[-1].port)], settings=tiny)
            )
        ids = [n.node_id for n in nodes]
        for i in range(5):
            key = hashlib.sha1(f"k{i}".encode()).digest()
            for node in nodes:
                got = [p.node_id for p in await node.closest_nodes(key, 2)]
                assert got == xor_top(ids, key, 2)
    finally:
        for node in nodes:
            await node.stop()


async def test_garbage_and_oversized_datagrams_do_not_break_a_node(
    network: list[DhtNode],
) -> None:
    victim, asker = network[5], network[11]
    header = b"\x00" + b"\x07" * 20
    send_raw(
        victim.port,
        b"",
        b"\x00",
        b"\x02" + b"x" * 40,  # unknown message type
        header + b"\xc1",  # msgpack's one invalid byte
        header + b"\x91" * 10_000 + b"\xc0",  # deep nesting
        header + umsgpack.packb({"not": "a request"}),
        header + umsgpack.packb(["ping", []]),  # wrong arity
        header + umsgpack.packb(["find_node", [b"short", b"id"]]),  # bad argument types
        header + umsgpack.packb(["store", [b"i" * 20, b"k" * 20, ["list"]]]),
        header + umsgpack.packb(["shutdown", []]),  # not an RPC
        header + umsgpack.packb(["__init__", [1, 2, 3]]),
        b"\x01" + b"\x09" * 20 + umsgpack.packb(True),  # reply nobody asked for
        header + b"\x00" * 9000,  # oversized
        b"\x00" * 60_000,
    )
    await wait_for(lambda: sum(victim.dropped.values()) >= 14)
    dropped = victim.dropped
    for reason in ("garbage", "oversized", "bad_arity", "bad_args", "unknown_rpc"):
        assert dropped.get(reason), (reason, dropped)
    assert "error" not in dropped and "handler_error" not in dropped
    # Still answers: the asker's lookup goes through the victim.
    assert await asker.ping(Peer(victim.node_id, "127.0.0.1", victim.port))
    key = victim.node_id
    got = await asker.closest_nodes(key, 3)
    assert got[0].node_id == victim.node_id
    assert victim.node_id in {p.node_id for p in await network[0].closest_nodes(key, 1)}


async def test_restart_reloads_routing_table_from_json(tmp_path: Path) -> None:
    nodes = [await start_node(tmp_path / "r0")]
    nodes += [
        await start_node(tmp_path / f"r{i}", [("127.0.0.1", nodes[0].port)]) for i in (1, 2, 3)
    ]
    try:
        leaver = nodes[3]
        old_port = leaver.port
        await leaver.stop()
        files = sorted(p.name for p in leaver.data_dir.iterdir())
        assert files == ["node.key", "routing.json"]  # no pickle anywhere
        saved = json.loads((leaver.data_dir / "routing.json").read_text())
        assert saved["node_id"] == leaver.node_id.hex()
        assert {p["node_id"] for p in saved["peers"]} == {n.node_id.hex() for n in nodes[:3]}

        back = DhtNode(leaver.data_dir, settings=FAST)  # same key, no bootstrap address given
        await back.start("127.0.0.1", 0)
        nodes[3] = back
        assert back.node_id == leaver.node_id and back.port != old_port
        assert {p.node_id for p in await back.peers()} == {n.node_id for n in nodes[:3]}

        # The others now reach it at its new port.
        def everyone_knows_new_port() -> bool:
            found = [
                (c.ip, c.port)
                for other in nodes[:3]
                for c in other.protocol.router.contacts()
                if c.id == back.node_id
            ]
            return found == [("127.0.0.1", back.port)] * 3

        await wait_for(everyone_knows_new_port)
        key = hashlib.sha1(b"after restart").digest()
        ids = [n.node_id for n in nodes]
        assert [p.node_id for p in await nodes[0].closest_nodes(key, 4)] == xor_top(ids, key, 4)
    finally:
        for node in nodes:
            await node.stop()


async def test_peer_is_evicted_after_n_timeouts_not_one(tmp_path: Path) -> None:
    a = await start_node(tmp_path / "a")
    b = await start_node(tmp_path / "b", [("127.0.0.1", a.port)])
    try:
        peer_b = Peer(b.node_id, "127.0.0.1", b.port)
        assert b.node_id in {p.node_id for p in await a.peers()}
        await b.stop()
        assert FAST.max_failures == 3
        for attempt in (1, 2):
            assert not await a.ping(peer_b)
            assert b.node_id in {p.node_id for p in await a.peers()}, attempt
            assert a.protocol.failures(b.node_id) == attempt
        assert not await a.ping(peer_b)
        assert b.node_id not in {p.node_id for p in await a.peers()}
    finally:
        await a.stop()
        await b.stop()


async def test_an_answer_resets_the_failure_count(tmp_path: Path) -> None:
    a = await start_node(tmp_path / "a")
    b = await start_node(tmp_path / "b", [("127.0.0.1", a.port)])
    try:
        peer_b = Peer(b.node_id, "127.0.0.1", b.port)
        a.protocol.handle_call_response((False, None), a.protocol.router.find_contact(b.node_id))
        a.protocol.handle_call_response((False, None), a.protocol.router.find_contact(b.node_id))
        assert a.protocol.failures(b.node_id) == 2
        assert await a.ping(peer_b)
        assert a.protocol.failures(b.node_id) == 0
    finally:
        await a.stop()
        await b.stop()


async def test_hello_gives_endpoints_and_refuses_forgeries(tmp_path: Path) -> None:
    a = await start_node(tmp_path / "a")
    b = await start_node(tmp_path / "b", [("127.0.0.1", a.port)])
    try:
        assert await a.endpoint_of(b.node_id) == "http://b.test:8080"
        assert await b.endpoint_of(a.node_id) == "http://a.test:8080"
        assert await a.endpoint_of(hashlib.sha1(b"nobody").digest()) is None

        mallory = Identity.generate()
        record = make_contact_record(mallory, "http://evil.test", now=time.time())
        target = ("127.0.0.1", b.port)
        # Mallory's own record under a's node id: the id is not sha1(mallory's key).
        ok, reply = await a.protocol.hello(target, a.node_id, record)
        assert ok and reply is None
        # A record with a broken signature.
        broken = record[:-1] + bytes([record[-1] ^ 1])
        ok, reply = await a.protocol.hello(target, mallory.node_id, broken)
        assert ok and reply is None
        assert b.dropped.get("bad_hello") == 2
        assert await b.endpoint_of(a.node_id) == "http://a.test:8080"
        assert b.contacts.get(mallory.node_id, now=time.time()) is None

        # The genuine record is accepted, and the reply is b's own signed contact.
        ok, reply = await a.protocol.hello(target, mallory.node_id, record)
        assert ok and isinstance(reply, bytes)
        assert b.contacts.get(mallory.node_id, now=time.time()) is not None

        await a.advertise("http://a.example:9090")
        assert await b.endpoint_of(a.node_id) == "http://a.example:9090"
    finally:
        await a.stop()
        await b.stop()


async def test_refresh_keeps_its_interval(tmp_path: Path) -> None:
    node = await start_node(tmp_path / "n", settings=DhtSettings(refresh_interval=0.1))
    try:
        await asyncio.sleep(0.75)
        # The library fell back to an hour after the first tick: that would be 1 here.
        assert node.refreshes >= 5
    finally:
        await node.stop()


def test_works_under_uvloop(tmp_path: Path) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        nodes = [await start_node(tmp_path / "u0")]
        try:
            for i in range(1, 6):
                # uvloop refuses sendto to a hostname: "localhost" must be resolved first.
                nodes.append(await start_node(tmp_path / f"u{i}", [("localhost", nodes[0].port)]))
            send_raw(nodes[2].port, b"\x00" * 30, b"\x00" * 20_000)
            key = hashlib.sha1(b"uvloop").digest()
            ids = [n.node_id for n in nodes]
            for node in nodes:
                assert [p.node_id for p in await node.closest_nodes(key, 3)] == xor_top(ids, key, 3)
            assert await nodes[4].endpoint_of(nodes[2].node_id) == "http://u2.test:8080"
        finally:
            for node in nodes:
                await node.stop()

    uvloop.run(scenario())
