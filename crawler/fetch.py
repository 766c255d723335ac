"""HTTP fetching with every safety limit: SSRF guard, size caps, bounded decompression,
redirects followed and re-validated one hop at a time."""

from __future__ import annotations

import datetime
import email.utils
import io
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import zstandard
from yarl import URL

from .config import CONNECT_TIMEOUT, MAX_ROBOTS_BYTES, READ_TIMEOUT, CrawlerConfig
from .errors import (
    BlockedAddress,
    FetchError,
    HTTPStatusError,
    RobotsDisallowed,
    TooLarge,
    TooManyRedirects,
    UnsupportedScheme,
)
from .resolve import ThreadPoolResolver
from .ssrf import GuardedSocketFactory
from .urls import canonicalize

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
ACCEPT_ENCODING = "gzip, deflate, zstd"
HTML_TYPES = ("text/html", "application/xhtml+xml")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_RETRY_AFTER = 24 * 3600.0

AllowCheck = Callable[[str], Awaitable[bool]]


@dataclass(slots=True)
class FetchResult:
    url: str  # final URL after redirects
    status: int
    content_type: str
    body: bytes
    elapsed: float
    redirected_from: list[str] = field(default_factory=list)
    truncated: bool = False
    x_robots_tag: str | None = None

    @property
    def is_html(self) -> bool:
        return self.content_type.startswith(HTML_TYPES) or not self.content_type


class UnsupportedContent(FetchError):
    retryable = False


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        pass
    # RFC 9110 §10.2.3: Retry-After may also be an HTTP-date.
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return min(max(when.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER)


def decompress(raw: bytes, encoding: str, limit: int) -> tuple[bytes, bool]:
    """Decode a Content-Encoding into at most ``limit`` bytes; returns (data, truncated).

    Never trusts a declared size: zstd frames can declare 200 MiB in 6 KB, so every codec
    is read through a bounded reader.
    """
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw[:limit], len(raw) > limit
    try:
        if encoding in ("gzip", "x-gzip", "deflate"):
            wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
            if encoding == "deflate" and raw[:1] != b"\x78":
                wbits = -zlib.MAX_WBITS  # raw deflate, as some servers send
            d = zlib.decompressobj(wbits)
            out = d.decompress(raw, limit)
            return out, bool(d.unconsumed_tail)
        if encoding == "zstd":
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw))
            parts: list[bytes] = []
            size = 0
            while size < limit:
                chunk = reader.read(min(CHUNK_BYTES, limit - size))
                if not chunk:
                    return b"".join(parts), False
                parts.append(chunk)
                size += len(chunk)
            return b"".join(parts), bool(reader.read(1))
    except (zlib.error, zstandard.ZstdError) as exc:
        raise FetchError(f"bad {encoding} body: {exc}") from exc
    raise UnsupportedContent(f"unsupported Content-Encoding {encoding!r}")


class Fetcher:
    """One aiohttp session for the whole crawler; ``fetch`` never follows a redirect blindly."""

    def __init__(self, config: CrawlerConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.config.global_concurrency + 8,
            limit_per_host=0,
            ttl_dns_cache=300,
            resolver=ThreadPoolResolver(overrides=self.config.resolve),
            socket_factory=GuardedSocketFactory(allow_private=self.config.allow_private_networks),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(
                total=self.config.fetch_timeout,
                sock_connect=CONNECT_TIMEOUT,
                sock_read=READ_TIMEOUT,
            ),
            headers={
                "User-Agent": self.config.user_agent,
                "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1",
                "Accept-Encoding": ACCEPT_ENCODING,
            },
            max_line_size=16 * 1024,
            max_field_size=16 * 1024,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(
        self, url: str, *, allowed: AllowCheck | None = None, html_only: bool = True
    ) -> FetchResult:
        """Fetch ``url``; each redirect hop is canonicalised, scheme-checked, robots-checked
        (through ``allowed``) and connected through the SSRF guard again."""
        assert self._session is not None, "Fetcher.start() was not awaited"
        started = time.monotonic()
        chain: list[str] = []
        current = url
        for _hop in range(self.config.max_redirects + 1):
            if not current.startswith(("http://", "https://")):
                raise UnsupportedScheme(current)
            try:
                async with self._session.get(
                    URL(current, encoded=True), allow_redirects=False
                ) as resp:
                    if resp.status in REDIRECT_STATUSES:
                        location = resp.headers.get("Location", "")
                        target = canonicalize(location, URL(current))
                        if target is None:
                            raise UnsupportedScheme(f"redirect to {location[:200]!r}")
                        chain.append(current)
                        if target in chain:
                            raise TooManyRedirects(f"redirect loop at {target}")
                        if allowed is not None and not await allowed(target):
                            raise RobotsDisallowed(target)
                        current = target
                        continue
                    if resp.status >= 300:
                        raise HTTPStatusError(
                            resp.status, _retry_after(resp.headers.get("Retry-After"))
                        )
                    ctype = resp.headers.get("Content-Type", "").lower().strip()
                    result = FetchResult(
                        url=current,
                        status=resp.status,
                        content_type=ctype,
                        body=b"",
                        elapsed=0.0,
                        redirected_from=chain,
                        # One line per header: a robot named in one applies to it alone.
                        x_robots_tag="\n".join(resp.headers.getall("X-Robots-Tag", ())) or None,
                    )
                    if html_only and not result.is_html:
                        raise UnsupportedContent(f"not HTML: {ctype[:100]}")
                    raw, cut = await self._read_capped(resp)
                    result.body, cut2 = decompress(
                        raw,
                        resp.headers.get("Content-Encoding", ""),
                        self.config.max_decoded_bytes,
                    )
                    result.truncated = cut or cut2
                    result.elapsed = time.monotonic() - started
                    return result
            except BlockedAddress:
                raise
            except aiohttp.ClientConnectorError as exc:
                blocked = _find_blocked(exc)
                if blocked is not None:
                    raise blocked from exc
                raise FetchError(f"connect: {exc}") from exc
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise FetchError(f"{type(exc).__name__}: {exc}") from exc
        raise TooManyRedirects(f"more than {self.config.max_redirects} redirects from {url}")

    async def fetch_robots(self, url: str) -> bytes:
        """A robots.txt body (any content type), cut at the size RFC 9309 asks parsers to read."""
        return (await self.fetch(url, html_only=False)).body[:MAX_ROBOTS_BYTES]

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        limit = self.config.max_response_bytes
        declared = resp.content_length
        if declared is not None and declared > limit * 4:
            raise TooLarge(f"Content-Length {declared} over {limit * 4}")
        if declared is not None and declared <= limit:
            # Honest length within the cap: one read, no per-chunk round trips. A server
            # that sends more than it declared is cut off by the HTTP parser.
            return await resp.read(), False
        parts: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
            parts.append(chunk)
            size += len(chunk)
            if size >= limit:
                # Keep the head of an oversized page: long legitimate pages still get indexed.
                return b"".join(parts)[:limit], True
        return b"".join(parts), False


def _find_blocked(exc: BaseException) -> BlockedAddress | None:
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, BlockedAddress):
            return e
        stack.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        stack.extend(getattr(e, "exceptions", ()))
        os_error = getattr(e, "os_error", None)
        if isinstance(os_error, BaseException):
            stack.append(os_error)
    return None
