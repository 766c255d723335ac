"""Node configuration, parsed once at start-up: defaults < TOML file < RHIZOME_* env < flags.

Every setting has one name used everywhere: ``crawl_delay`` is the TOML key, the
``RHIZOME_CRAWL_DELAY`` environment variable and the ``--crawl-delay`` flag.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from rhizome.crawler import CrawlerConfig
from rhizome.crawler import config as crawl_defaults

from .memory import MEMORY_PROFILES, PROFILES, MemoryProfile

DEFAULT_HTTP = "127.0.0.1:8700"
DEFAULT_DHT = "127.0.0.1:8701"
DEFAULT_COMMIT_INTERVAL = 1.0
MIN_WRITER_HEAP_MB = 16  # tantivy refuses less than ~15 MB a writer thread
# Disk for the shard copies this node holds for others (federation/shard_store.py).
DEFAULT_HELD_SHARDS_MB = 1024
DEFAULT_SHARD_EXPIRY_INTERVAL = 600.0  # seconds; a copy lives 24 h unless republished
# Federated searches a second one client (IPv4 address, IPv6 /64) may start, sustained;
# see api/client_quotas.py for the burst and what a local search costs.
DEFAULT_SEARCH_RATE = 2.0
# Nodes behind NAT this node relays for at once, and the bytes each may use an hour: see
# federation/relay.py for the arithmetic (16 busy nodes: ~0.3 Mbit/s of upstream).
DEFAULT_RELAY_MAX_NODES = 16
DEFAULT_RELAY_MB_PER_NODE_HOUR = 64.0
REACHABILITY_MODES = ("auto", "public", "private")
DEFAULT_MEMORY = "normal"
ENV_PREFIX = "RHIZOME_"


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the setting."""


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "rhizome"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    http: str = DEFAULT_HTTP
    public_url: str = ""  # how peers and browsers reach this node; derived from http if empty
    dht: str = ""  # UDP HOST:PORT; empty: no DHT (a lone node)
    bootstrap: tuple[str, ...] = ()
    seed: tuple[str, ...] = ()
    pin_host: tuple[str, ...] = ()  # hosts this node always crawls itself
    allow_private_networks: bool = False
    allow_private_peers: bool = False
    seed_hosts_only: bool = False
    crawl_delay: float = crawl_defaults.DEFAULT_CRAWL_DELAY
    host_concurrency: int = crawl_defaults.DEFAULT_HOST_CONCURRENCY
    global_concurrency: int = crawl_defaults.DEFAULT_GLOBAL_CONCURRENCY
    max_depth: int = crawl_defaults.DEFAULT_MAX_DEPTH
    max_urls_per_host: int = crawl_defaults.DEFAULT_MAX_URLS_PER_HOST
    recrawl_days: float = crawl_defaults.DEFAULT_RECRAWL_INTERVAL / 86400
    parse_workers: int = crawl_defaults.DEFAULT_PARSE_WORKERS
    contact_url: str = crawl_defaults.DEFAULT_CONTACT_URL
    commit_interval: float = DEFAULT_COMMIT_INTERVAL
    writer_heap_mb: int = 0  # 0: the memory profile's (64 normal, 16 small)
    # "small" for a 1 GB machine: fewer parser processes, a smaller writer heap, fewer
    # pages waiting and smaller caches (api/memory.py); slower, not worse.
    memory: str = DEFAULT_MEMORY
    log_level: str = "info"
    log_format: str = "text"  # or "json"
    # The static-embedding re-rank (index/semantic.py): +40 MB and ~2 s at start for
    # MRR@10 +4..8% on description-style queries. "off" for the smallest machines.
    semantic: str = "on"
    held_shards_mb: int = DEFAULT_HELD_SHARDS_MB
    shard_expiry_interval: float = DEFAULT_SHARD_EXPIRY_INTERVAL
    search_rate: float = DEFAULT_SEARCH_RATE
    # Addresses of reverse proxies whose X-Forwarded-For names the client (rate limits are
    # per client). Empty: the header is ignored, as anyone can send it.
    trusted_proxies: tuple[str, ...] = ()
    # Whether peers can dial this node (federation/reachability.py): "auto" asks them to
    # dial it back; "public" or "private" when the operator knows.
    reachability: str = "auto"
    # Relaying for nodes behind NAT (federation/relay.py), when this node is reachable.
    relay: bool = True
    relay_max_nodes: int = DEFAULT_RELAY_MAX_NODES  # 0: no relaying, as --no-relay
    relay_mb_per_node_hour: float = DEFAULT_RELAY_MB_PER_NODE_HOUR
    # This node's own blocklist, signed, for nodes that subscribe to it (federation/
    # blocklists.py). It shows what the operator blocked: --no-publish-blocklist keeps it.
    publish_blocklist: bool = True

    @property
    def relays(self) -> int:
        """Nodes this node relays for at most (0: none)."""
        return self.relay_max_nodes if self.relay else 0

    @property
    def http_host(self) -> str:
        return split_host_port(self.http, "http")[0]

    @property
    def memory_profile(self) -> MemoryProfile:
        return PROFILES[self.memory]

    @property
    def writer_heap_bytes(self) -> int:
        return (self.writer_heap_mb or self.memory_profile.writer_heap_mb) * 1024 * 1024

    @property
    def http_port(self) -> int:
        return split_host_port(self.http, "http")[1]

    def crawler_config(self) -> CrawlerConfig:
        return CrawlerConfig(
            data_dir=self.data_dir,
            contact_url=self.contact_url,
            allow_private_networks=self.allow_private_networks,
            seed_hosts_only=self.seed_hosts_only,
            crawl_delay=self.crawl_delay,
            host_concurrency=self.host_concurrency,
            global_concurrency=self.global_concurrency,
            max_depth=self.max_depth,
            max_urls_per_host=self.max_urls_per_host,
            recrawl_interval=self.recrawl_days * 86400,
            parse_workers=self.parse_workers or self.memory_profile.parse_workers,
            seen_cache=self.memory_profile.seen_cache,
            anchor_cache=self.memory_profile.anchor_cache,
        )


HELP: dict[str, str] = {
    "data_dir": "directory for the index, frontier and keys",
    "http": "HOST:PORT of the HTTP API and web UI",
    "public_url": "URL peers use to reach this node's HTTP API (default: from --http)",
    "dht": "UDP HOST:PORT of the DHT node (empty: run alone)",
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
    "recrawl_days": "days before a page is fetched again",
    "parse_workers": "HTML parser processes (0: one per CPU core, or 1 with memory small)",
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
    "publish_blocklist": "serve this node's blocklist, signed, to nodes that subscribe to it",
}


def split_host_port(value: str, name: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{name}: expected HOST:PORT, got {value!r}")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"{name}: port {port!r} is not a number") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"{name}: port {number} is out of range")
    return host.strip("[]"), number


def _coerce(name: str, kind: Any, value: Any) -> Any:
    try:
        if kind in (tuple[str, ...], "tuple[str, ...]"):
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            if isinstance(value, Sequence):
                return tuple(str(v) for v in value)
            raise TypeError
        if kind in (bool, "bool"):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
        if kind in (Path, "Path"):
            return Path(str(value)).expanduser()
        if kind in (int, "int"):
            if isinstance(value, bool):
                raise TypeError
            return int(value)
        if kind in (float, "float"):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: cannot use {value!r}") from None


def _kinds() -> dict[str, Any]:
    return {f.name: f.type for f in fields(NodeConfig)}


def load_config(
    *,
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> NodeConfig:
    """Build the NodeConfig: defaults < TOML ``file`` < ``env`` < ``flags`` (None = unset)."""
    env = os.environ if env is None else env
    kinds = _kinds()
    values: dict[str, Any] = {}
    if file is None and env.get(ENV_PREFIX + "CONFIG"):
        file = Path(env[ENV_PREFIX + "CONFIG"])
    if file is not None:
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file {file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file}: {exc}") from None
        node = data.get("node", data)
        for key, value in node.items():
            if key not in kinds:
                raise ConfigError(f"config file {file}: unknown setting {key!r}")
            values[key] = _coerce(key, kinds[key], value)
    for key, kind in kinds.items():
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is not None:
            values[key] = _coerce(ENV_PREFIX + key.upper(), kind, raw)
    for key, value in (flags or {}).items():
        if value is None or key not in kinds:
            continue
        if isinstance(value, list) and not value:
            continue
        values[key] = _coerce("--" + key.replace("_", "-"), kinds[key], value)
    config = replace(NodeConfig(), **values)
    validate(config)
    return config


def validate(config: NodeConfig) -> None:
    split_host_port(config.http, "http")
    if config.dht:
        split_host_port(config.dht, "dht")
    for b in config.bootstrap:
        split_host_port(b, "bootstrap")
    for name in ("crawl_delay", "recrawl_days", "commit_interval"):
        if getattr(config, name) < 0:
            raise ConfigError(f"{name}: must not be negative")
    for name in ("host_concurrency", "global_concurrency", "max_urls_per_host"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name}: must be at least 1")
    if config.max_depth < 0:  # 0: fetch the seeds themselves and follow nothing
        raise ConfigError("max_depth: must not be negative")
    if config.held_shards_mb < 1:
        raise ConfigError("held_shards_mb: must be at least 1")
    for name in ("shard_expiry_interval", "search_rate"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name}: must be positive")
    for proxy in config.trusted_proxies:
        try:
            ipaddress.ip_address(proxy)
        except ValueError:
            raise ConfigError(f"trusted_proxies: {proxy!r} is not an IP address") from None
    if 0 < config.writer_heap_mb < MIN_WRITER_HEAP_MB or config.writer_heap_mb < 0:
        raise ConfigError("writer_heap_mb: tantivy needs at least 16 MiB (0: by memory)")
    if config.log_format not in ("text", "json"):
        raise ConfigError("log_format: text or json")
    if config.semantic not in ("on", "off"):
        raise ConfigError("semantic: on or off")
    if config.reachability not in REACHABILITY_MODES:
        raise ConfigError("reachability: auto, public or private")
    if config.relay_max_nodes < 0:
        raise ConfigError("relay_max_nodes: must not be negative")
    if config.relay_mb_per_node_hour <= 0:
        raise ConfigError("relay_mb_per_node_hour: must be positive")
    if config.memory not in MEMORY_PROFILES:
        raise ConfigError(f"memory: one of {', '.join(MEMORY_PROFILES)}")


def add_node_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, named after it; ``--config FILE`` picks the TOML file."""
    parser.add_argument("--config", type=Path, help="TOML config file (or RHIZOME_CONFIG)")
    for f in fields(NodeConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = HELP.get(f.name, "")
        if f.type in (bool, "bool"):
            parser.add_argument(
                flag, dest=f.name, action="store_const", const=True, default=None, help=help_text
            )
            if f.default is True:  # on unless said: --no-relay
                parser.add_argument(
                    "--no-" + f.name.replace("_", "-"),
                    dest=f.name,
                    action="store_const",
                    const=False,
                    default=None,
                    help=f"the opposite of {flag}",
                )
        elif f.type in (tuple[str, ...], "tuple[str, ...]"):
            parser.add_argument(flag, dest=f.name, action="append", default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=help_text)
