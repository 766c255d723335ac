"""Fetch-and-parse worker processes, so both cores crawl.

Measured on 2 cores, the node's event loop was the bottleneck: every page cost it an
aiohttp request, a 100 KB hand-over to a parser process and the bookkeeping. Each worker
here is a subprocess with its own event loop and its own ``Fetcher`` (the same safety
limits: SSRF guard, caps, redirects re-checked against robots.txt); it fetches a URL,
parses it with selectolax and sends back only the ``ParsedPage``. The node keeps the
scheduling: frontier, politeness, robots.txt for leased URLs, the index.

Messages are length-prefixed pickles over a socketpair between the node and its own
child, read and written by the node's event loop itself (no helper threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import pickle
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .config import CrawlerConfig
from .fetch import Fetcher, UnsupportedContent
from .parse import ParsedPage, parse_html
from .robots import RobotsCache

log = logging.getLogger(__name__)

HEADER = struct.Struct("!I")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
STOP_TIMEOUT = 5.0
READY_TIMEOUT = 60.0
# Parsing one capped page takes well under a second; this is the margin on top of the
# fetch's own time caps before a worker that has not answered is taken for wedged.
PARSE_ALLOWANCE = 30.0
# Each worker's malloc: at most 2 arenas and a fixed 128 KiB mmap threshold, so page
# bodies of 128 KiB-4 MiB are mmapped and given back, not carved from the heap after
# glibc's dynamic threshold rose to them. Measured after the large corpus' rustdoc site:
# 59-72 MB anonymous memory a worker, 91-99 MB with glibc's defaults.
# After a body this large is parsed, freed memory is given back (malloc_trim, 0.5-3 ms):
# six large rustdoc/GHC pages in a row left a process +34 MB resident, +9 MB trimmed.
TRIM_AFTER_BYTES = 1024 * 1024
MALLOC_TUNABLES = (
    "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072"
)

_ERROR_TYPES: dict[str, type[errors.FetchError]] = {
    cls.__name__: cls
    for cls in (
        errors.FetchError,
        errors.BlockedAddress,
        errors.UnsupportedScheme,
        errors.TooLarge,
        errors.TooManyRedirects,
        errors.RobotsDisallowed,
        UnsupportedContent,
    )
}


@dataclass(slots=True)
class FetchMeta:
    """What the node needs to know about a fetch besides the parsed page."""

    url: str
    status: int
    elapsed: float
    redirected_from: list[str] = field(default_factory=list)
    truncated: bool = False


class WorkerDied(errors.FetchError):
    """The worker process ended while this URL was in it; retried later."""


def _encode_error(exc: errors.FetchError) -> tuple[Any, ...]:
    if isinstance(exc, errors.HTTPStatusError):
        return ("HTTPStatusError", str(exc), exc.retryable, exc.status, exc.retry_after)
    return (type(exc).__name__, str(exc), exc.retryable, None, None)


def _decode_error(data: tuple[Any, ...]) -> errors.FetchError:
    name, message, retryable, status, retry_after = data
    exc: errors.FetchError
    if name == "HTTPStatusError":
        exc = errors.HTTPStatusError(int(status), retry_after)
    else:
        exc = _ERROR_TYPES.get(name, errors.FetchError)(message)
    exc.retryable = bool(retryable)
    return exc


async def _read_message(reader: asyncio.StreamReader) -> bytes:
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > MAX_MESSAGE_BYTES:
        raise ConnectionError(f"message of {size} bytes")
    return await reader.readexactly(size)


def _frame(obj: object) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.pending: dict[int, asyncio.Future[tuple[FetchMeta, ParsedPage]]] = {}
        self.proc: asyncio.subprocess.Process | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.reply_timeout = PARSE_ALLOWANCE
        self._ids = itertools.count()

    async def start(self, config: CrawlerConfig) -> None:
        parent, child = socket.socketpair()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                # This module under the name the node imported it by (rhizome.crawler.workers
                # when installed): the pickles both ways then name the same classes.
                f"import {__name__} as w; w.serve()",
                str(child.fileno()),
                pass_fds=(child.fileno(),),
                env={
                    "GLIBC_TUNABLES": MALLOC_TUNABLES,  # unless the operator set their own
                    **os.environ,
                    **_import_path(),
                },
            )
        finally:
            child.close()
        # Every hop of a fetch may take fetch_timeout, and so may the robots.txt of a
        # redirect target; a reply later than all of that will not come.
        self.reply_timeout = 2 * (config.max_redirects + 1) * config.fetch_timeout + PARSE_ALLOWANCE
        try:
            reader, self.writer = await asyncio.open_unix_connection(sock=parent)
            self.writer.write(_frame(config))
            # Wait until the worker has imported everything and opened its session, so the
            # first URL is not held up (and the first politeness gap not shortened) by it.
            async with asyncio.timeout(READY_TIMEOUT):
                ready = pickle.loads(await _read_message(reader))
            if ready != ("ready",):
                raise RuntimeError(f"crawl worker {self.index} did not start: {ready!r}")
        except BaseException:
            # A worker that never became ready must not outlive the attempt.
            if self.writer is None:
                parent.close()
            await self.close()
            raise
        self.task = asyncio.create_task(self._read_loop(reader), name=f"crawl-worker-{self.index}")

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                req_id, kind, first, second = pickle.loads(await _read_message(reader))
                fut = self.pending.pop(req_id, None)
                if fut is None or fut.done():
                    continue
                if kind == "ok":
                    fut.set_result((first, second))
                else:
                    fut.set_exception(_decode_error(first))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except (pickle.UnpicklingError, ImportError, AttributeError, EOFError, ValueError) as exc:
            # A reply naming code this process cannot load: without this the URLs in flight
            # would wait for it forever. They fail as WorkerDied (retried) instead.
            log.error("crawl worker %d sent a reply that cannot be read: %r", self.index, exc)
            self._kill()
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(WorkerDied("crawl worker exited; will retry"))
        self.pending.clear()

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    async def crawl(self, url: str) -> tuple[FetchMeta, ParsedPage]:
        assert self.writer is not None
        req_id = next(self._ids)
        fut: asyncio.Future[tuple[FetchMeta, ParsedPage]] = (
            asyncio.get_running_loop().create_future()
        )
        self.pending[req_id] = fut
        self.writer.write(_frame((req_id, url)))
        try:
            async with asyncio.timeout(self.reply_timeout):
                return await fut
        except TimeoutError as exc:
            # Its own caps would have answered by now: the process is stuck. Killing it
            # fails its other URLs as WorkerDied (retried) and the next crawl restarts it.
            log.error("crawl worker %d gave no answer for %s; killing it", self.index, url)
            self._kill()
            raise WorkerDied(f"crawl worker gave no answer in {self.reply_timeout:.0f} s") from exc
        finally:
            self.pending.pop(req_id, None)

    def _kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.proc is not None and self.proc.returncode is None:
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await self.proc.wait()
            except TimeoutError:
                self._kill()
                try:
                    async with asyncio.timeout(STOP_TIMEOUT):
                        await self.proc.wait()
                except TimeoutError:
                    # Only a process stuck in the kernel survives SIGKILL; stopping the
                    # crawler must not wait for it.
                    log.error("crawl worker %d (pid %d) did not exit", self.index, self.proc.pid)


def _import_path() -> dict[str, str]:
    """PYTHONPATH for a worker: the folder this module's package imports from, first, where
    the files are laid out as the names say (a wheel, a tree of links); else, as under an
    editable install's package-dir mapping, nothing added: the worker finds the package as
    this process did (same interpreter, same site-packages, same PYTHONPATH)."""
    *packages, _ = __name__.split(".")
    folder = os.path.dirname(os.path.abspath(__file__))
    root = folder
    for _ in packages:
        root = os.path.dirname(root)
    if os.path.relpath(folder, root).split(os.sep) != packages:
        return {}
    existing = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": root if not existing else f"{root}{os.pathsep}{existing}"}


class CrawlWorkers:
    """``await workers.crawl(url)`` → (FetchMeta, ParsedPage) on the least busy worker.

    ``retire()`` ends the processes while the crawl has nothing to do (each holds 45-95 MB:
    measured after crawling the large corpus); the next ``crawl`` starts them again and
    waits until they are ready (about a second), so no URL goes to a worker still starting.
    """

    def __init__(self, config: CrawlerConfig, size: int) -> None:
        self.config = config
        self.size = max(1, size)
        self._workers: list[_Worker] = []
        self._restart_lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()  # starts and retirements, one at a time

    @property
    def running(self) -> bool:
        return bool(self._workers)

    async def start(self) -> None:
        async with self._start_lock:
            if not self._workers:
                await self._start_all()

    async def _start_all(self) -> None:
        workers = [_Worker(i) for i in range(self.size)]
        # Let every start finish (each is bounded), then close them all if one failed: a
        # failed start must not leave worker processes behind.
        results = await asyncio.gather(
            *(w.start(self.config) for w in workers), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await asyncio.gather(*(w.close() for w in workers))
            raise failed[0]
        self._workers = workers

    async def retire(self) -> None:
        """End the worker processes until the next ``crawl`` needs them."""
        async with self._start_lock:
            workers, self._workers = self._workers, []
            await asyncio.gather(*(w.close() for w in workers))
        if workers:
            log.info("crawl idle: %d parser workers stopped until there is work", len(workers))

    async def close(self) -> None:
        workers, self._workers = self._workers, []
        await asyncio.gather(*(w.close() for w in workers))

    async def crawl(self, url: str) -> tuple[FetchMeta, ParsedPage]:
        if not self._workers:
            await self.start()
        worker = min(self._workers, key=lambda w: len(w.pending))
        if not worker.alive:
            worker = await self._restart(worker)
        return await worker.crawl(url)

    async def _restart(self, dead: _Worker) -> _Worker:
        async with self._restart_lock:
            if dead.alive or dead not in self._workers:
                return dead
            log.warning("crawl worker %d died; starting a new one", dead.index)
            await dead.close()
            fresh = _Worker(dead.index)
            await fresh.start(self.config)
            self._workers[self._workers.index(dead)] = fresh
            return fresh


# --- the worker process ------------------------------------------------------------------
def trim_heap() -> None:
    """Give freed heap pages back to the system, where the C library can (glibc)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def serve() -> None:
    """Worker process entry point: fetch + parse requests until the node closes the socket."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    try:
        import uvloop

        uvloop.run(_serve(sock))
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        asyncio.run(_serve(sock))


async def _serve(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    config: CrawlerConfig = pickle.loads(await _read_message(reader))
    fetcher = Fetcher(config)
    await fetcher.start()
    writer.write(_frame(("ready",)))

    # Only redirect targets are checked here; the node checked the leased URL itself.
    robots = RobotsCache(fetcher.fetch_robots, config.user_agent_name, max_hosts=config.host_memory)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(req_id: int, url: str) -> None:
        reply: tuple[Any, ...]
        try:
            result = await fetcher.fetch(url, allowed=robots.allowed)
            page = parse_html(
                result.url,
                result.body,
                content_type=result.content_type,
                x_robots_tag=result.x_robots_tag,
                fetched_at=time.time(),
                status=result.status,
            )
            meta = FetchMeta(
                url=result.url,
                status=result.status,
                elapsed=result.elapsed,
                redirected_from=result.redirected_from,
                truncated=result.truncated,
            )
            reply = (req_id, "ok", meta, page)
            if len(result.body) >= TRIM_AFTER_BYTES:
                del result
                trim_heap()
        except errors.FetchError as exc:
            reply = (req_id, "err", _encode_error(exc), None)
        except Exception as exc:  # one hostile page must not end the worker
            reply = (req_id, "err", ("FetchError", f"internal: {exc!r}", False, None, None), None)
        writer.write(_frame(reply))

    try:
        while True:
            try:
                req_id, url = pickle.loads(await _read_message(reader))
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            task = asyncio.create_task(handle(req_id, url))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await fetcher.close()
