"""How browsers and programs find out about this node: OpenSearch and OpenAPI documents."""

from __future__ import annotations

import html
from typing import Any

from aiohttp import web

from rhizome.index import QuerySyntaxError

from . import client_quotas
from .client_quotas import SEARCH_QUOTA
from .keys import NODE
from .version import VERSION

MAX_SUGGESTIONS = 8


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def opensearch(request: web.Request) -> web.Response:
    base = html.escape(_base_url(request), quote=True)
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<OpenSearchDescription xmlns="http://a9.com/-/spec/opensearch/1.1/">'
        "<ShortName>Rhizome</ShortName>"
        "<Description>Decentralized web search</Description>"
        "<InputEncoding>UTF-8</InputEncoding>"
        f'<Url type="text/html" method="get" template="{base}/?q={{searchTerms}}"/>'
        '<Url type="application/x-suggestions+json" method="get" '
        f'template="{base}/api/suggest?q={{searchTerms}}"/>'
        '<Url type="application/json" method="get" '
        f'template="{base}/api/search?q={{searchTerms}}"/>'
        "</OpenSearchDescription>"
    )
    return web.Response(text=body, content_type="application/opensearchdescription+xml")


async def suggest(request: web.Request) -> web.Response:
    """OpenSearch suggestions: ``[query, [titles of the best local matches]]``."""
    q = request.query.get("q", "").strip()
    titles: list[str] = []
    if q:
        if (wait := request.app[SEARCH_QUOTA].refuse(request, network=False)) is not None:
            return client_quotas.refusal(wait)
        try:
            page = await request.app[NODE].search_local(q, limit=MAX_SUGGESTIONS, offset=0)
        except QuerySyntaxError:
            page = None
        if page is not None:
            seen: set[str] = set()
            for hit in page.hits:
                if hit.title and hit.title not in seen:
                    seen.add(hit.title)
                    titles.append(hit.title)
    return web.json_response([q, titles])


_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Rhizome node API", "version": VERSION},
    "paths": {
        "/api/search": {
            "get": {
                "summary": "Search (SearXNG-shaped results)",
                "parameters": [
                    {
                        "name": "q",
                        "in": "query",
                        "required": True,
                        # Any text is searched (text past 512 chars is cut at a word).
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                    {
                        "name": "offset",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 900},
                    },
                    {
                        "name": "scope",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["network", "local"]},
                    },
                ],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/SearchResponse"}, "Results"),
                    "400": _json(_ERROR, "Invalid parameters (limit, offset, scope, no q)"),
                    "429": _json(_ERROR, "Too many searches from this address (Retry-After)"),
                },
            }
        },
        "/api/status": {
            "get": {
                "summary": "Node health and crawl progress",
                # Counts for anyone; the full state (errors, peers, traffic) with the credential.
                "security": [{}, {"operator": []}],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Status"}, "Status"),
                    "401": _json(_ERROR, "A credential was sent and it is wrong"),
                    "403": _json(_ERROR, "Sent from another site's page (Origin)"),
                },
            }
        },
        "/api/seeds": {
            "post": {
                "summary": "Add seed URLs to crawl (the operator's)",
                "security": [{"operator": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["urls"],
                                "properties": {
                                    "urls": {
                                        "type": "array",
                                        "maxItems": 1000,
                                        "items": {"type": "string"},
                                    }
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "202": _json(
                        {
                            "type": "object",
                            "required": ["accepted", "rejected"],
                            "properties": {
                                "accepted": {"type": "array", "items": {"type": "string"}},
                                "rejected": {"type": "integer"},
                                "blocked": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "url": {"type": "string"},
                                            "by": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                        "Seeds queued",
                    ),
                    "400": _json(_ERROR, "Malformed body"),
                    "401": _json(_ERROR, "No operator credential, or a wrong one"),
                    "403": _json(_ERROR, "Sent from another site's page (Origin)"),
                    "413": _json(_ERROR, "Body over 1 MiB"),
                    "415": _json(_ERROR, "Body not sent as application/json"),
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness: the node serves (reads no table; for Docker, systemd)",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status", "storage_ok", "disk_full"],
                            "properties": {
                                "status": {"type": "string", "enum": ["ok", "degraded"]},
                                "storage_ok": {"type": "boolean"},
                                "disk_full": {"type": "boolean"},
                                "uptime_s": {"type": "number"},
                                "version": {"type": "string"},
                            },
                        },
                        "Serving (degraded: the data directory refuses writes)",
                    ),
                    "503": _json(
                        {"type": "object", "properties": {"status": {"type": "string"}}},
                        "Starting",
                    ),
                },
            }
        },
        "/api/suggest": {
            "get": {
                "summary": "OpenSearch suggestions",
                "parameters": [{"name": "q", "in": "query", "schema": {"type": "string"}}],
                "responses": {
                    "200": _json({"type": "array"}, "[query, [suggestions]]"),
                    "429": _json(_ERROR, "Too many searches from this address (Retry-After)"),
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            # The token in <data_dir>/operator.token (api/operator.py).
            "operator": {"type": "http", "scheme": "bearer"},
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "status"],
                "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
            },
            "Result": {
                "type": "object",
                "required": ["url", "title", "content", "score"],
                "properties": {
                    "url": {"type": "string"},
                    "title": {"type": "string"},
                    "content": {"type": "string"},
                    "content_html": {"type": "string"},
                    "score": {"type": "number"},
                    "engine": {"type": "string"},
                    "host": {"type": "string"},
                    "publishedDate": {"type": "string", "nullable": True},
                    "fetchedDate": {"type": "string", "nullable": True},
                    "peers": {"type": "array", "items": {"type": "string"}},
                },
            },
            "SearchResponse": {
                "type": "object",
                "required": [
                    "query",
                    "number_of_results",
                    "results",
                    "took_ms",
                    "unresponsive_peers",
                ],
                "properties": {
                    "query": {"type": "string"},
                    "number_of_results": {"type": "integer", "minimum": 0},
                    "results": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}},
                    "took_ms": {"type": "number"},
                    "unresponsive_peers": {"type": "array"},
                    "peers_asked": {"type": "integer"},
                    "peers_answered": {"type": "integer"},
                },
            },
            "Status": {
                "type": "object",
                "required": ["idle", "documents", "crawl"],
                "properties": {
                    "idle": {"type": "boolean"},
                    "documents": {"type": "integer"},
                    "crawl": {
                        "type": "object",
                        "required": [
                            "queued",
                            "in_flight",
                            "fetched",
                            "failed",
                            "pages_per_minute",
                        ],
                    },
                },
            },
        },
    },
}


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


def setup(app: web.Application) -> None:
    app.router.add_get("/opensearch.xml", opensearch)
    app.router.add_get("/api/suggest", suggest)
    app.router.add_get("/api/openapi.json", openapi)
