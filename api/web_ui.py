"""The web UI: server-rendered HTML, no JavaScript and no external assets.

Every value that came from a crawled page or a user is passed through ``html.escape``;
snippet highlights are built from escaped pieces in ``index.snippets``.
"""

from __future__ import annotations

import html
import re
import time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from rhizome.index import QuerySyntaxError

from . import charts
from .client_quotas import SEARCH_QUOTA
from .history import HISTORY
from .keys import NODE
from .metrics import observe_search
from .node import public_status
from .search import DEFAULT_LIMIT, MAX_OFFSET, BadRequest, SearchParams, asks_network, run_search

E = html.escape

STYLE = """
:root{color-scheme:light dark;--bg:#fbfbf8;--fg:#1d1d1b;--muted:#5f6360;--accent:#2f6f4f;
--card:#fff;--border:#d9dcd6;--mark:#fde68a}
@media (prefers-color-scheme:dark){:root{--bg:#141614;--fg:#e6e8e3;--muted:#a3a8a0;
--accent:#7fc8a0;--card:#1c1f1c;--border:#343a34;--mark:#5b4a12}}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);
font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{padding:1rem;border-bottom:1px solid var(--border);display:flex;gap:1rem;
align-items:center;flex-wrap:wrap}
a{color:var(--accent)}.brand{font-weight:700;font-size:1.3rem;text-decoration:none}
form.search{display:flex;gap:.5rem;flex:1;min-width:16rem;max-width:44rem}
input[type=search]{flex:1;padding:.6rem .8rem;font-size:1rem;border:1px solid var(--border);
border-radius:.5rem;background:var(--card);color:var(--fg)}
button{padding:.6rem 1rem;border-radius:.5rem;border:1px solid var(--accent);
background:var(--accent);color:var(--bg);font-weight:600;cursor:pointer}
main{max-width:48rem;padding:1rem;margin:0 auto}
.meta{color:var(--muted);font-size:.9rem}.result{margin:1.2rem 0}
.result h3{margin:0;font-size:1.1rem;overflow-wrap:anywhere}
.result .url{color:var(--muted);font-size:.85rem;overflow-wrap:anywhere}
.result p{margin:.3rem 0;overflow-wrap:anywhere}
mark{background:var(--mark);color:inherit;padding:0 .1em}
.error{border:1px solid #c0392b;padding:.8rem;border-radius:.5rem}
nav.pages{display:flex;gap:1rem;margin:2rem 0}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.3rem .5rem;
border-bottom:1px solid var(--border)}.hero{text-align:center;margin-top:18vh}
.hero form.search{margin:1rem auto}
"""


def page(title: str, body: str, *, query: str = "", hero: bool = False) -> web.Response:
    form = (
        '<form class="search" action="/" method="get" role="search">'
        f'<input type="search" name="q" value="{E(query)}" aria-label="Search" '
        'placeholder="Search the web" autofocus>'
        '<button type="submit">Search</button></form>'
    )
    if hero:
        content = f'<main class="hero"><h1>Rhizome</h1>{form}{body}</main>'
    else:
        content = (
            f'<header><a class="brand" href="/">Rhizome</a>{form}'
            '<a href="/status">About this node</a></header>'
            f"<main>{body}</main>"
        )
    text = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{E(title)}</title>"
        '<link rel="search" type="application/opensearchdescription+xml" '
        'title="Rhizome" href="/opensearch.xml">'
        f"<style>{STYLE}{charts.CSS}</style></head><body>{content}</body></html>"
    )
    return web.Response(text=text, content_type="text/html")


_MARK = re.compile(r"(</?mark>)")


def _snippet_html(result: dict[str, Any]) -> str:
    """Snippet HTML that may come from another node: keep only <mark>, escape the rest.

    Each piece between mark tags is unescaped and escaped again, so whatever a peer put
    there (a <script>, an attribute) reaches the browser as text.
    """
    raw = result.get("content_html")
    if not isinstance(raw, str):
        return E(str(result.get("content") or ""))
    out: list[str] = []
    depth = 0
    for piece in _MARK.split(raw):
        if piece == "<mark>" and depth == 0:
            out.append(piece)
            depth = 1
        elif piece == "</mark>" and depth == 1:
            out.append(piece)
            depth = 0
        elif piece not in ("<mark>", "</mark>"):
            out.append(E(html.unescape(piece)))
    if depth:
        out.append("</mark>")
    return "".join(out)


def _results_html(data: dict[str, Any], params: SearchParams) -> str:
    parts = [
        f'<p class="meta" id="summary">About {data["number_of_results"]} results '
        f"({data['took_ms']:.0f} ms)"
    ]
    if data.get("peers_asked"):
        parts.append(f" · {data['peers_answered']} of {data['peers_asked']} peers answered")
    parts.append("</p>")
    slow = data.get("unresponsive_peers") or []
    if slow:
        names = ", ".join(E(str(p.get("peer", p)) if isinstance(p, dict) else str(p)) for p in slow)
        parts.append(f'<p class="meta" id="slow-peers">Slow or unreachable peers: {names}</p>')
    disagree = data.get("replicas_disagree") or []
    if disagree:
        holders = ", ".join(sorted({E(str(d["holder"])[:12]) for d in disagree}))
        parts.append(
            '<p class="meta" id="replicas-disagree">Copies of the index disagree: '
            f"{holders} left out pages other holders list (they are shown).</p>"
        )
    if not data["results"]:
        parts.append("<p>No pages match. Try fewer or other words.</p>")
    for r in data["results"]:
        parts.append(
            '<article class="result">'
            f'<h3><a href="{E(r["url"])}" rel="noreferrer">{E(r["title"])}</a></h3>'
            f'<div class="url">{E(str(r.get("host") or ""))} · {E(r["url"])}</div>'
            f"<p>{_snippet_html(r)}</p></article>"
        )
    nav = []
    if params.offset > 0:
        prev_q = urlencode(
            {"q": params.q, "offset": max(0, params.offset - params.limit), "limit": params.limit}
        )
        nav.append(f'<a rel="prev" href="/?{E(prev_q)}">← Previous</a>')
    more = params.offset + len(data["results"]) < data["number_of_results"]
    # No "Next" past the deepest page the API serves (it would answer 400).
    if more and data["results"] and params.offset + params.limit <= MAX_OFFSET:
        next_q = urlencode(
            {"q": params.q, "offset": params.offset + params.limit, "limit": params.limit}
        )
        nav.append(f'<a rel="next" href="/?{E(next_q)}">Next →</a>')
    if nav:
        parts.append(f'<nav class="pages">{"".join(nav)}</nav>')
    return "".join(parts)


async def index(request: web.Request) -> web.Response:
    q = request.query.get("q", "")
    if not q.strip():
        return page("Rhizome", "", hero=True)
    try:
        params = SearchParams.from_query(
            {**request.query, "limit": request.query.get("limit") or str(DEFAULT_LIMIT)}
        )
        node = request.app[NODE]
        wait = request.app[SEARCH_QUOTA].refuse(request, network=asks_network(node, params))
        if wait is not None:
            return _too_many(q, wait)
        data = await run_search(node, params)
        observe_search(request.app, params.scope, data["took_ms"] / 1000)
    except (BadRequest, QuerySyntaxError) as exc:
        body = f'<p class="error" role="alert">Cannot search: {E(str(exc))}</p>'
        resp = page(f"{q} – Rhizome", body, query=q)
        resp.set_status(400)
        return resp
    return page(f"{q} – Rhizome", _results_html(data, params), query=q)


def _too_many(q: str, wait: int) -> web.Response:
    body = (
        '<p class="error" role="alert">Too many searches from your address in a short time. '
        f"Please wait {wait} seconds, then search again.</p>"
    )
    resp = page(f"{q} – Rhizome", body, query=q)
    resp.set_status(429)
    resp.headers["Retry-After"] = str(wait)
    return resp


REACHABILITY_TEXT = {
    "public": "yes: peers dial this node directly",
    "private": "no (behind NAT): peers reach it through a relay",
    "unknown": "not known yet: asking peers to dial back",
}


def _row(name: str, value: Any) -> str:
    return f"<tr><th>{E(name)}</th><td>{E(str(value))}</td></tr>"


async def status_page(request: web.Request) -> web.Response:
    # A browser carries no bearer token: the page shows what anyone may see (PUBLIC_STATUS).
    st = public_status(await request.app[NODE].status())
    crawl = st["crawl"]
    rows = [
        _row("State", "idle" if st["idle"] else "crawling"),
        _row("Documents in index", st["documents"]),
        _row("Pages per minute", crawl["pages_per_minute"]),
        _row("Queue", crawl["queued"]),
        _row("In flight", crawl["in_flight"]),
        _row("Fetched", crawl["fetched"]),
        _row("Failed", crawl["failed"]),
        _row("Known URLs", crawl["known_urls"]),
        _row("Hosts", crawl["hosts"]),
        _row("Uptime (s)", st["uptime_s"]),
    ]
    net = st.get("network")
    if net:
        rows += [
            _row("Node id", net.get("node_id", "")),
            _row("Peers", net.get("peers", 0)),
            _row("Shards held", net.get("shards_held", 0)),
            _row("Reachable", REACHABILITY_TEXT.get(net.get("reachability", ""), "unknown")),
        ]
    body = f'<h2>About this node</h2><table id="status">{"".join(rows)}</table>'
    body += charts.history_html(request.app[HISTORY], time.time())
    body += (
        '<p class="meta">Running this node? The <a href="/operator">operator page</a> '
        "takes the operator token.</p>"
    )
    return page("About this node – Rhizome", body)


def setup(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/status", status_page)
