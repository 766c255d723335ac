"""Is a node a DDoS reflector? The worst reply/request byte ratio of every UDP procedure.

An attacker spoofs a victim's address as the source of small datagrams; whatever the node
sends back lands on the victim. So this probe plays an unproven source: a fresh socket per
procedure, a random claimed id, well-formed requests exactly as kademlia's rpcudp encodes
them (0x00, 20-byte message id, msgpack ``[name, args]``), never padded. It counts every
byte the node sends to that socket within a window after each request (the reply and
anything the request set off, such as a challenge) and divides by the bytes sent. 1.0 or
less: no amplification.

Before probing, ``fill_table`` gives the node ``count`` proven contacts (real Ed25519
identities on 127.0.N.1, one /24 each so the range cap keeps them all), so ``find_node``
has k contacts to hand out.

    python3 bench/reflector_probe.py            # starts a real `rhizome node` subprocess
    python3 bench/reflector_probe.py --dht 127.0.0.1:PORT   # probes a running node

A later red-team bench can ``from bench.reflector_probe import fill_table, probe``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import umsgpack  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rhizome.dht.contacts import make_contact_record
from rhizome.dht.identity import Identity
from rhizome.dht.protocol import PROOF_CONTEXT

REQUEST, RESPONSE = 0x00, 0x01
ID_BYTES = 20
REPLY_WAIT = 0.5  # seconds to wait for a reply (loopback answers in < 5 ms)
GRACE = 0.25  # seconds after the reply for whatever else the request set off
LARGEST_VALUE = 8137  # the largest value a store request carries under rpcudp's 8 KiB
CHALLENGE_PAD = 144  # a padded challenge: the size of the proof it asks for
FULL_FIND_NODE = 864  # a find_node request padded to the largest reply of 20 IPv4 contacts
FILL_CONTACTS = 24  # more than k=20, so find_node can answer with a full list
FILL_SETTLE = 1.5  # seconds for the node to take the filled contacts in


def datagram(name: str, args: list[Any], msg_id: bytes | None = None) -> bytes:
    return bytes([REQUEST]) + (msg_id or os.urandom(ID_BYTES)) + umsgpack.packb([name, args])


class _Socket(asyncio.DatagramProtocol):
    """One UDP source: records every datagram it receives, answers via ``answer``."""

    def __init__(self, answer: Callable[[str, list[Any]], Any] | None = None) -> None:
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None
        self.received: list[bytes] = []
        self.replies: dict[bytes, Any] = {}
        self.arrived = asyncio.Event()  # set on every datagram

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)
        self.arrived.set()
        try:
            body = umsgpack.unpackb(data[1 + ID_BYTES :])
        except Exception:
            return
        if data[:1] == bytes([RESPONSE]):
            self.replies[data[1 : 1 + ID_BYTES]] = body
        elif self.answer is not None and isinstance(body, list) and len(body) == 2:
            reply = self.answer(str(body[0]), list(body[1]))
            if reply is not None and self.transport is not None:
                self.transport.sendto(
                    bytes([RESPONSE]) + data[1 : 1 + ID_BYTES] + umsgpack.packb(reply), addr
                )

    async def call(self, target: tuple[str, int], name: str, args: list[Any]) -> Any:
        """Send one request; its reply body, or None after ``REPLY_WAIT``."""
        msg_id = os.urandom(ID_BYTES)
        assert self.transport is not None
        self.transport.sendto(datagram(name, args, msg_id), target)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REPLY_WAIT):
                while msg_id not in self.replies:
                    self.arrived.clear()
                    await self.arrived.wait()
        return self.replies.pop(msg_id, None)


async def open_source(
    host: str, answer: Callable[[str, list[Any]], Any] | None = None
) -> tuple[asyncio.DatagramTransport, _Socket]:
    loop = asyncio.get_running_loop()
    transport, sock = await loop.create_datagram_endpoint(
        lambda: _Socket(answer), local_addr=(host, 0)
    )
    return transport, sock


@dataclass(frozen=True, slots=True)
class Exchange:
    procedure: str
    sent: int  # bytes of the request datagram(s)
    received: int  # bytes the node sent to the source in the window after them

    @property
    def ratio(self) -> float:
        return self.received / self.sent


async def _exchange(sock: _Socket, target: tuple[str, int], name: str, args: list[Any]) -> Exchange:
    before = len(sock.received)
    request = datagram(name, args)
    assert sock.transport is not None
    sock.transport.sendto(request, target)
    sock.arrived.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(sock.arrived.wait(), REPLY_WAIT)
    await asyncio.sleep(GRACE)
    return Exchange(name, len(request), sum(len(d) for d in sock.received[before:]))


def _requests(node_id: bytes) -> list[tuple[str, list[Any], Identity]]:
    """Each procedure's well-formed, unpadded request from a fresh unproven identity."""
    out = []
    for name in ("stun", "ping", "find_node", "find_value", "hello", "challenge", "prove"):
        me = Identity.generate()
        args: dict[str, list[Any]] = {
            "stun": [],
            "ping": [me.node_id],
            # Our own id as the key: the node answers with its k closest contacts to it.
            "find_node": [me.node_id, node_id],
            "find_value": [me.node_id, os.urandom(ID_BYTES)],
            "hello": [me.node_id, make_contact_record(me, None, now=time.time())],
            "challenge": [me.node_id, os.urandom(ID_BYTES)],
            "prove": [me.node_id, me.public_key, me.sign(b"x")],
        }
        out.append((name, args[name], me))
    return out


async def probe(target: tuple[str, int], node_id: bytes, host: str = "127.0.0.1") -> list[Exchange]:
    """One unpadded request per procedure from a fresh source each, then the old attack:
    ``store`` of the largest value, and ``find_value`` of it (its ratio counted alone)."""
    found: list[Exchange] = []
    for name, args, _ in _requests(node_id):
        transport, sock = await open_source(host)
        try:
            found.append(await _exchange(sock, target, name, args))
        finally:
            transport.close()
    transport, sock = await open_source(host)
    try:
        # What an honest newcomer sends: padded, it gets a full list, still no more bytes.
        me = os.urandom(ID_BYTES)
        pad = b"\0" * (FULL_FIND_NODE - len(datagram("find_node", [me, node_id, b"\0" * 256])))
        exchange = await _exchange(sock, target, "find_node", [me, node_id, b"\0" * 256 + pad])
        found.append(Exchange("find_node padded", exchange.sent, exchange.received))
    finally:
        transport.close()
    transport, sock = await open_source(host)
    try:
        me, key = os.urandom(ID_BYTES), os.urandom(ID_BYTES)
        found.append(await _exchange(sock, target, "store", [me, key, b"v" * LARGEST_VALUE]))
        read = await _exchange(sock, target, "find_value", [me, key])
        found.append(Exchange("find_value after store", read.sent, read.received))
    finally:
        transport.close()
    return found


def _fake_peer(identity: Identity) -> Callable[[str, list[Any]], Any]:
    """How a filled contact answers the node: as an honest node would."""
    record = make_contact_record(identity, None, now=time.time())

    def answer(name: str, args: list[Any]) -> Any:
        if name == "ping":
            return identity.node_id
        if name == "challenge":
            back = os.urandom(ID_BYTES)
            signed = identity.sign(PROOF_CONTEXT + args[1] + args[0])
            return [identity.public_key, signed, back]
        if name == "hello":
            return record
        if name == "find_node":
            return []
        return True

    return answer


async def fill_table(
    target: tuple[str, int], node_id: bytes, count: int = FILL_CONTACTS
) -> list[asyncio.DatagramTransport]:
    """``count`` proven contacts in the node's routing table; close the transports after.

    Each proves its id the honest way: a challenge (padded to the proof it asks for; a
    node that refuses the trailing pad argument gets it unpadded), then ``prove``.
    """
    opened = []
    for i in range(count):
        identity = Identity.generate()
        transport, sock = await open_source(f"127.0.{10 + i}.1", _fake_peer(identity))
        opened.append(transport)
        nonce = os.urandom(ID_BYTES)
        base = len(datagram("challenge", [identity.node_id, nonce, b""]))
        pad = b"\0" * max(0, CHALLENGE_PAD - base)  # a pad under 256 B: bin8, as b""
        answer = await sock.call(target, "challenge", [identity.node_id, nonce, pad])
        if answer is None:
            answer = await sock.call(target, "challenge", [identity.node_id, nonce])
        if not (isinstance(answer, list) and len(answer) == 3):
            continue
        signature = identity.sign(PROOF_CONTEXT + answer[2] + node_id)
        await sock.call(target, "prove", [identity.node_id, identity.public_key, signature])
    await asyncio.sleep(FILL_SETTLE)
    return opened


async def node_id_of(target: tuple[str, int]) -> bytes:
    transport, sock = await open_source("127.0.0.1")
    try:
        reply = await sock.call(target, "ping", [os.urandom(ID_BYTES)])
    finally:
        transport.close()
    if not isinstance(reply, bytes):
        raise RuntimeError(f"no ping reply from {target}")
    return reply


def worst(exchanges: list[Exchange]) -> dict[str, Exchange]:
    out: dict[str, Exchange] = {}
    for ex in exchanges:
        if ex.procedure not in out or ex.ratio > out[ex.procedure].ratio:
            out[ex.procedure] = ex
    return out


async def measure(target: tuple[str, int], rounds: int) -> dict[str, Exchange]:
    node_id = await node_id_of(target)
    filled = await fill_table(target, node_id)
    try:
        found: list[Exchange] = []
        for _ in range(rounds):
            found += await probe(target, node_id)
        return worst(found)
    finally:
        for transport in filled:
            transport.close()


def _start_node(data_dir: Path) -> tuple[Any, tuple[str, int]]:
    from bench.common import NodeProcess

    node = NodeProcess(data_dir, "--dht", "127.0.0.1:0", "--allow-private-peers")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in list(node.log):
            m = re.search(r"dht on udp://([\d.]+):(\d+)", line)
            if m:
                return node, (m.group(1), int(m.group(2)))
        time.sleep(0.05)
    node.proc.kill()
    raise RuntimeError("the node printed no dht address")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dht", help="HOST:PORT of a running node (default: start one)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    node = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.dht:
            host, port = args.dht.rsplit(":", 1)
            target = (host, int(port))
        else:
            node, target = _start_node(Path(tmp) / "node")
        try:
            results = asyncio.run(measure(target, args.rounds))
        finally:
            if node is not None:
                node.proc.terminate()
                node.proc.wait(20)
    print(f"{'procedure':<24}{'request B':>10}{'sent back B':>12}{'ratio':>8}")
    for name, ex in results.items():
        print(f"{name:<24}{ex.sent:>10}{ex.received:>12}{ex.ratio:>8.2f}")
    print(f"worst ratio: {max(ex.ratio for ex in results.values()):.2f}")


if __name__ == "__main__":
    main()
