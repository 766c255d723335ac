"""The ``rhizome node`` flags: one per NodeConfig setting, named after it, with its help."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

import shtab

from .config import CHOICES, CONFIG_FILE_NAME, NodeConfig

HELP: dict[str, str] = {
    "data_dir": "directory for the index, frontier and keys",
    "http": "HOST:PORT of the HTTP API and web UI",
    "public_url": "URL peers use to reach this node's HTTP API (none: made from --http)",
    "dht": "UDP HOST:PORT of the DHT node (none: run alone)",
    "bootstrap": "HOST:PORT of a DHT node to join through (repeatable)",
    "seed": "URL to start crawling from (repeatable)",
    "pin_host": "host this node always crawls itself (repeatable)",
    "allow_private_networks": "allow crawling private, loopback and link-local addresses",
    "allow_private_peers": "talk to peers on private/loopback addresses (LAN-only networks)",
    "seed_hosts_only": "follow links only within the hosts of the seeds",
    "crawl_delay": "seconds between requests to one host (robots.txt may ask for more)",
    "host_concurrency": "requests in flight to one host at most",
    "global_concurrency": "requests in flight in total at most",
    "max_depth": "link hops from a seed at most (0: only the seeds)",
    "max_urls_per_host": "URLs one host may add to the frontier at most",
    "max_urls_per_domain": "URLs all hosts of one registrable domain may add at most",
    "max_queued_urls": "URLs waiting in the frontier at most (beyond: new links dropped)",
    "resolve": "NAME=ADDRESS the crawler connects to without DNS (*.NAME: subdomains too)",
    "recrawl_days": "days before a page is fetched again",
    "parse_workers": "HTML parser processes (0: one per CPU core but one, or 1 with memory small)",
    "contact_url": "URL in the crawler's User-Agent where site owners reach you",
    "commit_interval": "seconds between index commits while crawling",
    "writer_heap_mb": "tantivy writer memory budget in MiB (0: 64, or 16 with memory small)",
    "memory": "normal or small (a 1 GB machine: 1 parser process, 16 MiB writer heap, ...)",
    "log_level": "debug, info, warning or error",
    "log_format": "text or json",
    "semantic": "on or off: re-rank by meaning with a static embedding model (+40 MB)",
    "held_shards_mb": "MiB of disk for the shards held for other nodes (each publisher 1/16)",
    "shard_expiry_interval": "seconds between removals of expired shards held for others",
    "search_rate": "network searches a second per client address (local ones cost 1/5)",
    "trusted_proxies": "reverse proxy address whose X-Forwarded-For is believed (repeatable)",
    "reachability": "auto, public or private: can peers dial this node (auto: they try)",
    "relay": "relay for nodes behind NAT when reachable (--no-relay: never)",
    "relay_max_nodes": "nodes behind NAT relayed for at once at most (0: no relaying)",
    "relay_mb_per_node_hour": "MB each relayed node may use of this node's upstream an hour",
    "direct": "reach nodes behind NAT past their relays, by reversal or hole punch "
    "(--no-direct: always through the relay)",
    "direct_max_links": "direct links to nodes behind NAT held (and served) at once at most",
    "publish_blocklist": "serve this node's blocklist, signed, to nodes that subscribe to it",
    "history_step": "seconds between points of the status page's graphs (60: the last hour)",
}


def shown_default(value: Any) -> str:
    """A setting's default as ``--help`` shows it (escaped for argparse's %-formatting)."""
    if isinstance(value, bool):
        text = "on" if value else "off"
    elif value in ("", ()):
        text = "none"
    else:
        text = str(value)
    return text.replace("%", "%%")


def add_node_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, named after it; ``--config FILE`` picks the TOML file.

    Flags default to None (unset), so the file and the environment show through; the help
    names the built-in default instead, as an operator needs it.
    """
    config_flag = parser.add_argument(
        "--config",
        type=Path,
        help="TOML config file (default: $RHIZOME_CONFIG, else "
        f"$XDG_CONFIG_HOME/rhizome/{CONFIG_FILE_NAME} if it exists)",
    )
    config_flag.complete = shtab.FILE  # type: ignore[attr-defined]
    defaults = NodeConfig()
    for f in fields(NodeConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{HELP.get(f.name, '')} (default: {shown_default(getattr(defaults, f.name))})"
        if f.type in (bool, "bool"):
            # --relay / --no-relay for every switch: a flag can undo the file or the env.
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, help=help_text
            )
        elif f.type in (tuple[str, ...], "tuple[str, ...]"):
            parser.add_argument(flag, dest=f.name, action="append", default=None, help=help_text)
        else:
            action = parser.add_argument(
                flag, dest=f.name, default=None, choices=CHOICES.get(f.name), help=help_text
            )
            if f.type in (Path, "Path"):
                action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
