"""The relay's side: nodes behind NAT attached by WebSocket, and peers' requests sent on.

``RelayHub`` keeps one ``RelaySession`` per attached node (a node that attaches again
replaces its old session) and ``forward``s a request down that node's socket, waiting for
the frame that answers it. Everything is bounded, as each relayed byte is the relay
operator's upstream, given away:

* at most ``RelayLimits.max_nodes`` nodes at once (0: relaying off);
* each node at most ``bytes_per_hour`` bytes relayed (requests down and answers up, frame
  bytes) in each hour, counted across re-attachments; a request is sent only if its frame
  and the smallest answer fit in what is left, and the node is told the most it may answer
  (``max_answer``): a larger answer ends the session, so the budget is never exceeded;
* a reservation lasts ``reservation_seconds`` (libp2p's circuit relay v2: 1 h), then the
  node must attach again (to us, if we still have room, or elsewhere);
* a relayed request waits ``request_seconds`` at most, and ``max_inflight`` at once per node.

The aiohttp routes (``api/relay_routes.py``) do the handshake and read the frames; this
holds no socket code but ``FrameSocket``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from .errors import RelayOverBudget, RelayProtocolError, RelayUnavailable
from .relay_wire import (
    HEADER_LENGTH_BYTES,
    MAX_HEADER_BYTES,
    MAX_RELAY_ANSWER_BYTES,
    RelayedAnswer,
    RelayedRequest,
    decode_answer,
    encode_request,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_NODES = 16
# A node behind NAT answering 1 owner query a second (~4 KB gzipped each, as measured in
# docs/BENCHMARKS.md) relays ~15 MB an hour: 64 MB leaves room, and 16 nodes at that rate
# are ~0.3 Mbit/s of the relay's upstream.
DEFAULT_BYTES_PER_HOUR = 64 * 1024 * 1024
BUDGET_WINDOW_SECONDS = 3600.0
RESERVATION_SECONDS = 3600.0  # libp2p circuit relay v2's reservation lasts an hour too
# A querier gives a peer 1.5 s; an answer later than this is of use to nobody.
REQUEST_SECONDS = 3.0
MAX_INFLIGHT_PER_NODE = 8  # owner queries of one node at once: more waits out its deadline
MIN_ANSWER_BYTES = HEADER_LENGTH_BYTES + 128  # an error answer's frame, reserved per request
MAX_REMEMBERED_USAGE = 10_000  # nodes whose hourly usage is remembered after detaching


class FrameSocket(Protocol):
    """What the hub needs of a relayed node's WebSocket (aiohttp's, in production)."""

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayLimits:
    max_nodes: int = DEFAULT_MAX_NODES
    bytes_per_hour: int = DEFAULT_BYTES_PER_HOUR
    reservation_seconds: float = RESERVATION_SECONDS
    request_seconds: float = REQUEST_SECONDS
    max_inflight: int = MAX_INFLIGHT_PER_NODE


@dataclass(slots=True)
class _Usage:
    window_start: float
    bytes: int = 0


@dataclass(slots=True, eq=False)
class RelaySession:
    node: str  # hex node id
    socket: FrameSocket
    attached_at: float
    expires_at: float
    pending: dict[int, asyncio.Future[RelayedAnswer]] = field(default_factory=dict)
    limits: dict[int, int] = field(default_factory=dict)  # request id -> max answer frame
    next_id: int = 0
    closed: bool = False


# What ``RelayHub.counts`` counts (metrics show each, at 0 until it happens).
RELAY_EVENTS = (
    "attached",
    "relayed",
    "refused_not_attached",
    "refused_busy",
    "refused_budget",
    "timed_out",
)


class RelayHub:
    def __init__(self, limits: RelayLimits) -> None:
        self.limits = limits
        self._sessions: dict[str, RelaySession] = {}
        self._usage: dict[str, _Usage] = {}
        self.counts: Counter[str] = Counter()  # relayed, refused_*, attached, ...
        self.relayed_bytes = 0  # answer frames relayed since start, all nodes

    @property
    def enabled(self) -> bool:
        return self.limits.max_nodes > 0

    def attached(self, node: str) -> RelaySession | None:
        session = self._sessions.get(node)
        return session if session is not None and not session.closed else None

    def nodes(self) -> list[str]:
        """The nodes (hex ids) attached now."""
        return sorted(self._sessions)

    def refusal(self, node: str) -> str | None:
        """Why ``node`` may not attach now (None: it may; "": any node, before its id)."""
        if not self.enabled:
            return "this node does not relay"
        if node not in self._sessions and len(self._sessions) >= self.limits.max_nodes:
            return f"relaying for {self.limits.max_nodes} nodes already"
        if node and self._remaining(node) < MIN_ANSWER_BYTES:
            return "this node's relay budget for the hour is used up"
        return None

    def attach(self, node: str, socket: FrameSocket) -> RelaySession:
        """Register ``node``'s socket (the caller checked ``refusal`` and the signature)."""
        now = time.monotonic()
        old = self._sessions.get(node)
        if old is not None:
            self._end(old)  # the same node again (a new socket): the old one is gone
        session = RelaySession(node, socket, now, now + self.limits.reservation_seconds)
        self._sessions[node] = session
        self.counts["attached"] += 1
        log.info("relaying for %s (%d nodes)", node[:12], len(self._sessions))
        return session

    def detach(self, session: RelaySession) -> None:
        self._end(session)
        if self._sessions.get(session.node) is session:
            del self._sessions[session.node]
            log.info("stopped relaying for %s", session.node[:12])

    def _end(self, session: RelaySession) -> None:
        session.closed = True
        for future in session.pending.values():
            if not future.done():
                future.set_exception(RelayUnavailable("the relayed node went away"))
        session.pending.clear()

    def _usage_of(self, node: str) -> _Usage:
        now = time.monotonic()
        usage = self._usage.get(node)
        if usage is None or now - usage.window_start >= BUDGET_WINDOW_SECONDS:
            usage = _Usage(now)
            self._usage[node] = usage
            while len(self._usage) > MAX_REMEMBERED_USAGE:
                del self._usage[next(iter(self._usage))]
        return usage

    def _remaining(self, node: str) -> int:
        return self.limits.bytes_per_hour - self._usage_of(node).bytes

    async def forward(self, node: str, path_qs: str, accept_encoding: str) -> RelayedAnswer:
        """Send a peer's request to ``node`` and wait for its answer (within the limits)."""
        session = self.attached(node)
        if session is None:
            self.counts["refused_not_attached"] += 1
            raise RelayUnavailable("that node is not attached here")
        if len(session.pending) >= self.limits.max_inflight:
            self.counts["refused_busy"] += 1
            raise RelayOverBudget("too many requests in flight to that node")
        session.next_id += 1
        request_id = session.next_id
        frame_probe = encode_request(RelayedRequest(request_id, path_qs, accept_encoding, 0))
        left = self._remaining(node) - len(frame_probe) - 16  # the max_answer digits
        if left < MIN_ANSWER_BYTES:
            self.counts["refused_budget"] += 1
            raise RelayOverBudget("that node's relay budget for the hour is used up")
        max_answer = min(left, MAX_RELAY_ANSWER_BYTES + MAX_HEADER_BYTES + HEADER_LENGTH_BYTES)
        frame = encode_request(RelayedRequest(request_id, path_qs, accept_encoding, max_answer))
        future: asyncio.Future[RelayedAnswer] = asyncio.get_running_loop().create_future()
        session.pending[request_id] = future
        session.limits[request_id] = max_answer
        self._usage_of(node).bytes += len(frame)
        try:
            await session.socket.send_bytes(frame)
            answer = await asyncio.wait_for(future, self.limits.request_seconds)
        except ConnectionError as exc:
            raise RelayUnavailable(f"the relayed node's socket failed: {exc}") from exc
        except TimeoutError:
            self.counts["timed_out"] += 1
            raise
        finally:
            session.pending.pop(request_id, None)
            session.limits.pop(request_id, None)
        self.counts["relayed"] += 1
        return answer

    def answered(self, session: RelaySession, frame: bytes) -> None:
        """A frame from the relayed node: the answer to one of its pending requests.
        RelayProtocolError (the caller ends the session) for a frame that breaks the rules."""
        answer = decode_answer(frame)
        limit = session.limits.get(answer.id)
        if limit is None:
            return  # answered after we gave up: dropped, not relayed
        if len(frame) > limit:
            raise RelayProtocolError(f"answer of {len(frame)} bytes over the {limit} allowed")
        future = session.pending.get(answer.id)
        if future is not None and not future.done():
            self._usage_of(session.node).bytes += len(frame)
            self.relayed_bytes += len(frame)
            future.set_result(answer)

    def usage(self) -> dict[str, int]:
        """Bytes relayed per node in its current hour (hex id -> bytes)."""
        return {node: self._usage_of(node).bytes for node in list(self._usage)}

    def stats(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "max_nodes": self.limits.max_nodes,
            "bytes_per_hour": self.limits.bytes_per_hour,
            "relaying_for": sorted(self._sessions),
            "bytes_this_hour": self.usage(),
            "counts": dict(self.counts),
        }
