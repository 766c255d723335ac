"""The operator page, ``/operator``: seeds, the blocklist and its subscriptions, pins,
recrawls, the crawl queue by host and distrusted peers. Server-rendered HTML under the web
UI's CSP; every action is a plain POST form (``api/operator_session.py`` guards them), so
it works without JavaScript. Every value shown is escaped: hosts and list names come from
crawled pages and other nodes.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import UTC, datetime

from aiohttp import web

from rhizome.crawler.blocklist import OWN, host_name
from rhizome.crawler.domains import domain_of

from .keys import HTTP_URL, OPERATOR_ACTIONS, OPERATOR_STATE
from .operator_actions import OperatorActions
from .operator_forms import setup as setup_forms
from .operator_session import PAGE_PATH, current
from .operator_session import setup as setup_sessions
from .web_ui import page

E = html.escape
RULES_SHOWN_PER_LIST = 200  # a subscribed list may hold 10,000; the page shows the first

STYLE = """<style>
section{margin:1.5rem 0}.wide{overflow-x:auto}form.inline{display:inline}
form.row{display:flex;gap:.5rem;flex-wrap:wrap;margin:.5rem 0}
input[type=text],input[type=password],textarea{padding:.5rem;border:1px solid var(--border);
border-radius:.4rem;background:var(--card);color:var(--fg);font:inherit;min-width:12rem;flex:1}
button.small{padding:.2rem .5rem;font-weight:400;font-size:.85rem}
.notice{border:1px solid var(--accent);padding:.6rem;border-radius:.5rem;margin:.4rem 0}
.notice.error{border-color:#c0392b}code{overflow-wrap:anywhere}
</style>"""


def _when(ts: float | None) -> str:
    if not ts:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _form(
    action: str, label: str, csrf: str, fields: Mapping[str, str], *, small: bool = True
) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{E(k)}" value="{E(v)}">' for k, v in fields.items()
    )
    css = ' class="small"' if small else ""
    return (
        f'<form class="inline" method="post" action="{PAGE_PATH}/{action}">'
        f'<input type="hidden" name="csrf" value="{E(csrf)}">{hidden}'
        f'<button{css} type="submit">{E(label)}</button></form>'
    )


def _input_form(action: str, csrf: str, inputs: str, button: str, name: str) -> str:
    return (
        f'<form class="row" method="post" action="{PAGE_PATH}/{action}" aria-label="{E(name)}">'
        f'<input type="hidden" name="csrf" value="{E(csrf)}">{inputs}'
        f'<button type="submit">{E(button)}</button></form>'
    )


def _text(name: str, label: str, placeholder: str = "", value: str = "") -> str:
    return (
        f'<input type="text" name="{name}" aria-label="{E(label)}" '
        f'placeholder="{E(placeholder)}" value="{E(value)}">'
    )


def _private(response: web.Response) -> web.Response:
    """Not cached; and its forms' POSTs carry our Origin: under the site-wide no-referrer
    policy a browser sends ``Origin: null``, which the guard must refuse (a sandboxed
    frame sends that too)."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def login_page(failed: bool) -> web.Response:
    error = (
        '<p class="notice error" role="alert">That is not the operator token.</p>' if failed else ""
    )
    body = (
        f"{STYLE}<h2>Operator login</h2>{error}"
        "<p>Paste the operator token: the file <code>operator.token</code> in the node's "
        "data directory, on the machine that runs it.</p>"
        f'<form class="row" method="post" action="{PAGE_PATH}/login" aria-label="Log in">'
        '<input type="password" name="token" aria-label="Operator token" '
        'autocomplete="current-password" required>'
        '<button type="submit">Log in</button></form>'
    )
    return _private(page("Operator – Rhizome", body))


def _node_section(request: web.Request, ops: OperatorActions, csrf: str) -> str:
    network = ops.node.network
    state = request.app[OPERATOR_STATE]
    url = ops.node.config.public_url or request.app[HTTP_URL]
    if network is None:
        about = "<p>This node runs alone (no <code>--dht</code>): nothing is published.</p>"
    else:
        published = (
            "Other nodes can subscribe to this node's blocklist with its id and URL."
            if ops.node.config.publish_blocklist
            else "This node does not publish its blocklist (--no-publish-blocklist)."
        )
        about = (
            f'<p>Node id <code id="node-id">{E(network.node_id)}</code>, URL '
            f'<code id="node-url">{E(url)}</code>. {published}</p>'
        )
    name_form = _input_form(
        "name",
        csrf,
        _text("name", "Name of this node's list", "a name for this node's list", state.list_name),
        "Name the list",
        "Name this node's list",
    )
    return f'<section id="node"><h2>This node</h2>{about}{name_form}</section>'


def _blocklist_section(ops: OperatorActions, csrf: str) -> str:
    add = _input_form(
        "block",
        csrf,
        _text("rule", "Host or domain to block", "example.com, *.ads.example, =www.example.org"),
        "Block and delete",
        "Block a host or domain",
    )
    check = _input_form(
        "check",
        csrf,
        _text("host", "Host or URL to check", "is this host or URL blocked?"),
        "Check",
        "Check a host",
    )
    rows = []
    for rule, added in ops.own_rules():
        unblock = _form("unblock", "Unblock", csrf, {"rule": rule})
        rows.append(
            f"<tr><td><code>{E(rule)}</code></td><td>this node</td>"
            f"<td>{_when(added)}</td><td>{unblock}</td></tr>"
        )
    for source in ops.blocklist.sources():
        if source == OWN:
            continue
        rules = ops.blocklist.rules_of(source)
        label = ops.blocklist.label_of(source)
        for rule in rules[:RULES_SHOWN_PER_LIST]:
            rows.append(
                f"<tr><td><code>{E(rule)}</code></td><td>{E(label)}</td><td>—</td><td></td></tr>"
            )
        if len(rules) > RULES_SHOWN_PER_LIST:
            more = len(rules) - RULES_SHOWN_PER_LIST
            rows.append(f'<tr><td colspan="4">… and {more} more of {E(label)}</td></tr>')
    table = (
        '<div class="wide"><table id="block-rules"><tr><th>Rule</th><th>From</th>'
        f"<th>Added</th><th></th></tr>{''.join(rows)}</table></div>"
        if rows
        else "<p>Nothing is blocked.</p>"
    )
    return (
        '<section id="blocklist"><h2>Blocklist</h2>'
        "<p><code>example.com</code> blocks it and every host under it; "
        "<code>*.example.com</code> only the hosts under it; <code>ads*.example.com</code> "
        "hosts whose label starts with ads; <code>=www.example.com</code> that host alone. "
        "A block also deletes the host's pages from this node's index.</p>"
        f"{add}{check}{table}</section>"
    )


def _subscriptions_section(ops: OperatorActions, csrf: str) -> str:
    if ops.subscriptions is None:
        return (
            '<section id="subscriptions"><h2>Subscribed lists</h2>'
            "<p>Subscriptions need the network: start the node with --dht.</p></section>"
        )
    add = _input_form(
        "subscribe",
        csrf,
        _text("node_id", "Node id of the list's node", "node id (40 hex)")
        + _text("url", "URL of the list's node", "http://node.example:8700"),
        "Subscribe",
        "Subscribe to a node's list",
    )
    rows = []
    for sub in ops.subscriptions.all():
        actions = _form("refresh", "Refresh", csrf, {"node_id": sub.node_id}) + _form(
            "unsubscribe", "Unsubscribe", csrf, {"node_id": sub.node_id}
        )
        rows.append(
            f"<tr><td>{E(sub.name or '—')}</td><td><code>{E(sub.node_id)}</code></td>"
            f"<td>{E(sub.url or 'found through the network')}</td><td>{len(sub.rules)}</td>"
            f"<td>{_when(sub.fetched_at)}</td><td>{E(sub.error or '—')}</td><td>{actions}</td></tr>"
        )
    table = (
        '<div class="wide"><table id="subscription-list"><tr><th>List</th><th>Node</th>'
        "<th>URL</th><th>Rules</th><th>Fetched</th><th>Last error</th><th></th></tr>"
        f"{''.join(rows)}</table></div>"
        if rows
        else "<p>No subscriptions.</p>"
    )
    return f'<section id="subscriptions"><h2>Subscribed lists</h2>{add}{table}</section>'


async def _queue_section(ops: OperatorActions, csrf: str) -> str:
    pinned = {h for h, _c in ops.pins()}
    rows = []
    for q in await ops.queue():
        pin = (
            _form("unpin", "Unpin", csrf, {"host": q.host})
            if q.host in pinned
            else _form("pin", "Pin", csrf, {"host": q.host})
        )
        domain, name = host_name(domain_of(q.host)), host_name(q.host)
        actions = (
            _form("recrawl", "Recrawl now", csrf, {"host": q.host})
            + pin
            + _form("block", f"Block {name}", csrf, {"rule": name})
            + (_form("block", f"Block {domain}", csrf, {"rule": domain}) if domain != name else "")
        )
        due = "now" if q.due else _when(q.next_fetch)
        rows.append(
            f"<tr><td><code>{E(q.host)}</code></td><td>{q.due}</td><td>{q.leased}</td>"
            f"<td>{q.done}</td><td>{q.failed}</td><td>{E(due)}</td><td>{actions}</td></tr>"
        )
    table = (
        '<div class="wide"><table id="queue"><tr><th>Host</th><th>Due</th><th>In flight</th>'
        "<th>Done</th><th>Failed</th><th>Next</th><th></th></tr>"
        f"{''.join(rows)}</table></div>"
        if rows
        else "<p>The frontier is empty.</p>"
    )
    return f'<section id="crawl-queue"><h2>Crawl queue by host</h2>{table}</section>'


def _pins_section(ops: OperatorActions, csrf: str) -> str:
    add = _input_form("pin", csrf, _text("host", "Host to pin", "example.org"), "Pin", "Pin")
    rows = [
        f"<tr><td><code>{E(host)}</code></td><td>"
        + ("the configuration" if configured else _form("unpin", "Unpin", csrf, {"host": host}))
        + "</td></tr>"
        for host, configured in ops.pins()
    ]
    table = f'<table id="pins">{"".join(rows)}</table>' if rows else "<p>No pinned hosts.</p>"
    return (
        '<section id="pinned"><h2>Pinned hosts</h2>'
        "<p>A pinned host is crawled by this node, whichever node's slice it is in.</p>"
        f"{add}{table}</section>"
    )


def _distrust_section(ops: OperatorActions, csrf: str) -> str:
    rows = [
        f"<tr><td><code>{E(peer)}</code></td><td>{_when(float(entry.get('since', 0)))}</td>"
        f"<td>{E(str(entry.get('reason', '')))}</td>"
        f"<td>{_form('lift', 'Lift', csrf, {'node_id': peer})}</td></tr>"
        for peer, entry in sorted(ops.distrusted().items())
    ]
    table = (
        '<table id="distrusted"><tr><th>Node</th><th>Since</th><th>Why</th><th></th></tr>'
        f"{''.join(rows)}</table>"
        if rows
        else "<p>No peer is distrusted.</p>"
    )
    return (
        '<section id="distrust"><h2>Distrusted peers</h2>'
        "<p>Publishers whose claims failed spot checks: their shards and answers are not "
        f"used. Lifting trusts them again.</p>{table}</section>"
    )


async def operator_page(request: web.Request) -> web.Response:
    session = current(request)
    if session is None:
        return login_page(request.query.get("login") == "failed")
    ops, csrf = request.app[OPERATOR_ACTIONS], session.csrf
    notices = "".join(
        f'<p class="notice {E(kind)}">{E(text)}</p>' for kind, text in session.take_notices()
    )
    seeds = _input_form(
        "seeds",
        csrf,
        '<textarea name="urls" aria-label="Seed URLs" rows="2" '
        'placeholder="one URL a line"></textarea>',
        "Add seeds",
        "Add seeds",
    )
    body = (
        f"{STYLE}<h2>Operator</h2>{_form('logout', 'Log out', csrf, {})}"
        f'<div id="notices" role="status">{notices}</div>'
        f"{_node_section(request, ops, csrf)}"
        f'<section id="seeds"><h2>Seeds</h2>{seeds}</section>'
        f"{_blocklist_section(ops, csrf)}{_subscriptions_section(ops, csrf)}"
        f"{await _queue_section(ops, csrf)}{_pins_section(ops, csrf)}"
        f"{_distrust_section(ops, csrf)}"
    )
    return _private(page("Operator – Rhizome", body))


def setup(app: web.Application) -> None:
    setup_sessions(app)
    setup_forms(app)
    app.router.add_get(PAGE_PATH, operator_page)
