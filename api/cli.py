"""The ``rhizome`` command: node, search, status."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import json
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from crawler import FrontierError
from index import IndexUnavailable

from .app import create_app
from .config import DEFAULT_HTTP, ConfigError, NodeConfig, add_node_flags, load_config
from .keys import NODE
from .node import disk_full_hint

log = logging.getLogger("rhizome")

DEFAULT_NODE_URL = f"http://{DEFAULT_HTTP}"
CLIENT_TIMEOUT = 30.0


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _event_loop_runner() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every POSIX system
        return asyncio.run
    return uvloop.run


# Requests in flight get this long to finish at shutdown (aiohttp waits 60 s by default): a
# peer's shard push cut short is simply sent again, and a stopping node should stop.
SHUTDOWN_GRACE = 5.0


async def start_node(config: NodeConfig) -> tuple[web.AppRunner, web.Application, str]:
    """Start one node: app, HTTP listener, then the network (peers need the HTTP URL)."""
    app = create_app(config)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE
    )
    try:
        await runner.setup()
    except (IndexUnavailable, FrontierError) as exc:
        # The data cannot be opened (full disk, damaged files): one clear line, no traceback.
        raise SystemExit(f"rhizome: cannot start: {exc}{disk_full_hint(config.data_dir)}") from None
    site = web.TCPSite(runner, config.http_host, config.http_port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise SystemExit(f"rhizome: cannot listen on {config.http}: {exc.strerror}") from None
    url = ""
    # uvloop's server is not an asyncio.Server, but it has the same ``sockets``.
    for sock in getattr(site._server, "sockets", ()):
        host, port = sock.getsockname()[:2]
        url = f"http://{host}:{port}/"
        # Tests and scripts read this line to learn the port when --http used port 0.
        print(f"rhizome: listening on {url}", flush=True)
    try:
        await app[NODE].start_network(url)
    except BaseException:
        await runner.cleanup()
        raise
    return runner, app, url


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


# A stop that takes longer than this is cut short: everything durable was committed as it
# went (a URL is DONE only after its page's commit), so exiting is as safe as a kill -9.
# In ~3 of 10 full test runs the demo's loop waited > 20 s on some await after Ctrl-C.
STOP_LIMIT = 15.0


async def stop_within(*runners: web.AppRunner, limit: float = STOP_LIMIT) -> None:
    """Clean up ``runners`` together; if that outlasts ``limit``, name what is still
    running and leave the process at once (a stuck await must not keep a node alive)."""
    cleanup = asyncio.ensure_future(asyncio.gather(*(r.cleanup() for r in runners)))
    done, _pending = await asyncio.wait([cleanup], timeout=limit)
    if not done:
        stuck = sorted(t.get_name() for t in asyncio.all_tasks() if not t.done())
        log.warning("stop took over %.0f s; exiting anyway (still running: %s)", limit, stuck)
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    cleanup.result()


async def serve(config: NodeConfig) -> None:
    """Run the node until SIGINT/SIGTERM (or cancellation)."""
    runner, _app, _url = await start_node(config)
    try:
        await wait_for_signal()
    finally:
        log.info("shutting down")
        await stop_within(runner)


def cmd_node(args: argparse.Namespace) -> int:
    config = load_config(file=args.config, flags=vars(args))
    setup_logging(config.log_level, config.log_format)
    _event_loop_runner()(serve(config))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    config = load_config(file=args.config, flags=vars(args))
    setup_logging("warning" if config.log_level == "info" else config.log_level, config.log_format)
    _event_loop_runner()(run_demo(config, docs_dir=args.docs_dir))
    return 0


def _get_json(url: str) -> Any:
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=CLIENT_TIMEOUT) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc).get("error", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        raise SystemExit(f"rhizome: the node refused: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise SystemExit(
            f"rhizome: cannot reach a node at {url.split('/api/')[0]} ({exc}).\n"
            "Start one with `rhizome node` or pass --node URL."
        ) from None


def cmd_search(args: argparse.Namespace) -> int:
    query = urllib.parse.urlencode(
        {"q": args.query, "limit": args.limit, "offset": args.offset, "scope": args.scope}
    )
    data = _get_json(f"{args.node.rstrip('/')}/api/search?{query}")
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    print(f"{data['number_of_results']} results ({data['took_ms']:.0f} ms)")
    if data.get("unresponsive_peers"):
        print(f"slow peers skipped: {len(data['unresponsive_peers'])}")
    for i, r in enumerate(data["results"], start=args.offset + 1):
        print(f"\n{i}. {r['title']}\n   {r['url']}")
        if r.get("content"):
            print(f"   {r['content'][:200]}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    data = _get_json(f"{args.node.rstrip('/')}/api/status")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    crawl = data["crawl"]
    print(f"state:      {'idle' if data['idle'] else 'crawling'}")
    print(f"documents:  {data['documents']}")
    print(
        f"crawl:      {crawl['fetched']} fetched, {crawl['failed']} failed, "
        f"{crawl['queued']} queued, {crawl['in_flight']} in flight, "
        f"{crawl['pages_per_minute']} pages/min"
    )
    net = data.get("network")
    if net:
        print(f"network:    {net.get('peers', 0)} peers, {net.get('shards_held', 0)} shards held")
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    """Block until the node reports idle (scripts and benchmarks use this)."""
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        data = _get_json(f"{args.node.rstrip('/')}/api/status")
        if data["idle"]:
            print(f"idle: {data['documents']} documents")
            return 0
        time.sleep(0.5)
    print("rhizome: timed out waiting for the node to become idle", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rhizome", description="Rhizome: a decentralized web search engine."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    node = sub.add_parser("node", help="run a node: crawl, index, answer searches")
    add_node_flags(node)
    node.set_defaults(func=cmd_node)

    demo = sub.add_parser(
        "demo", help="run an offline demo: a node crawling Python's docs rendered by pydoc"
    )
    add_node_flags(demo)
    demo.add_argument("--docs-dir", type=Path, default=None, help="keep rendered docs here")
    demo.set_defaults(func=cmd_demo)

    search = sub.add_parser("search", help="search through a running node")
    search.add_argument("query")
    search.add_argument("--node", default=DEFAULT_NODE_URL, help="node URL")
    search.add_argument("--limit", type=int, default=10)
    search.add_argument("--offset", type=int, default=0)
    search.add_argument("--scope", choices=("network", "local"), default="network")
    search.add_argument("--json", action="store_true", help="print the raw JSON response")
    search.set_defaults(func=cmd_search)

    status = sub.add_parser("status", help="show a running node's health")
    status.add_argument("--node", default=DEFAULT_NODE_URL, help="node URL")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    wait = sub.add_parser("wait", help="wait until a node has nothing left to crawl")
    wait.add_argument("--node", default=DEFAULT_NODE_URL)
    wait.add_argument("--timeout", type=float, default=600.0)
    wait.set_defaults(func=cmd_wait)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a stuck node is doing,
    # without stopping it.
    with contextlib.suppress(AttributeError, ValueError, RuntimeError):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"rhizome: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
