"""Loopback HTTP servers for the crawler tests: real aiohttp servers on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Hit:
    path: str
    at: float  # time.monotonic() when the server saw the request
    headers: dict[str, str]


@dataclass
class RequestLog:
    hits: list[Hit] = field(default_factory=list)
    max_in_flight: int = 0  # most requests a handler saw at once (handlers update it)

    def paths(self) -> list[str]:
        return [h.path for h in self.hits]

    def count(self, path: str) -> int:
        return sum(1 for h in self.hits if h.path == path)

    def times(self, *, exclude: tuple[str, ...] = ()) -> list[float]:
        return [h.at for h in self.hits if h.path not in exclude]


def logging_app(log: RequestLog) -> web.Application:
    """An Application whose middleware records every request before any handler runs."""

    @web.middleware
    async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
        log.hits.append(Hit(request.path_qs, time.monotonic(), dict(request.headers)))
        return await handler(request)

    return web.Application(middlewares=[record])


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on 127.0.0.1 with an ephemeral port; yields ``http://127.0.0.1:PORT``."""
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def add_get(app: web.Application, path: str, handler: Callable[[web.Request], Any]) -> None:
    """Route GET ``path`` to ``handler``, which may be a plain function (e.g. a lambda)."""
    if asyncio.iscoroutinefunction(handler):
        app.router.add_get(path, handler)
        return

    async def wrapped(request: web.Request) -> web.StreamResponse:
        result: web.StreamResponse = handler(request)
        return result

    app.router.add_get(path, wrapped)
