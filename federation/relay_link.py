"""The side of a node behind NAT: one outbound WebSocket to a relay, kept up for ever.

``RelayLink.run`` attaches to the reachable member closest to our id that agrees (so
nodes behind NAT spread over the relays), announces the relayed URL (``announce``: the
DHT re-signs our hello and tells our contacts), and answers the requests that come down
the socket by asking its own HTTP server on loopback (``answering.py``), so a relayed
request goes through exactly the routes, quotas and codecs a direct one does. When the
socket closes (the relay died, ended our reservation or its budget) it attaches to the
next relay at once;
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

from .answering import LocalAnswerer, Served, ws_frames
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
    attach_message,
)

log = logging.getLogger(__name__)

ATTACH_SECONDS = 1.0  # per relay tried; a live relay answers its handshake in ms
AVOID_SECONDS = 60.0  # a relay that failed us is not tried again for this long
RETRY_SECONDS = 1.0  # no relay would take us: try the members again after this
MAX_REQUEST_FRAME = HEADER_LENGTH_BYTES + MAX_HEADER_BYTES + MAX_RELAY_REQUEST_BYTES


class RelayLink:
    def __init__(
        self,
        *,
        identity: Identity,
        client: PeerClient,
        candidates: Callable[[], Awaitable[list[Peer]]],
        answerer: LocalAnswerer,
        announce: Callable[[str | None], Awaitable[None]],
    ) -> None:
        self.identity = identity
        self.client = client
        self._candidates = candidates
        self._answerer = answerer
        self._announce = announce
        self._avoid: dict[bytes, float] = {}
        self.relay: Peer | None = None
        # Our address as the relay saw it: the NAT's public side, which a hole punch needs.
        self.observed_ip: str | None = None
        self.url: str | None = None
        self.attached_at: float | None = None
        self.attaches = 0
        self.last_gap: float | None = None  # seconds from losing a relay to the next
        self.served = Served()  # requests and frame bytes answered through relays

    def status(self) -> dict[str, Any]:
        return {
            "relay": self.relay.node_id.hex() if self.relay else None,
            "relayed_url": self.url,
            "attached_for_s": round(time.monotonic() - self.attached_at, 1)
            if self.attached_at
            else None,
            "attaches": self.attaches,
            "last_reattach_s": self.last_gap,
            "served": self.served.requests,
            "served_bytes": self.served.bytes,
        }

    async def run(self) -> None:
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
                    await self._answerer.serve(ws_frames(ws), ws.send_bytes, self.served, idle=None)
                finally:
                    with contextlib.suppress(Exception):
                        await ws.close()
                lost_at = time.monotonic()
                if ws.close_code != CLOSE_RESERVATION_OVER:
                    self._avoid[relay.node_id] = lost_at + AVOID_SECONDS
                log.info("relay %s closed (%s)", relay.http_url, ws.close_code)
                self.relay = self.attached_at = self.observed_ip = None
        finally:
            self.relay = self.attached_at = self.observed_ip = None

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
        ws, answer = await attach_link(
            self.client,
            self.identity,
            peer,
            PATH_RELAY_ATTACH,
            relay_url(peer, self.identity.node_id),
        )
        observed = answer.get("observed")
        self.observed_ip = observed if isinstance(observed, str) else None
        return ws


async def attach_link(
    client: PeerClient, identity: Identity, peer: Peer, path: str, url: str
) -> tuple[Any, dict[str, Any]]:
    """Open a WebSocket to ``peer``'s ``path`` and pass its challenge: a signature over its
    nonce and ``url``, what we will be reached at through it, so it knows the id is ours.
    The socket and the peer's answer (``{"ok": true, ...}``)."""
    ws = await client.websocket(peer, path, within=HEARTBEAT_SECONDS, max_frame=MAX_REQUEST_FRAME)
    try:
        challenge = await ws.receive_json()
        nonce = bytes.fromhex(str(challenge.get("nonce", "")))
        await ws.send_json(
            {
                "node_id": identity.node_id.hex(),
                "public_key": identity.public_key.hex(),
                "signature": identity.sign(attach_message(nonce, url)).hex(),
                "url": url,
            }
        )
        answer = await ws.receive_json()
        if not isinstance(answer, dict) or answer.get("ok") is not True:
            raise RelayProtocolError(f"refused: {answer!r:.200}")
    except BaseException:
        await ws.close()
        raise
    return ws, answer


def relay_url(relay: Peer, node_id: bytes) -> str:
    """Where peers reach ``node_id`` through ``relay``."""
    base = (relay.http_url or "").rstrip("/")
    return f"{base}{PATH_RELAY_PREFIX}{node_id.hex()}"
