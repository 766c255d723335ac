"""Direct paths, the side of the node behind NAT: dial a querier that asked through our
relay, then answer its requests on that link as we answer relayed ones.

``reverse``: a public querier named its URL; we open a WebSocket to its
``PATH_DIRECT_ATTACH`` (the URL must prove the querier's id first, as every peer URL
does) and sign the link's name. ``punch``: a querier behind NAT named its observed
address; we bind a port, tell it ours (our relay's view of our NAT's address, that port)
and connect to it while it connects to us, then sign its nonce as the first frame.

Each is a dial to an address a stranger names, so both go through the SSRF guard, at most
``OPEN_RATE`` a second in all, and at most ``max_links`` links are served at once (a
querier's new link replaces its old one); a link no request used for ``IDLE_SECONDS`` is
closed (the querier closes its end sooner).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import orjson

from rhizome.dht import Identity, Peer
from rhizome.dht.quotas import RateLimiter

from .answering import LocalAnswerer, Served, ws_frames
from .client import PeerClient
from .direct_wire import (
    PATH_DIRECT_ATTACH,
    PUNCH_SECONDS,
    StreamSocket,
    bound_socket,
    direct_url,
    format_addr,
    parse_addr,
    punch_message,
    stream_frame,
    stream_frames,
)
from .errors import DirectRefused, PeerError, RelayError
from .relay_link import MAX_REQUEST_FRAME, attach_link

log = logging.getLogger(__name__)

# Links opened a second at most, all queriers together: each is a dial (a whoami and a
# WebSocket, or a SYN) to an address a stranger named through our relay.
OPEN_RATE = 1.0
OPEN_BURST = 8.0
IDLE_SECONDS = 600.0  # the querier closes an unused link after 300 s; this if it does not
ATTACH_SECONDS = 3.0  # the querier's whoami, WebSocket and handshake, from home

# What ``DirectServer.counts`` counts (metrics show each, at 0 until it happens).
SERVED_EVENTS = ("reversed", "reversal_failed", "punched", "punch_failed", "refused")


class DirectServer:
    def __init__(
        self,
        *,
        identity: Identity,
        client: PeerClient,
        answerer: LocalAnswerer,
        max_links: int,
        relayed: Callable[[], bool],
        observed_ip: Callable[[], str | None],
    ) -> None:
        """``relayed``: whether we are behind NAT now (only then do we dial queriers);
        ``observed_ip``: our NAT's address as our relay sees it, if it told us."""
        self.identity = identity
        self.client = client
        self._answerer = answerer
        self.max_links = max_links
        self._relayed = relayed
        self._observed_ip = observed_ip
        self._rate = RateLimiter(OPEN_RATE, OPEN_BURST)
        self._links: dict[str, asyncio.Task[None]] = {}  # querier hex -> serving it
        self.served = Served()
        self.counts: Counter[str] = Counter()

    def _check(self, querier: str) -> None:
        why = None
        if self.max_links == 0:
            why = "this node opens no direct paths"
        elif not self._relayed():
            why = "this node is not behind a relay: dial it"
        elif querier not in self._links and len(self._links) >= self.max_links:
            why = f"serving {self.max_links} direct links already"
        elif not self._rate.allow("all"):
            why = "too many direct links opened just now"
        if why is not None:
            self.counts["refused"] += 1
            raise DirectRefused(why)

    def reverse(self, querier: bytes, url: str) -> None:
        """Dial ``querier`` back at ``url`` (in the background); DirectRefused if not now."""
        self._check(querier.hex())
        self._start(querier.hex(), self._reversed(querier, url))

    def punch(self, querier: bytes, addr: str, nonce: bytes) -> str:
        """Connect to ``addr`` while the querier connects to us (in the background); the
        address to tell it. DirectRefused if not now, RelayProtocolError for a bad addr."""
        target = parse_addr(addr)
        ip = self._observed_ip()
        if ip is None:
            self.counts["refused"] += 1
            raise DirectRefused("our relay has not told us our address")
        self._check(querier.hex())
        try:
            sock = bound_socket(ip)
        except OSError as exc:
            raise DirectRefused(f"no port to punch from: {exc}") from None
        ours = format_addr(ip, sock.getsockname()[1])
        self._start(querier.hex(), self._punched(querier, sock, target, nonce))
        return ours

    def _start(self, querier: str, serving: Coroutine[Any, Any, None]) -> None:
        old = self._links.pop(querier, None)
        if old is not None:
            old.cancel()  # the querier lost its end: this one replaces it
        task = asyncio.create_task(serving, name="direct-served")
        self._links[querier] = task

        def done(_task: asyncio.Task[None]) -> None:
            if self._links.get(querier) is task:
                del self._links[querier]

        task.add_done_callback(done)

    async def _reversed(self, querier: bytes, url: str) -> None:
        peer = Peer(querier, "", 0, url)
        link_name = direct_url(url, self.identity.node_id.hex())
        try:
            async with asyncio.timeout(ATTACH_SECONDS):
                ws, _ = await attach_link(
                    self.client, self.identity, peer, PATH_DIRECT_ATTACH, link_name
                )
        except (PeerError, RelayError, TimeoutError, aiohttp.ClientError, ValueError) as exc:
            log.info("could not dial %s back: %s", url, exc)
            self.counts["reversal_failed"] += 1
            return
        self.counts["reversed"] += 1
        try:
            await self._answerer.serve(ws_frames(ws), ws.send_bytes, self.served, idle=IDLE_SECONDS)
        finally:
            await ws.close()

    async def _punched(
        self, querier: bytes, sock: Any, target: tuple[str, int], nonce: bytes
    ) -> None:
        try:
            reader, writer = await self.client.punch(sock, target, within=PUNCH_SECONDS)
        except PeerError as exc:
            log.info("the punch to %s did not meet: %s", target, exc)
            self.counts["punch_failed"] += 1
            return
        try:
            proof = {
                "node_id": self.identity.node_id.hex(),
                "public_key": self.identity.public_key.hex(),
                "signature": self.identity.sign(punch_message(nonce, querier)).hex(),
            }
            writer.write(stream_frame(orjson.dumps(proof)))
            await writer.drain()
            self.counts["punched"] += 1
            frames = stream_frames(reader, MAX_REQUEST_FRAME)
            await self._answerer.serve(
                frames, StreamSocket(writer).send_bytes, self.served, idle=IDLE_SECONDS
            )
        except ConnectionError as exc:
            log.info("a punched link to %s broke: %s", target, exc)
        finally:
            writer.close()

    async def close(self) -> None:
        tasks = list(self._links.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        return {
            "links": len(self._links),
            "served": self.served.requests,
            "served_bytes": self.served.bytes,
            "counts": {event: self.counts[event] for event in SERVED_EVENTS},
        }
