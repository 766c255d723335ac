"""The operator's JSON routes for blocklists, subscriptions, pins, recrawls, the crawl
queue and distrusted peers (``api/operator_actions.py`` does the work), and the peer route
that serves this node's own list, signed.

Every ``/api/`` route here but ``/api/peer/blocklist`` wants the operator credential
(``api/operator.py``); bodies are JSON objects, e.g. ``{"rules": ["example.com"]}``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Any

from aiohttp import web

from rhizome.dht.quotas import RateLimiter, source_key
from rhizome.federation.blocklists import Subscription, encode_answer
from rhizome.federation.wire import PATH_BLOCKLIST

from .keys import OPERATOR_ACTIONS, OPERATOR_STATE, OWN_LIST
from .operator import operator_only
from .operator_actions import ActionError, OperatorActions
from .search import BadRequest

# An honest subscriber asks every 6 hours; a list is up to 512 KiB.
LIST_RATE = 0.2  # requests a second per address, sustained
LIST_BURST = 10.0
LIST_QUOTA = web.AppKey("blocklist_quota", RateLimiter)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        payload = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise BadRequest("body must be a JSON object") from None
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object")
    return payload


def _strings(payload: dict[str, Any], key: str) -> list[str]:
    value = payload.get(key)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f'body must be JSON like {{"{key}": ["..."]}}')
    return value


def _string(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key, "")
    if not isinstance(value, str):
        raise BadRequest(f'"{key}" must be a string')
    return value


def _actions(request: web.Request) -> OperatorActions:
    return request.app[OPERATOR_ACTIONS]


def subscription_json(sub: Subscription) -> dict[str, Any]:
    data = asdict(sub)
    data.pop("next_at", None)
    return {**data, "rules": list(sub.rules), "label": sub.label}


async def _done(work: Any) -> Any:
    """The action's result; its refusal becomes a 400 with its message."""
    try:
        return await work
    except ActionError as exc:
        raise BadRequest(str(exc)) from None


@operator_only
async def get_blocklist(request: web.Request) -> web.Response:
    return web.json_response(_actions(request).blocklist_view())


@operator_only
async def add_rules(request: web.Request) -> web.Response:
    rules = _strings(await _body(request), "rules")
    outcome = await _done(_actions(request).block(rules))
    if outcome.refused and not outcome.added:  # nothing taken: an error, saying why
        why = "; ".join(outcome.refused.values())
        return web.json_response({"error": why, "status": 400, **asdict(outcome)}, status=400)
    return web.json_response(asdict(outcome))


@operator_only
async def remove_rules(request: web.Request) -> web.Response:
    rules = _strings(await _body(request), "rules")
    return web.json_response({"removed": await _done(_actions(request).unblock(rules))})


@operator_only
async def name_list(request: web.Request) -> web.Response:
    await _actions(request).name_list(_string(await _body(request), "name"))
    return web.json_response({"name": request.app[OPERATOR_STATE].list_name})


@operator_only
async def check(request: web.Request) -> web.Response:
    host = request.query.get("host", "")
    if not host.strip():
        raise BadRequest("pass ?host=example.org (or a URL)")
    block = _actions(request).check(host)
    if block is None:
        return web.json_response({"blocked": False})
    return web.json_response(
        {"blocked": True, "rule": block.rule, "by": block.label, "source": block.source}
    )


@operator_only
async def subscribe(request: web.Request) -> web.Response:
    payload = await _body(request)
    sub = await _done(
        _actions(request).subscribe(_string(payload, "node_id"), _string(payload, "url"))
    )
    return web.json_response(subscription_json(sub))


@operator_only
async def unsubscribe(request: web.Request) -> web.Response:
    node_id = _string(await _body(request), "node_id")
    return web.json_response({"removed": await _done(_actions(request).unsubscribe(node_id))})


@operator_only
async def refresh(request: web.Request) -> web.Response:
    node_id = _string(await _body(request), "node_id").strip().lower()
    return web.json_response(subscription_json(await _done(_actions(request).refresh(node_id))))


@operator_only
async def get_pins(request: web.Request) -> web.Response:
    pins = [{"host": h, "configured": c} for h, c in _actions(request).pins()]
    return web.json_response({"pins": pins})


@operator_only
async def add_pins(request: web.Request) -> web.Response:
    hosts = _strings(await _body(request), "hosts")
    return web.json_response({"added": await _done(_actions(request).pin(hosts))})


@operator_only
async def remove_pins(request: web.Request) -> web.Response:
    hosts = _strings(await _body(request), "hosts")
    return web.json_response({"removed": await _done(_actions(request).unpin(hosts))})


@operator_only
async def recrawl(request: web.Request) -> web.Response:
    host = _string(await _body(request), "host")
    return web.json_response({"host": host, "due": await _done(_actions(request).recrawl(host))})


@operator_only
async def queue(request: web.Request) -> web.Response:
    hosts = await _actions(request).queue()
    return web.json_response({"hosts": [asdict(h) for h in hosts]})


@operator_only
async def distrusted(request: web.Request) -> web.Response:
    return web.json_response({"peers": _actions(request).distrusted()})


@operator_only
async def lift(request: web.Request) -> web.Response:
    node_id = _string(await _body(request), "node_id")
    return web.json_response({"lifted": await _done(_actions(request).lift(node_id))})


async def peer_blocklist(request: web.Request) -> web.Response:
    """This node's own rules as one signed record (``federation/blocklists.py``)."""
    own = request.app[OWN_LIST]
    if own is None:
        raise web.HTTPNotFound(reason="this node does not publish its blocklist")
    limiter = request.app[LIST_QUOTA]
    key = source_key(request.remote or "unknown")
    if not limiter.allow(key):
        return web.json_response(
            {"error": "too many requests from your address", "status": 429},
            status=429,
            headers={"Retry-After": str(limiter.retry_after(key))},
        )
    state = request.app[OPERATOR_STATE]
    name = state.list_name or f"node {own.identity.node_id.hex()[:12]}"
    record = await asyncio.to_thread(own.record, name, list(state.rules))
    return web.json_response(encode_answer(record))


def setup(app: web.Application) -> None:
    app[LIST_QUOTA] = RateLimiter(LIST_RATE, LIST_BURST)
    add_get, add_post = app.router.add_get, app.router.add_post
    add_get("/api/blocklist", get_blocklist)
    add_post("/api/blocklist/add", add_rules)
    add_post("/api/blocklist/remove", remove_rules)
    add_post("/api/blocklist/name", name_list)
    add_get("/api/blocklist/check", check)
    add_post("/api/subscriptions/add", subscribe)
    add_post("/api/subscriptions/remove", unsubscribe)
    add_post("/api/subscriptions/refresh", refresh)
    add_get("/api/pins", get_pins)
    add_post("/api/pins/add", add_pins)
    add_post("/api/pins/remove", remove_pins)
    add_post("/api/recrawl", recrawl)
    add_get("/api/queue", queue)
    add_get("/api/distrusted", distrusted)
    add_post("/api/distrusted/lift", lift)
    add_get(PATH_BLOCKLIST, peer_blocklist)
