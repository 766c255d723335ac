"""The hostile-web catalogue (issue #5): misbehaving web hosts on loopback.

One aiohttp event loop on a background thread serves several origins (each its own port,
so each has its own robots.txt and politeness state):

* ``main``: an honest index page linking every misbehaviour below, honest pages, and one
  route per threat (huge page, gzip/zstd bombs, slow drip, redirect loops, redirects to
  addresses no crawler may reach, binary bytes as text/html, broken encodings, NUL bytes,
  link and query-string traps, a page with 100k links, noindex pages, script payloads).
  Its robots.txt starts with a BOM and uses CRLF, and disallows ``/private/`` and ``/many/``.
* ``canary``: reached only through redirects and links to 0.0.0.0 and its spellings (which
  Linux connects to loopback). It must never see a request.
* ``robots5xx``, ``robots404``, ``robotsredir``, ``robotshuge``: robots.txt edge cases.
* ``noflag``: only a node *without* --allow-private-networks is sent there; it must stay
  silent.

Every request is logged with its origin and time; the huge page, the drip and the 100k-link
page also record what they sent, so tests measure what the crawler actually took.
"""

from __future__ import annotations

import asyncio
import functools
import html
import io
import random
import struct
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import zstandard
from aiohttp import web

MiB = 1024 * 1024
HUGE_PAGE_BYTES = 256 * MiB  # streamed, chunked: no Content-Length to refuse it by
BOMB_DECODED_BYTES = 1024 * MiB
DRIP_SECONDS = 60.0  # longer than crawler.config.FETCH_TIMEOUT (30 s)
DRIP_INTERVAL = 0.5  # one small write this often defeats a per-read timeout
BIG_LINK_COUNT = 100_000
HUGE_ROBOTS_BYTES = 8 * MiB
ORIGIN = web.AppKey("origin", str)
ORIGINS = ("main", "canary", "robots5xx", "robots404", "robotsredir", "robotshuge", "noflag")

SCRIPT_PAYLOAD = "<script>alert(1)</script>"
IMG_PAYLOAD = '"><img src=x onerror=alert(1)>'
XSS_WORD = "marigold"  # every payload page carries it, so one query finds them all

# Honest pages: path -> (title, a word no other page has). They must all be indexed.
HONEST = {
    "/honest/heliotrope.html": ("Heliotrope gardening notes", "heliotrope"),
    "/honest/obsidian.html": ("Obsidian and volcanic glass", "obsidian"),
    "/honest/marzipan.html": ("Marzipan from Lübeck", "marzipan"),
    "/honest/followed.html": ("Reached through a noindex page", "pemmican"),
    "/honest/otherbot.html": ("Noindex for another robot only", "quillwort"),
}
FOLLOWED = "/honest/followed.html"  # linked from the noindex pages only
# Pages that say noindex in one of the ways a crawler must understand: path -> word.
NOINDEX = {
    "/noindex/meta.html": "gossamer",
    "/noindex/meta-upper.html": "taffeta",
    "/noindex/meta-bot.html": "brocade",
    "/noindex/header.html": "chiffon",
    "/noindex/header-none.html": "organza",
    "/noindex/header-bot.html": "damask",
    "/noindex/two-headers.html": "seersucker",
}
# Broken encodings: path -> (body bytes, Content-Type, ASCII word, recovered title).
TEXTS = {
    "latin1": "Crème brûlée façade",
    "smorgas": "Smörgåsbord für Jürgen",
    "angstrom": "Ångström Ørsted",
    "jalapeno": "Jalapeño piñata señor",
    "zurich": "Zürich Fondue Käse",
    "reykjavik": "Reykjavík Geysir Þingvellir",
    "malmo": "Malmö Göteborg Västerås",
    # 镕 is in GBK, not in GB2312: read by the label's own codec it would be lost.
    "beijing": "朱镕基 北京 欢迎你们 中华人民共和国的首都 是全国的政治中心和文化中心",
    "tokyo": (
        "東京 日本の首都であり 世界最大級の都市圏を形成している 今日は天気が良いので公園に行きます"
    ),
    "moskva": "Москва столица России и крупнейший по численности населения город страны",
    "plain": "Grüße naïve café Ελλάδα 東京",
}
BINARY_WORD = "binaryleakword"
NUL_TITLE = "Zeppelin hangar manifest"
NUL_WORD = "dirigible"
HUGE_WORD = "hugeheadword"
BOMB_WORDS = {"/bomb/gzip.html": "gzipbombword", "/bomb/zstd.html": "zstdbombword"}
ROBOTS_PAGES = {  # origin -> (allowed page, its word, disallowed page or "")
    "robots404": ("/page.html", "tamarind", ""),
    "robotsredir": ("/open.html", "cardamom", "/secret/hidden.html"),
    "robotshuge": ("/ok.html", "galangal", "/blocked/hidden.html"),
    "robots5xx": ("/page.html", "sumac", ""),
}


def _page(title: str, body: str, head: str = "") -> bytes:
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{title}</title>{head}"
        f"</head><body><main>{body}</main></body></html>"
    ).encode()


def _encoded_pages() -> dict[str, tuple[bytes, str, str, str]]:
    def doc(word: str, text: str, meta: str = "") -> str:
        return (
            f"<html><head>{meta}<title>{text}</title></head>"
            f"<body><p>{word} {text} honest words</p></body></html>"
        )

    plain = "text/html"
    t = TEXTS
    return {
        # Declared UTF-8, sent as Latin-1: the UTF-8 decode fails, Windows-1252 recovers it.
        "/enc/latin1-as-utf8.html": (
            doc("tarragon", t["latin1"]).encode("latin-1"),
            "text/html; charset=utf-8",
            "tarragon",
            t["latin1"],
        ),
        # The header says ISO-8859-1 (a server default), the meta and the bytes are UTF-8.
        "/enc/header-vs-meta.html": (
            doc("fenugreek", t["smorgas"], '<meta charset="utf-8">').encode(),
            "text/html; charset=ISO-8859-1",
            "fenugreek",
            t["smorgas"],
        ),
        # <meta charset=utf-16> in a document whose bytes are ASCII-compatible (HTML says:
        # read that as UTF-8).
        "/enc/meta-utf16.html": (
            doc("chervil", t["angstrom"], '<meta charset="utf-16">').encode(),
            plain,
            "chervil",
            t["angstrom"],
        ),
        # UTF-8 with a few invalid bytes in it: the rest must not turn into mojibake.
        "/enc/invalid-bytes.html": (
            doc("sorrel", t["jalapeno"]).encode().replace(b"honest", b"hon\xff\xfeest \xc3\x28"),
            "text/html; charset=utf-8",
            "sorrel",
            t["jalapeno"],
        ),
        # UTF-16LE without a BOM and without a charset anywhere.
        "/enc/utf16le-nobom.html": (
            doc("lovage", t["zurich"]).encode("utf-16-le"),
            plain,
            "lovage",
            t["zurich"],
        ),
        # "charset=utf-16" (no byte order) on big-endian bytes without a BOM.
        "/enc/utf16be-nobom.html": (
            doc("borage", t["malmo"]).encode("utf-16-be"),
            "text/html; charset=utf-16",
            "borage",
            t["malmo"],
        ),
        # GBK labelled gb2312 (as most Chinese pages are): the Encoding Standard reads the
        # label as GBK.
        "/enc/gbk-as-gb2312.html": (
            doc("kohlrabi", t["beijing"]).encode("gbk"),
            "text/html; charset=gb2312",
            "kohlrabi",
            t["beijing"],
        ),
        # No charset anywhere, and not UTF-8: detected, not read as windows-1252.
        "/enc/sjis-undeclared.html": (
            doc("rutabaga", t["tokyo"]).encode("shift_jis"),
            plain,
            "rutabaga",
            t["tokyo"],
        ),
        "/enc/cp1251-undeclared.html": (
            doc("parsnip", t["moskva"]).encode("cp1251"),
            plain,
            "parsnip",
            t["moskva"],
        ),
        # No charset anywhere, and UTF-8: still UTF-8, detection must not second-guess it.
        "/enc/utf8-undeclared.html": (
            doc("celeriac", t["plain"]).encode(),
            plain,
            "celeriac",
            t["plain"],
        ),
        # The header claims UTF-16; the bytes are plain UTF-8.
        "/enc/header-utf16-lie.html": (
            doc("hyssop", t["reykjavik"]).encode(),
            "text/html; charset=utf-16",
            "hyssop",
            t["reykjavik"],
        ),
    }


ENCODED = _encoded_pages()


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    noise = random.Random(5).randbytes(48 * 1024)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", struct.pack(">IIBBBBB", 128, 128, 8, 2, 0, 0, 0)),
            chunk(b"tEXt", b"Comment\x00" + BINARY_WORD.encode() + b" <a href=/from-png>x</a>"),
            chunk(b"IDAT", zlib.compress(noise, 1)),
            chunk(b"IEND", b""),
        )
    )


def _elf() -> bytes:
    header = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHI", 2, 0x3E, 1) + bytes(40)
    rodata = f"<title>{BINARY_WORD}</title><a href=/from-elf>x</a>".encode()
    return header + bytes(512) + rodata + random.Random(6).randbytes(16 * 1024)


@functools.cache
def gzip_bomb(prefix: bytes) -> bytes:
    """``prefix`` then spaces, BOMB_DECODED_BYTES in all, as one gzip member of ~1 MB.

    Built in a fraction of a second: after a full flush the compressor has no history, so
    every further MiB of spaces compresses to the same bytes, and they are repeated.
    """
    block = b" " * MiB
    first = prefix + block[len(prefix) :]
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = comp.compress(first) + comp.flush(zlib.Z_FULL_FLUSH)
    repeat = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    blocks = BOMB_DECODED_BYTES // MiB
    tail = comp.flush()
    crc = zlib.crc32(first)
    for _ in range(blocks - 1):
        crc = zlib.crc32(block, crc)
    return b"".join(
        (
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff",
            head,
            repeat * (blocks - 1),
            tail,
            struct.pack("<II", crc & 0xFFFFFFFF, BOMB_DECODED_BYTES & 0xFFFFFFFF),
        )
    )


@functools.cache
def zstd_bomb(prefix: bytes) -> bytes:
    """``prefix`` then spaces, one zstd frame that declares its BOMB_DECODED_BYTES."""
    buf = io.BytesIO()
    block = b" " * MiB
    comp = zstandard.ZstdCompressor(level=3)
    with comp.stream_writer(buf, size=BOMB_DECODED_BYTES, closefd=False) as writer:
        writer.write(prefix + block[len(prefix) :])
        for _ in range(BOMB_DECODED_BYTES // MiB - 1):
            writer.write(block)
    return buf.getvalue()


def _bomb_prefix(word: str) -> bytes:
    return f"<html><head><title>Bomb {word}</title></head><body><p>{word} ".encode()


@dataclass
class Hit:
    origin: str
    path: str  # path and query as sent
    at: float  # time.monotonic()


@dataclass
class StreamRecord:
    """One streamed response: when it started and ended, and how much it sent."""

    opened_at: float = 0.0
    closed_at: float = 0.0
    sent: int = 0
    finished: bool = False  # True: the server sent it all (the client never cut it)


@dataclass
class HostileWeb:
    """Start with :meth:`start`, stop with :meth:`stop`; ``url(origin, path)`` builds URLs."""

    hits: list[Hit] = field(default_factory=list)
    streams: dict[str, list[StreamRecord]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runners: list[web.AppRunner] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-web", daemon=True)
        self._error: BaseException | None = None
        self._png = _png()
        self._elf = _elf()
        self._bombs = {
            "/bomb/gzip.html": ("gzip", gzip_bomb(_bomb_prefix(BOMB_WORDS["/bomb/gzip.html"]))),
            "/bomb/zstd.html": ("zstd", zstd_bomb(_bomb_prefix(BOMB_WORDS["/bomb/zstd.html"]))),
        }

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> HostileWeb:
        self._thread.start()
        if not self._ready.wait(20) or self._error is not None:
            raise RuntimeError(f"hostile web did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        # A drip may still be trickling: end it before the loop goes.
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        for runner in self._runners:
            self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    async def _start(self) -> None:
        for origin in ORIGINS:
            app = web.Application(middlewares=[self._record])
            app[ORIGIN] = origin
            app.router.add_route("GET", "/{tail:.*}", self._dispatch)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.ports[origin] = runner.addresses[0][1]
            self._runners.append(runner)

    # --- the request log ------------------------------------------------------------
    def url(self, origin: str, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.ports[origin]}{path}"

    def requests(self, origin: str, prefix: str = "") -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.origin == origin and h.path.startswith(prefix)]

    def count(self, origin: str, prefix: str = "") -> int:
        """Requests to ``origin`` whose path (and query) starts with ``prefix``."""
        return len(self.requests(origin, prefix))

    def exact(self, origin: str, path: str) -> int:
        """Requests to ``origin`` for exactly ``path`` (and query)."""
        return sum(1 for h in self.requests(origin, path) if h.path == path)

    def stream(self, name: str) -> list[StreamRecord]:
        with self._lock:
            return list(self.streams.get(name, []))

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        with self._lock:
            self.hits.append(Hit(request.app[ORIGIN], request.path_qs, time.monotonic()))
        return await handler(request)

    def _new_stream(self, name: str) -> StreamRecord:
        record = StreamRecord(opened_at=time.monotonic())
        with self._lock:
            self.streams.setdefault(name, []).append(record)
        return record

    # --- routing --------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        origin = request.app[ORIGIN]
        if origin == "main":
            return await self._main(request)
        if origin in ("canary", "noflag"):
            return html_response(_page("Canary", "This host must never be reached."))
        return self._robots_origin(origin, request.path)

    def _robots_origin(self, origin: str, path: str) -> web.StreamResponse:
        allowed, word, disallowed = ROBOTS_PAGES[origin]
        if path == "/robots.txt":
            if origin == "robots5xx":
                return web.Response(status=503, text="robots are down")
            if origin == "robots404":
                return web.Response(status=404, text="no robots here")
            if origin == "robotsredir":
                raise web.HTTPMovedPermanently("/rules/robots-real.txt")
            return web.Response(body=huge_robots(), content_type="text/plain")
        if origin == "robotsredir" and path == "/rules/robots-real.txt":
            return web.Response(text="User-agent: *\nDisallow: /secret/\n")
        if path in ("/", allowed):
            links = f'<a href="{disallowed}">hidden</a>' if disallowed else ""
            return html_response(
                _page(f"Robots case {origin}", f"<p>{word} is allowed here.</p>{links}")
            )
        return html_response(_page("Hidden", "<p>hiddenword must not be fetched</p>"))

    async def _main(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path in ("/", "/index.html"):
            return html_response(self.index_page())
        if path == "/robots.txt":
            body = "\ufeffUser-agent: *\r\nDisallow: /private/\r\nDisallow: /many/\r\n\r\n"
            return web.Response(body=body.encode(), content_type="text/plain")
        if path in HONEST:
            return self._honest(path)
        if path in NOINDEX:
            return self._noindex(path)
        if path in ENCODED:
            body, ctype = ENCODED[path][:2]
            return web.Response(body=body, headers={"Content-Type": ctype})
        if path in self._bombs:
            encoding, bomb = self._bombs[path]
            return web.Response(
                body=bomb, headers={"Content-Type": "text/html", "Content-Encoding": encoding}
            )
        handler = _ROUTES.get(path)
        if handler is not None:
            return await handler(self, request)
        for prefix, prefixed in _PREFIX_ROUTES:
            if path.startswith(prefix):
                return await prefixed(self, request)
        return web.Response(status=404, text="not found")

    # --- the index ------------------------------------------------------------------
    def index_page(self) -> bytes:
        canary = self.ports["canary"]
        links = [
            *(path for path in HONEST if path != FOLLOWED),
            *NOINDEX,
            *ENCODED,
            *self._bombs,
            "/huge.html",
            "/drip.html",
            "/loop/a",
            "/redirect-chain/0",
            "/ssrf/zero",
            "/ssrf/zero-short",
            "/ssrf/mapped",
            f"http://0.0.0.0:{canary}/direct.html",
            f"http://0:{canary}/direct-short.html",
            "/binary/image.html",
            "/binary/program.html",
            "/nul.html",
            "/trap/deep/1",
            "/trap/list?page=1",
            "/trap/calendar?month=2024-06",
            "/trap/rel/",
            "/trap/session;jsessionid=0000",
            "/links100k.html",
            "/private/secret.html",
            "/xss/payload.html",
            "/xss/%22%3E%3Cimg%20src=x%20onerror=alert(1)%3E.html",
            *(self.url(origin, ROBOTS_PAGES[origin][0]) for origin in ROBOTS_PAGES),
            self.url("robotshuge", ROBOTS_PAGES["robotshuge"][2]),
            self.url("robotsredir", ROBOTS_PAGES["robotsredir"][2]),
        ]
        items = "".join(f'<li><a href="{html.escape(u)}">{html.escape(u)}</a></li>' for u in links)
        anchor = html.escape(f"{SCRIPT_PAYLOAD} {IMG_PAYLOAD} {XSS_WORD} anchor")
        hostile_links = (
            f'<a href="/xss/anchored.html">{anchor}</a>'
            '<a href="javascript:alert(1)">js</a><a href=" JaVaScRiPt:alert(1)">js2</a>'
            '<a href="data:text/html,<script>alert(1)</script>">data</a>'
        )
        return _page(
            "The hostile web catalogue",
            f"<p>Index of misbehaving hosts, kept honest: lodestone.</p><ul>{items}</ul>"
            f"{hostile_links}",
        )

    def _honest(self, path: str) -> web.Response:
        title, word = HONEST[path]
        body = f"<p>{word}: an honest page about {title.lower()}.</p><a href='/'>home</a>"
        headers = {"Content-Type": "text/html; charset=utf-8"}
        if path == "/honest/otherbot.html":
            headers["X-Robots-Tag"] = "otherbot: noindex, nofollow"
        return web.Response(body=_page(title, body), headers=headers)

    def _noindex(self, path: str) -> web.Response:
        word = NOINDEX[path]
        head = {
            "/noindex/meta.html": '<meta name="robots" content="noindex">',
            "/noindex/meta-upper.html": '<META NAME="ROBOTS" CONTENT="NOINDEX, FOLLOW">',
            "/noindex/meta-bot.html": '<meta name="RhizomeBot" content="noindex">',
        }.get(path, "")
        body = _page(
            f"Secret {word}",
            f"<p>{word} must not be searchable.</p><a href='{FOLLOWED}'>next</a>",
            head,
        )
        resp = web.Response(body=body, content_type="text/html")
        if path == "/noindex/header.html":
            resp.headers["X-Robots-Tag"] = "noindex"
        elif path == "/noindex/header-none.html":
            resp.headers["X-Robots-Tag"] = "none"
        elif path == "/noindex/header-bot.html":
            resp.headers["X-Robots-Tag"] = "RhizomeBot: noindex"
        elif path == "/noindex/two-headers.html":
            resp.headers.add("X-Robots-Tag", "otherbot: nofollow")
            resp.headers.add("X-Robots-Tag", "noindex")
        return resp

    # --- streamed threats -----------------------------------------------------------
    async def _huge(self, request: web.Request) -> web.StreamResponse:
        record = self._new_stream("huge")
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        head = f"<html><head><title>Huge page</title></head><body><p>{HUGE_WORD}</p>"
        filler = ("<p>" + "filler text " * 5000 + "</p>").encode()
        try:
            await resp.write(head.encode())
            record.sent = len(head)
            while record.sent < HUGE_PAGE_BYTES:
                await resp.write(filler)
                record.sent += len(filler)
            await resp.write_eof()
            record.finished = True
        except (ConnectionError, RuntimeError):
            pass
        finally:
            record.closed_at = time.monotonic()
        return resp

    async def _drip(self, request: web.Request) -> web.StreamResponse:
        record = self._new_stream("drip")
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        try:
            await resp.write(b"<html><head><title>Slow drip</title></head><body><p>dripword ")
            while time.monotonic() - record.opened_at < DRIP_SECONDS:
                await asyncio.sleep(DRIP_INTERVAL)
                await resp.write(b"drip ")
                record.sent += 5
            await resp.write_eof()
            record.finished = True
        except (ConnectionError, RuntimeError):
            pass
        finally:
            record.closed_at = time.monotonic()
        return resp

    async def _links100k(self, request: web.Request) -> web.StreamResponse:
        self._new_stream("links100k")
        links = "".join(f"<a href=/many/{i}>m{i}</a>" for i in range(BIG_LINK_COUNT))
        return html_response(_page("A hundred thousand links", f"<p>linkfarm</p>{links}"))

    # --- redirects ------------------------------------------------------------------
    async def _loop_a(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/loop/b")

    async def _loop_b(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently("/loop/a")

    async def _chain(self, request: web.Request) -> web.StreamResponse:
        n = int(request.path.rsplit("/", 1)[1] or 0)
        raise web.HTTPFound(f"/redirect-chain/{n + 1}")

    async def _ssrf(self, request: web.Request) -> web.StreamResponse:
        canary = self.ports["canary"]
        target = {
            "/ssrf/zero": f"http://0.0.0.0:{canary}/from-redirect.html",
            "/ssrf/zero-short": f"http://0:{canary}/from-redirect-short.html",
            "/ssrf/mapped": f"http://[::ffff:0.0.0.0]:{canary}/from-mapped.html",
        }.get(request.path)
        if target is None:
            return web.Response(status=404)
        raise web.HTTPFound(target)

    # --- bytes that are not what they claim -----------------------------------------
    async def _binary(self, request: web.Request) -> web.StreamResponse:
        body = self._png if request.path.endswith("image.html") else self._elf
        return web.Response(body=body, headers={"Content-Type": "text/html; charset=utf-8"})

    async def _nul(self, request: web.Request) -> web.StreamResponse:
        title = NUL_TITLE.replace(" ", "\x00 ")
        body = (
            f"<html><head><title>\x00{title}\x00</title></head><body><p>"
            f"{NUL_WORD}\x00 ballast\x00 and\x00 gondola\x00 text</p></body></html>"
        )
        return web.Response(body=body.encode(), headers={"Content-Type": "text/html"})

    # --- traps ----------------------------------------------------------------------
    async def _trap_deep(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/")
        n = len(path.split("/")) - 3  # /trap/deep/1 -> 1
        return html_response(_page(f"Deep {n}", f'<p>deeper</p><a href="{path}/{n + 1}">go</a>'))

    async def _trap_list(self, request: web.Request) -> web.StreamResponse:
        n = int(request.query.get("page", "1"))
        nxt = f"/trap/list?page={n + 1}&utm_source=trap&sid={random.getrandbits(64):x}"
        return html_response(_page(f"List page {n}", f'<a href="{html.escape(nxt)}">next</a>'))

    async def _trap_calendar(self, request: web.Request) -> web.StreamResponse:
        year, month = (int(x) for x in request.query.get("month", "2024-06").split("-"))
        index = year * 12 + month - 1
        prev_m, next_m = index - 1, index + 1
        links = "".join(
            f'<a href="/trap/calendar?month={m // 12:04d}-{m % 12 + 1:02d}">{label}</a>'
            for m, label in ((prev_m, "previous"), (next_m, "next"))
        )
        return html_response(_page(f"Calendar {year}-{month:02d}", links))

    async def _trap_rel(self, request: web.Request) -> web.StreamResponse:
        # A relative link to a directory that serves the same page: /a/, /a/a/, /a/a/a/...
        return html_response(_page("Relative", '<a href="a/">again</a>'))

    async def _trap_session(self, request: web.Request) -> web.StreamResponse:
        sid = f"{random.getrandbits(64):016x}"
        return html_response(
            _page("Session", f'<a href="/trap/session;jsessionid={sid}">continue</a>')
        )

    # --- script payloads ------------------------------------------------------------
    async def _xss(self, request: web.Request) -> web.StreamResponse:
        title = html.escape(f"{SCRIPT_PAYLOAD} {XSS_WORD} {IMG_PAYLOAD}")
        desc = html.escape(f"{IMG_PAYLOAD} {SCRIPT_PAYLOAD} {XSS_WORD}", quote=True)
        text = html.escape(f"{XSS_WORD} body {SCRIPT_PAYLOAD} then {IMG_PAYLOAD} end")
        body = (
            f"<p>{text}</p><p>javascript:alert(1) {XSS_WORD}</p>"
            '<a href="javascript:alert(1)">click</a>'
            '<a href="/xss/anchored.html" onclick="alert(1)">more</a>'
        )
        head = (
            f'<meta name="description" content="{desc}">'
            '<link rel="canonical" href="javascript:alert(1)">'
        )
        return html_response(_page(title, body, head))


def html_response(body: bytes) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": "text/html; charset=utf-8"})


@functools.cache
def huge_robots() -> bytes:
    """The group that matters first, then megabytes of rules (only 512 KiB must be read)."""
    lines = ["User-agent: *", "Disallow: /blocked/"]
    size = 0
    i = 0
    while size < HUGE_ROBOTS_BYTES:
        line = f"Disallow: /junk/{i:08d}/*.php$"
        lines.append(line)
        size += len(line) + 1
        i += 1
    return ("\n".join(lines) + "\n").encode()


_Handler = Callable[[HostileWeb, web.Request], Awaitable[web.StreamResponse]]
_ROUTES: dict[str, _Handler] = {
    "/huge.html": HostileWeb._huge,
    "/drip.html": HostileWeb._drip,
    "/links100k.html": HostileWeb._links100k,
    "/loop/a": HostileWeb._loop_a,
    "/loop/b": HostileWeb._loop_b,
    "/binary/image.html": HostileWeb._binary,
    "/binary/program.html": HostileWeb._binary,
    "/nul.html": HostileWeb._nul,
    "/trap/list": HostileWeb._trap_list,
    "/trap/calendar": HostileWeb._trap_calendar,
}
_PREFIX_ROUTES: list[tuple[str, _Handler]] = [
    ("/redirect-chain/", HostileWeb._chain),
    ("/ssrf/", HostileWeb._ssrf),
    ("/trap/deep/", HostileWeb._trap_deep),
    ("/trap/rel/", HostileWeb._trap_rel),
    ("/trap/session", HostileWeb._trap_session),
    ("/xss/", HostileWeb._xss),
]
