"""The JSON API: /api/status, /api/search, /api/seeds.

/api/seeds is the operator's (api/operator.py); /api/status shows counts to anyone and the
full state to the operator.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from rhizome.index import QuerySyntaxError

from . import client_quotas
from .client_quotas import SEARCH_QUOTA
from .keys import NODE, OPERATOR_ACTIONS
from .metrics import observe_search
from .node import public_status
from .operator import asks_as_operator, operator_only, refusal
from .search import BadRequest, SearchParams, asks_network, run_search

log = logging.getLogger(__name__)

MAX_SEEDS_PER_REQUEST = 1000


def _dumps(data: object) -> str:
    return orjson.dumps(data).decode()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /api/ failure is JSON with a message a caller can act on; never a traceback."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    try:
        return await handler(request)
    except (BadRequest, QuerySyntaxError) as exc:
        return _error(400, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal error; see the node's log")


async def status(request: web.Request) -> web.Response:
    full = await request.app[NODE].status()
    if not asks_as_operator(request):
        return web.json_response(public_status(full))
    # A credential that is sent must be right: a typo must not quietly show less.
    refused = refusal(request)
    return refused or web.json_response(full)


async def search(request: web.Request) -> web.Response:
    started = time.perf_counter()
    params = SearchParams.from_query(request.query)
    node = request.app[NODE]
    wait = request.app[SEARCH_QUOTA].refuse(request, network=asks_network(node, params))
    if wait is not None:
        return client_quotas.refusal(wait)
    body = await run_search(node, params)
    took = time.perf_counter() - started
    observe_search(request.app, params.scope, took)
    body["took_ms"] = round(took * 1000, 2)
    # Where a federated query's time went (shards, score, owners, merge), for the operator
    # only: a fast shards phase tells anyone else the query's words were searched here in
    # the last 30 s (the shard cache). Not part of the JSON body's contract.
    phases = body.pop("timings", None) or {}
    response = web.json_response(body, dumps=_dumps)  # results: the hot path
    if phases and asks_as_operator(request) and refusal(request) is None:
        response.headers["Server-Timing"] = ", ".join(
            f"{name};dur={ms}" for name, ms in phases.items()
        )
    return response


@operator_only
async def add_seeds(request: web.Request) -> web.Response:
    try:
        payload: Any = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        # RecursionError: JSON nested deeper than the decoder's stack allows (hostile body).
        raise BadRequest('body must be JSON like {"urls": ["https://example.org/"]}') from None
    urls = payload.get("urls") if isinstance(payload, dict) else None
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise BadRequest('body must be JSON like {"urls": ["https://example.org/"]}')
    if len(urls) > MAX_SEEDS_PER_REQUEST:
        raise BadRequest(f"at most {MAX_SEEDS_PER_REQUEST} URLs per request")
    # "blocked": the seeds a blocklist refused, each with why ("blocked by list ...").
    return web.json_response(await request.app[OPERATOR_ACTIONS].add_seeds(urls), status=202)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/search", search)
    app.router.add_post("/api/seeds", add_seeds)
