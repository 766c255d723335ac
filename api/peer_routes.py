"""Endpoints other nodes call: shard pushes and shard lookups."""

from __future__ import annotations

import logging

from aiohttp import web

from dht import DhtError

from .keys import NODE
from .network import MAX_PUSH_BYTES, Network
from .search import BadRequest, SearchParams, run_search

log = logging.getLogger(__name__)

MAX_LOOKUP_TERMS = 64


def _network(request: web.Request) -> Network:
    network = request.app[NODE].network
    if network is None or not network.started:
        raise web.HTTPNotFound(reason="this node is not on a network")
    return network


async def push_shards(request: web.Request) -> web.Response:
    network = _network(request)
    if request.content_length is not None and request.content_length > MAX_PUSH_BYTES:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_PUSH_BYTES, actual_size=request.content_length
        )
    parts: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_PUSH_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_PUSH_BYTES, actual_size=size)
        parts.append(chunk)
    body = b"".join(parts)
    try:
        stored = await network.accept_push(body)
    except (DhtError, ValueError) as exc:
        log.info("refused a shard push from %s: %s", request.remote, exc)
        raise BadRequest(f"shard batch refused: {exc}") from None
    return web.json_response({"stored": stored})


async def get_shards(request: web.Request) -> web.Response:
    network = _network(request)
    terms = [t for t in request.query.get("terms", "").split(",") if t][:MAX_LOOKUP_TERMS]
    if not terms:
        raise BadRequest("pass ?terms=a,b,c")
    found = await network.shards.get(terms)
    return web.json_response(
        {term: [[pub, shard.to_json()] for pub, shard in copies] for term, copies in found.items()}
    )


async def peer_search(request: web.Request) -> web.Response:
    """Local results plus each result's IDF-free term weights, for a federated query."""
    params = SearchParams.from_query({**request.query, "scope": "local"})
    node = request.app[NODE]
    body = await run_search(node, params)
    urls = [r["url"] for r in body["results"]]
    weights = await node.store.term_weights(urls, node.store.query_units(params.q))
    body.update(weights.to_json())
    return web.json_response(body)


MAX_FORWARDED_URLS = 1_000


async def accept_urls(request: web.Request) -> web.Response:
    """URLs another node forwards because we own their hosts (host slices)."""
    _network(request)
    try:
        payload = await request.json()
    except ValueError:
        raise BadRequest('body must be JSON like {"urls": [["https://a.example/", 1]]}') from None
    urls = payload.get("urls") if isinstance(payload, dict) else None
    if (
        not isinstance(urls, list)
        or len(urls) > MAX_FORWARDED_URLS
        or not all(
            isinstance(u, list) and len(u) == 2 and isinstance(u[0], str) and isinstance(u[1], int)
            for u in urls
        )
    ):
        raise BadRequest(f"urls must be at most {MAX_FORWARDED_URLS} [url, depth] pairs")
    accepted = await request.app[NODE].crawler.accept_forwarded((u, d) for u, d in urls)
    return web.json_response({"accepted": accepted})


def setup(app: web.Application) -> None:
    app.router.add_post("/api/peer/urls", accept_urls)
    app.router.add_get("/api/peer/search", peer_search)
    app.router.add_post("/api/peer/shards", push_shards)
    app.router.add_get("/api/peer/shards", get_shards)
