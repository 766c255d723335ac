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

from aiohttp import web

from .config import NodeConfig, default_data_dir
from .keys import NETWORK, NODE
from .runner import start_node, stop_within, wait_for_signal

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


DEMO_NODES = 3


async def run_demo(
    config: NodeConfig, *, docs_dir: Path | None = None, nodes: int = DEMO_NODES
) -> None:
    """Render and serve the docs, run a small network of nodes over them (each crawls a
    share of the pages), print progress and the search URL; run until Ctrl-C."""
    tmp = tempfile.TemporaryDirectory(prefix="rhizome-demo-")
    folder = docs_dir or Path(tmp.name) / "docs"
    runners: list[web.AppRunner] = []
    try:
        if not (folder / "index.html").exists():
            print("rhizome demo: rendering the Python standard library docs with pydoc …")
            count = await asyncio.to_thread(render_stdlib_docs, folder)
            print(f"rhizome demo: {count} module pages ready")
        docs_runner, docs_url = await serve_folder(folder)
        runners.append(docs_runner)
        print(f"rhizome demo: serving them at {docs_url}")
        base = config.data_dir
        if base == default_data_dir():
            # Without an explicit --data-dir the demo leaves nothing behind.
            base = Path(tmp.name) / "nodes"
        pages = sorted(p.name for p in folder.glob("*.html"))
        apps: list[tuple[web.Application, str]] = []
        bootstrap: tuple[str, ...] = config.bootstrap
        for i in range(nodes):
            node_config = _demo_config(
                config,
                data_dir=base / f"node{i}",
                http=config.http if i == 0 else "127.0.0.1:0",
                seeds=[docs_url + name for name in pages[i::nodes]],
                bootstrap=bootstrap,
            )
            runner, app, url = await start_node(node_config)
            runners.append(runner)
            apps.append((app, url))
            network = app[NETWORK]
            if i == 0 and network is not None:
                bootstrap = (f"127.0.0.1:{network.dht.port}",)
        print(f"rhizome demo: {nodes} nodes joined one network; each crawls a third of the pages")
        await _progress(apps)
        await wait_for_signal()
    finally:
        await stop_within(*reversed(runners))
        tmp.cleanup()


def _demo_config(
    config: NodeConfig,
    *,
    data_dir: Path,
    http: str,
    seeds: list[str],
    bootstrap: tuple[str, ...],
) -> NodeConfig:
    return replace(
        config,
        data_dir=data_dir,
        http=http,
        dht="127.0.0.1:0",
        bootstrap=bootstrap,
        seed=(*config.seed, *seeds),
        # Each node crawls the share it was given, instead of handing the docs host to
        # whichever node owns it in the host slices.
        pin_host=(*config.pin_host, seeds[0].split("/", 3)[2]) if seeds else config.pin_host,
        allow_private_networks=True,  # the demo web lives on loopback
        allow_private_peers=True,  # and so do its nodes
        seed_hosts_only=True,
        max_depth=0,  # each node crawls exactly its share; the network finds the rest
        crawl_delay=0.0,
        parse_workers=1,
    )


async def _progress(apps: list[tuple[web.Application, str]]) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(0.5)
        docs = queued = 0
        idle = True
        for app, _url in apps:
            node = app[NODE]
            stats = await node.crawler.stats()
            docs += node.store.num_docs
            queued += stats.queued + stats.in_flight
            idle = idle and await node.is_idle()
        bar = "#" * (docs * 40 // max(1, docs + queued))
        print(
            f"\rrhizome demo: [{bar:<40}] {docs} pages indexed, {queued} to go",
            end="",
            flush=True,
        )
        if docs > 0 and idle:
            took = time.monotonic() - started
            print(f"\nrhizome demo: crawled, indexed and shared {docs} pages in {took:.1f} s")
            others = ", ".join(url for _app, url in apps[1:])
            print(f"rhizome demo: search at {apps[0][1]}  (also: {others}; Ctrl-C to stop)")
            return
