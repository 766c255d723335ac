"""Fetcher safety: SSRF guard, redirects, size and decompression caps, timeouts, statuses."""

from __future__ import annotations

import asyncio
import email.utils
import functools
import io
import ipaddress
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zstandard
from aiohttp import web
from crawl_helpers import RequestLog, add_get, logging_app, serve

from rhizome.crawler import CrawlerConfig
from rhizome.crawler.config import MAX_DECODED_BYTES, MAX_REDIRECTS, MAX_RESPONSE_BYTES
from rhizome.crawler.errors import (
    BlockedAddress,
    FetchError,
    HTTPStatusError,
    RobotsDisallowed,
    TooLarge,
    TooManyRedirects,
    UnsupportedScheme,
)
from rhizome.crawler.fetch import Fetcher, UnsupportedContent
from rhizome.crawler.ssrf import check_address, is_public_address

HTML = b"<html><title>ok</title><body>hello</body></html>"
MiB = 1024 * 1024


@pytest.fixture
async def fetcher(tmp_path: Path) -> AsyncIterator[Fetcher]:
    f = Fetcher(CrawlerConfig(data_dir=tmp_path, allow_private_networks=True))
    await f.start()
    yield f
    await f.close()


def html(body: bytes = HTML, **headers: str) -> web.Response:
    return web.Response(body=body, content_type="text/html", headers=headers)


# --- SSRF guard ------------------------------------------------------------------------


async def test_loopback_refused_before_any_request(tmp_path: Path) -> None:
    log = RequestLog()
    app = logging_app(log)
    add_get(app, "/", lambda r: html())
    async with serve(app) as base:
        f = Fetcher(CrawlerConfig(data_dir=tmp_path, allow_private_networks=False))
        await f.start()
        try:
            with pytest.raises(BlockedAddress):
                await f.fetch(base + "/")
            port = base.rsplit(":", 1)[1]
            # A host name that resolves to loopback is caught at connect time as well.
            with pytest.raises(BlockedAddress):
                await f.fetch(f"http://localhost:{port}/")
        finally:
            await f.close()
        # Control: the same server is reachable when private networks are allowed.
        g = Fetcher(CrawlerConfig(data_dir=tmp_path, allow_private_networks=True))
        await g.start()
        try:
            assert (await g.fetch(base + "/")).status == 200
        finally:
            await g.close()
    assert log.paths() == ["/"]  # only the allowed fetch reached the server


@pytest.mark.parametrize(
    "addr",
    [
        "127.0.0.1",
        "127.1.2.3",
        "10.0.0.1",
        "10.255.255.254",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata endpoint
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "239.255.255.250",
        "::1",
        "::",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "fe80::1%eth0",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "ff02::1",
        "2001:db8::1",  # documentation
    ],
)
def test_non_public_addresses_blocked(addr: str) -> None:
    with pytest.raises(BlockedAddress):
        check_address(addr, allow_private=False)
    if addr in NEVER_ADDRESSES:
        with pytest.raises(BlockedAddress):
            check_address(addr, allow_private=True)
    else:
        check_address(addr, allow_private=True)  # the operator's switch lets them through


# Refused even with allow_private: not hosts (0.0.0.0 connects to this machine), never
# web servers, or cloud metadata services holding credentials.
NEVER_ADDRESSES = frozenset(
    {
        "169.254.169.254",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "239.255.255.250",
        "::",
        "::ffff:169.254.169.254",
        "ff02::1",
    }
)


@pytest.mark.parametrize("addr", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111"])
def test_public_addresses_allowed(addr: str) -> None:
    assert is_public_address(ipaddress.ip_address(addr))
    check_address(addr, allow_private=False)


def test_non_ip_strings_blocked() -> None:
    for host in ("localhost", "example.com", "", "127.0.0.1.nip.io"):
        with pytest.raises(BlockedAddress):
            check_address(host, allow_private=False)


# --- redirects -------------------------------------------------------------------------


def redirect_app(log: RequestLog) -> web.Application:
    app = logging_app(log)

    async def chain(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        if n == 0:
            return html()
        raise web.HTTPFound(f"/chain/{n - 1}")

    async def loop_a(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently("/loop/b")

    async def loop_b(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect("/loop/a")

    async def to(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": request.query["loc"]})

    add_get(app, "/chain/{n}", chain)
    add_get(app, "/loop/a", loop_a)
    add_get(app, "/loop/b", loop_b)
    add_get(app, "/to", to)
    add_get(app, "/private", lambda r: html(b"<p>private</p>"))
    return app


async def test_redirect_chain_followed_and_reported(fetcher: Fetcher) -> None:
    log = RequestLog()
    async with serve(redirect_app(log)) as base:
        result = await fetcher.fetch(base + "/chain/3")
    assert result.status == 200
    assert result.url == base + "/chain/0"
    assert result.redirected_from == [base + "/chain/3", base + "/chain/2", base + "/chain/1"]
    assert result.body == HTML
    assert log.paths() == ["/chain/3", "/chain/2", "/chain/1", "/chain/0"]


async def test_redirect_loop_raises(fetcher: Fetcher) -> None:
    log = RequestLog()
    async with serve(redirect_app(log)) as base:
        with pytest.raises(TooManyRedirects):
            await fetcher.fetch(base + "/loop/a")
    assert log.paths() == ["/loop/a", "/loop/b"]  # detected without going round again


async def test_exactly_max_redirects_allowed_one_more_refused(fetcher: Fetcher) -> None:
    assert fetcher.config.max_redirects == MAX_REDIRECTS
    log = RequestLog()
    async with serve(redirect_app(log)) as base:
        ok = await fetcher.fetch(f"{base}/chain/{MAX_REDIRECTS}")
        assert len(ok.redirected_from) == MAX_REDIRECTS
        log.hits.clear()
        with pytest.raises(TooManyRedirects):
            await fetcher.fetch(f"{base}/chain/{MAX_REDIRECTS + 1}")
    assert log.count("/chain/0") == 0  # gave up before the final hop
    assert len(log.hits) == MAX_REDIRECTS + 1


@pytest.mark.parametrize(
    "location",
    ["ftp://127.0.0.1/file", "javascript:alert(1)", "file:///etc/passwd", "mailto:x@example.com"],
)
async def test_redirect_to_other_scheme_raises(fetcher: Fetcher, location: str) -> None:
    log = RequestLog()
    async with serve(redirect_app(log)) as base:
        with pytest.raises(UnsupportedScheme):
            await fetcher.fetch(f"{base}/to?loc={location}")
    assert len(log.hits) == 1


async def test_relative_redirect_resolved(fetcher: Fetcher) -> None:
    log = RequestLog()
    async with serve(redirect_app(log)) as base:
        result = await fetcher.fetch(f"{base}/to?loc=private%23frag")
    assert result.url == base + "/private"


async def test_redirect_target_checked_with_allowed_callback(fetcher: Fetcher) -> None:
    log = RequestLog()
    asked: list[str] = []

    async def allowed(url: str) -> bool:
        asked.append(url)
        return not url.endswith("/private")

    async with serve(redirect_app(log)) as base:
        with pytest.raises(RobotsDisallowed):
            await fetcher.fetch(f"{base}/to?loc=/private", allowed=allowed)
        assert asked == [base + "/private"]
        assert log.count("/private") == 0  # the disallowed target was never requested
        # The same callback lets an allowed hop through.
        result = await fetcher.fetch(f"{base}/chain/1", allowed=allowed)
        assert result.url == base + "/chain/0"


# --- size caps -------------------------------------------------------------------------


async def _stream_bytes(total: int, request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/html"})
    await resp.prepare(request)  # chunked: no Content-Length, the client must count
    chunk = b"<p>" + b"a" * (MiB - 7) + b"</p>"
    sent = 0
    try:
        while sent < total:
            await resp.write(chunk)
            sent += len(chunk)
        await resp.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass
    return resp


async def test_huge_streamed_body_truncated_at_cap(fetcher: Fetcher) -> None:
    app = web.Application()
    add_get(app, "/big", functools.partial(_stream_bytes, 20 * MiB))
    async with serve(app) as base:
        result = await fetcher.fetch(base + "/big")
    cap = fetcher.config.max_response_bytes
    assert cap == MAX_RESPONSE_BYTES
    assert result.truncated is True
    assert 0 < len(result.body) <= cap
    assert result.body.startswith(b"<p>aaa")


async def test_body_exactly_under_cap_not_truncated(tmp_path: Path) -> None:
    f = Fetcher(
        CrawlerConfig(data_dir=tmp_path, allow_private_networks=True, max_response_bytes=2 * MiB)
    )
    await f.start()
    app = web.Application()
    add_get(app, "/one", lambda r: html(b"x" * MiB))
    try:
        async with serve(app) as base:
            result = await f.fetch(base + "/one")
    finally:
        await f.close()
    assert result.truncated is False
    assert len(result.body) == MiB


async def test_declared_huge_content_length_refused(fetcher: Fetcher) -> None:
    # Over four times the cap by Content-Length: not worth reading even the head.
    log = RequestLog()
    app = logging_app(log)
    add_get(app, "/huge", lambda r: html(b"a" * (20 * MiB)))
    async with serve(app) as base:
        with pytest.raises(TooLarge):
            await fetcher.fetch(base + "/huge")


@functools.cache
def gzip_bomb() -> bytes:
    """1 GiB of zeros, gzip level 9: about 1 MB on the wire."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MiB)
    parts = [comp.compress(zeros) for _ in range(1024)]
    parts.append(comp.flush())
    return b"".join(parts)


@functools.cache
def zstd_bomb() -> bytes:
    """A zstd frame that declares (and holds) 1 GiB of zeros in a few tens of KB."""
    buf = io.BytesIO()
    zeros = bytes(MiB)
    with zstandard.ZstdCompressor(level=3).stream_writer(buf, size=1024 * MiB, closefd=False) as w:
        for _ in range(1024):
            w.write(zeros)
    data = buf.getvalue()
    params = zstandard.get_frame_parameters(data)
    assert params.content_size == 1024 * MiB
    return data


@pytest.mark.parametrize(("encoding", "make"), [("gzip", gzip_bomb), ("zstd", zstd_bomb)])
async def test_decompression_bomb_capped(fetcher: Fetcher, encoding: str, make) -> None:  # type: ignore[no-untyped-def]
    bomb = make()
    assert len(bomb) < 2 * MiB
    app = web.Application()
    add_get(
        app,
        "/bomb",
        lambda r: web.Response(
            body=bomb, headers={"Content-Type": "text/html", "Content-Encoding": encoding}
        ),
    )
    async with serve(app) as base:
        tracemalloc.start()
        try:
            result = await fetcher.fetch(base + "/bomb")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    cap = fetcher.config.max_decoded_bytes
    assert cap == MAX_DECODED_BYTES
    assert result.truncated is True
    assert len(result.body) <= cap
    assert len(result.body) > cap // 2  # the head was kept, not thrown away
    assert result.body.count(0) == len(result.body)
    # Bounded memory: the cap plus buffers, nowhere near the 1 GiB the bomb expands to.
    assert peak < 4 * cap + 4 * MiB, peak


async def test_small_gzip_body_decoded(fetcher: Fetcher) -> None:
    comp = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    body = comp.compress(HTML) + comp.flush()
    app = web.Application()
    add_get(
        app,
        "/",
        lambda r: web.Response(
            body=body, headers={"Content-Type": "text/html", "Content-Encoding": "gzip"}
        ),
    )
    async with serve(app) as base:
        result = await fetcher.fetch(base + "/")
    assert result.body == HTML
    assert result.truncated is False


async def test_corrupt_gzip_is_a_fetch_error(fetcher: Fetcher) -> None:
    app = web.Application()
    add_get(
        app,
        "/",
        lambda r: web.Response(
            body=b"\x1f\x8bnot really gzip",
            headers={"Content-Type": "text/html", "Content-Encoding": "gzip"},
        ),
    )
    async with serve(app) as base:
        with pytest.raises(FetchError):
            await fetcher.fetch(base + "/")


# --- content types and statuses -----------------------------------------------------


async def test_non_html_content_type_refused(fetcher: Fetcher) -> None:
    app = web.Application()
    add_get(app, "/img", lambda r: web.Response(body=b"\x89PNG", content_type="image/png"))
    add_get(app, "/xhtml", lambda r: web.Response(body=HTML, content_type="application/xhtml+xml"))
    async with serve(app) as base:
        with pytest.raises(UnsupportedContent):
            await fetcher.fetch(base + "/img")
        assert (await fetcher.fetch(base + "/xhtml")).body == HTML
        # Robots and sitemaps ask for any type.
        assert (await fetcher.fetch(base + "/img", html_only=False)).body == b"\x89PNG"


async def test_404_is_final(fetcher: Fetcher) -> None:
    app = web.Application()
    async with serve(app) as base:
        with pytest.raises(HTTPStatusError) as info:
            await fetcher.fetch(base + "/missing")
    assert info.value.status == 404
    assert info.value.retryable is False


async def test_503_with_retry_after_seconds_is_retryable(fetcher: Fetcher) -> None:
    app = web.Application()
    add_get(app, "/", lambda r: web.Response(status=503, headers={"Retry-After": "120"}))
    add_get(app, "/429", lambda r: web.Response(status=429, headers={"Retry-After": "7"}))
    async with serve(app) as base:
        with pytest.raises(HTTPStatusError) as info:
            await fetcher.fetch(base + "/")
        with pytest.raises(HTTPStatusError) as info429:
            await fetcher.fetch(base + "/429")
    assert info.value.status == 503
    assert info.value.retryable is True
    assert info.value.retry_after == 120.0
    assert (info429.value.status, info429.value.retryable, info429.value.retry_after) == (
        429,
        True,
        7.0,
    )


async def test_503_with_retry_after_http_date(fetcher: Fetcher) -> None:
    # RFC 9110 allows Retry-After as an HTTP-date as well as a number of seconds.
    when = email.utils.formatdate(time.time() + 300, usegmt=True)
    app = web.Application()
    add_get(app, "/", lambda r: web.Response(status=503, headers={"Retry-After": when}))
    async with serve(app) as base:
        with pytest.raises(HTTPStatusError) as info:
            await fetcher.fetch(base + "/")
    assert info.value.retry_after is not None
    assert 290 <= info.value.retry_after <= 301


async def test_garbage_retry_after_ignored(fetcher: Fetcher) -> None:
    app = web.Application()
    add_get(app, "/", lambda r: web.Response(status=503, headers={"Retry-After": "soon"}))
    async with serve(app) as base:
        with pytest.raises(HTTPStatusError) as info:
            await fetcher.fetch(base + "/")
    assert info.value.retry_after is None
    assert info.value.retryable is True


# --- timeouts --------------------------------------------------------------------------


async def test_slow_drip_body_cut_off_by_timeout(tmp_path: Path) -> None:
    async def drip(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        try:
            while True:
                await resp.write(b"x")
                await asyncio.sleep(0.5)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return resp

    app = web.Application()
    add_get(app, "/", drip)
    f = Fetcher(CrawlerConfig(data_dir=tmp_path, allow_private_networks=True, fetch_timeout=1.0))
    await f.start()
    try:
        async with serve(app) as base:
            started = time.monotonic()
            with pytest.raises(FetchError):
                await f.fetch(base + "/")
            elapsed = time.monotonic() - started
    finally:
        await f.close()
    assert elapsed < 3.0


async def test_slow_drip_headers_cut_off_by_timeout(tmp_path: Path) -> None:
    """A raw server that trickles its status line one byte every 0.5 s, forever."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        try:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Pad: " + b"a" * 10_000:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.5)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    f = Fetcher(CrawlerConfig(data_dir=tmp_path, allow_private_networks=True, fetch_timeout=1.0))
    await f.start()
    try:
        started = time.monotonic()
        with pytest.raises(FetchError):
            await f.fetch(f"http://127.0.0.1:{port}/")
        elapsed = time.monotonic() - started
    finally:
        await f.close()
        server.close()
    assert elapsed < 3.0


async def test_connection_refused_is_retryable_fetch_error(fetcher: Fetcher) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(FetchError) as info:
        await fetcher.fetch(f"http://127.0.0.1:{port}/")
    assert not isinstance(info.value, BlockedAddress)
    assert info.value.retryable is True
