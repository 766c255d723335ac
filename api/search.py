"""One search request → one SearXNG-shaped response, for the JSON API and the web UI alike."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from yarl import URL

from index import Hit
from index.query import parse_user_query

from .node import Node

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
MAX_OFFSET = 900
SCOPES = ("network", "local")


class BadRequest(ValueError):
    """The request's parameters are invalid; the message is for the caller."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchParams:
    q: str
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    scope: str = "network"

    @classmethod
    def from_query(cls, query: Any) -> SearchParams:
        q = query.get("q")
        if q is None or not str(q).strip():
            raise BadRequest("missing query: pass ?q=words")
        return cls(
            q=str(q),
            limit=_int_param(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
            offset=_int_param(query, "offset", 0, 0, MAX_OFFSET),
            scope=_scope(query.get("scope", "network")),
        )


def _int_param(query: Any, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


def _scope(raw: str) -> str:
    if raw not in SCOPES:
        raise BadRequest(f"scope must be one of {', '.join(SCOPES)}")
    return raw


def hit_to_result(hit: Hit, position: int, peer: str) -> dict[str, Any]:
    url = URL(hit.url)
    published = datetime.fromtimestamp(hit.fetched, UTC).isoformat() if hit.fetched > 0 else None
    return {
        "url": hit.url,
        "title": hit.title or hit.url,
        "content": hit.snippet.text,
        "content_html": hit.snippet.to_html(),
        "score": round(hit.score, 4),
        "engine": "rhizome",
        "engines": ["rhizome"],
        "category": "general",
        "template": "default.html",
        "positions": [position],
        "parsed_url": [
            url.scheme,
            url.raw_authority,
            url.raw_path,
            "",
            url.raw_query_string,
            url.raw_fragment,
        ],
        "host": hit.host,
        "language": hit.language or None,
        "publishedDate": None,
        "fetchedDate": published,
        "peers": [peer],
    }


async def run_search(node: Node, params: SearchParams) -> dict[str, Any]:
    started = time.perf_counter()
    body = await _run(node, params)
    body["took_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return body


async def _run(node: Node, params: SearchParams) -> dict[str, Any]:
    if params.scope == "network" and node.network is not None and node.network.started:
        parse_user_query(params.q)  # the same 400 for bad syntax as a local search
        federated = await node.network.search(params.q, limit=params.limit, offset=params.offset)
        return {**_envelope(params), **federated}
    page = await node.search_local(params.q, limit=params.limit, offset=params.offset)
    results = [
        hit_to_result(hit, params.offset + i + 1, "local") for i, hit in enumerate(page.hits)
    ]
    return {**_envelope(params), "number_of_results": page.total, "results": results}


def _envelope(params: SearchParams) -> dict[str, Any]:
    return {
        "query": params.q,
        "number_of_results": 0,
        "results": [],
        "limit": params.limit,
        "offset": params.offset,
        "scope": params.scope,
        "took_ms": 0.0,
        "answers": [],
        "corrections": [],
        "infoboxes": [],
        "suggestions": [],
        "unresponsive_engines": [],
        "unresponsive_peers": [],
        "peers_asked": 0,
        "peers_answered": 0,
        "partial": False,
    }
