"""No reflection (issue #12, threat row 4): a spoofable UDP source that has proven nothing
gets back no more bytes than it sent, on every procedure.

Real ``DhtNode``s on loopback UDP (port 0), probed from raw sockets by
``bench/reflector_probe.py``: well-formed, unpadded requests as kademlia's rpcudp encodes
them, every byte the node sends to the source in the window after each one counted. The
node's table is first filled with proven contacts (one /24 each), so ``find_node`` has a
full list to give away. Before this rule, ``find_value`` after ``store`` sent back 105x
its request, ``find_node`` 11x, and a ping 2.4x (the challenge it set off).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import umsgpack  # type: ignore[import-untyped]
from kademlia.node import Node

from bench.reflector_probe import datagram, fill_table, open_source, probe
from rhizome.dht import DhtNode, DhtSettings
from rhizome.dht.protocol import RhizomeProtocol

FAST = DhtSettings(rpc_timeout=0.3, silent_backoff=0.3)
FILLED = 24  # proven contacts in the victim's table: more than k = 20
LARGEST_VALUE = 8137  # the largest value a store request carries under rpcudp's 8 KiB
HEADER = 21
# A small network whose buckets fill (k = 8), so lookups have whole lists to hand out.
NET_SETTINGS = DhtSettings(ksize=8, rpc_timeout=0.3, silent_backoff=0.3, range_cap=8)
NET_SIZE = 16


async def start_node(data_dir: Path, bootstrap: list[tuple[str, int]] | None = None) -> DhtNode:
    node = DhtNode(data_dir, http_url=f"http://{data_dir.name}.test:8080", settings=FAST)
    await node.start("127.0.0.1", 0, bootstrap or [])
    return node


@pytest.fixture
async def victim(tmp_path: Path) -> AsyncIterator[DhtNode]:
    node = await start_node(tmp_path / "victim")
    filled = await fill_table(("127.0.0.1", node.port), node.node_id, FILLED)
    try:
        assert len(node.protocol.router.contacts()) >= 20, "the victim's table did not fill"
        yield node
    finally:
        for transport in filled:
            transport.close()
        await node.stop()


async def test_unproven_source_gets_no_more_bytes_than_it_sent_on_every_procedure(
    victim: DhtNode,
) -> None:
    exchanges = await probe(("127.0.0.1", victim.port), victim.node_id)
    ratios = {ex.procedure: round(ex.ratio, 2) for ex in exchanges}
    assert {"ping", "find_node", "hello", "challenge", "prove", "find_value"} <= set(ratios)
    assert max(ratios.values()) <= 1.0, ratios
    # Not by saying nothing: ping, find_node (one contact fits) and hello are answered.
    answered = {ex.procedure for ex in exchanges if ex.received}
    assert {"ping", "find_node", "hello", "find_node padded"} <= answered, ratios


async def test_store_then_find_value_is_no_amplifier(victim: DhtNode) -> None:
    """The 87x-105x attack: park the largest value, then ask for it with 78 bytes."""
    transport, sock = await open_source("127.0.0.1")
    target = ("127.0.0.1", victim.port)
    try:
        me, key = os.urandom(20), os.urandom(20)
        store = datagram("store", [me, key, b"v" * LARGEST_VALUE])
        find = datagram("find_value", [me, key])
        assert transport is not None
        transport.sendto(store, target)
        await asyncio.sleep(0.2)
        transport.sendto(find, target)
        await asyncio.sleep(3 * FAST.rpc_timeout)
        back = sum(len(d) for d in sock.received)
        assert back <= len(find), f"{back} B back for {len(store)} + {len(find)} B"
        assert victim.dropped.get("unknown_rpc", 0) >= 2, victim.dropped
    finally:
        transport.close()
    with pytest.raises(NotImplementedError, match="no values"):
        await victim.server.set("key", "value")
    with pytest.raises(NotImplementedError, match="no values"):
        await victim.server.get("key")


async def test_unproven_requests_set_off_nothing_towards_their_source(victim: DhtNode) -> None:
    """A spoofed ping must not make the node challenge the victim of the spoof: the reply
    is the only datagram back, even after the handshakes would have run."""
    transport, sock = await open_source("127.0.0.1")
    target = ("127.0.0.1", victim.port)
    try:
        for _ in range(3):
            me = os.urandom(20)
            assert await sock.call(target, "ping", [me]) == victim.node_id
            assert isinstance(await sock.call(target, "find_node", [me, os.urandom(20)]), list)
        await asyncio.sleep(3 * FAST.rpc_timeout)
        assert len(sock.received) == 6, [d[:1] for d in sock.received]
        assert all(d[:1] == b"\x01" for d in sock.received)  # replies only, no requests
    finally:
        transport.close()


class _Recorder:
    """find_node requests one protocol sent (by message id) and the replies it got."""

    def __init__(self) -> None:
        self.requests: dict[bytes, int] = {}
        self.replies: dict[bytes, tuple[int, Any]] = {}


async def test_honest_newcomer_pads_its_lookups_and_still_finds_k_contacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node nobody has proven yet asks with padded find_node requests, so every peer
    answers it a whole list (k contacts) in a reply no larger than the request, and its
    lookups are exact. Catches unpadded requests (the lists would be trimmed to one
    contact) and padding too short for k contacts."""
    nodes: list[DhtNode] = []

    async def start(name: str) -> DhtNode:
        boot = [("127.0.0.1", nodes[0].port)] if nodes else []
        node = DhtNode(tmp_path / name, settings=NET_SETTINGS)
        await node.start("127.0.0.1", 0, boot)
        nodes.append(node)
        return node

    try:
        for i in range(NET_SIZE):
            await start(f"n{i}")
        recorders: dict[int, _Recorder] = {}
        made = RhizomeProtocol.connection_made
        received = RhizomeProtocol.datagram_received

        def connection_made(self: RhizomeProtocol, transport: Any) -> None:
            recorder = recorders.setdefault(id(self), _Recorder())
            send = transport.sendto

            def sendto(data: bytes, addr: Any = None) -> None:
                if data[0] == 0 and umsgpack.unpackb(data[HEADER:])[0] == "find_node":
                    recorder.requests[bytes(data[1:HEADER])] = len(data)
                send(data, addr)

            transport.sendto = sendto
            made(self, transport)

        def datagram_received(self: RhizomeProtocol, data: bytes, addr: Any) -> None:
            recorder = recorders.get(id(self))
            if recorder is not None and data[:1] == b"\x01":
                if bytes(data[1:HEADER]) in recorder.requests:
                    body = umsgpack.unpackb(data[HEADER:])
                    recorder.replies[bytes(data[1:HEADER])] = (len(data), body)
            received(self, data, addr)

        monkeypatch.setattr(RhizomeProtocol, "connection_made", connection_made)
        monkeypatch.setattr(RhizomeProtocol, "datagram_received", datagram_received)
        newcomer = await start("newcomer")
        recorder = recorders[id(newcomer.protocol)]
        ids = [n.node_id for n in nodes]
        for i in range(5):
            key = hashlib.sha1(f"term{i}".encode()).digest()
            found = [p.node_id for p in await newcomer.closest_nodes(key, 3)]
            want = sorted(ids, key=lambda n: int.from_bytes(n, "big") ^ int.from_bytes(key, "big"))
            assert found == want[:3]
        padded = {m: size for m, size in recorder.requests.items() if size > 100}
        assert padded, "the newcomer's first find_node requests were not padded"
        answered = [
            (size, *recorder.replies[m]) for m, size in padded.items() if m in recorder.replies
        ]
        assert len(answered) >= 3, answered
        for size, reply_size, contacts in answered:
            assert reply_size <= size
            assert len(contacts) == NET_SETTINGS.ksize, (size, reply_size, len(contacts))
    finally:
        for node in nodes:
            await node.stop()


async def test_a_peer_that_forgot_our_proof_says_so_and_we_prove_ourselves_again(
    tmp_path: Path,
) -> None:
    """A node that forgot our proof (LRU, or a restart on the same address) trims its
    answer to our unpadded find_node and marks it trimmed; we prove ourselves again, and
    the next answer is whole. Catches a requester that keeps believing itself proven and
    gets one contact per request from that peer for ever."""
    asker = await start_node(tmp_path / "asker")
    peer = await start_node(tmp_path / "peer", [("127.0.0.1", asker.port)])
    filled = await fill_table(("127.0.0.1", peer.port), peer.node_id, FILLED)
    try:
        assert asker.protocol.proven_at(peer.node_id) == ("127.0.0.1", peer.port)
        peer.protocol._proven.clear()  # forgotten, as after a restart
        ask, key = Node(peer.node_id, "127.0.0.1", peer.port), Node(os.urandom(20))
        ok, trimmed = await asker.protocol.call_find_node(ask, key)
        assert ok and len(trimmed) == 1, trimmed
        await asker.protocol.settle()
        assert peer.protocol.proven_at(asker.node_id) == ("127.0.0.1", asker.port)
        ok, whole = await asker.protocol.call_find_node(ask, key)
        assert ok and len(whole) == FAST.ksize, whole
    finally:
        for transport in filled:
            transport.close()
        await peer.stop()
        await asker.stop()
