"""What a querier and a node behind NAT say to open a direct path, and the frames on it.

Both ways start with one request sent through the node's relay (``relay_wire``'s
``PATH_REVERSE`` and ``PATH_PUNCH``); once the path is open, requests and answers travel
on it as the relay's own frames (``relay_wire.encode_request``/``encode_answer``), so a
node answers a direct request exactly as a relayed one, through its own HTTP server:

* **reversal** (a public querier): the node dials the querier's ``PATH_DIRECT_ATTACH``
  WebSocket and passes the relay's attach handshake, signing ``direct_url`` (the querier's
  URL and the node's id, so the signature is good for that link only);
* **hole punch** (a querier behind NAT too): the querier sends its observed address and a
  nonce, the node answers with its own, and both connect to each other at once (TCP
  simultaneous open); the node's first frame signs ``punch_message``, then the frames of
  ``relay_wire`` follow, each after a 4-byte length, as TCP has no message boundaries.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator

from .errors import RelayProtocolError
from .relay_wire import HEADER_LENGTH_BYTES, MAX_HEADER_BYTES, MAX_RELAY_ANSWER_BYTES

log = logging.getLogger(__name__)

PATH_DIRECT_ATTACH = "/api/peer/direct"  # GET, upgraded to a WebSocket: a reversal's link
PUNCH_DOMAIN = b"rhizome-punch/1"  # a punch proof is never an attach's, a whoami's, a record's
PUNCH_NONCE_BYTES = 16
STREAM_LENGTH_BYTES = 4
# The largest frame either side takes on a punched stream: an answer frame at most.
MAX_STREAM_FRAME = HEADER_LENGTH_BYTES + MAX_HEADER_BYTES + MAX_RELAY_ANSWER_BYTES
# Both sides connect for this long: SYNs are re-sent at 1 s and 3 s, so dials up to ~2 s
# apart still meet (the relay carries the addresses in well under that).
PUNCH_SECONDS = 3.0
MAX_PROOF_FRAME = 1024  # the node's first frame: an id, a key and a signature in hex
MAX_ADDR_CHARS = 64  # "IP:PORT", IPv6 in brackets
# A punched link's keep-alive: home routers forget idle TCP mappings after minutes; a probe
# every 30 s keeps them, and 4 unanswered say the other side is gone.
KEEPALIVE_IDLE_SECONDS = 30
KEEPALIVE_PROBES = 4
# Data unacknowledged this long: the other end is gone (5 query deadlines; a live home
# link acknowledges within a second even when congested).
USER_TIMEOUT_MS = 10_000


def direct_url(querier_url: str, node_hex: str) -> str:
    """What a node reversing its connection signs: the querier's link for this node."""
    return f"{querier_url.rstrip('/')}{PATH_DIRECT_ATTACH}/{node_hex}"


def punch_message(nonce: bytes, querier: bytes) -> bytes:
    """What the punched node signs first on the new connection: the querier's nonce (sent
    through the relay) and the querier's id, so nobody else's punch can use it."""
    return PUNCH_DOMAIN + nonce + querier


def format_addr(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def parse_addr(text: str) -> tuple[str, int]:
    """``IP:PORT`` (``[IPv6]:PORT``) as a socket address; RelayProtocolError otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or len(text) > MAX_ADDR_CHARS or not port_text.isdigit():
        raise RelayProtocolError(f"not an address: {text[:80]!r}")
    try:
        ip = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        raise RelayProtocolError(f"not an IP address: {host[:80]!r}") from None
    port = int(port_text)
    if not 0 < port < 65536:
        raise RelayProtocolError(f"not a port: {port}")
    return str(ip), port


def stream_frame(frame: bytes) -> bytes:
    return len(frame).to_bytes(STREAM_LENGTH_BYTES, "big") + frame


async def read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    """The next frame on a punched stream. RelayProtocolError for one over ``limit``;
    asyncio.IncompleteReadError when the stream ends."""
    size = int.from_bytes(await reader.readexactly(STREAM_LENGTH_BYTES), "big")
    if size > limit:
        raise RelayProtocolError(f"a frame of {size} bytes, over the {limit} allowed")
    return await reader.readexactly(size)


def bound_socket(ip: str) -> socket.socket:
    """A TCP socket bound to a free port, for a hole punch: the port is what we tell the
    other side, as a NAT that masquerades keeps a free source port (Linux's does, and
    most home routers). Kept alive while idle so the NATs keep the link's mapping."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):  # Linux: probes after this idle time
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_SECONDS)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_IDLE_SECONDS)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
            # A request written to a link whose other end vanished fails in this time,
            # not after TCP's ~15 min of retransmissions, so the next goes by the relay.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
    except BaseException:
        sock.close()
        raise
    return sock


class StreamSocket:
    """``relay.FrameSocket`` over a punched stream: each frame after its length."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def send_bytes(self, data: bytes) -> None:
        self._writer.write(stream_frame(data))
        await self._writer.drain()

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        self._writer.close()
        return True


async def stream_frames(reader: asyncio.StreamReader, limit: int) -> AsyncIterator[bytes]:
    """The frames of a punched stream until it ends, breaks, or sends one over ``limit``."""
    while True:
        try:
            frame = await read_frame(reader, limit)
        except (asyncio.IncompleteReadError, ConnectionError, RelayProtocolError) as exc:
            log.info("a punched link ended: %s", exc or type(exc).__name__)
            return
        yield frame
