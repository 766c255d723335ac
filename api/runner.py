"""Running nodes in this process: bind, start, wait for a signal, stop within a limit.

The HTTP socket is bound before the app starts, so the network context can tell peers
its real URL (``--http HOST:0`` picks the port) and peers that connect at once wait in
the listen backlog until the site serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from typing import Any

from aiohttp import web

from rhizome.crawler import FrontierError
from rhizome.index import IndexUnavailable

from . import systemd
from .app import create_app
from .config import NodeConfig
from .keys import NETWORK
from .node import disk_full_hint
from .operator import CredentialError

log = logging.getLogger("rhizome")

LISTEN_BACKLOG = 128


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def event_loop_runner() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every POSIX system
        return asyncio.run
    return uvloop.run


# Requests in flight get this long to finish at shutdown (aiohttp waits 60 s by default): a
# peer's shard push cut short is simply sent again, and a stopping node should stop.
SHUTDOWN_GRACE = 5.0


async def start_node(config: NodeConfig) -> tuple[web.AppRunner, web.Application, str]:
    """Start one node: app, HTTP listener, then the network (peers need the HTTP URL)."""
    try:
        listener = _bind(config.http_host, config.http_port)
    except OSError as exc:
        raise SystemExit(f"rhizome: cannot listen on {config.http}: {exc.strerror}") from None
    host, port = listener.getsockname()[:2]
    url = f"http://{host}:{port}/"
    app = create_app(config, http_url=url)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE
    )
    try:
        await runner.setup()
    except BaseException as exc:
        # What had started (the cleanup contexts before the failing one) stops again.
        with contextlib.suppress(Exception):
            await runner.cleanup()
        listener.close()
        if isinstance(exc, IndexUnavailable | FrontierError | CredentialError):
            # The data cannot be opened (full disk, damaged files): one clear line.
            hint = disk_full_hint(config.data_dir)
            raise SystemExit(f"rhizome: cannot start: {exc}{hint}") from None
        raise
    site = web.SockSite(runner, listener)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise SystemExit(f"rhizome: cannot listen on {config.http}: {exc.strerror}") from None
    # Tests and scripts read these lines to learn the ports when --http/--dht used port 0.
    print(f"rhizome: listening on {url}", flush=True)
    network = app[NETWORK]
    if network is not None:
        print(f"rhizome: dht on udp://{network.dht.host}:{network.dht.port}/", flush=True)
    return runner, app, url


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


# A stop that takes longer than this is cut short: everything durable was committed as it
# went (a URL is DONE only after its page's commit), so exiting is as safe as a kill -9.
# In ~3 of 10 full test runs the demo's loop waited > 20 s on some await after Ctrl-C.
STOP_LIMIT = 15.0


async def stop_within(*runners: web.AppRunner, limit: float = STOP_LIMIT) -> None:
    """Clean up ``runners`` together; if that outlasts ``limit``, name what is still
    running and leave the process at once (a stuck await must not keep a node alive)."""
    cleanup = asyncio.ensure_future(asyncio.gather(*(r.cleanup() for r in runners)))
    done, _pending = await asyncio.wait([cleanup], timeout=limit)
    if not done:
        stuck = sorted(t.get_name() for t in asyncio.all_tasks() if not t.done())
        log.warning("stop took over %.0f s; exiting anyway (still running: %s)", limit, stuck)
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    cleanup.result()


async def serve(config: NodeConfig) -> None:
    """Run the node until SIGINT/SIGTERM (or cancellation)."""
    runner, _app, url = await start_node(config)
    systemd.notify(f"READY=1\nSTATUS=serving on {url}")  # Type=notify: the node serves
    try:
        await wait_for_signal()
    finally:
        log.info("shutting down")
        systemd.notify("STOPPING=1")
        await stop_within(runner)
