"""The composition root: ``create_app(config)`` builds the one aiohttp Application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from . import discovery, metrics, peer_routes, routes, web_ui
from .config import NodeConfig
from .keys import CONFIG, NODE
from .node import Node

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1024 * 1024  # shard pushes read their own, larger, bounded body


async def _node_ctx(app: web.Application) -> AsyncIterator[None]:
    node = Node(app[CONFIG])
    await node.start()
    app[NODE] = node
    log.info("node started; data in %s", app[CONFIG].data_dir)
    yield
    await node.stop()


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if response.content_type == "text/html":
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        )
    return response


def create_app(config: NodeConfig) -> web.Application:
    app = web.Application(
        client_max_size=MAX_REQUEST_BYTES,
        middlewares=[routes.json_errors, _security_headers],
    )
    app[CONFIG] = config
    app.cleanup_ctx.append(_node_ctx)
    metrics.setup(app)
    routes.setup(app)
    discovery.setup(app)
    peer_routes.setup(app)
    web_ui.setup(app)
    return app
