"""The CLI's HTTP to a node: one error mapping, and requests made as the node's operator
(the token read from its data dir, as ``rhizome seed``, ``block`` and ``pin`` do)."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import shtab

from .config import NodeConfig, load_config
from .operator import read_token

CLIENT_TIMEOUT = 30.0


def call(req: urllib.request.Request, *, refused_hint: str = "") -> Any:
    """The node's JSON answer; SystemExit with a message a person can act on otherwise."""
    try:
        with urllib.request.urlopen(req, timeout=CLIENT_TIMEOUT) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc).get("error", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        hint = refused_hint if exc.code == 401 else ""
        raise SystemExit(f"rhizome: the node refused: {message}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise SystemExit(
            f"rhizome: cannot reach a node at {req.full_url.split('/api/')[0]} ({exc}).\n"
            "Start one with `rhizome node` or pass --node URL."
        ) from None


def local_url(config: NodeConfig) -> str:
    """Where this machine reaches the node configured by ``config`` (its --http)."""
    host, port = config.http.rsplit(":", 1)
    host = host.strip("[]")
    # A node bound to every address is reached on loopback.
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def add_operator_flags(parser: argparse.ArgumentParser) -> None:
    """How a command finds the node and its credential: by default the settings `rhizome
    node` reads (file, RHIZOME_*), so on the node's machine no flag is needed."""
    parser.add_argument("--node", default=None, help="node URL (default: the node's --http)")
    parser.add_argument(
        "--data-dir", help="the node's data directory (default: as `rhizome node` finds it)"
    ).complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    parser.add_argument(
        "--config", type=Path, help="the node's TOML config file (default: as `rhizome node`)"
    ).complete = shtab.FILE  # type: ignore[attr-defined]


def operator_call(args: argparse.Namespace, path: str, payload: object = None) -> Any:
    """GET (no ``payload``) or POST JSON to ``path`` as the node's operator."""
    config = load_config(file=args.config, flags={"data_dir": args.data_dir})
    token = read_token(config.data_dir)
    node = (args.node or local_url(config)).rstrip("/")
    headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}
    body = None
    if payload is not None:
        body = json.dumps(payload).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(
        f"{node}{path}", data=body, method="GET" if body is None else "POST", headers=headers
    )
    hint = (
        f"\nThe credential was read from {config.data_dir}: "
        f"is {node} the node that uses that data dir?"
    )
    return call(req, refused_hint=hint)
