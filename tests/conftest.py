"""Shared fixtures: a fixture web site on loopback and real ``rhizome node`` subprocesses.

Everything listens on 127.0.0.1 with port 0, so tests run in parallel and offline.

* ``fixture_site``: serves ``tests/fixtures/site`` in a background thread. The value is the
  base URL (a ``str``, no trailing slash) that also carries the server's request log:
  ``fixture_site.hits("/robots.txt")``, ``fixture_site.requests`` (a Counter of paths).
* ``node_factory``: ``node_factory.start(*flags, data_dir=..., seeds=...)`` starts
  ``python -m rhizome node`` and returns a :class:`NodeHandle` (``get_json``, ``post_json``,
  ``request``, ``search``, ``wait_idle``, ``kill``, ``stop``). Every node is killed on teardown.
  ``status``, ``seed`` and ``post_json`` act as the node's operator (the token in its data
  dir, ``operator_headers``); ``get``, ``get_json`` and ``request`` are anyone's.
* ``crawled_node``: one session-wide node that has crawled the fixture site and is idle
  (read-only tests share it; its site is ``crawled_node.site``).
* ``browser``: Debian's chromium through Playwright, one a module (the ``browser`` tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
SITE_DIR = Path(__file__).resolve().parent / "fixtures" / "site"

# What the crawl of tests/fixtures/site must produce.
SITE_INDEXABLE = (
    "/index.html",
    "/planets.html",
    "/moons.html",
    "/comets.html",
    "/telescopes.html",
    "/constellations.html",
    "/nebulae.html",
    "/eclipses.html",
    "/glossary.html",
    "/deep/log-spring.html",
    "/deep/log-summer.html",
    "/deep/log-autumn.html",
    "/deep/log-winter.html",
)
SITE_NOINDEX = "/drafts.html"
SITE_PRIVATE = "/private/dome-access.html"
SCRIPT_PAYLOAD = "<script>alert(1)</script>"

NODE_START_TIMEOUT = 30.0
HTTP_TIMEOUT = 15.0
LISTENING = re.compile(r"rhizome: listening on (http://\S+?)/?$")


# --- the fixture web site ------------------------------------------------------------------


def load_site(directory: Path) -> dict[str, tuple[bytes, str]]:
    """Every file under ``directory`` as ``{"/path": (body, content type)}``."""
    pages: dict[str, tuple[bytes, str]] = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if ctype.startswith("text/"):
                ctype += "; charset=utf-8"
            pages["/" + path.relative_to(directory).as_posix()] = (path.read_bytes(), ctype)
    return pages


class SiteServer:
    """An aiohttp server for a fixed set of pages, on its own thread and event loop."""

    def __init__(
        self, pages: Mapping[str, tuple[bytes, str]], *, delay: float = 0.0, host: str = "127.0.0.1"
    ) -> None:
        self.pages = dict(pages)
        self.host = host  # another address: served to network namespaces (tests/netns.py)
        self.delay = delay  # seconds each response waits (a slow site keeps a crawl running)
        self.requests: Counter[str] = Counter()
        self.user_agents: set[str] = set()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fixture-site", daemon=True)
        self.url = ""

    def start(self) -> SiteServer:
        self._thread.start()
        if not self._ready.wait(10) or not self.url:
            raise RuntimeError("fixture site server did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._cleanup())
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        addresses = self._runner.addresses
        assert addresses, "fixture site is not listening"
        port = addresses[0][1]
        self.url = f"http://{self.host}:{port}"

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.requests[request.path] += 1
            self.user_agents.add(request.headers.get("User-Agent", ""))
        if self.delay:
            await asyncio.sleep(self.delay)
        entry = self.pages.get("/index.html" if request.path == "/" else request.path)
        if entry is None:
            return web.Response(status=404, text="not found")
        body, ctype = entry
        return web.Response(body=body, headers={"Content-Type": ctype})

    def hits(self, path: str) -> int:
        with self._lock:
            return self.requests[path]

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.requests)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


class FixtureSite(str):
    """The base URL of a running :class:`SiteServer`, with its request log attached."""

    server: SiteServer

    def __new__(cls, server: SiteServer) -> FixtureSite:
        self = super().__new__(cls, server.url)
        self.server = server
        return self

    @property
    def url(self) -> str:
        return str(self)

    @property
    def requests(self) -> Counter[str]:
        return self.server.snapshot()

    def hits(self, path: str) -> int:
        return self.server.hits(path)


@contextlib.contextmanager
def serve_site(
    pages: Mapping[str, tuple[bytes, str]] | None = None,
    *,
    delay: float = 0.0,
    host: str = "127.0.0.1",
) -> Iterator[FixtureSite]:
    server = SiteServer(
        load_site(SITE_DIR) if pages is None else pages, delay=delay, host=host
    ).start()
    try:
        yield FixtureSite(server)
    finally:
        server.stop()


@pytest.fixture
def fixture_site() -> Iterator[FixtureSite]:
    with serve_site() as site:
        yield site


# --- rhizome node subprocesses -------------------------------------------------------------


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class NodeHandle:
    """A ``rhizome node`` subprocess and a tiny HTTP client for it."""

    proc: subprocess.Popen[str]
    data_dir: Path
    url: str = ""
    lines: list[str] = field(default_factory=list)
    site: FixtureSite | None = None

    # --- HTTP -----------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = HTTP_TIMEOUT,
    ) -> HttpResponse:
        req = urllib.request.Request(
            self.url + path, data=body, method=method, headers=dict(headers or {})
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return HttpResponse(
                    resp.status,
                    {k.lower(): v for k, v in resp.headers.items()},
                    resp.read().decode("utf-8", "replace"),
                )
        except urllib.error.HTTPError as exc:
            return HttpResponse(
                exc.code,
                {k.lower(): v for k, v in exc.headers.items()},
                exc.read().decode("utf-8", "replace"),
            )

    def get(self, path: str, **params: Any) -> HttpResponse:
        if params:
            path += ("&" if "?" in path else "?") + urllib.parse.urlencode(params)
        return self.request("GET", path)

    def get_json(self, path: str, *, expect: int = 200, **params: Any) -> Any:
        resp = self.get(path, **params)
        assert resp.status == expect, f"GET {path} {params}: {resp.status} {resp.text[:500]}"
        assert resp.content_type == "application/json", resp.headers
        return resp.json()

    def operator_headers(self) -> dict[str, str]:
        """The operator's credential, read from the node's data dir as `rhizome seed` does."""
        token = (self.data_dir / "operator.token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def post_json(self, path: str, payload: Any, *, expect: int = 202) -> Any:
        resp = self.request(
            "POST",
            path,
            body=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", **self.operator_headers()},
        )
        assert resp.status == expect, f"POST {path}: {resp.status} {resp.text[:500]}"
        return resp.json()

    def status(self) -> dict[str, Any]:
        """The full status, as the operator sees it."""
        resp = self.request("GET", "/api/status", headers=self.operator_headers())
        assert resp.status == 200, f"GET /api/status: {resp.status} {resp.text[:500]}"
        data: dict[str, Any] = resp.json()
        return data

    def search(self, q: str, **params: Any) -> dict[str, Any]:
        data: dict[str, Any] = self.get_json("/api/search", q=q, scope="local", **params)
        return data

    def seed(self, *urls: str) -> dict[str, Any]:
        data: dict[str, Any] = self.post_json("/api/seeds", {"urls": list(urls)})
        return data

    def wait_idle(self, timeout: float = 30.0, *, min_documents: int = 0) -> dict[str, Any]:
        """Poll /api/status until the node is idle twice in a row; returns the status."""
        deadline = time.monotonic() + timeout
        streak = 0
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self.assert_alive()
            status = self.status()
            idle = status["idle"] and status["documents"] >= min_documents
            streak = streak + 1 if idle else 0
            if streak >= 2:
                return status
            time.sleep(0.1)
        raise AssertionError(
            f"node not idle after {timeout:.0f} s: {status}\n--- node output ---\n{self.output()}"
        )

    # --- process --------------------------------------------------------------------
    def output(self) -> str:
        return "".join(self.lines[-200:])

    def assert_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"node exited with {self.proc.returncode}\n--- node output ---\n{self.output()}"
            )

    def kill(self) -> None:
        """SIGKILL the node's main process: no shutdown code runs (as after an OOM kill).

        Its parser workers are left to notice on their own (see ``live_workers``).
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def live_workers(self) -> list[int]:
        """Processes still running (not zombies) in the node's process group, but the node."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                state, pgid = fields[0], int(fields[2])
                pid = int(stat.parent.name)
                if pgid == self.proc.pid and pid != self.proc.pid and state not in "ZX":
                    pids.append(pid)
        return pids

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for a clean shutdown; SIGKILL if it takes too long."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(
                    f"node ignored SIGTERM for {timeout} s\n{self.output()}"
                ) from None
        return self.proc.returncode


# For nodes a test searches as a machine (load, generated cases), not as a person.
MACHINE_SEARCH_RATE = 10_000


class NodeFactory:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.nodes: list[NodeHandle] = []

    def start(
        self,
        *flags: str,
        data_dir: Path | None = None,
        seeds: tuple[str, ...] | list[str] = (),
        site: FixtureSite | None = None,
        crawl_delay: float = 0.0,
        private_peers: bool = True,
        private_networks: bool = True,
        netns: str | None = None,
        installed: Path | None = None,
    ) -> NodeHandle:
        """``netns``: run the node inside that network namespace (tests/netns.py); pass
        its ``--http`` and ``--dht`` addresses in ``flags`` (the last flag wins).
        ``installed``: the python of a venv to run the node with, from the venv's folder and
        without PYTHON* variables, so nothing of the checkout is on its path."""
        if data_dir is None:
            data_dir = self.tmp / f"node{len(self.nodes)}"
        cmd = [
            *(("ip", "netns", "exec", netns) if netns else ()),
            str(installed or sys.executable),
            "-m",
            "rhizome",
            "node",
            "--data-dir",
            str(data_dir),
            "--http",
            "127.0.0.1:0",
            *(("--allow-private-networks",) if private_networks else ()),
            *(("--allow-private-peers",) if private_peers else ()),
            "--crawl-delay",
            str(crawl_delay),
            "--parse-workers",
            "2",
            "--commit-interval",
            "0.3",
            *flags,
        ]
        for seed in seeds:
            cmd += ["--seed", seed]
        drop = ("RHIZOME_", "PYTHON") if installed else ("RHIZOME_",)
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env["PYTHONUNBUFFERED"] = "1"
        proc = subprocess.Popen(
            cmd,
            cwd=installed.parent.parent if installed else ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        node = NodeHandle(proc=proc, data_dir=data_dir, site=site)
        self.nodes.append(node)
        ready = threading.Event()

        def drain() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if len(node.lines) < 20_000:
                    node.lines.append(line)
                m = LISTENING.search(line.strip())
                if m and not node.url:
                    node.url = m.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=drain, name="node-output", daemon=True).start()
        ready.wait(NODE_START_TIMEOUT)
        if not node.url:
            self._kill(node)
            raise AssertionError(f"node did not start: {cmd}\n{node.output()}")
        return node

    @staticmethod
    def _kill(node: NodeHandle) -> None:
        # Its own session: take the parser workers down with it (even if the node exited).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.proc.wait(10)

    def close(self) -> None:
        for node in self.nodes:
            self._kill(node)


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[NodeFactory]:
    factory = NodeFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def crawled_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHandle]:
    """A node that has crawled tests/fixtures/site to the end. Read-only tests share it.
    Every test searches it from 127.0.0.1, hundreds of times a second in the generated
    ones: the per-client search rate is raised past what they send."""
    factory = NodeFactory(tmp_path_factory.mktemp("crawled"))
    with serve_site() as site:
        try:
            node = factory.start(
                "--search-rate", str(MACHINE_SEARCH_RATE), seeds=[f"{site}/index.html"], site=site
            )
            node.wait_idle(60, min_documents=len(SITE_INDEXABLE))
            yield node
        finally:
            factory.close()


# --- a real browser ---------------------------------------------------------------------

# CI installs chromium (``apt-get install chromium``); a machine without it fails the
# browser tests rather than skipping them, so a missing browser never turns the suite green.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's browser with "
            "`apt-get update && apt-get install -y chromium` (CI does this in .ci/run)",
            pytrace=False,
        )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A desktop-sized page; a JavaScript error on it fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
