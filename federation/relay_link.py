"""The side of a node behind NAT: one outbound WebSocket to a relay, kept up for ever.

``RelayLink.run`` attaches to the reachable member closest to our id that agrees (so
nodes behind NAT spread over the relays), announces the relayed URL (``announce``: the
DHT re-signs our hello and tells our contacts), and answers the requests that come down
the socket by asking its own HTTP server on loopback, so a relayed request goes through
exactly the routes, quotas and codecs a direct one does. When the socket closes (the
relay died, ended our reservation or its budget) it attaches to the next relay at once;
a relay that failed us is avoided for ``AVOID_SECONDS``. Detection is immediate when the
relay's process dies (its kernel closes the connection) and within 1.5 ``HEARTBEAT_SECONDS``
when its machine or link does; a relayed node whose relay is killed is gone from the
network for less than one query deadline (2 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from rhizome.dht import Identity, Peer
from rhizome.dht.placement import distance

from .client import PeerClient
from .errors import PeerError, RelayError, RelayProtocolError
from .relay_wire import (
    CLOSE_RESERVATION_OVER,
    HEADER_LENGTH_BYTES,
    HEARTBEAT_SECONDS,
    MAX_HEADER_BYTES,
    MAX_RELAY_REQUEST_BYTES,
    PATH_RELAY_ATTACH,
    PATH_RELAY_PREFIX,
    RelayedAnswer,
    RelayedRequest,
    attach_message,
    decode_request,
    encode_answer,
)

log = logging.getLogger(__name__)

ATTACH_SECONDS = 1.0  # per relay tried; a live relay answers its handshake in ms
AVOID_SECONDS = 60.0  # a relay that failed us is not tried again for this long
RETRY_SECONDS = 1.0  # no relay would take us: try the members again after this
MAX_SERVING = 8  # relayed requests answered at once (the relay allows as many in flight)
LOCAL_SECONDS = 2.5  # our own answer to a relayed request (the relay waits 3 s)
MAX_REQUEST_FRAME = HEADER_LENGTH_BYTES + MAX_HEADER_BYTES + MAX_RELAY_REQUEST_BYTES
ANSWER_HEADER_ROOM = 512  # a frame header's bytes, kept out of the body's allowance
READ_CHUNK = 64 * 1024


class RelayLink:
    def __init__(
        self,
        *,
        identity: Identity,
        client: PeerClient,
        candidates: Callable[[], Awaitable[list[Peer]]],
        local_url: str,
        announce: Callable[[str | None], Awaitable[None]],
    ) -> None:
        self.identity = identity
        self.client = client
        self._candidates = candidates
        self._local = local_url.rstrip("/")
        self._announce = announce
        self._avoid: dict[bytes, float] = {}
        self._serving = asyncio.Semaphore(MAX_SERVING)
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.relay: Peer | None = None
        self.url: str | None = None
        self.attached_at: float | None = None
        self.attaches = 0
        self.last_gap: float | None = None  # seconds from losing a relay to the next
        self.served = 0
        self.bytes = 0  # frame bytes answered through relays

    def status(self) -> dict[str, Any]:
        return {
            "relay": self.relay.node_id.hex() if self.relay else None,
            "relayed_url": self.url,
            "attached_for_s": round(time.monotonic() - self.attached_at, 1)
            if self.attached_at
            else None,
            "attaches": self.attaches,
            "last_reattach_s": self.last_gap,
            "served": self.served,
            "served_bytes": self.bytes,
        }

    async def run(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        lost_at: float | None = None
        try:
            while True:
                attached = await self._attach_somewhere()
                if attached is None:
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                relay, ws = attached
                self.relay, self.attached_at = relay, time.monotonic()
                self.url = relay_url(relay, self.identity.node_id)
                await self._announce(self.url)
                if lost_at is not None:  # lost, found, and announced
                    self.last_gap = round(time.monotonic() - lost_at, 3)
                    log.info("re-attached to a relay %.3f s after losing one", self.last_gap)
                self.attaches += 1
                try:
                    await self._serve(ws)
                finally:
                    with contextlib.suppress(Exception):
                        await ws.close()
                lost_at = time.monotonic()
                if ws.close_code != CLOSE_RESERVATION_OVER:
                    self._avoid[relay.node_id] = lost_at + AVOID_SECONDS
                log.info("relay %s closed (%s)", relay.http_url, ws.close_code)
                self.relay = self.attached_at = None
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._session.close()

    async def _attach_somewhere(self) -> tuple[Peer, Any] | None:
        now = time.monotonic()
        me = self.identity.node_id
        peers = [
            p
            for p in await self._candidates()
            if p.node_id != me and p.http_url and self._avoid.get(p.node_id, 0.0) <= now
        ]
        for peer in sorted(peers, key=lambda p: distance(p.node_id, me)):
            try:
                async with asyncio.timeout(ATTACH_SECONDS):
                    return peer, await self._attach(peer)
            except (PeerError, RelayError, TimeoutError, aiohttp.ClientError, ValueError) as exc:
                log.info("relay %s did not take us: %s", peer.http_url, exc)
                self._avoid[peer.node_id] = time.monotonic() + AVOID_SECONDS
        return None

    async def _attach(self, peer: Peer) -> Any:
        """Open the socket and pass the relay's challenge: a signature over its nonce and
        the URL we will be relayed at, so the relay knows the id is ours."""
        ws = await self.client.websocket(
            peer, PATH_RELAY_ATTACH, within=HEARTBEAT_SECONDS, max_frame=MAX_REQUEST_FRAME
        )
        try:
            challenge = await ws.receive_json()
            nonce = bytes.fromhex(str(challenge.get("nonce", "")))
            url = relay_url(peer, self.identity.node_id)
            await ws.send_json(
                {
                    "node_id": self.identity.node_id.hex(),
                    "public_key": self.identity.public_key.hex(),
                    "signature": self.identity.sign(attach_message(nonce, url)).hex(),
                    "url": url,
                }
            )
            answer = await ws.receive_json()
            if not isinstance(answer, dict) or answer.get("ok") is not True:
                raise RelayProtocolError(f"refused: {answer!r:.200}")
        except BaseException:
            await ws.close()
            raise
        return ws

    async def _serve(self, ws: Any) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                continue
            try:
                request = decode_request(message.data)
            except RelayProtocolError as exc:
                log.warning("bad frame from the relay: %s", exc)
                continue
            task = asyncio.create_task(self._answer(ws, request), name="relayed-request")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, ws: Any, request: RelayedRequest) -> None:
        async with self._serving:
            answer = await self._ask_ourselves(request)
        frame = encode_answer(answer)
        if len(frame) > request.max_answer:  # over what the relay may still carry for us
            frame = encode_answer(RelayedAnswer(request.id, 503, "text/plain", "", b"budget"))
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_bytes(frame)
            self.served += 1
            self.bytes += len(frame)

    async def _ask_ourselves(self, request: RelayedRequest) -> RelayedAnswer:
        assert self._session is not None
        allowed = request.max_answer - ANSWER_HEADER_ROOM
        try:
            async with self._session.get(
                self._local + request.path_qs,
                headers={"Accept-Encoding": request.accept_encoding or "identity"},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=LOCAL_SECONDS),
            ) as resp:
                parts: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(READ_CHUNK):
                    size += len(chunk)
                    if size > allowed:
                        return RelayedAnswer(request.id, 503, "text/plain", "", b"too large")
                    parts.append(chunk)
                return RelayedAnswer(
                    request.id,
                    resp.status,
                    resp.headers.get("Content-Type", ""),
                    resp.headers.get("Content-Encoding", ""),
                    b"".join(parts),
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("relayed request failed here: %s", exc)
            return RelayedAnswer(request.id, 502, "text/plain", "", b"")


def relay_url(relay: Peer, node_id: bytes) -> str:
    """Where peers reach ``node_id`` through ``relay``."""
    base = (relay.http_url or "").rstrip("/")
    return f"{base}{PATH_RELAY_PREFIX}{node_id.hex()}"
