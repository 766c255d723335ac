"""The ``rhizome`` command: node, demo, search, status, wait, seed, block, pin, completion."""

from __future__ import annotations

import argparse
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

import shtab

from . import memory
from .cli_http import add_operator_flags, operator_call
from .cli_http import call as _call
from .cli_operator import add_operator_commands
from .config import (
    DEFAULT_HTTP,
    ConfigError,
    load_config,
    user_config_file,
)
from .demo import run_demo
from .flags import add_node_flags
from .runner import event_loop_runner, serve
from .version import VERSION

log = logging.getLogger("rhizome")

DEFAULT_NODE_URL = f"http://{DEFAULT_HTTP}"
NODE_HELP = "the node's URL (default: %(default)s)"


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


def cmd_node(args: argparse.Namespace) -> int:
    file = args.config or user_config_file(os.environ)
    config = load_config(file=file, flags=vars(args))
    setup_logging(config.log_level, config.log_format)
    log.info("rhizome %s, settings file: %s", VERSION, file or "none")
    memory.tune_malloc()  # before the index's and frontier's threads exist
    event_loop_runner()(serve(config))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    config = load_config(file=args.config, flags=vars(args))
    setup_logging("warning" if config.log_level == "info" else config.log_level, config.log_format)
    event_loop_runner()(run_demo(config, docs_dir=args.docs_dir))
    return 0


def _get_json(url: str) -> Any:
    return _call(urllib.request.Request(url, headers={"Accept": "application/json"}))


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
        print(f"reachable:  {_reachability_line(net)}")
        if (direct := net.get("direct")) and direct.get("enabled"):
            print(
                f"behind NAT: {direct.get('peers_direct', 0)} peers reached directly, "
                f"{direct.get('peers_relayed', 0)} through their relays"
            )
    return 0


def _reachability_line(net: dict[str, Any]) -> str:
    """``public``, ``private, relayed by <id>`` or ``unknown (asking peers)``."""
    state = str(net.get("reachability", "unknown"))
    relay = net.get("relay") or {}  # the operator's view names the relay
    if state == "private":
        if relay.get("relay"):
            return f"private (behind NAT), relayed by {relay['relay'][:12]}"
        if net.get("relayed"):
            return "private (behind NAT), relayed"
        return "private (behind NAT), looking for a relay"
    if state == "unknown":
        return "unknown (asking peers to dial back)"
    return state


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


def cmd_seed(args: argparse.Namespace) -> int:
    """Add seeds to a running node, as its operator (the token in its data dir)."""
    data = operator_call(args, "/api/seeds", {"urls": args.urls})
    accepted, rejected = data["accepted"], data["rejected"]
    print(f"accepted {len(accepted)} of {len(args.urls)} URLs")
    for url in accepted:
        print(f"  {url}")
    blocked = data.get("blocked", [])
    for entry in blocked:
        print(f"rhizome: {entry['url']} is {entry['by']}", file=sys.stderr)
    if (unusable := rejected - len(blocked)) > 0:
        print(f"rhizome: {unusable} refused (not http or https URLs)", file=sys.stderr)
    return 1 if rejected else 0


def cmd_completion(args: argparse.Namespace) -> int:
    """Print the shell's completion script, made from this parser (no cost at run time)."""
    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rhizome", description="Rhizome: a decentralized web search engine."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)

    node = sub.add_parser("node", help="run a node: crawl, index, answer searches")
    add_node_flags(node)
    node.set_defaults(func=cmd_node)

    demo = sub.add_parser(
        "demo", help="run an offline demo: a node crawling Python's docs rendered by pydoc"
    )
    add_node_flags(demo)
    demo.add_argument(
        "--docs-dir", type=Path, help="keep rendered docs here (default: a temporary directory)"
    ).complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    demo.set_defaults(func=cmd_demo)

    search = sub.add_parser("search", help="search through a running node")
    search.add_argument("query")
    search.add_argument("--node", default=DEFAULT_NODE_URL, help=NODE_HELP)
    search.add_argument("--limit", type=int, default=10, help="results (default: %(default)s)")
    search.add_argument("--offset", type=int, default=0, help="skip (default: %(default)s)")
    search.add_argument(
        "--scope",
        choices=("network", "local"),
        default="network",
        help="the whole network or this node's index (default: %(default)s)",
    )
    search.add_argument("--json", action="store_true", help="print the raw JSON response")
    search.set_defaults(func=cmd_search)

    status = sub.add_parser("status", help="show a running node's health")
    status.add_argument("--node", default=DEFAULT_NODE_URL, help=NODE_HELP)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    wait = sub.add_parser("wait", help="wait until a node has nothing left to crawl")
    wait.add_argument("--node", default=DEFAULT_NODE_URL, help=NODE_HELP)
    wait.add_argument(
        "--timeout", type=float, default=600.0, help="seconds at most (default: %(default)s)"
    )
    wait.set_defaults(func=cmd_wait)

    seed = sub.add_parser(
        "seed", help="add seed URLs to a running node (reads its credential from the data dir)"
    )
    seed.add_argument("urls", nargs="+", metavar="URL")
    add_operator_flags(seed)
    seed.set_defaults(func=cmd_seed)
    add_operator_commands(sub)

    completion = sub.add_parser(
        "completion", help="print a shell completion script: rhizome completion bash > FILE"
    )
    completion.add_argument("shell", choices=shtab.SUPPORTED_SHELLS)
    completion.set_defaults(func=cmd_completion)
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
