"""Endpoints of direct paths past the relays (``federation/direct.py``, ``direct_serve.py``).

On a node behind NAT, asked through its relay (both are relayed paths):

* ``GET /api/peer/reverse?node=ID&url=URL``: a public querier asks us to dial it back;
* ``GET /api/peer/punch?node=ID&addr=IP:PORT&nonce=HEX``: a querier behind NAT asks us to
  connect to it as it connects to us; the answer is our address to connect to.

On a querier: ``GET /api/peer/direct`` (WebSocket), the reversed link of a node behind NAT
that we asked, with the relay's attach handshake; nobody else's is taken.

Each has a per-address quota, as the other peer endpoints do (a node's own relayed
requests all come from loopback: ``DirectServer`` also bounds what it opens in all).
"""

from __future__ import annotations

import logging
import os

from aiohttp import web

from rhizome.dht.quotas import RateLimiter
from rhizome.federation.direct_wire import PATH_DIRECT_ATTACH, PUNCH_NONCE_BYTES, direct_url
from rhizome.federation.errors import DirectRefused, RelayProtocolError
from rhizome.federation.relay_wire import (
    ATTACH_NONCE_BYTES,
    HEARTBEAT_SECONDS,
    PATH_PUNCH,
    PATH_REVERSE,
)

from .peer_routes import SEARCH_BURST, SEARCH_RATE, network_of, over_rate
from .relay_routes import MAX_ANSWER_FRAME, carry, check_attach
from .search import BadRequest

log = logging.getLogger(__name__)

MAX_URL_CHARS = 512  # a querier's URL, as a dial-back's
DIRECT_QUOTA = web.AppKey("direct_quota", RateLimiter)


def _hex(request: web.Request, name: str, size: int) -> bytes:
    """Query parameter ``name``: ``size`` bytes written in hex, else BadRequest."""
    try:
        value = bytes.fromhex(request.query.get(name, ""))
    except ValueError:
        value = b""
    if len(value) != size:
        raise BadRequest(f"{name} must be {size} bytes of hex")
    return value


def _node(request: web.Request) -> bytes:
    return _hex(request, "node", 20)


async def reverse(request: web.Request) -> web.Response:
    network = network_of(request)
    if (refused := over_rate(request, request.app[DIRECT_QUOTA])) is not None:
        return refused
    querier, url = _node(request), request.query.get("url", "")
    if not url.startswith(("http://", "https://")) or len(url) > MAX_URL_CHARS:
        raise BadRequest(f"url must be an http(s) URL of at most {MAX_URL_CHARS} characters")
    try:
        network.direct_server.reverse(querier, url)
    except DirectRefused as exc:
        raise web.HTTPServiceUnavailable(reason=str(exc)) from None
    return web.json_response({"dialling": True})


async def punch(request: web.Request) -> web.Response:
    network = network_of(request)
    if (refused := over_rate(request, request.app[DIRECT_QUOTA])) is not None:
        return refused
    querier, nonce = _node(request), _hex(request, "nonce", PUNCH_NONCE_BYTES)
    try:
        ours = network.direct_server.punch(querier, request.query.get("addr", ""), nonce)
    except DirectRefused as exc:
        raise web.HTTPServiceUnavailable(reason=str(exc)) from None
    except RelayProtocolError as exc:
        raise BadRequest(str(exc)) from None
    return web.json_response({"addr": ours})


async def direct_attach(request: web.Request) -> web.StreamResponse:
    """A node behind NAT we asked to dial us back (``DirectPaths.accept``)."""
    network = network_of(request)
    direct = network.direct
    if (refused := over_rate(request, request.app[DIRECT_QUOTA])) is not None:
        return refused
    if not direct.enabled or not network.own_url:
        raise web.HTTPServiceUnavailable(reason="this node opens no direct links")
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS, max_msg_size=MAX_ANSWER_FRAME)
    await ws.prepare(request)
    nonce = os.urandom(ATTACH_NONCE_BYTES)
    await ws.send_json({"nonce": nonce.hex()})
    own = network.own_url
    node_hex = await check_attach(ws, nonce, lambda node: direct_url(own, node))
    if node_hex is None:
        return ws
    session = direct.accept(node_hex, ws)
    if session is None:
        await ws.send_json({"ok": False, "error": "no direct link to you was asked for"})
        await ws.close()
        return ws
    await ws.send_json({"ok": True})
    await carry(ws, hub=direct.hub, session=session, idle=direct.limits.idle_seconds)
    return ws


def setup(app: web.Application) -> None:
    # One reversal or punch per owner behind NAT a querier links to; attaches as many.
    app[DIRECT_QUOTA] = RateLimiter(SEARCH_RATE, SEARCH_BURST)
    app.router.add_get(PATH_REVERSE, reverse)
    app.router.add_get(PATH_PUNCH, punch)
    app.router.add_get(PATH_DIRECT_ATTACH, direct_attach)
