"""``GET /healthz``: is the node up and serving? For Docker's HEALTHCHECK, systemd, a proxy.

Cheap by design: it reads attributes in memory and touches no table and no thread (the
full ``/api/status`` counts the frontier's rows, which takes seconds on a large one and
waits behind the frontier's thread), so a check every few seconds costs nothing and a
slow answer means the event loop itself is stuck. 200 while the node serves — also while
its disk is full: it still answers searches, and a restart would not free space, so
``storage_ok`` says so and the metric ``rhizome_storage_ok`` is the one to alert on.
503 while the node's parts are still being built.
"""

from __future__ import annotations

import time

from aiohttp import web

from .keys import NODE
from .version import VERSION


async def healthz(request: web.Request) -> web.Response:
    node = request.app.get(NODE)
    if node is None:
        return web.json_response({"status": "starting"}, status=503)
    store, frontier = node.store, node.crawler.frontier
    storage_ok = store.last_error is None and frontier.storage_error is None
    return web.json_response(
        {
            "status": "ok" if storage_ok else "degraded",
            "storage_ok": storage_ok,
            "disk_full": store.disk_full or frontier.disk_full,
            "uptime_s": round(time.time() - node.started_at, 1),
            "version": VERSION,
        },
        headers={"Cache-Control": "no-store"},
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
