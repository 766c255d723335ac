"""HTML parsing in worker processes, driven directly by the event loop.

Parsing is the crawler's heaviest CPU work and selectolax holds the GIL, so it runs in
separate processes. A ProcessPoolExecutor was measured to cost the event loop more than
the parse itself (a feeder and a manager thread fighting the loop for the GIL), so each
worker here is a plain subprocess on a socketpair: the loop writes length-prefixed
pickles and reads the answers itself, with no helper threads in the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import socket
import struct
import sys
from collections import deque
from typing import Any

from .errors import FetchError
from .parse import ParsedPage, parse_html

log = logging.getLogger(__name__)

HEADER = struct.Struct("!I")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
WORKER_START_TIMEOUT = 30.0


class ParserCrashed(FetchError):
    """The parser process died while this page was in it (a hostile page, or OOM)."""

    retryable = False


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.pending: deque[asyncio.Future[ParsedPage]] = deque()
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        parent, child = socket.socketpair()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "import crawler.parse_pool as p; p.serve()",
                str(child.fileno()),
                pass_fds=(child.fileno(),),
                env={**os.environ, "PYTHONPATH": _package_root()},
            )
        finally:
            child.close()
        self.reader, self.writer = await asyncio.open_unix_connection(sock=parent)
        self.task = asyncio.create_task(self._read_loop(), name=f"parser-{self.index}")

    async def _read_loop(self) -> None:
        assert self.reader is not None
        try:
            while True:
                header = await self.reader.readexactly(HEADER.size)
                (size,) = HEADER.unpack(header)
                payload = await self.reader.readexactly(size)
                fut = self.pending.popleft()
                if fut.done():
                    continue
                kind, value = pickle.loads(payload)
                if kind == "ok":
                    fut.set_result(value)
                else:
                    fut.set_exception(FetchError(f"parse failed: {value}"))
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        self._fail_pending()

    def _fail_pending(self) -> None:
        first = True
        while self.pending:
            fut = self.pending.popleft()
            if not fut.done():
                if first:  # the page inside the worker when it died
                    fut.set_exception(ParserCrashed("parser process died on this page"))
                else:
                    fut.set_exception(FetchError("parser restarted; page will be retried"))
            first = False

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    async def parse(self, request: tuple[Any, ...]) -> ParsedPage:
        assert self.writer is not None
        data = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        fut: asyncio.Future[ParsedPage] = asyncio.get_running_loop().create_future()
        self.pending.append(fut)
        self.writer.write(HEADER.pack(len(data)) + data)
        await self.writer.drain()
        return await fut

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.proc is not None:
            try:
                await asyncio.wait_for(self.proc.wait(), 5.0)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._fail_pending()


def _package_root() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    existing = os.environ.get("PYTHONPATH")
    return root if not existing else f"{root}{os.pathsep}{existing}"


class ParsePool:
    """``await pool.parse(url, body, ...)`` → ParsedPage, on the least busy worker."""

    def __init__(self, workers: int) -> None:
        self.size = max(1, workers)
        self._workers: list[_Worker] = []
        self._restart_lock = asyncio.Lock()

    async def start(self) -> None:
        self._workers = [_Worker(i) for i in range(self.size)]
        await asyncio.gather(*(w.start() for w in self._workers))

    async def close(self) -> None:
        await asyncio.gather(*(w.close() for w in self._workers))
        self._workers = []

    async def parse(
        self,
        url: str,
        body: bytes,
        *,
        content_type: str | None,
        x_robots_tag: str | None,
        fetched_at: float,
        status: int,
    ) -> ParsedPage:
        worker = min(self._workers, key=lambda w: len(w.pending))
        if not worker.alive:
            worker = await self._restart(worker)
        return await worker.parse((url, body, content_type, x_robots_tag, fetched_at, status))

    async def _restart(self, dead: _Worker) -> _Worker:
        async with self._restart_lock:
            if dead.alive or dead not in self._workers:
                return dead
            log.warning("parser process %d died; starting a new one", dead.index)
            await dead.close()
            fresh = _Worker(dead.index)
            await fresh.start()
            self._workers[self._workers.index(dead)] = fresh
            return fresh


def serve() -> None:
    """Worker process main loop: requests in, ParsedPage (or an error) out, until EOF."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    stream = sock.makefile("rwb", buffering=1024 * 1024)
    while True:
        header = stream.read(HEADER.size)
        if len(header) < HEADER.size:
            return
        (size,) = HEADER.unpack(header)
        if size > MAX_MESSAGE_BYTES:
            return
        url, body, content_type, x_robots_tag, fetched_at, status = pickle.loads(stream.read(size))
        try:
            reply: tuple[str, Any] = (
                "ok",
                parse_html(
                    url,
                    body,
                    content_type=content_type,
                    x_robots_tag=x_robots_tag,
                    fetched_at=fetched_at,
                    status=status,
                ),
            )
        except Exception as exc:  # one bad page must not end the worker
            reply = ("error", f"{type(exc).__name__}: {exc}")
        data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        stream.write(HEADER.pack(len(data)) + data)
        stream.flush()
