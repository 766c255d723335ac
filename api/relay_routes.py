"""Endpoints for nodes behind NAT: dial-backs, relay attachment, relayed requests.

* ``POST /api/peer/dialback`` ``{"node_id", "url"}``: we dial the asker back at the address
  its request came from and say whether its whoami proved the id (``federation.reachability``).
* ``GET /api/peer/relay`` (WebSocket): a node behind NAT attaches; we send a nonce, it
  signs it with the URL it will be relayed at, and from then on ``RelayHub`` sends it the
  requests for that URL. Only a node that is itself public relays, and only within the
  operator's limits (``relay_max_nodes``, ``relay_mb_per_node_hour``; ``--no-relay``).
  Our answer names the address the node came from (its NAT's), which its hole punches
  tell their peers (``federation/direct.py``).
* ``GET /api/peer/contact?node=ID``: a node's signed hello, if we hold it: how a querier
  finds a node behind NAT it never heard from (``federation.endpoints``).
* ``GET /api/peer/relay/<node id>/<peer path>``: a peer's request for that node, sent down
  its socket; the answer comes back as the node gave it (status, type, gzip).

Each endpoint has a per-address quota, as the other peer endpoints do.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import Callable

import orjson
from aiohttp import WSMsgType, web

from rhizome.dht import node_id_for, verify
from rhizome.dht.quotas import RateLimiter
from rhizome.federation import Network
from rhizome.federation.errors import RelayOverBudget, RelayProtocolError, RelayUnavailable
from rhizome.federation.reachability import Reachability, dial_back
from rhizome.federation.relay import RelayHub, RelaySession
from rhizome.federation.relay_wire import (
    ATTACH_NONCE_BYTES,
    CLOSE_OVER_BUDGET,
    CLOSE_PROTOCOL,
    CLOSE_RESERVATION_OVER,
    HEADER_LENGTH_BYTES,
    HEARTBEAT_SECONDS,
    MAX_HEADER_BYTES,
    MAX_RELAY_ANSWER_BYTES,
    MAX_RELAY_REQUEST_BYTES,
    PATH_CONTACT,
    PATH_DIALBACK,
    PATH_RELAY_ATTACH,
    PATH_RELAY_PREFIX,
    RELAYED_PATHS,
    attach_message,
)

from .peer_routes import SEARCH_BURST, SEARCH_RATE, network_of, over_rate
from .search import BadRequest

log = logging.getLogger(__name__)

# A node checks its reachability every 10 min with 3 peers; a new node every few seconds
# for its first minute. Each dial back is one small GET we send: this keeps us from being
# anyone's request cannon.
DIALBACK_RATE = 0.2
DIALBACK_BURST = 10.0
ATTACH_RATE = 0.5  # a relayed node re-attaches on a relay's death or its hour's end
ATTACH_BURST = 10.0
ATTACH_SECONDS = 5.0  # the attaching node's answer to our nonce
MAX_ANSWER_FRAME = HEADER_LENGTH_BYTES + MAX_HEADER_BYTES + MAX_RELAY_ANSWER_BYTES
MAX_HANDSHAKE_BYTES = 2 * 1024  # the attach answer: an id, a key, a signature, a URL

DIALBACK_QUOTA = web.AppKey("dialback_quota", RateLimiter)
ATTACH_QUOTA = web.AppKey("attach_quota", RateLimiter)
RELAYED_QUOTA = web.AppKey("relayed_quota", RateLimiter)
CONTACT_QUOTA = web.AppKey("contact_quota", RateLimiter)


async def dialback(request: web.Request) -> web.Response:
    network = network_of(request)
    if (refused := over_rate(request, request.app[DIALBACK_QUOTA])) is not None:
        return refused
    try:
        payload = await request.json()
        node_id = bytes.fromhex(str(payload.get("node_id", "")))
        url = str(payload.get("url", ""))
    except (ValueError, AttributeError):
        raise BadRequest('body must be JSON like {"node_id": HEX, "url": URL}') from None
    if len(node_id) != 20 or not url or len(url) > 512:
        raise BadRequest("node_id must be 20 bytes of hex and url at most 512 characters")
    reachable, target = await dial_back(network.client, node_id, url, request.remote or "")
    return web.json_response({"reachable": reachable, "url": target if reachable else None})


async def contact(request: web.Request) -> web.Response:
    """A node's signed hello, if we hold it (``federation.endpoints``): how a querier finds
    a node behind NAT that it has never heard from."""
    network = network_of(request)
    if (refused := over_rate(request, request.app[CONTACT_QUOTA])) is not None:
        return refused
    try:
        node_id = bytes.fromhex(request.query.get("node", ""))
    except ValueError:
        raise BadRequest("pass ?node=HEX") from None
    record = network.dht.contact_record(node_id) if len(node_id) == 20 else None
    if record is None:
        raise web.HTTPNotFound(reason="no contact record for that node here")
    return web.json_response({"record": base64.b64encode(record).decode("ascii")})


def _relayed_base(network: Network, node_hex: str) -> str:
    return f"{(network.own_url or '').rstrip('/')}{PATH_RELAY_PREFIX}{node_hex}"


async def attach(request: web.Request) -> web.StreamResponse:
    """A node behind NAT attaches (see the module docstring)."""
    network = network_of(request)
    hub = network.relay_hub
    if (refused := over_rate(request, request.app[ATTACH_QUOTA])) is not None:
        return refused
    if network.reachability is not Reachability.PUBLIC or not network.own_url:
        raise web.HTTPServiceUnavailable(reason="this node is not reachable itself")
    if (why := hub.refusal("")) is not None:
        raise web.HTTPServiceUnavailable(reason=why)
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS, max_msg_size=MAX_ANSWER_FRAME)
    await ws.prepare(request)
    nonce = os.urandom(ATTACH_NONCE_BYTES)
    await ws.send_json({"nonce": nonce.hex()})
    node_hex = await check_attach(ws, nonce, lambda node: _relayed_base(network, node))
    if node_hex is None:
        log.info("refused a relay attach from %s", request.remote)
        return ws
    if (why := hub.refusal(node_hex)) is not None:
        await ws.send_json({"ok": False, "error": why})
        await ws.close()
        return ws
    session = hub.attach(node_hex, ws)
    # Where we saw it come from: its NAT's address, which its hole punches need.
    await ws.send_json(
        {"ok": True, "expires_in": hub.limits.reservation_seconds, "observed": request.remote}
    )
    await carry(ws, hub=hub, session=session)
    return ws


async def check_attach(
    ws: web.WebSocketResponse, nonce: bytes, expected_url: Callable[[str], str]
) -> str | None:
    """The attaching node's id (hex), if its answer signs our nonce and the URL it is
    reached at through us (``expected_url`` of its id); else the socket is closed, None."""
    try:
        message = await ws.receive(timeout=ATTACH_SECONDS)
        return _signed_id(nonce, message.data, message.type, expected_url)
    except (TimeoutError, RelayProtocolError) as exc:
        log.info("a bad attach: %s", exc)
        await ws.close(code=CLOSE_PROTOCOL, message=b"bad attach")
        return None


def _signed_id(
    nonce: bytes, data: object, kind: WSMsgType, expected_url: Callable[[str], str]
) -> str:
    if kind != WSMsgType.TEXT or not isinstance(data, str) or len(data) > MAX_HANDSHAKE_BYTES:
        raise RelayProtocolError("expected the attach answer")
    try:
        answer = orjson.loads(data)
        node_id = bytes.fromhex(answer["node_id"])
        public_key = bytes.fromhex(answer["public_key"])
        signature = bytes.fromhex(answer["signature"])
        url = str(answer["url"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise RelayProtocolError(f"attach answer does not parse: {exc}") from None
    if node_id_for(public_key) != node_id or url != expected_url(node_id.hex()):
        raise RelayProtocolError("attach answer names another node or relay")
    if not verify(public_key, attach_message(nonce, url), signature):
        raise RelayProtocolError("attach signature does not verify")
    return node_id.hex()


async def carry(
    ws: web.WebSocketResponse,
    *,
    hub: RelayHub,
    session: RelaySession,
    idle: float | None = None,
) -> None:
    """Read the node's answers until it goes, its reservation ends, it breaks a rule, or
    (a direct link) no answer came for ``idle`` seconds."""
    code = CLOSE_RESERVATION_OVER
    loop = asyncio.get_running_loop()
    end = loop.time() + hub.limits.reservation_seconds

    def deadline() -> float:
        return end if idle is None else min(end, loop.time() + idle)

    try:
        async with asyncio.timeout_at(deadline()) as watch:
            async for message in ws:
                if message.type != WSMsgType.BINARY:
                    continue
                try:
                    hub.answered(session, message.data)
                except RelayProtocolError as exc:
                    log.info("linked node %s broke the rules: %s", session.node[:12], exc)
                    code = CLOSE_PROTOCOL
                    break
                if hub.refusal(session.node) is not None:
                    code = CLOSE_OVER_BUDGET
                    break
                watch.reschedule(deadline())
    except TimeoutError:
        pass
    finally:
        hub.detach(session)
        await ws.close(code=code)


async def relayed(request: web.Request) -> web.Response:
    """A peer's request for a node attached here, sent down its socket."""
    network = network_of(request)
    if (refused := over_rate(request, request.app[RELAYED_QUOTA])) is not None:
        return refused
    node_hex = request.match_info["node"].lower()
    path = "/" + request.match_info["tail"]
    if path not in RELAYED_PATHS:
        raise web.HTTPNotFound(reason="not a relayed path")
    query = request.rel_url.raw_query_string
    path_qs = f"{path}?{query}" if query else path
    if len(path_qs) > MAX_RELAY_REQUEST_BYTES:
        raise web.HTTPRequestURITooLong()
    try:
        answer = await network.relay_hub.forward(
            node_hex, path_qs, request.headers.get("Accept-Encoding", "")
        )
    except RelayUnavailable as exc:
        raise web.HTTPNotFound(reason=str(exc)) from None
    except RelayOverBudget as exc:
        raise web.HTTPServiceUnavailable(reason=str(exc), headers={"Retry-After": "60"}) from None
    except TimeoutError:
        raise web.HTTPGatewayTimeout(reason="the relayed node did not answer in time") from None
    headers = {"Content-Encoding": answer.content_encoding} if answer.content_encoding else {}
    if answer.content_type:
        headers["Content-Type"] = answer.content_type
    return web.Response(status=answer.status, body=answer.body, headers=headers)


def setup(app: web.Application) -> None:
    app[DIALBACK_QUOTA] = RateLimiter(DIALBACK_RATE, DIALBACK_BURST)
    app[ATTACH_QUOTA] = RateLimiter(ATTACH_RATE, ATTACH_BURST)
    app[RELAYED_QUOTA] = RateLimiter(SEARCH_RATE, SEARCH_BURST)
    # One per owner a querier has never heard of: at most owners_asked a query.
    app[CONTACT_QUOTA] = RateLimiter(SEARCH_RATE, SEARCH_BURST)
    app.router.add_post(PATH_DIALBACK, dialback)
    app.router.add_get(PATH_CONTACT, contact)
    app.router.add_get(PATH_RELAY_ATTACH, attach)
    app.router.add_get(PATH_RELAY_PREFIX + "{node}/{tail:.*}", relayed)
