"""HTTP to peers: one session, the SSRF guard, byte counts, back-off, URL proofs, and the
one place where aiohttp's, the socket's and JSON's errors become ``PeerError``.

Peers advertise their own URLs: without the guard in the connector a stranger could point
this node's requests at the volunteer's router or NAS, and without a proof (``proof.py``)
at anyone's web server. Every request but the proof itself waits for the URL's proof.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from rhizome.crawler import CrawlerError
from rhizome.crawler.ssrf import GuardedSocketFactory, check_address
from rhizome.dht import Peer, node_id_for

from . import proof
from .errors import (
    PeerBadAnswer,
    PeerBusy,
    PeerError,
    PeerTimeout,
    PeerUnproven,
    PeerUnreachable,
)
from .relay_wire import PATH_CONTACT, RelayedAnswer
from .settings import FederationSettings
from .wire import (
    MAX_BLOCKLIST_ANSWER_BYTES,
    MAX_LOOKUP_ANSWER_BYTES,
    MAX_OWNER_ANSWER_BYTES,
    PATH_BLOCKLIST,
    PATH_SEARCH,
    PATH_SHARDS,
    PATH_SNIPPETS,
    PATH_WHOAMI,
)

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
# A peer that answers these is up and limiting us (a quota, pushes in flight): PeerBusy.
BUSY_STATUSES = (429, 503)
# Bytes received, by the kind of request they answered (traffic_bytes in the status).
TRAFFIC_IN = {
    PATH_SHARDS: "lookup_received",
    PATH_SEARCH: "search_received",
    PATH_SNIPPETS: "search_received",
}

# Decoded bytes read of an answer, by path: a peer's answer beyond it is refused whole.
ANSWER_LIMIT = {
    PATH_SHARDS: MAX_LOOKUP_ANSWER_BYTES,
    PATH_SEARCH: MAX_OWNER_ANSWER_BYTES,
    PATH_SNIPPETS: MAX_OWNER_ANSWER_BYTES,
    PATH_WHOAMI: proof.MAX_ANSWER_BYTES,
    PATH_CONTACT: 4 * 1024,  # a base64 contact record of at most 1 KB
    PATH_BLOCKLIST: MAX_BLOCKLIST_ANSWER_BYTES,
}
READ_CHUNK = 64 * 1024

Params = Mapping[str, str] | Sequence[tuple[str, str]]


class _Inflater:
    """Decoded bytes of a body within ``limit``: zlib is told how much it may produce, so
    a bomb costs at most the limit."""

    def __init__(self, encoding: str, url: str, limit: int) -> None:
        encoding = encoding.strip().lower() or "identity"
        if encoding not in ("identity", "gzip"):
            raise PeerBadAnswer(url, f"unexpected Content-Encoding {encoding!r}")
        self._inflate = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
        self._url, self._limit = url, limit
        self.parts: list[bytes] = []
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        data = chunk
        while data:
            if self._inflate is None:
                out, data = data, b""
            else:
                try:
                    out = self._inflate.decompress(data, self._limit - self.size + 1)
                except zlib.error as exc:
                    raise PeerBadAnswer(self._url, f"bad gzip: {exc}") from None
                data = self._inflate.unconsumed_tail
            self.size += len(out)
            if self.size > self._limit:
                raise PeerBadAnswer(self._url, f"answer over {self._limit} bytes")
            self.parts.append(out)


async def read_bounded(resp: aiohttp.ClientResponse, url: str, limit: int) -> bytes:
    """The body, gunzipped here (the session does not decode) within ``limit`` decoded
    bytes."""
    inflater = _Inflater(resp.headers.get("Content-Encoding", "identity"), url, limit)
    async for chunk in resp.content.iter_chunked(READ_CHUNK):
        inflater.feed(chunk)
    return b"".join(inflater.parts)


class PeerClient:
    """Requests to peers. ``distrusted`` names peers (hex ids) never to be used."""

    def __init__(
        self,
        settings: FederationSettings,
        *,
        allow_private: bool,
        distrusted: Callable[[], Collection[str]],
    ) -> None:
        self.settings = settings
        self._allow_private = allow_private
        self._distrusted = distrusted
        self._session: aiohttp.ClientSession | None = None
        # node id hex -> (until when, the URL that failed): a peer that moved (a node behind
        # NAT re-attached to another relay) is asked at its new URL at once.
        self._backoff: dict[str, tuple[float, str | None]] = {}
        self._proofs = proof.ProofCache()
        # One proof in flight per (node id, URL): a query's parallel requests share it.
        self._proving: dict[tuple[bytes, str], asyncio.Task[None]] = {}
        # Bytes of peer traffic by kind (HTTP bodies): what a query or a publication costs.
        self.traffic: Counter[str] = Counter()

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.peer_timeout * 4),
            auto_decompress=False,  # read_bounded decodes, within a limit
            headers={"Accept-Encoding": "gzip"},
            connector=aiohttp.TCPConnector(
                limit=MAX_CONNECTIONS,
                socket_factory=GuardedSocketFactory(allow_private=self._allow_private),
            ),
        )

    async def close(self) -> None:
        for task in list(self._proving.values()):
            task.cancel()
        await asyncio.gather(*self._proving.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- who may be asked --------------------------------------------------------------
    def usable(self, peer: Peer) -> bool:
        peer_hex = peer.node_id.hex()
        if peer_hex in self._distrusted():  # failed spot checks
            return False
        until, url = self._backoff.get(peer_hex, (0.0, None))
        return until <= time.monotonic() or url != peer.http_url

    def mark_slow(self, peer: Peer) -> None:
        until = time.monotonic() + self.settings.backoff_seconds
        self._backoff[peer.node_id.hex()] = (until, peer.http_url)

    def backed_off(self) -> list[str]:
        now = time.monotonic()
        return [p for p, (until, _url) in self._backoff.items() if until > now]

    # --- proofs --------------------------------------------------------------------------
    async def prove(self, peer: Peer) -> None:
        """Return once ``peer``'s URL is proven to serve its node id; PeerUnproven (or
        another PeerError) if it is not. Cached both ways (``proof.ProofCache``)."""
        base = self._base(peer)
        key = (peer.node_id, base)
        if self._proofs.proven(*key):
            return
        if self._proofs.failed_recently(*key):
            raise PeerUnproven(base, "did not prove it serves this node id")
        task = self._proving.get(key)
        if task is None:
            task = asyncio.create_task(self._prove(peer, base), name="peer-proof")
            self._proving[key] = task
            task.add_done_callback(lambda t: self._proof_done(key, t))
        # Shielded: a request given up on (a query's deadline) leaves the proof to finish.
        await asyncio.shield(task)

    def forget_proof(self, peer: Peer) -> None:
        self._proofs.forget(peer.node_id)

    def _proof_done(self, key: tuple[bytes, str], task: asyncio.Task[None]) -> None:
        self._proving.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone

    async def _prove(self, peer: Peer, base: str) -> None:
        nonce = os.urandom(proof.NONCE_BYTES)
        ok = False
        try:
            answer = await self._get(base, PATH_WHOAMI, {"nonce": nonce.hex(), "url": base}, None)
            ok = proof.proves(answer, peer.node_id, nonce, base)
        finally:  # a timeout or a refusal fails the proof as a wrong key does
            self._proofs.record(peer.node_id, base, ok)
        if not ok:
            log.info("%s does not prove it serves %s", base, peer.node_id.hex()[:12])
            raise PeerUnproven(base, "did not prove it serves this node id")

    async def check_whoami(self, node_id: bytes, base: str, *, within: float) -> bool:
        """Whether ``base`` answers a fresh whoami with ``node_id``'s key (a dial back:
        nothing cached, no error raised)."""
        nonce = os.urandom(proof.NONCE_BYTES)
        try:
            answer = await self._get(base, PATH_WHOAMI, {"nonce": nonce.hex(), "url": base}, within)
        except PeerError as exc:
            log.debug("dial back to %s failed: %s", base, exc)
            return False
        return proof.proves(answer, node_id, nonce, base)

    async def identify(self, base: str, *, within: float) -> bytes:
        """The node id ``base`` proves it serves (a fresh whoami, checked against the key it
        answers with): for a URL the operator typed, whose id nobody told us. The proof is
        cached as any other; PeerUnproven if there is none."""
        base = base.rstrip("/")
        nonce = os.urandom(proof.NONCE_BYTES)
        answer = await self._get(base, PATH_WHOAMI, {"nonce": nonce.hex(), "url": base}, within)
        try:
            node_id = node_id_for(bytes.fromhex(str(answer.get("public_key", ""))))
        except (AttributeError, ValueError):
            raise PeerUnproven(base, "its whoami answer is not a key and signature") from None
        if not proof.proves(answer, node_id, nonce, base):
            raise PeerUnproven(base, "did not prove it serves the node id it names")
        self._proofs.record(node_id, base, True)
        return node_id

    # --- requests ----------------------------------------------------------------------
    @staticmethod
    def _base(peer: Peer) -> str:
        if not peer.http_url:
            raise PeerUnreachable(peer.node_id.hex(), "no HTTP URL known")
        return peer.http_url.rstrip("/")

    async def get_json(
        self, peer: Peer, path: str, params: Params, *, within: float | None = None
    ) -> Any:
        """A peer's JSON answer to GET ``path``; PeerError when there is none."""
        await self.prove(peer)
        return await self._get(self._base(peer), path, params, within)

    async def _get(self, base: str, path: str, params: Params, within: float | None) -> Any:
        url = base + path

        async def fetch() -> tuple[bytes, int]:
            async with self._live.get(
                url,
                params=params,
                allow_redirects=False,  # a peer answers itself, or not at all
                timeout=aiohttp.ClientTimeout(total=within or self.settings.peer_timeout),
            ) as resp:
                if resp.status != 200:
                    raise PeerBadAnswer(url, f"HTTP {resp.status}")
                raw = await read_bounded(resp, url, ANSWER_LIMIT.get(path, MAX_OWNER_ANSWER_BYTES))
                return raw, resp.content_length or len(raw)  # compressed size when gzipped

        raw, wire = await self._mapped(url, fetch())
        self.traffic[TRAFFIC_IN.get(path, "other_in")] += wire
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise PeerBadAnswer(url, "answer is not JSON") from None

    async def post_json(
        self, peer: Peer, path: str, payload: object, *, within: float | None = None
    ) -> Any:
        """POST JSON to a peer and read its (small) JSON answer; PeerError if none."""
        await self.prove(peer)
        url = self._base(peer) + path

        async def send() -> Any:
            async with self._live.post(
                url,
                json=payload,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=within or self.settings.peer_timeout),
            ) as resp:
                if resp.status != 200:
                    raise PeerBadAnswer(url, f"HTTP {resp.status}")
                return orjson.loads(await read_bounded(resp, url, proof.MAX_ANSWER_BYTES))

        try:
            return await self._mapped(url, send())
        except orjson.JSONDecodeError:
            raise PeerBadAnswer(url, "answer is not JSON") from None

    async def websocket(self, peer: Peer, path: str, *, within: float, max_frame: int) -> Any:
        """An outbound WebSocket to a proven peer (``aiohttp.ClientWebSocketResponse``),
        through the same SSRF guard as every request; PeerError if it cannot be opened."""
        await self.prove(peer)
        url = self._base(peer) + path
        return await self._mapped(
            url,
            self._live.ws_connect(
                url,
                heartbeat=within,  # a dead relay is noticed within 1.5 heartbeats
                timeout=aiohttp.ClientWSTimeout(ws_close=within),
                max_msg_size=max_frame,
                autoping=True,
            ),
        )

    async def post(
        self,
        peer: Peer,
        path: str,
        *,
        json: object = None,
        data: bytes | None = None,
        within: float | None = None,
    ) -> None:
        """POST to a peer; PeerError unless it answers 2xx."""
        await self.prove(peer)
        url = self._base(peer) + path

        async def send() -> None:
            async with self._live.post(
                url,
                json=json,
                data=data,
                headers={"Content-Type": "application/octet-stream"} if data is not None else {},
                allow_redirects=False,  # never re-sent to wherever a Location points
                timeout=aiohttp.ClientTimeout(total=within or self.settings.peer_timeout),
            ) as resp:
                if resp.status in BUSY_STATUSES:
                    raise PeerBusy(url, f"busy: HTTP {resp.status}")
                if resp.status != 200:
                    raise PeerBadAnswer(url, f"refused: HTTP {resp.status}")

        await self._mapped(url, send())

    def read_linked(self, peer: Peer, path: str, answer: RelayedAnswer) -> Any:
        """A JSON answer that came over a direct link (``federation/direct.py``), read as
        an HTTP answer is: its status, its bounded gunzip, its JSON; PeerError if none."""
        url = self._base(peer) + path
        if answer.status != 200:
            raise PeerBadAnswer(url, f"HTTP {answer.status}")
        inflater = _Inflater(
            answer.content_encoding, url, ANSWER_LIMIT.get(path, MAX_OWNER_ANSWER_BYTES)
        )
        inflater.feed(answer.body)
        self.traffic[TRAFFIC_IN.get(path, "other_in")] += len(answer.body)
        try:
            return orjson.loads(b"".join(inflater.parts))
        except orjson.JSONDecodeError:
            raise PeerBadAnswer(url, "answer is not JSON") from None

    async def punch(
        self, sock: socket.socket, addr: tuple[str, int], *, within: float
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect ``sock`` (``bound_socket``) to ``addr`` while its owner connects to us
        (TCP simultaneous open: each NAT lets the other's SYN in as the answer to its own),
        through the SSRF guard. The stream; PeerError if the two did not meet in
        ``within`` seconds. ``sock`` is closed on failure."""
        url = f"tcp://{addr[0]}:{addr[1]}"
        try:
            check_address(addr[0], allow_private=self._allow_private)
            async with asyncio.timeout(within):
                await asyncio.get_running_loop().sock_connect(sock, addr)
            return await asyncio.open_connection(sock=sock)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise PeerTimeout(url, "the punch did not meet") from exc
            if isinstance(exc, (OSError, CrawlerError)):
                raise PeerUnreachable(url, str(exc) or type(exc).__name__) from exc
            raise

    @property
    def _live(self) -> aiohttp.ClientSession:
        if self._session is None:  # not open yet, or stopping: like a dropped connection
            raise PeerUnreachable("-", "the peer client is not running")
        return self._session

    @staticmethod
    async def _mapped(url: str, request: Any) -> Any:
        """Await ``request`` with every lower-level failure mapped to a PeerError."""
        try:
            return await request
        except PeerError:
            raise
        except TimeoutError as exc:
            raise PeerTimeout(url, "timed out") from exc
        except aiohttp.ClientResponseError as exc:
            raise PeerBadAnswer(url, f"HTTP {exc.status}") from exc
        except aiohttp.ClientPayloadError as exc:
            raise PeerBadAnswer(url, f"bad body: {exc}") from exc
        except (aiohttp.ClientError, OSError, CrawlerError) as exc:
            # CrawlerError: the SSRF guard refused an address the peer advertised.
            raise PeerUnreachable(url, str(exc) or type(exc).__name__) from exc
