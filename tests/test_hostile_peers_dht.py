"""Hostile peers at the DHT (UDP) layer and on the peer HTTP endpoints (issue #5).

Real UDP ``DhtNode``s in this process on loopback addresses (the whole 127/8 is loopback
on Linux, so 127.0.0.2 is "another machine" to the per-address limits), raw sockets for
the attackers, and one real ``rhizome node`` subprocess for the HTTP quotas. What
tests/test_dht_network.py already covers (the classic junk datagrams, forged hellos,
eviction after three explicit pings) is not repeated here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import umsgpack  # type: ignore[import-untyped]
from kademlia.node import Node

from rhizome.dht import DhtNode, DhtSettings, Identity, Peer
from rhizome.dht.protocol import JUNK_COST, PROOF_CONTEXT, REQUEST, RESPONSE, RhizomeProtocol
from rhizome.dht.quotas import DistinctCap, RateLimiter, address_range
from rhizome.dht.reflection import CHALLENGE_REPLY_BYTES, request_body
from rhizome.federation.shard_store import ShardStore
from rhizome.federation.wire import MAX_SHARD_BYTES, HeldRecord, sign_held, sign_push, verify_copies
from rhizome.index import SHARD_FIELDS, TermShard
from rhizome.index.bm25 import MAX_FIELD_WEIGHT
from rhizome.index.semantic import DIMENSIONS, vector_text
from rhizome.index.shard_codec import MAX_DOCS_PER_PUBLISHER, MAX_POSTINGS_PER_SHARD, Posting
from tests.conftest import NodeFactory, NodeHandle
from tests.test_network import dht_address

FAST = DhtSettings(rpc_timeout=0.3, silent_backoff=0.3)
WAIT_LIMIT = 5.0
POLL = 0.02


async def start_node(
    data_dir: Path,
    bootstrap: list[tuple[str, int]] | None = None,
    *,
    host: str = "127.0.0.1",
    settings: DhtSettings = FAST,
) -> DhtNode:
    node = DhtNode(data_dir, http_url=f"http://{data_dir.name}.test:8080", settings=settings)
    await node.start(host, 0, bootstrap or [])
    return node


async def wait_for(predicate: Callable[[], bool], limit: float = WAIT_LIMIT) -> None:
    # Polling: table changes happen inside the kademlia library, which signals nothing.
    for _ in range(int(limit / POLL)):
        if predicate():
            return
        await asyncio.sleep(POLL)
    raise AssertionError(f"condition not reached in {limit} s")


def request(name: str, args: list[Any], msg_id: bytes | None = None, pad_to: int = 0) -> bytes:
    return bytes([REQUEST]) + (msg_id or os.urandom(20)) + request_body(name, tuple(args), pad_to)


def table_entries(node: DhtNode) -> list[tuple[bytes, str, int]]:
    """Every (id, ip, port) in the routing table, replacement lists included."""
    out = []
    for bucket in node.protocol.router.buckets:
        for contact in [*bucket.nodes.values(), *bucket.replacement_nodes.values()]:
            out.append((contact.id, contact.ip, contact.port))
    return out


class RawPeer(asyncio.DatagramProtocol):
    """An attacker's UDP socket: sends what it is told, answers requests via ``answer``."""

    def __init__(self, answer: Callable[[str, list[Any]], Any] | None = None) -> None:
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None
        self.replies: dict[bytes, Any] = {}
        self.requests: list[tuple[str, list[Any]]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg_id, body = data[1:21], umsgpack.unpackb(data[21:])
        if data[0] == RESPONSE:
            self.replies[msg_id] = body
            return
        name, args = body
        self.requests.append((name, args))
        if self.answer is not None:
            reply = self.answer(name, args)
            if reply is not None:
                assert self.transport is not None
                self.transport.sendto(bytes([RESPONSE]) + msg_id + umsgpack.packb(reply), addr)

    def send(self, port: int, datagram: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(datagram, ("127.0.0.1", port))

    async def call(
        self, port: int, name: str, args: list[Any], wait: float = 0.5, pad_to: int = 0
    ) -> Any:
        """One request; the reply body, or raise TimeoutError after ``wait`` seconds."""
        msg_id = os.urandom(20)
        self.send(port, request(name, args, msg_id, pad_to))
        for _ in range(int(wait / 0.005)):
            if msg_id in self.replies:
                return self.replies.pop(msg_id)
            await asyncio.sleep(0.005)
        raise TimeoutError(name)


@pytest.fixture
async def raw_peers() -> AsyncIterator[Callable[..., Any]]:
    opened: list[asyncio.DatagramTransport] = []

    async def open_peer(host: str, answer: Callable[[str, list[Any]], Any] | None = None) -> Any:
        loop = asyncio.get_running_loop()
        transport, peer = await loop.create_datagram_endpoint(
            lambda: RawPeer(answer), local_addr=(host, 0)
        )
        opened.append(transport)
        return peer

    yield open_peer
    for transport in opened:
        transport.close()


# --- 1. junk datagrams ----------------------------------------------------------------


async def test_truncated_mutated_and_random_datagrams_are_counted_and_never_stop_service(
    tmp_path: Path, raw_peers: Callable[..., Any]
) -> None:
    """Every prefix of every valid request, byte flips of them, random bytes and wrong types
    for the newer RPCs. Catches: a parser that raises inside the loop (``error``), a handler
    that crashes on a type it did not expect (``handler_error``), a node that stops answering.
    """
    # No per-source limit here: every datagram must reach the parser.
    open_limit = DhtSettings(rpc_timeout=0.3, source_rate=1e9, source_burst=1e9)
    victim = await start_node(tmp_path / "victim", settings=open_limit)
    honest = await start_node(tmp_path / "honest", [("127.0.0.1", victim.port)])
    try:
        attacker = await raw_peers("127.0.0.9")
        me = os.urandom(20)
        valid = [
            request("ping", [me]),
            request("find_node", [me, os.urandom(20)]),
            request("find_value", [me, os.urandom(20)]),
            request("store", [me, os.urandom(20), b"value"]),
            request("hello", [me, b"record"]),
            request("challenge", [me, os.urandom(20)]),
            request("prove", [me, os.urandom(32), os.urandom(64)]),
        ]
        rng = random.Random(5)
        junk: list[bytes] = []
        for datagram in valid:
            junk += [datagram[:cut] for cut in range(len(datagram))]  # every truncation
            for _ in range(40):
                flipped = bytearray(datagram)
                flipped[rng.randrange(21, len(flipped))] ^= 1 << rng.randrange(8)
                junk.append(bytes(flipped))
        junk += [rng.randbytes(rng.randrange(1, 200)) for _ in range(300)]
        junk += [
            request("challenge", [me]),  # wrong arity
            request("prove", [me, b"k" * 32, b"s" * 64, b"extra"]),
            request("challenge", [me, "not bytes"]),
            request("challenge", [me, b"short"]),
            request("prove", [me, b"k" * 31, b"s" * 64]),
            request("prove", [me, b"k" * 32, 12345]),
            request("hello", [me, ["not", "bytes"]]),
            request("ping", [{"a": 1}]),
            request("find_node", [me, None]),
            bytes([REQUEST]) + b"m" * 20 + umsgpack.packb([7, [me]]),  # name not a str
            bytes([REQUEST]) + b"m" * 20 + umsgpack.packb(["ping", me]),  # args not a list
            bytes([REQUEST]) + b"m" * 20 + b"\xdd\xff\xff\xff\xff",  # array of 4 G items
            bytes([REQUEST]) + b"m" * 20 + b"\xdf\xff\xff\xff\xff",  # map of 4 G items
        ]
        for datagram in junk:
            attacker.send(victim.port, datagram)
        await wait_for(lambda: sum(victim.dropped.values()) >= len(junk) // 2)
        await asyncio.sleep(0.3)
        dropped = victim.dropped
        assert "error" not in dropped and "handler_error" not in dropped, dropped
        for reason in ("garbage", "bad_args", "bad_arity", "bad_proof", "bad_hello"):
            assert dropped.get(reason), (reason, dropped)
        # Still serving: an honest ping and a lookup through the victim.
        assert await honest.ping(Peer(victim.node_id, "127.0.0.1", victim.port))
        found = await honest.closest_nodes(victim.node_id, 1)
        assert found[0].node_id == victim.node_id
    finally:
        await honest.stop()
        await victim.stop()


# --- 2. floods from one address ----------------------------------------------------------

FLOOD_SCRIPT = r"""
import os, socket, sys, time
import umsgpack
port, rate, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.2", 0))
sock.setblocking(False)
body = umsgpack.packb(["ping", [os.urandom(20)]])
sent = replies = 0
start = time.monotonic()
def drain():
    global replies
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        replies += data[:1] == b"\x01"
while (elapsed := time.monotonic() - start) < seconds:
    due = int(elapsed * rate)
    while sent < due:
        try:
            sock.sendto(b"\x00" + sent.to_bytes(20, "big") + body, ("127.0.0.1", port))
        except BlockingIOError:
            break
        sent += 1
    drain()
    time.sleep(0.001)
end = time.monotonic() + 0.5
while time.monotonic() < end:
    drain()
    time.sleep(0.01)
print(sent, replies, flush=True)
"""
FLOOD_RATE = 20_000  # datagrams a second from one address
FLOOD_SECONDS = 3.0


async def test_a_flood_from_one_address_cannot_starve_the_others(tmp_path: Path) -> None:
    """127.0.0.2 sends 20,000 valid pings a second; 127.0.0.1 keeps pinging. Catches a node
    without per-source limits: it answers the whole flood (the flooder gets far more than
    burst + rate x time replies), nothing is counted as rate-limited, and honest pings
    queue behind the flood."""
    settings = DhtSettings(rpc_timeout=1.0)
    victim = await start_node(tmp_path / "victim", settings=settings)
    honest = await start_node(tmp_path / "honest", [("127.0.0.1", victim.port)], settings=settings)
    flood = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FLOOD_SCRIPT,
        str(victim.port),
        str(FLOOD_RATE),
        str(FLOOD_SECONDS),
        stdout=subprocess.PIPE,
    )
    try:
        peer = Peer(victim.node_id, "127.0.0.1", victim.port)
        answered = failed = 0
        started = time.monotonic()
        while time.monotonic() - started < FLOOD_SECONDS:
            if await honest.ping(peer):
                answered += 1
            else:
                failed += 1
            await asyncio.sleep(0.01)
        out, _ = await asyncio.wait_for(flood.communicate(), 10)
        sent, replies = (int(x) for x in out.split())
        dropped = victim.dropped
        print(
            f"flood: sent {sent}, answered {replies}, rate_limited {dropped['rate_limited']}; "
            f"honest pings: {answered} answered, {failed} failed"
        )
        assert sent > 0.5 * FLOOD_RATE * FLOOD_SECONDS  # the flood really happened
        allowance = settings.source_burst + settings.source_rate * (FLOOD_SECONDS + 1.0)
        assert replies <= allowance
        # The excess is dropped unparsed and counted (the kernel may drop some first).
        assert dropped["rate_limited"] >= 0.5 * (sent - allowance)
        assert answered >= 20 and failed <= 0.05 * (answered + failed)
        assert len(victim.protocol.limiter) <= 4  # two sources, bounded table
    finally:
        if flood.returncode is None:
            flood.kill()
            await flood.wait()
        await honest.stop()
        await victim.stop()


async def test_a_misbehaving_source_is_ignored_until_its_debt_is_repaid(
    tmp_path: Path, raw_peers: Callable[..., Any]
) -> None:
    """Junk costs JUNK_COST tokens: after a burst of garbage even the sender's valid pings
    go unanswered for a while, other addresses are served, and it is forgiven later.
    Catches a limiter that charges junk like any datagram (the pinger would be answered)."""
    settings = DhtSettings(rpc_timeout=0.3, source_rate=100.0, source_burst=100.0)
    victim = await start_node(tmp_path / "victim", settings=settings)
    try:
        rogue = await raw_peers("127.0.0.4")
        bystander = await raw_peers("127.0.0.5")
        me = os.urandom(20)
        assert await rogue.call(victim.port, "ping", [me]) == victim.node_id
        junk = int(2 * settings.source_burst / JUNK_COST) + 1
        for _ in range(junk):
            rogue.send(victim.port, b"\x00" * 30)
        # The first few are parsed (garbage); once in debt the rest are not even parsed.
        await wait_for(
            lambda: victim.dropped.get("garbage", 0) + victim.dropped.get("rate_limited", 0) >= junk
        )
        assert victim.dropped["garbage"] <= settings.source_burst / JUNK_COST + 1
        with pytest.raises(TimeoutError):
            await rogue.call(victim.port, "ping", [me], wait=0.3)
        assert await bystander.call(victim.port, "ping", [os.urandom(20)]) == victim.node_id
        # Debt of at most one burst: repaid after burst / rate = 1 s.
        await asyncio.sleep(settings.source_burst / settings.source_rate + 0.5)
        assert await rogue.call(victim.port, "ping", [me]) == victim.node_id
    finally:
        await victim.stop()


def test_rate_limiter_memory_is_bounded_and_keys_group_ipv6_by_64() -> None:
    """Catches an unbounded bucket table (one entry per spoofed source forever) and IPv6
    keys per address (a /64 holds 2^64 of them)."""
    limiter = RateLimiter(10.0, 5.0, max_keys=100)
    for i in range(10_000):
        limiter.allow(f"10.{i >> 8 & 255}.{i & 255}.1")
    assert len(limiter) == 100
    clock = [0.0]
    limiter = RateLimiter(10.0, 5.0, clock=lambda: clock[0])
    assert sum(limiter.allow("a") for _ in range(20)) == 5
    clock[0] += 0.5
    assert sum(limiter.allow("a") for _ in range(20)) == 5
    assert limiter.retry_after("a") == 1
    assert address_range("2001:db8:1:2:aaaa::1", 32, 64) == "2001:db8:1:2::/64"
    assert address_range("::ffff:10.1.2.3", 24, 64) == "10.1.2.0/24"
    cap = DistinctCap(2, 10.0, clock=lambda: clock[0])
    assert cap.admit("k", "p1") and cap.admit("k", "p2") and cap.admit("k", "p1")
    assert not cap.admit("k", "p3") and cap.admit("other", "p3")
    clock[0] += 11.0
    assert cap.admit("k", "p3")


async def test_source_table_is_an_lru_with_a_cap_on_real_sockets(
    tmp_path: Path, raw_peers: Callable[..., Any]
) -> None:
    """Twenty source addresses, a cap of eight buckets: the table never grows past it and
    every source is still served. Catches a limiter keyed per address without eviction."""
    victim = await start_node(tmp_path / "victim", settings=DhtSettings(max_sources=8))
    try:
        for i in range(20):
            peer = await raw_peers(f"127.0.3.{i + 1}")
            assert await peer.call(victim.port, "ping", [os.urandom(20)]) == victim.node_id
            assert len(victim.protocol.limiter) <= 8
    finally:
        await victim.stop()


# --- 3. forged node ids --------------------------------------------------------------------


async def test_forged_chosen_and_replayed_ids_never_enter_the_routing_table(
    tmp_path: Path, raw_peers: Callable[..., Any]
) -> None:
    """An attacker claims ids from its own address: one it chose, an honest node's id (with
    that node's genuine signed hello replayed), a proof under its own key, a forged
    signature, a proof replayed from an earlier challenge, and silence. None of them may
    enter the table at the attacker's address. Catches plain Kademlia, which adds any id a
    datagram asserts, and a check of the hello alone (a replayed hello is genuine)."""
    victim = await start_node(tmp_path / "victim")
    alice = await start_node(tmp_path / "alice", [("127.0.0.1", victim.port)])
    try:
        assert (alice.node_id, "127.0.0.1", alice.port) in table_entries(victim)
        mallory = Identity.generate()
        alice_hello = alice.protocol.own_contact_record()
        alice_proofs: list[Any] = []
        # Capture a genuine proof by alice (for a nonce of mallory's choosing).
        spy = await raw_peers("127.0.0.7")
        alice_proofs.append(
            await spy.call(
                alice.port, "challenge", [victim.node_id, b"n" * 20], pad_to=CHALLENGE_REPLY_BYTES
            )
        )

        strategies: dict[str, Callable[[str, list[Any]], Any]] = {
            "own_key": lambda name, args: (
                [mallory.public_key, mallory.sign(PROOF_CONTEXT + args[1] + args[0]), b"b" * 20]
                if name == "challenge"
                else None
            ),
            "forged_sig": lambda name, args: (
                [alice.identity.public_key, os.urandom(64), b"b" * 20]
                if name == "challenge"
                else None
            ),
            "replayed_proof": lambda name, args: alice_proofs[0] if name == "challenge" else None,
            "silent": lambda name, args: None,
        }
        chosen_id = bytes(19) + b"\x01"  # right next to the all-zero key
        attackers = []
        for i, (label, answer) in enumerate(strategies.items()):
            attacker = await raw_peers(f"127.0.0.{20 + i}", answer)
            attackers.append((label, attacker))
            # A chosen id, alice's id with her genuine hello, and alice's id in a ping.
            await attacker.call(victim.port, "ping", [chosen_id])
            assert await attacker.call(victim.port, "hello", [alice.node_id, alice_hello])
            await attacker.call(victim.port, "ping", [alice.node_id])
        # A proof nobody asked for, under a key that does not match the id.
        stray = attackers[0][1]
        assert (
            await stray.call(
                victim.port, "prove", [chosen_id, mallory.public_key, mallory.sign(b"x")]
            )
            is False
        )
        # Those requests set off nothing towards their unproven sources (no reflection): the
        # victim challenges an address when it meets it in its own lookups, as here, once
        # with alice's id (whose proof one of them replays) and once with the chosen id.
        for claimed in (alice.node_id, chosen_id):
            for _, attacker in attackers:
                ip, port = attacker.transport.get_extra_info("sockname")[:2]
                attacker.requests.clear()
                victim.protocol.welcome_if_new(Node(claimed, ip, port))
            await wait_for(
                lambda: all(any(r[0] == "challenge" for r in a.requests) for _, a in attackers)
            )
            await victim.protocol.settle()
        await asyncio.sleep(3 * FAST.rpc_timeout)  # the silent one's challenge times out
        entries = table_entries(victim)
        attacker_ips = {f"127.0.0.{20 + i}" for i in range(len(strategies))}
        assert not [e for e in entries if e[1] in attacker_ips], entries
        assert chosen_id not in {e[0] for e in entries}
        # Alice is still where she really is.
        assert victim.protocol.router.find_contact(alice.node_id).port == alice.port
        assert victim.dropped["bad_proof"] >= 4, victim.dropped  # 3 bad answers + the stray
        # Positive control: an honest node with a real key gets in.
        bob = await start_node(tmp_path / "bob", [("127.0.0.1", victim.port)], host="127.0.0.30")
        try:
            assert victim.protocol.router.find_contact(bob.node_id) is not None
        finally:
            await bob.stop()
    finally:
        await alice.stop()
        await victim.stop()


# --- 4. routing-table diversity ------------------------------------------------------------

SYBILS = 90
TARGET_BUCKETS = 5


def identity_in(bucket: Any) -> Identity:
    """A fresh key whose node id falls in ``bucket``'s range (ids are sha1 of keys)."""
    while True:
        identity = Identity.generate()
        if bucket.range[0] <= int.from_bytes(identity.node_id, "big") <= bucket.range[1]:
            return identity


async def test_one_address_range_cannot_fill_a_bucket(tmp_path: Path) -> None:
    """90 sybils with their own keys on 127.0.0.3 join first and fill buckets; then two
    honest nodes per full bucket join, each from its own /24 (127.10.0.1, 127.11.0.1, ...).
    Both get in and the sybils keep at most range_cap slots there, even after they talk to
    the victim again. Catches plain Kademlia buckets, which keep the sybils that came first
    and leave honest newcomers as replacements for as long as the sybils answer."""
    settings = DhtSettings(ksize=4, rpc_timeout=0.3, range_cap=2)
    victim = await start_node(tmp_path / "victim", settings=settings)
    nodes: list[DhtNode] = []
    try:
        boot = [("127.0.0.1", victim.port)]
        for i in range(SYBILS):
            nodes.append(
                await start_node(tmp_path / f"s{i}", boot, host="127.0.0.3", settings=settings)
            )
        sybils = list(nodes)
        await victim.protocol.settle()
        router = victim.protocol.router
        # Full and past splitting (section 4.2 of the paper): only diversity makes room.
        full = [
            b
            for b in router.buckets
            if len(b) == settings.ksize and not b.has_in_range(router.node) and b.depth() % 5 == 0
        ][:TARGET_BUCKETS]
        assert full, [len(b) for b in router.buckets]
        honest: list[DhtNode] = []
        for b_index, bucket in enumerate(full):
            for j in range(2):
                node = DhtNode(
                    tmp_path / f"h{b_index}-{j}",
                    settings=settings,
                    identity=identity_in(bucket),
                    http_url="http://honest.test:8080",
                )
                await node.start(f"127.{10 + 2 * b_index + j}.0.1", 0, boot)
                honest.append(node)
                nodes.append(node)
        # The sybils keep talking to the victim: they must not win their slots back.
        for sybil in sybils:
            await sybil.ping(Peer(victim.node_id, "127.0.0.1", victim.port))
        await victim.protocol.settle()
        present = {c.id for c in router.contacts()}
        assert {n.node_id for n in honest} <= present
        # Wherever a newcomer from another range is still waiting, the sybils are at the cap.
        for bucket in router.buckets:
            waiting = [c for c in bucket.replacement_nodes.values() if c.ip != "127.0.0.3"]
            sybils_here = sum(1 for c in bucket.get_nodes() if c.ip == "127.0.0.3")
            assert not waiting or sybils_here <= settings.range_cap, (len(bucket), sybils_here)
        assert router.displaced >= len(full)
        kept = sum(1 for c in router.contacts() if c.ip == "127.0.0.3")
        print(
            f"{len(full)} buckets full of sybils; after {len(honest)} honest joined: "
            f"sybils in table {kept}, displaced {router.displaced}"
        )
    finally:
        for node in nodes:
            await node.stop()
        await victim.stop()


def _node(node_id: bytes) -> Any:
    from kademlia.node import Node

    return Node(node_id)


# --- 6. slow and silent peers --------------------------------------------------------------


def _slow_down(node: DhtNode, delay: float) -> list[tuple[str, int]]:
    """Make ``node`` answer ``delay`` s late; returns the list of senders it heard from."""
    protocol: RhizomeProtocol = node.protocol
    heard: list[tuple[str, int]] = []
    original = protocol.datagram_received
    loop = asyncio.get_running_loop()

    def late(data: bytes, addr: tuple[str, int]) -> None:
        heard.append(addr)
        loop.call_later(delay, original, data, addr)

    protocol.datagram_received = late  # type: ignore[method-assign]
    return heard


async def test_a_silent_peer_costs_lookups_one_timeout_then_is_evicted_and_skipped(
    tmp_path: Path,
) -> None:
    """A peer that stops answering while the others still list it: the asker's lookups each
    pay at most one timeout, the peer leaves the table after max_failures timeouts, and
    during its back-off no datagram goes to it although others keep naming it. Catches a
    node that asks a silent peer again on every lookup (each would pay a full timeout)."""
    settings = DhtSettings(rpc_timeout=0.3, silent_backoff=0.5)
    nodes = [await start_node(tmp_path / "n0", settings=settings)]
    try:
        for i in range(1, 7):
            nodes.append(
                await start_node(
                    tmp_path / f"n{i}", [("127.0.0.1", nodes[0].port)], settings=settings
                )
            )
        silent = await start_node(
            tmp_path / "silent", [("127.0.0.1", nodes[0].port)], settings=settings
        )
        nodes.append(silent)
        asker = nodes[1]
        await wait_for(lambda: asker.protocol.router.find_contact(silent.node_id) is not None)
        heard = _slow_down(silent, 30.0)
        slow_lookups = 0
        started = time.monotonic()
        while asker.protocol.router.find_contact(silent.node_id) is not None:
            assert time.monotonic() - started < 10.0, "the silent peer was never evicted"
            t0 = time.monotonic()
            await asker.closest_nodes(silent.node_id, 3)
            took = time.monotonic() - t0
            assert took < 2 * settings.rpc_timeout + 0.3, took
            slow_lookups += took >= settings.rpc_timeout * 0.9
            await asyncio.sleep(0.05)
        evicted_after = time.monotonic() - started
        assert slow_lookups <= settings.max_failures, slow_lookups
        # Others still name it, but the asker leaves it alone during its back-off.
        assert any(n.protocol.router.find_contact(silent.node_id) for n in nodes[2:7])
        from_asker = sum(1 for a in heard if a[1] == asker.port)
        t0 = time.monotonic()
        for _ in range(10):
            found = await asker.closest_nodes(silent.node_id, 3)
            assert silent.node_id not in {p.node_id for p in found}
        quiet = time.monotonic() - t0
        assert sum(1 for a in heard if a[1] == asker.port) == from_asker
        print(
            f"silent peer: evicted after {evicted_after:.2f} s, {slow_lookups} lookups paid a "
            f"timeout; 10 lookups during its back-off took {quiet:.3f} s"
        )
        assert quiet < settings.rpc_timeout  # not one timeout paid
    finally:
        for node in nodes:
            await node.stop()


async def test_a_lookup_through_slow_peers_ends_at_its_deadline(tmp_path: Path) -> None:
    """Every peer answers just inside the RPC timeout, so each round of a lookup is slow;
    the lookup still returns within lookup_timeout with what it has. Catches a lookup
    bounded only per RPC (rounds x timeout)."""
    settings = DhtSettings(rpc_timeout=0.8, lookup_timeout=0.5)
    nodes = [await start_node(tmp_path / "n0", settings=settings)]
    try:
        for i in range(1, 9):
            nodes.append(
                await start_node(
                    tmp_path / f"n{i}", [("127.0.0.1", nodes[0].port)], settings=settings
                )
            )
        asker = nodes[0]
        for node in nodes[1:]:
            _slow_down(node, 0.6)  # two rounds at least: 1.2 s without a deadline
        t0 = time.monotonic()
        found = await asker.closest_nodes(hashlib.sha1(b"slow").digest(), 3)
        took = time.monotonic() - t0
        print(f"lookup through slow peers: {took:.2f} s, {len(found)} found")
        assert found
        assert took < settings.lookup_timeout + 0.4
    finally:
        for node in nodes:
            await node.stop()


# --- 5. quotas on the shard store ------------------------------------------------------------


KEY = Identity.generate()  # a publisher's key for shards put straight into a store


def _shard(
    term: str, weight: float = 1.0, postings: int = 1, *, df: int = 0, n_docs: int = 100
) -> TermShard:
    """A shard as a publisher claims it (weights not clamped: that is the holder's job)."""
    fields = len(SHARD_FIELDS)
    return TermShard(
        term=term,
        df=df or postings,
        n_docs=n_docs,
        field_df=(df or postings,) * fields,
        postings=tuple(
            Posting(f"https://x.test/{term}/{i}", "t", (weight,) * fields) for i in range(postings)
        ),
    )


async def test_shard_store_quota_per_publisher(tmp_path: Path) -> None:
    """A publisher at its term quota can refresh what it holds but not add terms; others
    are unaffected; expired terms free the quota. Catches an unbounded store (one key could
    fill the holder's disk) and a quota that also blocks refreshes."""
    store = ShardStore(tmp_path / "s.sqlite3", max_terms_per_publisher=100)
    await store.open()
    try:
        far = time.time() + 3600

        def held(*shards: TermShard, expires_at: float = far) -> list[HeldRecord]:
            return [replace(h, expires_at=expires_at) for h in sign_held(KEY, shards, far)]

        async def put(publisher: str, records: list[HeldRecord]) -> int:
            return (await store.put(publisher, records)).stored

        assert await put("p1", held(*(_shard(f"t{i}") for i in range(80)))) == 80
        assert await put("p1", held(*(_shard(f"u{i}") for i in range(50)))) == 20
        assert store.over_quota == 30
        # Refreshing held terms is always allowed; a new one is not.
        assert await put("p1", held(_shard("t1", 2.0), _shard("brand-new"))) == 1
        assert (await store.get(["t1"]))["t1"][0].shard.postings[0].weights[0] == 2.0
        assert await put("p2", held(*(_shard(f"u{i}") for i in range(50)))) == 50
        # Expired rows do not count.
        gone = time.time() - 1
        assert await put("p3", held(*(_shard(f"v{i}") for i in range(100)), expires_at=gone)) == 100
        assert await put("p3", held(*(_shard(f"w{i}") for i in range(100)))) == 100
    finally:
        await store.close()


async def test_a_lying_shard_is_stored_within_the_bounds(tmp_path: Path) -> None:
    """Claimed weight 1e9, 500 postings and a document count of 1e15: stored as the clamp,
    50 postings and MAX_DOCS_PER_PUBLISHER. Catches a store that trusts the numbers (a liar
    would top every popular term and skew every IDF)."""
    store = ShardStore(tmp_path / "s.sqlite3")
    await store.open()
    try:
        liar = _shard("python", weight=1e9, postings=500, df=10**15, n_docs=10**15)
        await store.put("liar", sign_held(KEY, [liar], time.time() + 60))
        ((copy,),) = (await store.get(["python"])).values()
        stored = copy.shard
        assert len(stored.postings) == MAX_POSTINGS_PER_SHARD
        assert all(w <= MAX_FIELD_WEIGHT for p in stored.postings for w in p.weights)
        assert stored.n_docs == MAX_DOCS_PER_PUBLISHER and stored.df <= stored.n_docs
        assert max(stored.field_df) <= stored.n_docs
    finally:
        await store.close()


# --- 5. quotas on the peer HTTP endpoints (one real node) ------------------------------------


@pytest.fixture(scope="module")
def peer_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHandle]:
    factory = NodeFactory(tmp_path_factory.mktemp("quotas"))
    try:
        node = factory.start("--dht", "127.0.0.1:0", "--max-depth", "0")
        dht_address(node)
        yield node
    finally:
        factory.close()


def call_http(
    node: NodeHandle,
    method: str,
    path: str,
    *,
    source: str,
    body: bytes | None = None,
    content_type: str = "application/octet-stream",
) -> tuple[int, dict[str, str], Any]:
    """One request from a chosen loopback source address (urllib cannot pick one)."""
    host, port = node.url.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        data = resp.read()
        return (
            resp.status,
            {k.lower(): v for k, v in resp.getheaders()},
            json.loads(data or b"null"),
        )
    finally:
        conn.close()


def signed_batch(identity: Identity, shards: dict[str, Any]) -> bytes:
    return sign_push(identity, shards.items(), time.time() + 3600)


def _raw_shard(term: str, weight: float, postings: int) -> list[Any]:
    return _shard(term, weight, postings).to_json()


def test_push_flood_from_one_address_gets_429_others_still_push(peer_node: NodeHandle) -> None:
    """One address pushes as fast as it can: after the burst it gets 429 with Retry-After,
    while another address still pushes. Catches an endpoint without per-address quotas."""
    from rhizome.api.peer_routes import PUSH_BURST

    publisher = Identity.generate()
    batch = signed_batch(publisher, {"floodterm": _raw_shard("floodterm", 1.0, 1)})
    statuses = []
    for _ in range(int(PUSH_BURST) + 20):
        status, headers, _ = call_http(
            peer_node, "POST", "/api/peer/shards", source="127.0.0.11", body=batch
        )
        statuses.append(status)
        if status == 429:
            assert int(headers["retry-after"]) >= 1
    ok = statuses.count(200)
    assert PUSH_BURST <= ok <= PUSH_BURST + 10, statuses
    assert statuses[-1] == 429
    status, _, body = call_http(
        peer_node, "POST", "/api/peer/shards", source="127.0.0.12", body=batch
    )
    assert status == 200 and body == {"stored": 1}


def test_an_address_sending_bad_batches_is_held_off_sooner(peer_node: NodeHandle) -> None:
    """Forged batches cost BAD_PUSH_COST tokens each: the sender meets 429 after about
    PUSH_BURST / BAD_PUSH_COST refusals, not PUSH_BURST. Catches a quota that charges a
    forgery like an honest batch (a forger could keep the holder verifying signatures)."""
    from rhizome.api.peer_routes import BAD_PUSH_COST, PUSH_BURST

    forged = bytearray(signed_batch(Identity.generate(), {"t": _shard("t").to_json()}))
    forged[-70] ^= 1  # inside the signed part
    statuses = []
    for _ in range(int(PUSH_BURST)):
        status, _, _ = call_http(
            peer_node, "POST", "/api/peer/shards", source="127.0.0.17", body=bytes(forged)
        )
        statuses.append(status)
        if status == 429:
            break
    assert statuses[-1] == 429
    assert statuses.count(400) <= PUSH_BURST / BAD_PUSH_COST + 2, statuses


def test_one_address_cannot_push_for_unboundedly_many_publishers(peer_node: NodeHandle) -> None:
    """Keys are free: an address pushing for a ninth publisher is refused, its first eight
    still push, and another address may push for the ninth. Catches a holder that lets one
    machine multiply its voice by minting keys."""
    from rhizome.api.peer_routes import MAX_PUBLISHERS_PER_ADDRESS

    keys = [Identity.generate() for _ in range(MAX_PUBLISHERS_PER_ADDRESS + 1)]
    for key in keys[:-1]:
        status, _, _ = call_http(
            peer_node,
            "POST",
            "/api/peer/shards",
            source="127.0.0.13",
            body=signed_batch(key, {"sybilterm": _raw_shard("sybilterm", 1.0, 1)}),
        )
        assert status == 200
    extra = signed_batch(keys[-1], {"sybilterm": _raw_shard("sybilterm", 1.0, 1)})
    status, headers, body = call_http(
        peer_node, "POST", "/api/peer/shards", source="127.0.0.13", body=extra
    )
    assert status == 429 and "publishers" in body["error"] and int(headers["retry-after"]) > 60
    again = signed_batch(keys[0], {"sybilterm": _raw_shard("sybilterm", 2.0, 1)})
    assert (
        call_http(peer_node, "POST", "/api/peer/shards", source="127.0.0.13", body=again)[0] == 200
    )
    assert (
        call_http(peer_node, "POST", "/api/peer/shards", source="127.0.0.14", body=extra)[0] == 200
    )
    status, _, copies = call_http(
        peer_node, "GET", "/api/peer/shards?terms=sybilterm", source="127.0.0.14"
    )
    assert status == 200 and len(copies["sybilterm"]) == MAX_PUBLISHERS_PER_ADDRESS + 1


def test_claimed_top_scores_count_as_the_clamp(peer_node: NodeHandle) -> None:
    """A push claiming weight 1e9 on a popular term and 500 postings: what the holder serves
    parses (as every querying node parses it) to the bound, MAX_FIELD_WEIGHT, and 50
    postings, so the liar cannot outrank an honest page beyond the largest weight tantivy
    could produce; a shard over MAX_SHARD_BYTES is not stored at all. Catches a reader that
    trusts the claims and a holder that stores unbounded lines."""
    liar = Identity.generate()
    huge = _raw_shard("huge", 1.0, 1)
    huge[3] = [[f"https://x.test/{'p' * 200}/{i}", "t", [1.0] * 5, [1] * 5] for i in range(400)]
    assert len(json.dumps(huge)) > MAX_SHARD_BYTES
    batch = signed_batch(liar, {"popular": _raw_shard("popular", 1e9, 500), "huge": huge})
    status, _, answer = call_http(
        peer_node, "POST", "/api/peer/shards", source="127.0.0.15", body=batch
    )
    assert status == 200 and answer == {"stored": 1}
    _, _, copies = call_http(
        peer_node, "GET", "/api/peer/shards?terms=popular,huge", source="127.0.0.15"
    )
    assert copies["huge"] == []
    ((copy,),) = [verify_copies("popular", map(base64.b64decode, copies["popular"]), time.time())]
    assert copy.publisher == liar.node_id.hex()
    shard = copy.shard
    assert len(shard.postings) == MAX_POSTINGS_PER_SHARD
    weights = {w for p in shard.postings for w in p.weights}
    assert max(weights) <= MAX_FIELD_WEIGHT and max(weights) >= MAX_FIELD_WEIGHT - 1e-3


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type"),
    [
        ("GET", "/api/peer/search?q=anything", None, "text/plain"),
        ("POST", "/api/peer/urls", b'{"urls": []}', "application/json"),
        ("GET", "/api/peer/shards?terms=x", None, "text/plain"),
    ],
)
def test_peer_search_urls_and_lookups_have_per_address_limits(
    peer_node: NodeHandle, method: str, path: str, body: bytes | None, content_type: str
) -> None:
    """Hammering one peer endpoint from one address ends in 429 + Retry-After; another
    address is still served. Catches endpoints any single peer can monopolise."""
    source = f"127.0.1.{abs(hash(path)) % 200 + 1}"
    statuses = []
    for _ in range(2000):
        status, headers, _ = call_http(
            peer_node, method, path, source=source, body=body, content_type=content_type
        )
        statuses.append(status)
        if status == 429:
            assert int(headers["retry-after"]) >= 1
            break
    assert statuses[-1] == 429 and statuses.count(200) >= 50, statuses[:5]
    other = call_http(
        peer_node, method, path, source="127.0.2.1", body=body, content_type=content_type
    )
    assert other[0] == 200


def test_a_query_vector_that_is_not_one_is_a_clear_400(peer_node: NodeHandle) -> None:
    """A querier's ``meaning`` parameter is a vector in its wire form or refused with a
    reason; the node answers the next, well-formed request as usual."""
    good = vector_text(np.full(DIMENSIONS, 0.0625, dtype=np.float32))
    for bad in ("x", good[:-1], vector_text(np.full(DIMENSIONS, np.inf, dtype=np.float32))):
        status, _, answer = call_http(
            peer_node, "GET", f"/api/peer/search?q=comet&meaning={bad}", source="127.0.3.1"
        )
        assert status == 400 and "query vector" in json.dumps(answer), (bad, answer)
    status, _, answer = call_http(
        peer_node, "GET", f"/api/peer/search?q=comet&meaning={good}", source="127.0.3.1"
    )
    assert status == 200 and "results" in answer


def test_udp_junk_is_counted_in_the_nodes_status(peer_node: NodeHandle) -> None:
    """Junk sent at a real node's UDP port shows up in /api/status (network.dht_dropped),
    and the node keeps serving. Catches counters that exist but are never exposed."""
    host, port = dht_address(peer_node).split(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.16", 0))
        for datagram in (b"\x00" * 30, b"\x02garbage" * 5, request("ping", []), b"\x00" * 9000):
            sock.sendto(datagram, (host, int(port)))
        sock.settimeout(2.0)
        sock.sendto(request("ping", [os.urandom(20)], b"q" * 20), (host, int(port)))
        reply = sock.recv(65536)
    assert reply[:21] == bytes([RESPONSE]) + b"q" * 20
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        dropped = peer_node.status()["network"]["dht_dropped"]
        if dropped.get("garbage", 0) >= 2 and dropped.get("bad_arity") and dropped.get("oversized"):
            return
        time.sleep(0.1)
    raise AssertionError(f"junk not counted: {dropped}")
