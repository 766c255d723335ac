"""The operator page's login: the operator token, typed once into a form, buys a session.

A browser cannot send ``Authorization: Bearer`` without JavaScript, so ``/operator`` has a
login form that takes the token (``<data_dir>/operator.token``) and answers with a session
cookie:

* random (32 bytes), ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other
  site's page, form or link carries it), ``Path=/operator``, and ``Secure`` when the node is
  reached over https (the request's scheme, or ``public_url``);
* kept in memory only: a restart logs everyone out; at most ``MAX_SESSIONS`` at once (the
  oldest goes), each for ``SESSION_SECONDS``; logging out forgets it.

Every POST form carries the session's CSRF token (compared in constant time), must be
form-encoded, and is refused when its ``Origin`` is another site's, as the JSON guard does
(``api/operator.py``). The login form itself is refused from a foreign ``Origin`` too.
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from multidict import MultiDictProxy

from .keys import CONFIG
from .operator import foreign_origin, token_matches

log = logging.getLogger(__name__)

COOKIE = "rhizome_operator"
PAGE_PATH = "/operator"
SESSION_SECONDS = 12 * 3600.0
MAX_SESSIONS = 16  # browsers logged in at once; one operator rarely has more
MAX_NOTICES = 20  # what the page says after each action, until it is shown
SECRET_BYTES = 32
FORM_TYPE = "application/x-www-form-urlencoded"

Form = MultiDictProxy[str]
# A form handler answers the page's section to go back to (it may raise a redirect instead).
FormHandler = Callable[[web.Request, "Session", Form], Awaitable[str]]


@dataclass(slots=True)
class Session:
    csrf: str
    expires: float  # monotonic
    notices: list[tuple[str, str]] = field(default_factory=list)  # (kind, text)

    def say(self, text: str, kind: str = "ok") -> None:
        self.notices.append((kind, text))
        del self.notices[:-MAX_NOTICES]

    def take_notices(self) -> list[tuple[str, str]]:
        notices, self.notices = self.notices, []
        return notices


class Sessions:
    def __init__(self) -> None:
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def create(self) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(SECRET_BYTES)
        session = Session(secrets.token_urlsafe(SECRET_BYTES), time.monotonic() + SESSION_SECONDS)
        self._by_id[session_id] = session
        while len(self._by_id) > MAX_SESSIONS:
            self._by_id.popitem(last=False)
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        session = self._by_id.get(session_id)
        if session is not None and session.expires <= time.monotonic():
            del self._by_id[session_id]
            return None
        return session

    def drop(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)


SESSIONS = web.AppKey("operator_sessions", Sessions)


def current(request: web.Request) -> Session | None:
    """The request's operator session, if its cookie names a live one."""
    session_id = request.cookies.get(COOKIE, "")
    return request.app[SESSIONS].get(session_id) if session_id else None


def _secure(request: web.Request) -> bool:
    return request.secure or request.app[CONFIG].public_url.startswith("https://")


def back_to_page(anchor: str = "") -> web.HTTPSeeOther:
    return web.HTTPSeeOther(PAGE_PATH + (f"#{anchor}" if anchor else ""))


def _refused(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")


async def login(request: web.Request) -> web.StreamResponse:
    if foreign_origin(request):
        return _refused(403, "the operator's login is not taken from other sites' pages")
    if request.content_type != FORM_TYPE:
        return _refused(415, f"the login form is sent as {FORM_TYPE}")
    form = await request.post()
    token = form.get("token", "")
    if not isinstance(token, str) or not token_matches(request, token):
        log.info("operator page: a wrong token from %s", request.remote)
        raise web.HTTPSeeOther(PAGE_PATH + "?login=failed")
    session_id, _session = request.app[SESSIONS].create()
    response = back_to_page()
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=int(SESSION_SECONDS),
        path=PAGE_PATH,
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )
    log.info("operator page: logged in from %s", request.remote)
    raise response


def form_action(handler: FormHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A POST form of the operator page: a live session, its CSRF token, our own Origin,
    a form-encoded body; then ``handler`` acts and the browser is sent back to the page."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        if foreign_origin(request):
            return _refused(403, "operator forms are not taken from other sites' pages")
        session = current(request)
        if session is None:
            raise web.HTTPSeeOther(PAGE_PATH)  # logged out (or restarted): log in again
        if request.content_type != FORM_TYPE:
            return _refused(415, f"operator forms are sent as {FORM_TYPE}")
        form = await request.post()
        sent = form.get("csrf", "")
        if not isinstance(sent, str) or not hmac.compare_digest(
            sent.encode(), session.csrf.encode()
        ):
            return _refused(403, "this form is out of date: reload the operator page")
        raise back_to_page(await handler(request, session, form))  # type: ignore[arg-type]

    return guarded


@form_action
async def logout(request: web.Request, session: Session, form: Form) -> str:
    request.app[SESSIONS].drop(request.cookies.get(COOKIE, ""))
    response = web.HTTPSeeOther(PAGE_PATH)
    response.del_cookie(COOKIE, path=PAGE_PATH)
    raise response


def setup(app: web.Application) -> None:
    app[SESSIONS] = Sessions()
    app.router.add_post(PAGE_PATH + "/login", login)
    app.router.add_post(PAGE_PATH + "/logout", logout)
