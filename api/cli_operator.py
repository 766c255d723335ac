"""``rhizome block …`` and ``rhizome pin …``: the operator page's blocklist, subscriptions
and pins from a shell, through the node's JSON routes (``api/blocklist_routes.py``), as
its operator (the token in its data dir)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from rhizome.crawler import BadRule
from rhizome.crawler.blocklist import domain_rule

from .cli_http import add_operator_flags, operator_call


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts else "never"


def cmd_block_add(args: argparse.Namespace) -> int:
    rules = args.rules
    if args.domain:
        rules = [_domain(r) for r in rules]
    data = operator_call(args, "/api/blocklist/add", {"rules": rules})
    for rule in data["added"]:
        print(f"blocked {rule}")
    if data["added"]:
        print(
            f"deleted {data['pages_deleted']} pages from the index; "
            f"dropped the queue of {data['hosts_forgotten']} hosts"
        )
    for why in data["refused"].values():
        print(f"rhizome: not blocked: {why}", file=sys.stderr)
    known = set(rules) - set(data["added"]) - set(data["refused"])
    for text in sorted(known):
        print(f"{text}: blocked already")
    return 1 if data["refused"] else 0


def _domain(text: str) -> str:
    try:
        return domain_rule(text)
    except BadRule:
        return text  # the node says why, with the others


def cmd_block_remove(args: argparse.Namespace) -> int:
    removed = operator_call(args, "/api/blocklist/remove", {"rules": args.rules})["removed"]
    for rule in removed:
        print(f"unblocked {rule}")
    missing = len(args.rules) - len(removed)
    if missing:
        print(f"rhizome: {missing} not in this node's blocklist", file=sys.stderr)
    return 1 if missing else 0


def cmd_block_list(args: argparse.Namespace) -> int:
    data = operator_call(args, "/api/blocklist")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    published = "published" if data["published"] else "not published"
    print(f"this node's list {data['name'] or '(no name)'} ({published}):")
    for entry in data["rules"]:
        print(f"  {entry['rule']}")
    for sub in data["subscriptions"]:
        error = f", last error: {sub['error']}" if sub["error"] else ""
        print(f"{sub['label']}, {sub['url'] or 'found through the network'}, ", end="")
        print(f"fetched {_when(sub['fetched_at'])}{error}:")
        for rule in sub["rules"]:
            print(f"  {rule}")
    return 0


def cmd_block_check(args: argparse.Namespace) -> int:
    data = operator_call(args, f"/api/blocklist/check?host={quote(args.host, safe='')}")
    if not data["blocked"]:
        print(f"{args.host} is not blocked")
        return 1
    print(f"{args.host} is blocked by {data['by']} (rule {data['rule']})")
    return 0


def cmd_block_subscribe(args: argparse.Namespace) -> int:
    sub = operator_call(
        args, "/api/subscriptions/add", {"node_id": args.node_id or "", "url": args.url or ""}
    )
    if sub["error"]:
        print(f"rhizome: subscribed to {sub['node_id']}, but: {sub['error']}", file=sys.stderr)
        return 1
    print(f"subscribed to {sub['label']}: {len(sub['rules'])} rules")
    return 0


def cmd_block_unsubscribe(args: argparse.Namespace) -> int:
    removed = operator_call(args, "/api/subscriptions/remove", {"node_id": args.node_id})
    print("unsubscribed" if removed["removed"] else f"not subscribed to {args.node_id}")
    return 0 if removed["removed"] else 1


def cmd_pin(args: argparse.Namespace) -> int:
    if args.action == "list":
        for pin in operator_call(args, "/api/pins")["pins"]:
            print(pin["host"] + ("  (the configuration's pin_host)" if pin["configured"] else ""))
        return 0
    data = operator_call(args, f"/api/pins/{args.action}", {"hosts": args.hosts})
    changed: list[str] = data["added" if args.action == "add" else "removed"]
    for host in changed:
        print(f"{'pinned' if args.action == 'add' else 'unpinned'} {host}")
    return 0


def add_operator_commands(sub: Any) -> None:
    """``block`` and ``pin`` with their subcommands, on ``rhizome``'s subparsers."""
    block = sub.add_parser("block", help="a running node's blocklist (as its operator)")
    actions = block.add_subparsers(dest="action", required=True)
    add = actions.add_parser(
        "add",
        help="block hosts or domains and delete their pages",
        description="Rules: example.com (it and every host under it), *.example.com (the "
        "hosts under it), ads*.example.com (a label pattern), =www.example.com (that host).",
    )
    add.add_argument("rules", nargs="+", metavar="RULE")
    add.add_argument(
        "--domain", action="store_true", help="block each host's whole registrable domain"
    )
    add.set_defaults(func=cmd_block_add)
    remove = actions.add_parser("remove", help="unblock rules of this node's list")
    remove.add_argument("rules", nargs="+", metavar="RULE")
    remove.set_defaults(func=cmd_block_remove)
    listing = actions.add_parser("list", help="this node's rules and the subscribed lists")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_block_list)
    check = actions.add_parser("check", help="whether a host or URL is blocked, and by what")
    check.add_argument("host")
    check.set_defaults(func=cmd_block_check)
    subscribe = actions.add_parser("subscribe", help="apply another node's signed list")
    subscribe.add_argument("--node-id", help="the node's id (40 hex characters)")
    subscribe.add_argument("--url", help="the node's URL (its id is then learnt from it)")
    subscribe.set_defaults(func=cmd_block_subscribe)
    unsubscribe = actions.add_parser("unsubscribe", help="stop applying a node's list")
    unsubscribe.add_argument("node_id")
    unsubscribe.set_defaults(func=cmd_block_unsubscribe)
    for parser in (add, remove, listing, check, subscribe, unsubscribe):
        add_operator_flags(parser)

    pin = sub.add_parser("pin", help="hosts a running node always crawls itself")
    pins = pin.add_subparsers(dest="action", required=True)
    for name, text in (("add", "pin hosts"), ("remove", "unpin hosts")):
        parser = pins.add_parser(name, help=text)
        parser.add_argument("hosts", nargs="+", metavar="HOST")
        add_operator_flags(parser)
        parser.set_defaults(func=cmd_pin)
    listed = pins.add_parser("list", help="the pinned hosts")
    add_operator_flags(listed)
    listed.set_defaults(func=cmd_pin)
