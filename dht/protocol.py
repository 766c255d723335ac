"""The Kademlia protocol, hardened.

Fixes over ``kademlia.protocol.KademliaProtocol`` / ``rpcudp.RPCProtocol``:

* every datagram is checked (size, framing, msgpack, RPC name, arity, argument types)
  and anything wrong is dropped and counted in ``dropped``; nothing raises in the loop;
* responses are only accepted from the address the request went to;
* no values: ``store`` and ``find_value`` (and ``stun``) are not served, as Rhizome moves
  shards over HTTP, and a stored value was the largest reflection a spoofed source could
  get (8 KB back for 78 bytes); kademlia's ``Server.get``/``set`` are refused too;
* a peer leaves the routing table after ``max_failures`` consecutive timeouts, not one;
* outgoing RPCs go through a semaphore so bursts cannot overflow the receive buffer;
* a signed ``hello`` RPC exchanges contact records (HTTP endpoint + public key).

Hostile peers (each limit is a named constant or a ``DhtSettings`` field):

* every source (IPv4 address, IPv6 /64) has a token bucket; datagrams beyond it are dropped
  before they are parsed and counted as ``rate_limited``. Replies to our own requests are
  not charged (we bounded them when we asked). Junk costs its source ``JUNK_COST`` tokens,
  so a misbehaving source is ignored until its debt is repaid;
* no reflection (``reflection.py``): to a source that has not proven its id at its
  address, a reply is never larger than the request (``find_node`` is trimmed, padded
  requests get everything) and a request from it sets off nothing else towards it: it
  does not enter the table until it challenges us itself;
* a node id enters the routing table only after a challenge: we send a fresh nonce to the
  address and the answer must be signed by a key whose sha1 is the claimed id, so ids
  cannot be chosen, and another node's id (or its signed hello, replayed) cannot be
  claimed from a different address. ``prove`` answers the peer's nonce the same way, so
  both sides are proven by one exchange. A relay that forwards challenges to the real
  owner can still stand in for an existing id (it cannot choose one); binding the proof
  to addresses would need each node to know its public address;
* a peer that does not answer is skipped by lookups for a back-off that doubles with each
  consecutive silence (by address), so a silent peer costs lookups one timeout per
  back-off period and leaves the table after ``max_failures`` of them.

Client mode (``client_mode``, a node others cannot dial: behind NAT, or not yet known to
be reachable): the node challenges its contacts but never answers their nonce with a
``prove``, so no table anywhere admits it (tables admit proven addresses only) and no
lookup ever waits on it; it pads every request to the reply it wants, as an unproven
source gets back no more than it sent. No new wire field: older nodes treat it the same.

Longer than 400 lines because each hardened RPC (validation, proofs, quotas) overrides the
library's method of the same name, and they share the protocol's routing state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import umsgpack  # type: ignore[import-untyped]
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol

from .contacts import CONTACT_TTL, Contact, ContactBook, make_contact_record
from .errors import InvalidContact, MalformedMessage
from .identity import (
    NODE_ID_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    Identity,
    node_id_for,
    verify,
)
from .quotas import RateLimiter, source_key
from .reflection import (
    CHALLENGE_REPLY_BYTES,
    HEADER_BYTES,
    HELLO_REPLY_BYTES,
    MSG_ID_BYTES,
    NONCE_BYTES,
    TRIMMED,
    find_node_reply_bytes,
    reply_payload,
    request_body,
)
from .routing import RhizomeRoutingTable
from .routing_state import valid_address
from .settings import DhtSettings

log = logging.getLogger(__name__)

REQUEST = 0x00
RESPONSE = 0x01
MAX_PAYLOAD_BYTES = 8192  # rpcudp's limit for a request's msgpack body
MAX_DATAGRAM_BYTES = HEADER_BYTES + MAX_PAYLOAD_BYTES
MAX_RPC_NAME = 32
MAX_CONCURRENT_REQUESTS = 256  # requests being served at once; beyond, drop (UDP sheds load)
MAX_TRACKED_TASKS = 4096  # background hellos, handshakes and probes at once
HELLO_REFRESH = 0.5  # re-sign our hello after this fraction of its lifetime
JUNK_COST = 20.0  # tokens a malformed datagram costs its source (one is 1 token)
# Drop reasons that only a broken or hostile peer causes (late replies and load are not).
JUNK_REASONS = frozenset(
    {"oversized", "garbage", "unknown_rpc", "bad_arity", "bad_args", "bad_hello", "bad_proof"}
)
# Every reason ``dropped`` counts (metrics show each, at 0 until it happens).
DROP_REASONS = JUNK_REASONS | {
    "rate_limited",
    "overloaded",
    "unknown_response",
    "wrong_sender",
    "handler_error",
    "would_amplify",
    "reply_too_large",
    "error",
}
PROOF_CONTEXT = b"RZP1"  # domain separation: never a valid prefix of a record ("RZR1")
NONCE_TTL = 30.0  # seconds a nonce we handed out may be answered with a proof
MAX_ISSUED_NONCES = 4096  # outstanding nonces (LRU by address)
MAX_PROVEN = 10_000  # proven (id, address) bindings remembered (LRU)
MAX_HANDSHAKES = 256  # challenges in flight at once
MAX_SILENT_BACKOFF = 600.0  # seconds a silent address is skipped by lookups at most
MAX_SILENT_ADDRESSES = 10_000  # silent addresses remembered (LRU)

Address = tuple[str, int]
RpcResult = tuple[bool, Any]

# Remote procedures a peer may call, with how many arguments each takes after the sender
# (and one more: a trailing bytes pad, see reflection.py). Not kademlia's store, find_value
# or stun: Rhizome does not use them, and each answered a spoofed source with more bytes.
RPC_ARITY = {
    "ping": 1,
    "find_node": 2,
    "hello": 2,
    "challenge": 2,
    "prove": 3,
}
TRIMMABLE_REPLIES = frozenset({"find_node"})  # contacts, nearest first: a prefix still helps


def _proof_message(nonce: bytes, verifier: bytes) -> bytes:
    """What a node signs to prove its id to ``verifier``, who sent ``nonce``."""
    return PROOF_CONTEXT + nonce + verifier


def _bytes_of(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise MalformedMessage(f"expected {what} of {size} bytes")
    return value


def _node_id(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != NODE_ID_BYTES:
        raise MalformedMessage("expected a 20-byte id")
    return value


class RhizomeProtocol(KademliaProtocol):  # type: ignore[misc]
    def __init__(
        self,
        source_node: Node,
        storage: Any,
        ksize: int,
        *,
        identity: Identity,
        contacts: ContactBook,
        settings: DhtSettings,
        http_url: Callable[[], str | None],
    ) -> None:
        super().__init__(source_node, storage, ksize)
        self.router = RhizomeRoutingTable(
            self,
            ksize,
            source_node,
            range_cap=settings.range_cap,
            ipv4_range=settings.ipv4_range,
            ipv6_range=settings.ipv6_range,
        )
        self.identity = identity
        self.contacts = contacts
        self.settings = settings
        self._http_url = http_url
        self._hello: tuple[float, bytes] | None = None  # (signed at, record)
        self._pending: dict[bytes, tuple[asyncio.Future[RpcResult], Address]] = {}
        self._inflight = asyncio.Semaphore(settings.max_inflight)
        self._failures: dict[bytes, int] = {}
        self._serving = 0
        self._tasks: set[asyncio.Future[Any]] = set()
        self._hellos_in_flight: set[bytes] = set()
        self._moves_in_flight: set[bytes] = set()
        self.dropped: Counter[str] = Counter()
        self.limiter = RateLimiter(
            settings.source_rate, settings.source_burst, max_keys=settings.max_sources
        )
        self._proven: OrderedDict[bytes, Address] = OrderedDict()
        self._issued: OrderedDict[Address, tuple[bytes, float]] = OrderedDict()
        self._handshakes: dict[Address, asyncio.Future[Any]] = {}
        self._silent: OrderedDict[Address, tuple[int, float]] = OrderedDict()
        self.client_mode = False  # see the module docstring

    # --- receiving -------------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            self._receive(data, (str(addr[0]), int(addr[1])))
        except Exception:
            # The last line of defence: a datagram must never take the protocol down.
            log.warning("error handling a datagram from %s", addr, exc_info=True)
            self.dropped["error"] += 1

    def _drop(self, reason: str, addr: Address) -> None:
        self.dropped[reason] += 1
        if reason in JUNK_REASONS:
            self.limiter.charge(source_key(addr[0]), JUNK_COST)
        log.debug("dropped datagram from %s:%d (%s)", addr[0], addr[1], reason)

    def _receive(self, data: bytes, addr: Address) -> None:
        is_reply = data[:1] == bytes([RESPONSE])
        pending = self._pending.get(bytes(data[1:HEADER_BYTES])) if is_reply else None
        # A reply we are waiting for was paid for when we asked; everything else is charged
        # before it costs any parsing.
        if not (pending is not None and pending[1] == addr) and not self.limiter.allow(
            source_key(addr[0])
        ):
            self.dropped["rate_limited"] += 1
            return None
        if len(data) > MAX_DATAGRAM_BYTES:
            return self._drop("oversized", addr)
        if len(data) <= HEADER_BYTES or data[0] not in (REQUEST, RESPONSE):
            return self._drop("garbage", addr)
        msg_id = bytes(data[1:HEADER_BYTES])
        try:
            body = umsgpack.unpackb(data[HEADER_BYTES:])
        except Exception:  # umsgpack raises many types (and RecursionError on deep nests)
            return self._drop("garbage", addr)
        if data[0] == RESPONSE:
            return self._accept_reply(msg_id, body, addr)
        if not (isinstance(body, list) and len(body) == 2 and isinstance(body[1], list)):
            return self._drop("garbage", addr)
        name, args = body
        if not isinstance(name, str) or name not in RPC_ARITY:
            return self._drop("unknown_rpc", addr)
        if len(args) not in (RPC_ARITY[name], RPC_ARITY[name] + 1):
            return self._drop("bad_arity", addr)
        if len(args) > RPC_ARITY[name] and not isinstance(args.pop(), bytes):
            return self._drop("bad_args", addr)  # the pad is bytes, or junk
        if self._serving >= MAX_CONCURRENT_REQUESTS:
            return self._drop("overloaded", addr)
        # An unproven source may be spoofed: it gets back at most what it sent.
        budget = None if args and self._is_proven(args[0], addr) else len(data)
        self._serving += 1
        self._spawn(self._serve(msg_id, name, args, addr, budget), force=True)
        return None

    def _accept_reply(self, msg_id: bytes, body: Any, addr: Address) -> None:
        pending = self._pending.get(msg_id)
        if pending is None:
            return self._drop("unknown_response", addr)
        future, expected = pending
        if addr != expected:
            return self._drop("wrong_sender", addr)
        if not future.done():
            future.set_result((True, body))
        return None

    async def _serve(
        self, msg_id: bytes, name: str, args: list[Any], addr: Address, budget: int | None
    ) -> None:
        try:
            handler: Callable[..., Any] = getattr(self, f"rpc_{name}")
            response = handler(addr, *args)
            if asyncio.iscoroutine(response):
                response = await response
            payload = reply_payload(response, budget, name in TRIMMABLE_REPLIES)
        except MalformedMessage as exc:
            log.debug("bad %s request from %s:%d: %s", name, addr[0], addr[1], exc)
            self._drop("bad_args", addr)
            return
        except Exception:
            log.warning("rpc_%s failed for %s:%d", name, addr[0], addr[1], exc_info=True)
            self.dropped["handler_error"] += 1
            return
        finally:
            self._serving -= 1
        if payload is None:
            # Larger than an unproven (maybe spoofed) source's request: not a reflector.
            log.debug("rpc_%s reply to unproven %s:%d would amplify", name, addr[0], addr[1])
            self.dropped["would_amplify"] += 1
            return
        if len(payload) > MAX_PAYLOAD_BYTES:
            # A lost oversized reply would only look like a timeout to the caller.
            log.warning("rpc_%s reply of %d bytes is too large; not sent", name, len(payload))
            self.dropped["reply_too_large"] += 1
            return
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(bytes([RESPONSE]) + msg_id + payload, addr)

    # --- remote procedures (what peers may call) -------------------------------------
    def rpc_ping(self, sender: Address, nodeid: object) -> bytes:
        self._heard_from(Node(_node_id(nodeid), sender[0], sender[1]))
        node_id: bytes = self.source_node.id
        return node_id

    def rpc_find_node(self, sender: Address, nodeid: object, key: object) -> list[Any]:
        """Our closest contacts to ``key``, nearest first (trimmed for unproven senders)."""
        source = Node(_node_id(nodeid), sender[0], sender[1])
        self._heard_from(source)
        neighbors = self.router.find_neighbors(Node(_node_id(key)), exclude=source)
        return [tuple(n) for n in neighbors]

    def rpc_hello(self, sender: Address, nodeid: object, record: object) -> bytes | None:
        """Accept a peer's signed contact record and answer with ours (None: refused)."""
        node_id = _node_id(nodeid)
        if not isinstance(record, bytes):
            raise MalformedMessage("hello record must be bytes")
        try:
            self.contacts.accept(node_id, record, now=time.time())
        except InvalidContact as exc:
            log.info("refused hello from %s:%d: %s", sender[0], sender[1], exc)
            self._drop("bad_hello", sender)
            return None
        self._heard_from(Node(node_id, sender[0], sender[1]))
        return self.own_contact_record()

    def rpc_challenge(self, sender: Address, nodeid: object, nonce: object) -> list[bytes]:
        """Prove our id to the challenger, and hand it a nonce to prove its own with."""
        challenger = _node_id(nodeid)
        signed = _proof_message(_bytes_of(nonce, NONCE_BYTES, "a nonce"), challenger)
        back = os.urandom(NONCE_BYTES)
        self._issued[sender] = (back, time.monotonic() + NONCE_TTL)
        self._issued.move_to_end(sender)
        while len(self._issued) > MAX_ISSUED_NONCES:
            self._issued.popitem(last=False)
        return [self.identity.public_key, self.identity.sign(signed), back]

    def rpc_prove(self, sender: Address, nodeid: object, key: object, signature: object) -> bool:
        """The challenger's answer to our nonce: if it holds, its id at ``sender`` is proven."""
        node_id = _node_id(nodeid)
        public_key = _bytes_of(key, PUBLIC_KEY_BYTES, "a public key")
        sig = _bytes_of(signature, SIGNATURE_BYTES, "a signature")
        issued = self._issued.pop(sender, None)
        if (
            issued is None
            or issued[1] < time.monotonic()
            or node_id_for(public_key) != node_id
            or not verify(public_key, _proof_message(issued[0], self.source_node.id), sig)
        ):
            self._drop("bad_proof", sender)
            return False
        self._mark_proven(node_id, sender)
        self.welcome_if_new(Node(node_id, sender[0], sender[1]))
        return True

    # --- calling peers ---------------------------------------------------------------
    async def _call(
        self, name: str, address: Address, args: tuple[Any, ...], pad_to: int = 0
    ) -> RpcResult:
        """One request; ``pad_to``: the reply we want, from a peer that has not proven us."""
        payload = request_body(name, args, pad_to)
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise MalformedMessage(f"{name} request of {len(payload)} bytes is too large")
        target = (str(address[0]), int(address[1]))
        async with self._inflight:
            if self.transport is None or self.transport.is_closing():
                return (False, None)
            msg_id = os.urandom(MSG_ID_BYTES)
            future: asyncio.Future[RpcResult] = asyncio.get_running_loop().create_future()
            self._pending[msg_id] = (future, target)
            try:
                self.transport.sendto(bytes([REQUEST]) + msg_id + payload, target)
                result = await asyncio.wait_for(future, self.settings.rpc_timeout)
                self._silent.pop(target, None)
                return result
            except TimeoutError:
                log.debug("no reply to %s from %s:%d", name, target[0], target[1])
                self._note_silence(target)
                return (False, None)
            except OSError as exc:
                log.info("cannot send %s to %s:%d: %s", name, target[0], target[1], exc)
                return (False, None)
            finally:
                self._pending.pop(msg_id, None)

    # rpcudp builds these through __getattr__; explicit methods go through _call.
    async def ping(self, address: Address, *args: Any) -> RpcResult:
        return await self._call("ping", address, args)

    async def find_node(self, address: Address, *args: Any) -> RpcResult:
        return await self._call("find_node", address, args)

    async def hello(self, address: Address, *args: Any) -> RpcResult:
        return await self._call("hello", address, args)

    def _node_list(self, raw: Any) -> list[tuple[bytes, str, int]] | None:
        """A peer's node list with every unusable entry removed; None if not a list."""
        if not isinstance(raw, list):
            return None
        nodes = []
        for item in raw:
            if not (isinstance(item, list | tuple) and len(item) == 3):
                continue
            node_id, ip, port = item
            if (
                isinstance(node_id, bytes)
                and len(node_id) == NODE_ID_BYTES
                and node_id != self.source_node.id
                and valid_address(ip, port)
            ):
                nodes.append((node_id, ip, port))
            if len(nodes) >= self.router.ksize:
                break
        return nodes

    async def call_find_node(self, node_to_ask: Node, node_to_find: Node) -> RpcResult:
        address = (node_to_ask.ip, node_to_ask.port)
        if self.backed_off(address):
            return (False, None)  # not asked: no failure to count
        # A peer that has not proven us answers only what fits in the request: pad it to
        # a full list (once the two are proven to each other, requests go unpadded).
        pad_to = 0
        if self.client_mode or not self._is_proven(node_to_ask.id, address):
            pad_to = find_node_reply_bytes(self.router.ksize, ipv6=":" in str(address[0]))
        args = (self.source_node.id, node_to_find.id)
        ok, raw = await self._call("find_node", address, args, pad_to)
        if ok and isinstance(raw, list) and raw and raw[-1] == TRIMMED and not pad_to:
            # We thought the peer had proven us; it has not (it restarted, or forgot us):
            # prove ourselves again, and pad until then.
            self._proven.pop(node_to_ask.id, None)
            self._schedule_handshake(node_to_ask)
        nodes = self._node_list(raw) if ok else None
        return self.handle_call_response((nodes is not None, nodes), node_to_ask)

    async def call_find_value(self, node_to_ask: Node, node_to_find: Node) -> RpcResult:
        raise NotImplementedError("Rhizome's DHT serves no values (see the module docstring)")

    async def call_ping(self, node_to_ask: Node) -> RpcResult:
        address = (node_to_ask.ip, node_to_ask.port)
        ok, raw = await self.ping(address, self.source_node.id)
        # Another id at that address means the node we knew is gone.
        return self.handle_call_response((ok and raw == node_to_ask.id, raw), node_to_ask)

    async def call_store(self, node_to_ask: Node, key: bytes, value: Any) -> RpcResult:
        raise NotImplementedError("Rhizome's DHT serves no values (see the module docstring)")

    async def call_hello(self, node: Node) -> Contact | None:
        """Exchange contact records with ``node``; its verified contact, or None."""
        address = (str(node.ip), int(node.port))
        proven = self._is_proven(node.id, address) and not self.client_mode
        pad_to = 0 if proven else HELLO_REPLY_BYTES
        args = (self.source_node.id, self.own_contact_record())
        ok, raw = await self._call("hello", address, args, pad_to)
        self.handle_call_response((ok, raw), node)
        if not ok or not isinstance(raw, bytes):
            return None
        try:
            return self.contacts.accept(node.id, raw, now=time.time())
        except InvalidContact as exc:
            log.info("hello reply from %s is not valid: %s", node, exc)
            self._drop("bad_hello", address)
            return None

    # --- proving ids -----------------------------------------------------------------
    def _mark_proven(self, node_id: bytes, address: Address) -> None:
        self._proven[node_id] = address
        self._proven.move_to_end(node_id)
        while len(self._proven) > MAX_PROVEN:
            self._proven.popitem(last=False)

    def proven_at(self, node_id: bytes) -> Address | None:
        """The address where ``node_id`` last proved that it holds its key."""
        return self._proven.get(node_id)

    def _is_proven(self, node_id: object, address: Address) -> bool:
        return isinstance(node_id, bytes) and self._proven.get(node_id) == address

    def _heard_from(self, node: Node) -> None:
        """A request from ``node``: refresh it if its address is proven, else nothing.

        Challenging an unproven sender would send a spoofed source more than it sent us;
        an honest one proves itself: our reply makes it challenge us (``welcome_if_new``).
        """
        if self._is_proven(node.id, (str(node.ip), int(node.port))):
            self.welcome_if_new(node)

    def _schedule_handshake(self, node: Node) -> None:
        """Challenge ``node``'s address in the background (once at a time per address)."""
        address = (str(node.ip), int(node.port))
        if address in self._handshakes or len(self._handshakes) >= MAX_HANDSHAKES:
            return
        task = self._spawn(self._handshake(node))
        if task is not None:
            self._handshakes[address] = task
            task.add_done_callback(lambda _: self._handshakes.pop(address, None))

    async def _handshake(self, node: Node) -> bool:
        """Make ``node``'s address prove it holds the key of ``node.id``, then prove ours."""
        address = (str(node.ip), int(node.port))
        nonce = os.urandom(NONCE_BYTES)
        # Padded to the proof we ask for: we are not proven to the peer yet.
        args = (self.source_node.id, nonce)
        ok, raw = await self._call("challenge", address, args, CHALLENGE_REPLY_BYTES)
        if not ok:
            return False
        back = self._check_proof(node.id, raw, nonce)
        if back is None:
            log.info("%s:%d failed to prove id %s", address[0], address[1], node.id.hex())
            self._drop("bad_proof", address)
            return False
        self._mark_proven(node.id, address)
        self.welcome_if_new(node)
        if self.client_mode:
            return True  # unproven to the peer on purpose: it must never dial us
        signature = self.identity.sign(_proof_message(back, node.id))
        await self._call(
            "prove", address, (self.source_node.id, self.identity.public_key, signature)
        )
        return True

    def _check_proof(self, node_id: bytes, raw: Any, nonce: bytes) -> bytes | None:
        """The peer's nonce for us if ``raw`` proves ``node_id``; None if it does not."""
        if not (isinstance(raw, list) and len(raw) == 3):
            return None
        try:
            key = _bytes_of(raw[0], PUBLIC_KEY_BYTES, "a public key")
            sig = _bytes_of(raw[1], SIGNATURE_BYTES, "a signature")
            back = _bytes_of(raw[2], NONCE_BYTES, "a nonce")
        except MalformedMessage:
            return None
        if node_id_for(key) != node_id:
            return None
        if not verify(key, _proof_message(nonce, self.source_node.id), sig):
            return None
        return back

    def prove_to_contacts(self) -> None:
        """Left client mode: prove ourselves to every contact, so their tables admit us."""
        for node in self.router.contacts():
            self._schedule_handshake(node)

    async def settle(self) -> None:
        """Wait until no challenge is in flight (callers bound the wait)."""
        while self._handshakes:
            await asyncio.wait(list(self._handshakes.values()))

    # --- silent peers ----------------------------------------------------------------
    def _note_silence(self, address: Address) -> None:
        failures = self._silent.pop(address, (0, 0.0))[0] + 1
        backoff = min(MAX_SILENT_BACKOFF, self.settings.silent_backoff * 2 ** (failures - 1))
        self._silent[address] = (failures, time.monotonic() + backoff)
        while len(self._silent) > MAX_SILENT_ADDRESSES:
            self._silent.popitem(last=False)

    def backed_off(self, address: Address) -> bool:
        """True while lookups skip ``address`` because it did not answer lately."""
        entry = self._silent.get((str(address[0]), int(address[1])))
        return entry is not None and entry[1] > time.monotonic()

    def probe(self, node: Node) -> None:
        """Ping ``node`` in the background (a full bucket asking its oldest contact)."""
        self._spawn(self.call_ping(node))

    # --- routing table upkeep --------------------------------------------------------
    def handle_call_response(self, result: RpcResult, node: Node) -> RpcResult:
        if result[0]:
            self._failures.pop(node.id, None)
            self.welcome_if_new(node)
            return result
        if self.router.is_new_node(node):
            # Not in the buckets: nothing to protect, only drop it from the replacements.
            self.router.remove_contact(node)
            return result
        failures = self._failures.get(node.id, 0) + 1
        if failures >= self.settings.max_failures:
            log.info("%s failed %d times in a row; removing it", node, failures)
            self._failures.pop(node.id, None)
            self.router.remove_contact(node)
        else:
            self._failures[node.id] = failures
        return result

    def failures(self, node_id: bytes) -> int:
        """Consecutive failed RPCs to a contact (0 once it answers again)."""
        return self._failures.get(node_id, 0)

    def welcome_if_new(self, node: Node) -> None:
        """Add ``node`` to the routing table once its address has proven its id."""
        if node.id == self.source_node.id:
            return
        address = (str(node.ip), int(node.port))
        proven = self._proven.get(node.id) == address
        if not self.router.is_new_node(node):
            known = self.router.find_contact(node.id)
            if known is not None and (known.ip, known.port) == address:
                self.router.add_contact(node)  # seen again: to the tail of its bucket
            elif proven:
                self._check_move(node)
            else:
                self._schedule_handshake(node)
            return
        if not proven:
            self._schedule_handshake(node)
            return
        log.debug("new contact %s (%s)", node, node.id.hex())
        self.router.add_contact(node)
        if self.contacts.get(node.id, now=time.time()) is None:
            self.schedule_hello(node)

    def _check_move(self, node: Node) -> None:
        """A known id at a new address: believe it only once the old address is silent.

        Nodes restart on new ports and home IPs change, but node ids are asserted, not
        proven, in plain Kademlia RPCs: a live contact must not be hijacked by a claim.
        """
        known = self.router.find_contact(node.id)
        if known is None or (known.ip, known.port) == (node.ip, node.port):
            return
        if node.id in self._moves_in_flight:
            return
        self._moves_in_flight.add(node.id)

        async def check() -> None:
            try:
                ok, reply = await self.ping((known.ip, known.port), self.source_node.id)
                if ok and reply == node.id:
                    return
                current = self.router.find_contact(node.id)
                if current is not None and (current.ip, current.port) == (known.ip, known.port):
                    log.info("%s moved to %s", known, node)
                    self._failures.pop(node.id, None)
                    self.router.add_contact(node)  # same id: replaced in place
            finally:
                self._moves_in_flight.discard(node.id)

        if not self._spawn(check()):
            self._moves_in_flight.discard(node.id)

    def schedule_hello(self, node: Node) -> None:
        """Say hello to ``node`` in the background (once at a time per node)."""
        if node.id in self._hellos_in_flight:
            return
        self._hellos_in_flight.add(node.id)

        async def hello() -> None:
            try:
                await self.call_hello(node)
            finally:
                self._hellos_in_flight.discard(node.id)

        if not self._spawn(hello()):
            self._hellos_in_flight.discard(node.id)

    def own_contact_record(self) -> bytes:
        """Our signed hello, re-signed when half its lifetime has passed or the URL changed."""
        now = time.time()
        if self._hello is None or now - self._hello[0] > HELLO_REFRESH * CONTACT_TTL:
            self._hello = (now, make_contact_record(self.identity, self._http_url(), now=now))
        return self._hello[1]

    def forget_own_contact_record(self) -> None:
        """Our URL changed: the next hello is signed afresh."""
        self._hello = None

    # --- tasks -----------------------------------------------------------------------
    def _spawn(self, coro: Awaitable[Any], *, force: bool = False) -> asyncio.Future[Any] | None:
        """Run ``coro`` in the background, keeping a reference and logging its failure."""
        if not force and len(self._tasks) >= MAX_TRACKED_TASKS:
            log.warning("too many background DHT tasks; skipping one")
            if asyncio.iscoroutine(coro):
                coro.close()
            return None
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("DHT background task failed", exc_info=task.exception())

    async def close(self) -> None:
        """Cancel background work and fail every pending call."""
        for future, _ in list(self._pending.values()):
            if not future.done():
                future.set_result((False, None))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
