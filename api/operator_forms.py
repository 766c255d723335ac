"""The operator page's forms: each a POST that acts (``api/operator_actions.py``), leaves
a notice for the page to show, and sends the browser back to the page's section
(``api/operator_session.form_action`` checks the session, its CSRF token and the Origin).
"""

from __future__ import annotations

from collections.abc import Awaitable

from aiohttp import web

from .keys import OPERATOR_ACTIONS
from .operator_actions import ActionError, OperatorActions
from .operator_session import PAGE_PATH, Form, Session, form_action


def _field(form: Form, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def _ops(request: web.Request) -> OperatorActions:
    return request.app[OPERATOR_ACTIONS]


@form_action
async def add_seeds(request: web.Request, session: Session, form: Form) -> str:
    urls = [u for u in _field(form, "urls").split() if u]
    try:
        done = await _ops(request).add_seeds(urls)
    except ActionError as exc:
        session.say(str(exc), "error")
        return "seeds"
    session.say(f"Seeds queued: {len(done['accepted'])} of {len(urls)}.")
    for blocked in done["blocked"]:
        session.say(f"{blocked['url']} is {blocked['by']}.", "error")
    return "seeds"


@form_action
async def block(request: web.Request, session: Session, form: Form) -> str:
    rule = _field(form, "rule")
    try:
        outcome = await _ops(request).block([rule])
    except ActionError as exc:
        session.say(str(exc), "error")
        return "blocklist"
    for why in outcome.refused.values():
        session.say(f"Not blocked: {why}", "error")
    for added in outcome.added:
        session.say(
            f"Blocked {added}: {outcome.pages_deleted} pages deleted from the index, "
            f"the queue of {outcome.hosts_forgotten} hosts dropped."
        )
    if not outcome.added and not outcome.refused:
        session.say(f"{rule.strip()} was blocked already.")
    return "blocklist"


@form_action
async def unblock(request: web.Request, session: Session, form: Form) -> str:
    removed = await _ops(request).unblock([_field(form, "rule")])
    session.say(f"Unblocked {', '.join(removed)}." if removed else "No such rule of this node.")
    return "blocklist"


@form_action
async def check(request: web.Request, session: Session, form: Form) -> str:
    host = _field(form, "host").strip()
    if host:
        found = _ops(request).check(host)
        session.say(f"{host} is {found.describe()}." if found else f"{host} is not blocked.")
    return "blocklist"


@form_action
async def name(request: web.Request, session: Session, form: Form) -> str:
    await _ops(request).name_list(_field(form, "name"))
    session.say("The list's name is saved.")
    return "node"


async def _act(session: Session, work: Awaitable[object], done: str) -> None:
    try:
        await work
    except ActionError as exc:
        session.say(str(exc), "error")
    else:
        session.say(done)


@form_action
async def subscribe(request: web.Request, session: Session, form: Form) -> str:
    try:
        sub = await _ops(request).subscribe(_field(form, "node_id"), _field(form, "url"))
    except ActionError as exc:
        session.say(f"Not subscribed: {exc}", "error")
        return "subscriptions"
    if sub.error:
        session.say(f"Subscribed to {sub.node_id[:12]}, but its list was refused: {sub.error}")
    else:
        session.say(f"Subscribed to {sub.label}: {len(sub.rules)} rules.")
    return "subscriptions"


@form_action
async def unsubscribe(request: web.Request, session: Session, form: Form) -> str:
    node_id = _field(form, "node_id")
    await _act(session, _ops(request).unsubscribe(node_id), f"Unsubscribed from {node_id[:12]}.")
    return "subscriptions"


@form_action
async def refresh(request: web.Request, session: Session, form: Form) -> str:
    try:
        sub = await _ops(request).refresh(_field(form, "node_id").strip().lower())
    except ActionError as exc:
        session.say(str(exc), "error")
        return "subscriptions"
    if sub.error:
        session.say(f"{sub.label} was not refreshed: {sub.error}", "error")
    else:
        session.say(f"{sub.label} refreshed: {len(sub.rules)} rules.")
    return "subscriptions"


@form_action
async def pin(request: web.Request, session: Session, form: Form) -> str:
    host = _field(form, "host")
    await _act(session, _ops(request).pin([host]), f"Pinned {host.strip()}.")
    return "pinned"


@form_action
async def unpin(request: web.Request, session: Session, form: Form) -> str:
    host = _field(form, "host")
    await _act(session, _ops(request).unpin([host]), f"Unpinned {host.strip()}.")
    return "pinned"


@form_action
async def recrawl(request: web.Request, session: Session, form: Form) -> str:
    host = _field(form, "host").strip()
    try:
        due = await _ops(request).recrawl(host)
    except ActionError as exc:
        session.say(str(exc), "error")
    else:
        session.say(f"{due} URLs of {host} are due now." if due else f"Nothing known of {host}.")
    return "crawl-queue"


@form_action
async def lift(request: web.Request, session: Session, form: Form) -> str:
    peer = _field(form, "node_id")
    try:
        lifted = await _ops(request).lift(peer)
    except ActionError as exc:
        session.say(str(exc), "error")
    else:
        session.say(
            f"Trusting {peer[:12]} again." if lifted else f"{peer[:12]} was not distrusted."
        )
    return "distrust"


FORMS = {
    "seeds": add_seeds,
    "block": block,
    "unblock": unblock,
    "check": check,
    "name": name,
    "subscribe": subscribe,
    "unsubscribe": unsubscribe,
    "refresh": refresh,
    "pin": pin,
    "unpin": unpin,
    "recrawl": recrawl,
    "lift": lift,
}


def setup(app: web.Application) -> None:
    for action, handler in FORMS.items():
        app.router.add_post(f"{PAGE_PATH}/{action}", handler)
