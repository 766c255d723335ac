"""Direct paths to nodes behind NAT, the querier's side: one request through the relay,
then the node's answers come past it (issue #14; libp2p's DCUtR is the model).

A request of a query for a node behind NAT (its URL is a relay's) first looks for a
direct link to that node in ``hub`` (a ``RelayHub`` that relays for this node only). If
there is none, one is opened, once, and the request waits up to ``DIRECT_WAIT_SECONDS``
for it before going through the relay as before:

* we are public: **connection reversal**. We ask the node through its relay to dial us
  (``PATH_REVERSE``); it opens a WebSocket to our ``PATH_DIRECT_ATTACH`` and passes the
  relay's attach handshake (``api/direct_routes.py`` takes it only while we wait for it);
* we are behind NAT too: **hole punch**. We bind a port, send our observed address (as our
  relay saw it) and a nonce through the node's relay (``PATH_PUNCH``); it answers with its
  own and both connect at once, each NAT taking the other's SYN for the answer to its own;
  the node's first frame signs our nonce, so no one else can stand in for it.

A link that does not open within its bound (a NAT that maps each connection to another
port, a firewall) makes the node go through its relay for ``retry_seconds``. Links are
capped (``max_links``, the hub's nodes), closed after ``idle_seconds`` without an answer,
and each carries what the relay would (``relay_wire``'s frames: same paths, same bounds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from rhizome.crawler.lru import Lru
from rhizome.dht import Identity, Peer, node_id_for, verify

from .client import Params, PeerClient
from .direct_wire import (
    MAX_PROOF_FRAME,
    MAX_STREAM_FRAME,
    PUNCH_NONCE_BYTES,
    PUNCH_SECONDS,
    StreamSocket,
    bound_socket,
    format_addr,
    parse_addr,
    punch_message,
    read_frame,
)
from .errors import PeerError, RelayError, RelayProtocolError
from .relay import RelayHub, RelayLimits, RelaySession
from .relay_wire import PATH_PUNCH, PATH_RELAY_PREFIX, PATH_REVERSE, RelayedAnswer
from .wire import PATH_SEARCH, PATH_SNIPPETS

log = logging.getLogger(__name__)

DEFAULT_MAX_LINKS = 16  # nodes behind NAT linked to at once: 6 owners a query, and repeats
# A query's request waits this long for a link being opened, then goes through the relay:
# a reversal or a punch is ~4 round trips (100-200 ms from home to home), and a query has 2 s.
DIRECT_WAIT_SECONDS = 0.3
REVERSAL_SECONDS = 3.0  # the node's dial back, after our request through its relay
IDLE_SECONDS = 300.0  # a link unused this long is closed (the node keeps its own for 600 s)
# A node whose link failed goes through its relay this long: a NAT that stopped one punch
# stops the next, and each attempt costs the node a dial.
RETRY_SECONDS = 600.0
# No relay operator pays for a direct link's bytes: only the requests' own bounds apply.
LINK_BYTES_PER_HOUR = 1 << 40
LINK_SECONDS = 24 * 3600.0  # a link lives until idle; this only bounds the hub's session
MAX_REMEMBERED = 10_000  # nodes whose way or failure is remembered (bounded memory)
LINKED_PATHS = frozenset({PATH_SEARCH, PATH_SNIPPETS})  # what a query asks of an owner

# How each node behind NAT was reached, the last time it was asked.
WAYS = ("reversal", "punch", "relay")
# What ``DirectPaths.counts`` counts (metrics show each, at 0 until it happens).
DIRECT_EVENTS = (
    "reversal_tried",
    "reversal_ok",
    "reversal_failed",
    "punch_tried",
    "punch_ok",
    "punch_failed",
    "direct_requests",
    "relayed_requests",
    "link_failed",
    "links_full",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectLimits:
    max_links: int = DEFAULT_MAX_LINKS  # 0: no direct paths, every request by the relay
    idle_seconds: float = IDLE_SECONDS
    retry_seconds: float = RETRY_SECONDS


class DirectPaths:
    def __init__(
        self,
        *,
        identity: Identity,
        client: PeerClient,
        limits: DirectLimits,
        public_url: Callable[[], str | None],
        observed_ip: Callable[[], str | None],
    ) -> None:
        """``public_url``: our URL while peers can dial it (then we reverse), else None;
        ``observed_ip``: our NAT's address as our relay sees it (then we punch), else None."""
        self.identity = identity
        self.client = client
        self.limits = limits
        self._public_url = public_url
        self._observed_ip = observed_ip
        self.hub = RelayHub(
            RelayLimits(
                max_nodes=limits.max_links,
                bytes_per_hour=LINK_BYTES_PER_HOUR,
                reservation_seconds=LINK_SECONDS,
            )
        )
        self.counts: Counter[str] = Counter()
        self._opening: dict[str, asyncio.Task[None]] = {}
        self._expected: dict[str, asyncio.Future[None]] = {}  # reversals we wait for
        self._retry_at: Lru[str, float] = Lru(MAX_REMEMBERED)
        self._way: dict[str, str] = {}  # node hex -> how its link was opened
        self._reached: Lru[str, str] = Lru(MAX_REMEMBERED)  # node hex -> way, last asked
        self._carrying: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return self.limits.max_links > 0

    # --- a query's requests ------------------------------------------------------------
    async def ask(self, peer: Peer, path: str, params: Params) -> RelayedAnswer | None:
        """``peer``'s answer over a direct link, opening one if none is held; None when the
        request should go as before (not behind NAT, no link in time: through its relay).
        TimeoutError if the link's node does not answer in the link's time."""
        if not self.enabled or path not in LINKED_PATHS:
            return None
        if PATH_RELAY_PREFIX not in (peer.http_url or ""):
            return None  # dialled directly already
        node = peer.node_id.hex()
        if self.hub.attached(node) is None:
            opening = self._open(peer)
            if opening is not None:  # waited for, never cancelled: the next query may use it
                await asyncio.wait({opening}, timeout=DIRECT_WAIT_SECONDS)
        if self.hub.attached(node) is None:
            self._reach(node, "relay")
            return None
        try:
            answer = await self.hub.forward(node, f"{path}?{urlencode(params)}", "gzip")
        except RelayError as exc:  # the link went (its node stopped) or is busy: the relay
            log.info("direct link to %s failed: %s", node[:12], exc)
            self.counts["link_failed"] += 1
            self._reach(node, "relay")
            return None
        self._reach(node, self._way.get(node, "reversal"))
        return answer

    def _reach(self, node: str, way: str) -> None:
        self.counts["relayed_requests" if way == "relay" else "direct_requests"] += 1
        self._reached.put(node, way)

    def _open(self, peer: Peer) -> asyncio.Task[None] | None:
        """The task opening a link to ``peer`` (started now, or already running); None if
        none may be opened now."""
        node = peer.node_id.hex()
        if (task := self._opening.get(node)) is not None:
            return task
        if (self._retry_at.get(node) or 0.0) > time.monotonic():
            return None
        if self.hub.refusal(node) is not None:
            self.counts["links_full"] += 1
            return None
        if (url := self._public_url()) is not None:
            opening = self._reverse(peer, url)
        elif (ip := self._observed_ip()) is not None:
            opening = self._punch(peer, ip)
        else:
            return None  # behind NAT without a relay yet: no address to tell
        task = asyncio.create_task(opening, name="direct-open")
        self._opening[node] = task
        task.add_done_callback(lambda _t: self._opening.pop(node, None))
        return task

    def _failed(self, node: str, way: str, exc: BaseException) -> None:
        log.info("no %s to %s, through its relay for now: %s", way, node[:12], exc)
        self.counts[f"{way}_failed"] += 1
        self._retry_at.put(node, time.monotonic() + self.limits.retry_seconds)

    # --- reversal ----------------------------------------------------------------------
    async def _reverse(self, peer: Peer, url: str) -> None:
        node = peer.node_id.hex()
        self.counts["reversal_tried"] += 1
        arrived: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._expected[node] = arrived
        params = {"node": self.identity.node_id.hex(), "url": url}
        try:
            async with asyncio.timeout(REVERSAL_SECONDS):
                await self.client.get_json(peer, PATH_REVERSE, params)
                await arrived
        except (PeerError, TimeoutError) as exc:
            self._failed(node, "reversal", exc)
            return
        finally:
            if self._expected.get(node) is arrived:
                del self._expected[node]
        self.counts["reversal_ok"] += 1
        self._way[node] = "reversal"

    def accept(self, node: str, socket: Any) -> RelaySession | None:
        """The reversed link of ``node`` (hex), whose attach signature the route checked:
        taken only while we wait for it, so we relay for nobody but ourselves."""
        arrived = self._expected.get(node)
        if arrived is None or arrived.done() or self.hub.refusal(node) is not None:
            return None
        session = self.hub.attach(node, socket)
        arrived.set_result(None)
        return session

    # --- hole punch ----------------------------------------------------------------------
    async def _punch(self, peer: Peer, ip: str) -> None:
        node = peer.node_id.hex()
        self.counts["punch_tried"] += 1
        nonce = os.urandom(PUNCH_NONCE_BYTES)
        try:
            sock = bound_socket(ip)
        except OSError as exc:
            self._failed(node, "punch", exc)
            return
        params = {
            "node": self.identity.node_id.hex(),
            "addr": format_addr(ip, sock.getsockname()[1]),
            "nonce": nonce.hex(),
        }
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(REVERSAL_SECONDS + PUNCH_SECONDS):
                answer = await self.client.get_json(peer, PATH_PUNCH, params)
                addr = parse_addr(str(answer.get("addr", "")) if isinstance(answer, dict) else "")
                reader, writer = await self.client.punch(sock, addr, within=PUNCH_SECONDS)
                self._check_proof(await read_frame(reader, MAX_PROOF_FRAME), peer, nonce)
        except (PeerError, RelayError, TimeoutError, asyncio.IncompleteReadError, OSError) as exc:
            sock.close()
            if writer is not None:
                writer.close()
            self._failed(node, "punch", exc)
            return
        assert writer is not None
        if self.hub.refusal(node) is not None:  # the links filled meanwhile
            writer.close()
            self.counts["links_full"] += 1
            return
        session = self.hub.attach(node, StreamSocket(writer))
        self.counts["punch_ok"] += 1
        self._way[node] = "punch"
        task = asyncio.create_task(self._carry(session, reader, writer), name="punched-link")
        self._carrying.add(task)
        task.add_done_callback(self._carrying.discard)

    def _check_proof(self, frame: bytes, peer: Peer, nonce: bytes) -> None:
        """RelayProtocolError unless the punched stream's first frame is ``peer`` signing
        our nonce and id."""
        try:
            proof = orjson.loads(frame)
            key = bytes.fromhex(proof["public_key"])
            signature = bytes.fromhex(proof["signature"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise RelayProtocolError("the punched peer's proof does not parse") from None
        message = punch_message(nonce, self.identity.node_id)
        if node_id_for(key) != peer.node_id or not verify(key, message, signature):
            raise RelayProtocolError("the punched peer is not the node asked")

    async def _carry(
        self, session: RelaySession, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The punched link's answers, until it breaks or is idle for ``idle_seconds``."""
        loop = asyncio.get_running_loop()
        idle = self.limits.idle_seconds
        try:
            async with asyncio.timeout(idle) as watch:
                while True:
                    frame = await read_frame(reader, MAX_STREAM_FRAME)
                    watch.reschedule(loop.time() + idle)
                    self.hub.answered(session, frame)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, RelayError) as exc:
            log.info("punched link to %s closed: %s", session.node[:12], exc or "idle")
        finally:
            self.hub.detach(session)
            writer.close()

    # --- state -------------------------------------------------------------------------
    async def close(self) -> None:
        tasks = [*self._opening.values(), *self._carrying]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for node in self.hub.nodes():
            if (session := self.hub.attached(node)) is not None:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await session.socket.close()
                self.hub.detach(session)

    def status(self) -> dict[str, Any]:
        """Counts only (anyone may read them): no node's id."""
        reached = Counter(self._reached.values())
        return {
            "enabled": self.enabled,
            "max_links": self.limits.max_links,
            "links": len(self.hub.nodes()),
            "peers_direct": reached["reversal"] + reached["punch"],
            "peers_relayed": reached["relay"],
            "peers_by_way": {way: reached[way] for way in WAYS},
            "answer_bytes": self.hub.relayed_bytes,
            "counts": {event: self.counts[event] for event in DIRECT_EVENTS},
        }
