"""``rhizome demo``: a node that works offline, over a web every Python install has.

The standard library's documentation is rendered with pydoc (in a child process: pydoc
imports each module it documents, and some modules have side effects) into a folder that
is served on loopback. A node crawls it and prints where to search.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from .config import NodeConfig, default_data_dir
from .keys import NODE

log = logging.getLogger(__name__)

DEMO_MODULES = (
    "abc argparse array ast asyncio base64 bisect bz2 calendar cmath codecs collections "
    "colorsys concurrent contextlib contextvars copy csv dataclasses datetime decimal difflib "
    "dis email enum filecmp fileinput fnmatch fractions functools getopt gettext glob graphlib "
    "gzip hashlib heapq hmac html http imaplib inspect io ipaddress itertools json keyword "
    "linecache locale logging lzma mailbox math mimetypes numbers operator optparse os pathlib "
    "pickle pkgutil platform plistlib poplib pprint queue quopri random re reprlib sched "
    "secrets selectors shelve shlex shutil signal smtplib socket sqlite3 ssl stat statistics "
    "string struct subprocess tarfile tempfile textwrap threading time timeit tokenize "
    "tomllib traceback types typing unicodedata unittest urllib uuid warnings wave weakref "
    "xml zipfile zlib zoneinfo"
).split()

RENDER_SCRIPT = """
import pydoc, sys, pathlib
out = pathlib.Path(sys.argv[1]); names = sys.argv[2:]
done = []
for name in names:
    try:
        obj, _ = pydoc.resolve(name)
        page = pydoc.html.page(pydoc.describe(obj), pydoc.html.document(obj, name))
    except Exception:
        continue
    (out / (name + ".html")).write_text(page, encoding="utf-8")
    done.append(name)
links = "".join('<li><a href="%s.html">%s</a></li>' % (n, n) for n in done)
(out / "index.html").write_text(
    "<!doctype html><html lang=en><head><title>Python standard library</title>"
    "<meta name=description content='Documentation of the Python standard library'>"
    "</head><body><h1>Python standard library</h1><ul>" + links + "</ul></body></html>",
    encoding="utf-8")
print(len(done))
"""


def render_stdlib_docs(target: Path, modules: tuple[str, ...] | list[str] = DEMO_MODULES) -> int:
    """Render pydoc pages into ``target``; returns how many modules were rendered."""
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", RENDER_SCRIPT, str(target), *modules],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return int(done.stdout.strip().splitlines()[-1])


DEMO_DOCS_PORT = 8710  # stable, so a kept --data-dir's URLs stay valid across runs


async def serve_folder(folder: Path, port: int = DEMO_DOCS_PORT) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_static("/", folder, show_index=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    try:
        await site.start()
    except OSError:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
    sockets: list[socket.socket] = getattr(site._server, "sockets", [])
    port = sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}/"


async def run_demo(config: NodeConfig, *, docs_dir: Path | None = None) -> None:
    """Render and serve the docs, run a node over them, print progress and the search URL."""
    from .cli import serve  # the node's own runner, so the demo is a real node

    tmp = tempfile.TemporaryDirectory(prefix="rhizome-demo-")
    folder = docs_dir or Path(tmp.name) / "docs"
    try:
        if not (folder / "index.html").exists():
            print("rhizome demo: rendering the Python standard library docs with pydoc …")
            count = await asyncio.to_thread(render_stdlib_docs, folder)
            print(f"rhizome demo: {count} module pages ready")
        docs_runner, docs_url = await serve_folder(folder)
        print(f"rhizome demo: serving them at {docs_url}")
        data_dir = config.data_dir
        if data_dir == default_data_dir():
            # Without an explicit --data-dir the demo leaves nothing behind.
            data_dir = Path(tmp.name) / "node"
        demo_config = _demo_config(config, docs_url, data_dir)
        holder: list[tuple[web.Application, str]] = []
        ready = asyncio.Event()

        def on_started(app: web.Application, url: str) -> None:
            holder.append((app, url))
            ready.set()

        node_task = asyncio.create_task(serve(demo_config, on_started=on_started))
        ready_task = asyncio.create_task(ready.wait())
        try:
            waiting: set[asyncio.Task[Any]] = {node_task, ready_task}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            ready_task.cancel()
            if holder:
                await _progress(*holder[0])
            await node_task
        finally:
            node_task.cancel()
            await asyncio.gather(node_task, return_exceptions=True)
            await docs_runner.cleanup()
    finally:
        tmp.cleanup()


def _demo_config(config: NodeConfig, docs_url: str, data_dir: Path) -> NodeConfig:
    return replace(
        config,
        data_dir=data_dir,
        seed=(*config.seed, docs_url + "index.html"),
        allow_private_networks=True,  # the demo web lives on loopback
        seed_hosts_only=True,
        crawl_delay=0.0,
    )


async def _progress(app: web.Application, url: str) -> None:
    node = app[NODE]
    started = time.monotonic()
    while True:
        await asyncio.sleep(0.5)
        stats = await node.crawler.stats()
        docs = node.store.num_docs
        total = max(1, docs + stats.queued + stats.in_flight)
        bar = "#" * (docs * 40 // total)
        print(
            f"\rrhizome demo: [{bar:<40}] {docs} pages indexed, {stats.queued} queued",
            end="",
            flush=True,
        )
        if docs > 0 and await node.is_idle():
            took = time.monotonic() - started
            print(f"\nrhizome demo: crawled and indexed {docs} pages in {took:.1f} s")
            print(f"rhizome demo: search at {url}  (Ctrl-C to stop)", flush=True)
            return
