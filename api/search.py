"""One search request → one SearXNG-shaped response, for the JSON API and the web UI alike."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from yarl import URL

from rhizome.federation import ResultRow
from rhizome.federation.wire import page_rows

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
        if q is None:  # any text at all is searched (blank text finds nothing)
            raise BadRequest("missing query: pass ?q=words")
        return cls(
            q=str(q),
            limit=int_param(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
            offset=int_param(query, "offset", 0, 0, MAX_OFFSET),
            scope=_scope(query.get("scope", "network")),
        )


def int_param(query: Any, name: str, default: int, low: int, high: int) -> int:
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


def searx_result(row: ResultRow, position: int) -> dict[str, Any]:
    """One result in the SearXNG shape the JSON API and the web UI share."""
    url = URL(row.url)
    fetched = datetime.fromtimestamp(row.fetched, UTC).isoformat() if row.fetched > 0 else None
    return {
        "url": row.url,
        "title": row.title or row.url,
        "content": row.content,
        "content_html": row.content_html,
        "score": round(row.score, 4),
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
        "host": row.host,
        "language": row.language,
        "publishedDate": None,
        "fetchedDate": fetched,
        "peers": list(row.peers),
    }


def asks_network(node: Node, params: SearchParams) -> bool:
    """Whether this search goes to other nodes (the costly kind, for the client quota)."""
    return params.scope == "network" and node.network is not None and node.network.started


async def run_search(node: Node, params: SearchParams) -> dict[str, Any]:
    started = time.perf_counter()
    body = await _run(node, params)
    body["took_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return body


async def _run(node: Node, params: SearchParams) -> dict[str, Any]:
    query = node.store.prepare(params.q)  # the one parse of this query's text
    first = params.offset + 1
    if asks_network(node, params) and node.network is not None:
        found = await node.network.search(query, limit=params.limit, offset=params.offset)
        page = found.rows[params.offset : params.offset + params.limit]
        return {
            **_envelope(params),
            "timings": found.timings,
            "results": [searx_result(row, first + i) for i, row in enumerate(page)],
            "number_of_results": found.number_of_results,
            "unresponsive_peers": found.tally.silent,
            "peers_asked": len(found.tally.asked),
            "peers_answered": len(found.tally.answered),
            "partial": bool(found.tally.silent),
            # A holder that served fewer publishers' copies of a term than another holder
            # of it: censoring, or not yet given them. Its results were still used.
            "replicas_disagree": [
                {"holder": holder, "term": term, "omits": publishers}
                for holder, terms in sorted(found.tally.omitted.items())
                for term, publishers in sorted(terms.items())
            ],
        }
    local = await node.store.search(query, limit=params.limit, offset=params.offset)
    # Blocked pages are deleted from the index when blocked; until that deletion is
    # committed (or a page slipped in meanwhile) they are left out here.
    rows = [r for r in page_rows(local, "local") if not node.blocklist.blocks_url(r.url)]
    return {
        **_envelope(params),
        "number_of_results": local.total,
        "results": [searx_result(row, first + i) for i, row in enumerate(rows)],
    }


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
        "replicas_disagree": [],
        "peers_asked": 0,
        "peers_answered": 0,
        "partial": False,
    }
