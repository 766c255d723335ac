"""Endpoints other nodes call: shard pushes and lookups, searches, forwarded URLs, whoami.

Every endpoint has a per-address quota (a token bucket per IPv4 address or IPv6 /64, see
``dht.quotas``): beyond it the answer is 429 with Retry-After, before any work is done.
The rates are far above what an honest peer needs (a publisher pushes a few batches per
holder after each crawl round; a federated query asks each owner once) and far below
what would keep the node from serving everyone else. Behind a reverse proxy every peer
would share the proxy's address: run peer endpoints directly.

Pushes being read, decoded and stored at once are bounded (``MAX_PUSHES_AT_ONCE``, one per
address): beyond that the answer is 503 with Retry-After before the body is read, so a
burst of 16 MB uploads is never buffered side by side; a body must arrive within
``PUSH_READ_SECONDS``, so a slow sender holds its slot only that long. A push stores what
fits the holder's budgets (federation/shard_store.py) and says how many records it refused
and why.

Publishers with many keys: node ids are free to make, so one address may push shards
for at most ``MAX_PUBLISHERS_PER_ADDRESS`` distinct publishers within a shard lifetime.
An attacker then needs as many addresses as voices; with the per-publisher caps of the
shard store (terms, postings, clamped weights) one address's influence on any term is at
most that many publishers' worth.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from dataclasses import dataclass, field

import numpy as np
import orjson
from aiohttp import web

from rhizome.dht import InvalidRecord
from rhizome.dht.quotas import DistinctCap, RateLimiter, source_key
from rhizome.dht.records import decode_record
from rhizome.federation import Network, PushRefused
from rhizome.federation.answer import MAX_OWNER_RESULTS, answer_locally
from rhizome.federation.proof import answer_whoami
from rhizome.federation.shard_store import DEFAULT_SHARD_TTL
from rhizome.federation.wire import (
    MAX_FORWARDED_URLS,
    MAX_LOOKUP_TERMS,
    MAX_PUSH_BYTES,
    MAX_SNIPPET_URLS,
    PATH_SEARCH,
    PATH_SHARDS,
    PATH_SNIPPETS,
    PATH_URLS,
    PATH_WHOAMI,
    encode_owner_answer,
    snippet_fields,
)
from rhizome.index.semantic import parse_vector

from .keys import NODE
from .search import BadRequest, SearchParams, int_param

log = logging.getLogger(__name__)

MIN_GZIP_BYTES = 1_024
GZIP_LEVEL = 1  # 84 KB of shards -> 18 KB in 0.3 ms; higher levels cost 3x for 15% less
PUSH_RATE = 2.0  # shard batches a second per address, sustained: 120 a minute
PUSH_BURST = 120.0  # a full re-placement of a large index arrives in one burst
# A busy public node sends each holder and owner one request per federated query it
# serves: 50 a second is more than a home node's own search capacity.
LOOKUP_RATE = 50.0  # GET /api/peer/shards: one per holder per federated query
LOOKUP_BURST = 500.0
SEARCH_RATE = 50.0  # /api/peer/search: one per asked owner per federated query
SEARCH_BURST = 250.0
URLS_RATE = 5.0  # /api/peer/urls batches (each up to MAX_FORWARDED_URLS)
URLS_BURST = 60.0
# One signature (~50 us) per request; an honest peer asks once an hour per URL it uses.
WHOAMI_RATE = 20.0
WHOAMI_BURST = 100.0
# A refused batch (forged, garbage, distrusted) costs this many tokens: an address that
# keeps sending them is held off ten times sooner than one pushing valid batches.
BAD_PUSH_COST = 10.0
MAX_PUBLISHERS_PER_ADDRESS = 8  # a home with a few nodes behind one NAT fits
PUBLISHER_WINDOW = DEFAULT_SHARD_TTL  # a publisher's slot frees once its shards expire
# Pushes in flight (body read, decoded, stored): at worst each holds a 16 MB body, its
# 64 MB decoded form and the records cut from it (~150 MB), so this bounds push memory
# to ~300 MB. Stores run one at a time on the shard store's thread anyway, so more in
# flight would only queue bytes in memory.
MAX_PUSHES_AT_ONCE = 2
MAX_PUSHES_PER_ADDRESS_AT_ONCE = 1  # a publisher pushes to one holder one batch at a time
# A pushed body must arrive within this: 16 MB at 4.4 Mbit/s (an honest 5,000-term batch
# is ~2 MB), while a sender trickling bytes holds its slot no longer.
PUSH_READ_SECONDS = 30.0
BUSY_RETRY_AFTER = 2  # seconds: the publisher's first retry pause is the same


@dataclass(slots=True)
class PeerQuotas:
    """The peer endpoints' per-address limits (one set per app, so per node)."""

    pushes: RateLimiter = field(default_factory=lambda: RateLimiter(PUSH_RATE, PUSH_BURST))
    lookups: RateLimiter = field(default_factory=lambda: RateLimiter(LOOKUP_RATE, LOOKUP_BURST))
    searches: RateLimiter = field(default_factory=lambda: RateLimiter(SEARCH_RATE, SEARCH_BURST))
    urls: RateLimiter = field(default_factory=lambda: RateLimiter(URLS_RATE, URLS_BURST))
    whoami: RateLimiter = field(default_factory=lambda: RateLimiter(WHOAMI_RATE, WHOAMI_BURST))
    publishers: DistinctCap = field(
        default_factory=lambda: DistinctCap(MAX_PUBLISHERS_PER_ADDRESS, PUBLISHER_WINDOW)
    )
    refused: int = 0
    pushing: dict[str, int] = field(default_factory=dict)  # address -> pushes in flight

    def pushes_in_flight(self) -> int:
        return sum(self.pushing.values())


PEER_QUOTAS = web.AppKey("peer_quotas", PeerQuotas)


def _json_response(request: web.Request, data: object) -> web.Response:
    """JSON (``data`` or bytes already encoded), gzipped (fast level) for peers that accept
    it: shard lists compress ~5x, and a volunteer's upstream is the scarce resource."""
    body = data if isinstance(data, bytes) else orjson.dumps(data)
    if len(body) >= MIN_GZIP_BYTES and "gzip" in request.headers.get("Accept-Encoding", ""):
        return web.Response(
            body=gzip.compress(body, compresslevel=GZIP_LEVEL),
            content_type="application/json",
            headers={"Content-Encoding": "gzip"},
        )
    return web.Response(body=body, content_type="application/json")


def _size(response: web.Response) -> int:
    return len(response.body) if isinstance(response.body, bytes) else 0


def _source(request: web.Request) -> str:
    return source_key(request.remote or "unknown")


def _too_many(request: web.Request, message: str, retry_after: int) -> web.Response:
    request.app[PEER_QUOTAS].refused += 1
    log.info("429 for %s on %s: %s", request.remote, request.path, message)
    return web.json_response(
        {"error": message, "status": 429},
        status=429,
        headers={"Retry-After": str(retry_after)},
    )


def over_rate(request: web.Request, limiter: RateLimiter) -> web.Response | None:
    """A 429 response if the caller's address is over ``limiter``'s rate, else None."""
    key = _source(request)
    if limiter.allow(key):
        return None
    return _too_many(request, "too many requests from your address", limiter.retry_after(key))


def network_of(request: web.Request) -> Network:
    """The node's network, or 404 for a node that is not on one."""
    network = request.app[NODE].network
    if network is None or not network.started:
        raise web.HTTPNotFound(reason="this node is not on a network")
    return network


async def push_shards(request: web.Request) -> web.Response:
    network = network_of(request)
    quotas = request.app[PEER_QUOTAS]
    if (refused := over_rate(request, quotas.pushes)) is not None:
        return refused
    if request.content_length is not None and request.content_length > MAX_PUSH_BYTES:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_PUSH_BYTES, actual_size=request.content_length
        )
    source = _source(request)
    if (
        quotas.pushes_in_flight() >= MAX_PUSHES_AT_ONCE
        or quotas.pushing.get(source, 0) >= MAX_PUSHES_PER_ADDRESS_AT_ONCE
    ):
        log.info(
            "503 for a push from %s: %d pushes in flight", request.remote, quotas.pushes_in_flight()
        )
        busy = web.json_response(
            {"error": "busy with other pushes; push again later", "status": 503},
            status=503,
            headers={"Retry-After": str(BUSY_RETRY_AFTER)},
        )
        # Not force_close(): aiohttp then reads and discards the unread body (lingering,
        # at most 10 s, nothing kept), so the sender sees this answer instead of a reset.
        return busy
    quotas.pushing[source] = quotas.pushing.get(source, 0) + 1
    try:
        return await _take_push(request, network, quotas, source)
    finally:
        if (left := quotas.pushing[source] - 1) > 0:
            quotas.pushing[source] = left
        else:
            del quotas.pushing[source]


async def _take_push(
    request: web.Request, network: Network, quotas: PeerQuotas, source: str
) -> web.Response:
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(PUSH_READ_SECONDS):
            async for chunk in request.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > MAX_PUSH_BYTES:
                    raise web.HTTPRequestEntityTooLarge(max_size=MAX_PUSH_BYTES, actual_size=size)
                parts.append(chunk)
    except ConnectionResetError:
        # The sender went away mid-body (its slot is freed by the caller): no one to answer.
        log.info("a push from %s ended after %d bytes", request.remote, size)
        raise web.HTTPBadRequest(reason="push body not complete") from None
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            reason=f"push body not sent within {PUSH_READ_SECONDS:.0f} s"
        ) from None
    body = b"".join(parts)
    del parts
    try:
        # Unverified here (accept_push verifies): only to see whose slot this would use.
        publisher = decode_record(body).publisher_id.hex()
    except InvalidRecord as exc:
        quotas.pushes.charge(source, BAD_PUSH_COST)
        raise BadRequest(f"shard batch refused: {exc}") from None
    if not quotas.publishers.allows(source, publisher):
        return _too_many(
            request,
            f"your address already pushes for {MAX_PUBLISHERS_PER_ADDRESS} publishers",
            quotas.publishers.retry_after(source),
        )
    try:
        done = await network.holder.accept_push(body)
    except PushRefused as exc:
        log.info("refused a shard push from %s: %s", request.remote, exc)
        quotas.pushes.charge(source, BAD_PUSH_COST)
        raise BadRequest(f"shard batch refused: {exc}") from None
    quotas.publishers.admit(source, publisher)
    network.traffic["push_received"] += len(body)
    answer: dict[str, object] = {"stored": done.stored}
    if done.refused:
        # Over a quota or budget: pushing the same again will not help until copies expire.
        answer |= {"refused": done.refused_count, "why": done.refused}
    return web.json_response(answer)


async def get_shards(request: web.Request) -> web.Response:
    network = network_of(request)
    if (refused := over_rate(request, request.app[PEER_QUOTAS].lookups)) is not None:
        return refused
    terms = [t for t in request.query.get("terms", "").split(",") if t][:MAX_LOOKUP_TERMS]
    if not terms:
        raise BadRequest("pass ?terms=a,b,c")
    response = _json_response(request, await network.shards.get_json(terms))
    network.traffic["lookup_served"] += _size(response)
    return response


async def peer_search(request: web.Request) -> web.Response:
    """Local results plus each result's IDF-free term weights, for a federated query."""
    if (refused := over_rate(request, request.app[PEER_QUOTAS].searches)) is not None:
        return refused
    params = SearchParams.from_query({**request.query, "scope": "local"})
    node = request.app[NODE]
    named = request.query.getall("snippet_url", [])
    # Older queriers do not send it: every hit gets its snippet, as before.
    hits = request.query.get("snippet_hits")
    snippet_hits = (
        None if hits is None else int_param(request.query, "snippet_hits", 0, 0, MAX_OWNER_RESULTS)
    )
    page, weights, found = await answer_locally(
        node.store, params.q, params.limit, params.offset, named, snippet_hits, _meaning(request)
    )
    response = _json_response(request, encode_owner_answer(params.q, page, weights, found))
    if node.network is not None:
        node.network.traffic["search_served"] += _size(response)
    return response


def _meaning(request: web.Request) -> np.ndarray | None:
    """The querier's query vector (older queriers send none: the owner embeds the text)."""
    raw = request.query.get("meaning")
    if raw is None:
        return None
    try:
        return parse_vector(raw)
    except ValueError as exc:
        raise BadRequest(f"meaning: {exc}") from None


async def peer_snippets(request: web.Request) -> web.Response:
    """Snippets of a query for some of this node's pages (``url``, repeated): pages a
    querying node puts on its result page from shards, without asking this node to search."""
    if (refused := over_rate(request, request.app[PEER_QUOTAS].searches)) is not None:
        return refused
    params = SearchParams.from_query({**request.query, "scope": "local"})
    urls = request.query.getall("url", [])
    if not urls or len(urls) > MAX_SNIPPET_URLS:
        raise BadRequest(f"pass 1 to {MAX_SNIPPET_URLS} url parameters")
    node = request.app[NODE]
    response = _json_response(
        request, {"snippets": snippet_fields(await node.store.snippets(params.q, urls))}
    )
    if node.network is not None:
        node.network.traffic["search_served"] += _size(response)
    return response


async def accept_urls(request: web.Request) -> web.Response:
    """URLs another node forwards because we own their hosts (host slices)."""
    network_of(request)
    if (refused := over_rate(request, request.app[PEER_QUOTAS].urls)) is not None:
        return refused
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


async def whoami(request: web.Request) -> web.Response:
    """Proof that this node serves the URL the asker used (``federation.proof``): before a
    peer sends us anything else it wants our key's signature over its nonce and URL."""
    network = network_of(request)
    if (refused := over_rate(request, request.app[PEER_QUOTAS].whoami)) is not None:
        return refused
    try:
        answer = answer_whoami(
            network.identity, request.query.get("nonce", ""), request.query.get("url", "")
        )
    except ValueError as exc:
        raise BadRequest(f"pass ?nonce=HEX&url=URL: {exc}") from None
    return web.json_response(answer)


def setup(app: web.Application) -> None:
    app[PEER_QUOTAS] = PeerQuotas()
    app.router.add_post(PATH_URLS, accept_urls)
    app.router.add_get(PATH_SEARCH, peer_search)
    app.router.add_get(PATH_SNIPPETS, peer_snippets)
    app.router.add_post(PATH_SHARDS, push_shards)
    app.router.add_get(PATH_SHARDS, get_shards)
    app.router.add_get(PATH_WHOAMI, whoami)
