"""A node behind NAT answers frames of peers' requests by asking its own HTTP server.

Whether a request came down the relay's WebSocket, a reversed WebSocket or a punched TCP
stream (``relay_link``, ``direct_serve``), it is one ``relay_wire`` request frame, and the
answer is one frame back: asked of our own server on loopback, so it goes through exactly
the routes, quotas and codecs of a direct request, and bounded by what the link may carry
for us (``max_answer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from .errors import RelayProtocolError
from .relay_wire import RelayedAnswer, RelayedRequest, decode_request, encode_answer

log = logging.getLogger(__name__)

MAX_SERVING = 8  # requests answered at once, all links (the relay allows as many in flight)
LOCAL_SECONDS = 2.5  # our own answer to a request (the relay waits 3 s)
ANSWER_HEADER_ROOM = 512  # a frame header's bytes, kept out of the body's allowance
READ_CHUNK = 64 * 1024

Send = Callable[[bytes], Awaitable[None]]


@dataclass(slots=True)
class Served:
    """What one kind of link answered: requests and frame bytes."""

    requests: int = 0
    bytes: int = 0


class LocalAnswerer:
    def __init__(self, local_url: str) -> None:
        self._local = local_url.rstrip("/")
        self._serving = asyncio.Semaphore(MAX_SERVING)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def serve(
        self, frames: AsyncIterator[bytes], send: Send, served: Served, *, idle: float | None
    ) -> None:
        """Answer each request frame in its own task until ``frames`` ends or none came for
        ``idle`` seconds (None: never idle); answers still running then are cancelled, as
        their link is gone."""
        tasks: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(idle) as watch:
                async for frame in frames:
                    if idle is not None:
                        watch.reschedule(loop.time() + idle)
                    try:
                        request = decode_request(frame)
                    except RelayProtocolError as exc:
                        log.warning("a bad request frame: %s", exc)
                        continue
                    task = asyncio.create_task(self._answer(request, send, served), name="linked")
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        except TimeoutError:
            log.info("a direct link was idle for %s s: closed", idle)
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _answer(self, request: RelayedRequest, send: Send, served: Served) -> None:
        async with self._serving:
            answer = await self._ask_ourselves(request)
        frame = encode_answer(answer)
        if len(frame) > request.max_answer:  # over what the link may still carry for us
            frame = encode_answer(RelayedAnswer(request.id, 503, "text/plain", "", b"budget"))
        with contextlib.suppress(ConnectionError, RuntimeError):
            await send(frame)
            served.requests += 1
            served.bytes += len(frame)

    async def _ask_ourselves(self, request: RelayedRequest) -> RelayedAnswer:
        if self._session is None:
            return RelayedAnswer(request.id, 503, "text/plain", "", b"stopping")
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
            log.info("a linked request failed here: %s", exc)
            return RelayedAnswer(request.id, 502, "text/plain", "", b"")


async def ws_frames(ws: object) -> AsyncIterator[bytes]:
    """The binary frames of an aiohttp WebSocket, until it closes."""
    async for message in ws:  # type: ignore[attr-defined]
        if message.type == aiohttp.WSMsgType.BINARY:
            yield message.data
