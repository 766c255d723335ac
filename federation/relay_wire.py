"""What a relay and a node behind NAT say over their WebSocket (both sides' codecs).

A node that nobody can dial keeps one outbound WebSocket to a reachable peer that agreed
to relay (``PATH_RELAY_ATTACH``). The relay proves who is attaching with a nonce the node
signs (``attach_message``), then hands it its relayed URL, ``<relay>/api/peer/relay/<id>``,
which the node advertises in its signed hello instead of its own. A peer's request to that
URL goes down the socket as one binary frame and the answer comes back as one: a 2-byte
header length, a JSON header, and the body bytes as they are (still gzipped, if they were).

Only what a querier asks of an owner is relayed (``RELAYED_PATHS``): its search, its
snippets, the whoami proof of its URL, and the two requests that open a direct path
instead (``federation/direct_wire.py``: reversal and hole punch). Shard pushes and
lookups never are, as a node behind NAT is never a holder; nor forwarded URLs, as it owns
no host slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from .errors import RelayProtocolError
from .wire import MAX_OWNER_ANSWER_BYTES, PATH_SEARCH, PATH_SNIPPETS, PATH_WHOAMI

PATH_RELAY_ATTACH = "/api/peer/relay"  # GET, upgraded to a WebSocket
PATH_RELAY_PREFIX = "/api/peer/relay/"  # + node id hex + "/" + a peer path
PATH_CONTACT = "/api/peer/contact"  # ?node=HEX: that node's signed hello, if we hold it
PATH_DIALBACK = "/api/peer/dialback"  # POST {"node_id", "url"}: dial me back, say if it worked
# Asked of a node behind NAT through its relay, to stop relaying (federation/direct.py):
PATH_REVERSE = "/api/peer/reverse"  # ?node=HEX&url=URL: dial me, I am public
PATH_PUNCH = "/api/peer/punch"  # ?node=HEX&addr=IP:PORT&nonce=HEX: dial me as I dial you
RELAYED_PATHS = frozenset({PATH_SEARCH, PATH_SNIPPETS, PATH_WHOAMI, PATH_REVERSE, PATH_PUNCH})
# Domain separation: an attach signature is never a whoami's, a record's or a hello's.
ATTACH_DOMAIN = b"rhizome-relay-attach/1"
ATTACH_NONCE_BYTES = 16
# A relayed request is a GET: path and query (the query text and at most MAX_SNIPPET_URLS
# URLs of 2 KB) fit in this with room; anything longer is refused before it is sent on.
MAX_RELAY_REQUEST_BYTES = 16 * 1024
# The most of an answer a querier ever reads (an owner's answer): more is never relayed.
MAX_RELAY_ANSWER_BYTES = MAX_OWNER_ANSWER_BYTES
MAX_HEADER_BYTES = 4 * 1024  # a frame's JSON header: an id, a status, two short strings
HEADER_LENGTH_BYTES = 2
# WebSocket pings both ways: a relay whose process dies closes the connection at once (its
# kernel does), one whose machine or link vanishes is noticed after 1.5 of these; each
# ping also keeps the NAT's mapping of the connection alive (home routers drop idle TCP
# after minutes to hours). ~150 bytes a ping and pong, 100 KB an hour.
HEARTBEAT_SECONDS = 5.0
CLOSE_RESERVATION_OVER = 4000  # the relay ends a reservation: attach again, maybe here
CLOSE_OVER_BUDGET = 4001  # the node's bytes for the hour are spent here: go elsewhere
CLOSE_PROTOCOL = 4002  # a frame broke the rules


@dataclass(frozen=True, slots=True)
class RelayedRequest:
    id: int
    path_qs: str  # the peer path and its query string, e.g. /api/peer/search?q=...
    accept_encoding: str
    max_answer: int  # the relay forwards no larger answer (its budget for this node)


@dataclass(frozen=True, slots=True)
class RelayedAnswer:
    id: int
    status: int
    content_type: str
    content_encoding: str
    body: bytes


def attach_message(nonce: bytes, relay_url: str) -> bytes:
    """What an attaching node signs: the relay's nonce, then the URL it attaches at."""
    return ATTACH_DOMAIN + nonce + relay_url.encode("utf-8")


def _frame(header: dict[str, object], body: bytes = b"") -> bytes:
    raw = orjson.dumps(header)
    if len(raw) > MAX_HEADER_BYTES:
        raise RelayProtocolError("frame header too long")
    return len(raw).to_bytes(HEADER_LENGTH_BYTES, "big") + raw + body


def _unframe(frame: bytes) -> tuple[dict[str, object], bytes]:
    if len(frame) < HEADER_LENGTH_BYTES:
        raise RelayProtocolError("frame too short")
    size = int.from_bytes(frame[:HEADER_LENGTH_BYTES], "big")
    end = HEADER_LENGTH_BYTES + size
    if size > MAX_HEADER_BYTES or len(frame) < end:
        raise RelayProtocolError("bad frame header length")
    try:
        header = orjson.loads(frame[HEADER_LENGTH_BYTES:end])
    except orjson.JSONDecodeError:
        raise RelayProtocolError("frame header is not JSON") from None
    if not isinstance(header, dict):
        raise RelayProtocolError("frame header is not an object")
    return header, frame[end:]


def _int(header: dict[str, object], name: str) -> int:
    value = header.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RelayProtocolError(f"frame field {name!r} is not a count")
    return value


def _str(header: dict[str, object], name: str, limit: int) -> str:
    value = header.get(name, "")
    if not isinstance(value, str) or len(value) > limit:
        raise RelayProtocolError(f"frame field {name!r} is not a short string")
    return value


def encode_request(request: RelayedRequest) -> bytes:
    return _frame(
        {
            "id": request.id,
            "path": request.path_qs,
            "accept_encoding": request.accept_encoding,
            "max_answer": request.max_answer,
        }
    )


def decode_request(frame: bytes) -> RelayedRequest:
    """A relayed request, checked: a peer path we relay, a bounded length."""
    if len(frame) > HEADER_LENGTH_BYTES + MAX_HEADER_BYTES + MAX_RELAY_REQUEST_BYTES:
        raise RelayProtocolError("request frame too long")
    header, _ = _unframe(frame)
    path_qs = _str(header, "path", MAX_RELAY_REQUEST_BYTES)
    if path_qs.split("?", 1)[0] not in RELAYED_PATHS:
        raise RelayProtocolError(f"not a relayed path: {path_qs[:80]!r}")
    return RelayedRequest(
        _int(header, "id"),
        path_qs,
        _str(header, "accept_encoding", 64),
        min(_int(header, "max_answer"), MAX_RELAY_ANSWER_BYTES),
    )


def encode_answer(answer: RelayedAnswer) -> bytes:
    return _frame(
        {
            "id": answer.id,
            "status": answer.status,
            "content_type": answer.content_type,
            "content_encoding": answer.content_encoding,
        },
        answer.body,
    )


def decode_answer(frame: bytes) -> RelayedAnswer:
    header, body = _unframe(frame)
    status = _int(header, "status")
    if not 100 <= status <= 599:
        raise RelayProtocolError("frame status is not an HTTP status")
    return RelayedAnswer(
        _int(header, "id"),
        status,
        _str(header, "content_type", 128),
        _str(header, "content_encoding", 32),
        body,
    )
