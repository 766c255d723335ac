"""systemd's readiness protocol (sd_notify): ``Type=notify`` in deploy/rhizome.service.

When systemd starts the node it sets ``NOTIFY_SOCKET``; the node sends ``READY=1`` once
its HTTP socket serves, ``STOPPING=1`` on the way out, and — if the unit sets
``WatchdogSec`` (systemd then sets ``WATCHDOG_USEC``) — ``WATCHDOG=1`` from the event loop
at half that interval, so a loop that stops turning gets the node restarted. The protocol
is one datagram per message on a unix socket; without ``NOTIFY_SOCKET`` nothing is sent.
The variables are systemd's, read here as libsystemd reads them, not settings.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping

from aiohttp import web

log = logging.getLogger(__name__)

# A watchdog ping at this share of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises.
WATCHDOG_SHARE = 0.5


def notify(message: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``message`` (``READY=1``, ``STOPPING=1``, …) to systemd; whether it went.

    Never blocks: a datagram that does not fit the socket's queue is dropped (logged).
    """
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.connect(address)
            sock.send(message.encode())
    except OSError as exc:
        log.warning("could not tell systemd %r: %s", message.split("\n")[0], exc)
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between watchdog pings, or None when systemd asked for none (for us)."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec or not environ.get("NOTIFY_SOCKET"):
        return None
    if pid and pid != str(os.getpid()):  # meant for another process
        return None
    try:
        micros = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number; no watchdog pings", usec)
        return None
    return micros / 1e6 * WATCHDOG_SHARE if micros > 0 else None


async def _ping_forever(interval: float) -> None:
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


async def watchdog_ctx(app: web.Application) -> AsyncIterator[None]:
    """Watchdog pings while the app runs (none unless systemd asked for them)."""
    interval = watchdog_interval()
    if interval is None:
        yield
        return
    task = asyncio.create_task(_ping_forever(interval), name="systemd-watchdog")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
