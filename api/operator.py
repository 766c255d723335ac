"""The operator's credential: who may change this node or read its detailed state.

A random token in ``<data_dir>/operator.token`` (mode 0600), made at the first start and
kept after. Operator routes want it as ``Authorization: Bearer <token>`` from every address:
behind a reverse proxy on the same host every request comes from loopback, so the source
address proves nothing. Whoever can read the data directory is the operator; the CLI reads
the token from there (``rhizome seed``).

Browsers: a cross-site form can post text/plain, form-encoded or multipart bodies without
asking first, and a node bound to 0.0.0.0 is reachable from any page its operator opens.
So an operator request that carries a body must say ``application/json`` (which a browser
only sends cross-site after a CORS preflight this node never answers), and a request with
an ``Origin`` other than the node's own is refused, whatever credential it carries.

The operator page (``/operator``) cannot send a Bearer header without JavaScript: it trades
the token, typed once into a form, for a session cookie (``api/operator_session.py``).
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import re
import secrets
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from .config import ConfigError
from .keys import CONFIG, HTTP_URL, OPERATOR_TOKEN

log = logging.getLogger(__name__)

TOKEN_FILE = "operator.token"
TOKEN_FILE_MODE = 0o600
TOKEN_BYTES = 32  # secrets.token_urlsafe: 43 characters
# A token the operator wrote by hand is accepted if it is at least this long and urlsafe.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_\-]{32,512}")
REALM = 'Bearer realm="rhizome operator"'
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class CredentialError(ConfigError):
    """The operator credential cannot be read or made (the node does not start without)."""


def token_path(data_dir: Path) -> Path:
    return Path(data_dir) / TOKEN_FILE


def read_token(data_dir: Path) -> str:
    """The token in ``data_dir``; CredentialError if there is none or it is damaged."""
    path = token_path(data_dir)
    try:
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise CredentialError(
            f"no operator credential at {path}: a node makes it at its first start "
            "(pass the node's --data-dir)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"cannot read the operator credential {path}: {exc}") from None
    if not _TOKEN_SHAPE.fullmatch(token):
        # Never replace it silently: scripts holding the old token would stop working
        # without a word. Deleting the file makes a new one at the next start.
        raise CredentialError(
            f"{path} is not an operator token (32+ letters, digits, - or _); "
            "delete it to have the node make a new one"
        )
    return token


def load_or_create(data_dir: Path) -> str:
    """Reload ``<data_dir>/operator.token``, or create it (mode 0600) if it does not exist."""
    path = token_path(data_dir)
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("%s can be read by others (mode %o); chmod 600 it", path, mode)
        return read_token(data_dir)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    # Written whole to a private temporary file, then linked into place (as the node key):
    # a kill at any moment leaves no token or a complete one, and link() fails if another
    # process on the same data dir got there first (then its token is the one).
    tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, TOKEN_FILE_MODE)
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(token + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return read_token(data_dir)
    except OSError as exc:
        raise CredentialError(f"cannot create the operator credential {path}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    log.info("created the operator credential %s", path)
    return token


def _refuse(status: int, message: str, *, challenge: str = "") -> web.Response:
    headers = {"WWW-Authenticate": challenge} if challenge else None
    return web.json_response({"error": message, "status": status}, status=status, headers=headers)


def _own_origins(request: web.Request) -> set[str]:
    """The origins a page of this node has: as the request addressed it, as it listens,
    and as it is published (a reverse proxy's https name)."""
    config = request.app[CONFIG]
    origins = {f"{request.scheme}://{request.host}"}
    for url in (request.app[HTTP_URL], config.public_url):
        if url:
            origins.add(str(URL(url).origin()))
    return origins


def foreign_origin(request: web.Request) -> bool:
    """Whether ``request`` was sent by another site's page (its ``Origin`` is not ours)."""
    origin = request.headers.get("Origin")
    return origin is not None and origin.rstrip("/") not in _own_origins(request)


def token_matches(request: web.Request, presented: str) -> bool:
    """Whether ``presented`` is the operator token (compared in constant time)."""
    expected = request.app[OPERATOR_TOKEN]
    return hmac.compare_digest(presented.strip().encode(), expected.encode())


def refusal(request: web.Request) -> web.Response | None:
    """Why ``request`` is not the operator's (a response to send), or None if it is."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return _refuse(
            401,
            "this needs the operator credential: Authorization: Bearer <the token in "
            "the node's data dir, operator.token>",
            challenge=REALM,
        )
    if not token_matches(request, presented):
        return _refuse(
            401, "the operator credential is wrong", challenge=f'{REALM}, error="invalid_token"'
        )
    if foreign_origin(request):
        return _refuse(403, "operator requests are not taken from other sites' pages")
    if request.method in _BODY_METHODS and request.content_type != "application/json":
        return _refuse(415, "the body must be sent as Content-Type: application/json")
    return None


def asks_as_operator(request: web.Request) -> bool:
    """Whether ``request`` presents a credential (then it has to be the right one)."""
    return "Authorization" in request.headers


def operator_only(handler: Handler) -> Handler:
    """The route answers only the operator (see the module's docstring for what that is)."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        refused = refusal(request)
        if refused is not None:
            # debug: strangers knocking must not be able to flood the operator's log
            log.debug("refused %s %s: %s", request.method, request.path, refused.status)
            return refused
        return await handler(request)

    return guarded
