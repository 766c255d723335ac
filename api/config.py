"""Node configuration, parsed once at start-up: defaults < TOML file < RHIZOME_* env < flags.

Every setting has one name used everywhere: ``crawl_delay`` is the TOML key, the
``RHIZOME_CRAWL_DELAY`` environment variable and the ``--crawl-delay`` flag. The TOML file is
the first of ``--config FILE``, ``$RHIZOME_CONFIG`` and ``$XDG_CONFIG_HOME/rhizome/rhizome.toml``
(``~/.config/rhizome/rhizome.toml``) that is given; the last only if it exists.
"""

from __future__ import annotations

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
# Nodes behind NAT this node holds a direct link to (or serves one for) at once, past their
# relays (federation/direct.py: connection reversal, hole punching); 0 or --no-direct: none.
DEFAULT_DIRECT_MAX_LINKS = 16
REACHABILITY_MODES = ("auto", "public", "private")
DEFAULT_MEMORY = "normal"
LOG_LEVELS = ("debug", "info", "warning", "error")  # any case
# The settings that take one of a few words: checked once, offered by shell completion.
CHOICES: dict[str, tuple[str, ...]] = {
    "memory": MEMORY_PROFILES,
    "log_format": ("text", "json"),
    "semantic": ("on", "off"),
    "reachability": REACHABILITY_MODES,
}
# Seconds between the points of the status page's hour graphs (api/history.py: 60 of them;
# the day graphs have one point for every 5).
DEFAULT_HISTORY_STEP = 60.0
MIN_HISTORY_STEP = 0.1  # each step counts the frontier's rows: not many times a second
ENV_PREFIX = "RHIZOME_"
CONFIG_FILE_NAME = "rhizome.toml"  # looked up in $XDG_CONFIG_HOME/rhizome/


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the setting."""


def user_config_file(env: Mapping[str, str]) -> Path | None:
    """The TOML file that applies without ``--config``: ``$RHIZOME_CONFIG``, else the user's
    ``$XDG_CONFIG_HOME/rhizome/rhizome.toml`` (``~/.config/…``) if it exists, else none."""
    if env.get(ENV_PREFIX + "CONFIG"):
        return Path(env[ENV_PREFIX + "CONFIG"])
    base = env.get("XDG_CONFIG_HOME", "")
    if not Path(base).is_absolute():  # the XDG spec: a relative path is invalid, ignored
        if not env.get("HOME"):
            return None
        base = str(Path(env["HOME"]) / ".config")
    path = Path(base) / "rhizome" / CONFIG_FILE_NAME
    try:
        return path if path.is_file() else None
    except OSError:  # a home the service may not read (systemd's ProtectHome): no file
        return None


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
    max_urls_per_domain: int = crawl_defaults.DEFAULT_MAX_URLS_PER_DOMAIN
    max_queued_urls: int = crawl_defaults.DEFAULT_MAX_QUEUED_URLS
    # NAME=ADDRESS (or *.NAME=ADDRESS for every subdomain): the crawler connects there
    # instead of asking DNS, as curl's --resolve (a LAN site without a DNS name).
    resolve: tuple[str, ...] = ()
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
    # Direct paths to nodes behind NAT, so their answers stop costing a relay's upstream.
    direct: bool = True
    direct_max_links: int = DEFAULT_DIRECT_MAX_LINKS  # 0: none, as --no-direct
    history_step: float = DEFAULT_HISTORY_STEP
    # This node's own blocklist, signed, for nodes that subscribe to it (federation/
    # blocklists.py). It shows what the operator blocked: --no-publish-blocklist keeps it.
    publish_blocklist: bool = True

    @property
    def relays(self) -> int:
        """Nodes this node relays for at most (0: none)."""
        return self.relay_max_nodes if self.relay else 0

    @property
    def direct_links(self) -> int:
        """Direct links held, and served, at most (0: every request through the relays)."""
        return self.direct_max_links if self.direct else 0

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
            max_urls_per_domain=self.max_urls_per_domain,
            max_queued_urls=self.max_queued_urls,
            resolve=tuple(parse_resolve(entry) for entry in self.resolve),
            recrawl_interval=self.recrawl_days * 86400,
            parse_workers=self.parse_workers or self.memory_profile.parse_workers,
            seen_cache=self.memory_profile.seen_cache,
            anchor_cache=self.memory_profile.anchor_cache,
        )


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


def parse_resolve(entry: str) -> tuple[str, str]:
    """``NAME=ADDRESS`` (``*.NAME=ADDRESS``) as the crawler's (name, address)."""
    name, sep, address = entry.partition("=")
    name = name.strip().lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        ip = None
    bare = name.removeprefix("*.")
    if not sep or ip is None or not bare or "*" in bare or "/" in bare or ":" in bare:
        raise ConfigError(f"resolve: expected NAME=ADDRESS or *.NAME=ADDRESS, got {entry!r}")
    return name, str(ip)


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
    if file is None:
        file = user_config_file(env)
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
    for name in (
        "host_concurrency",
        "global_concurrency",
        "max_urls_per_host",
        "max_urls_per_domain",
        "max_queued_urls",
    ):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name}: must be at least 1")
    if config.max_depth < 0:  # 0: fetch the seeds themselves and follow nothing
        raise ConfigError("max_depth: must not be negative")
    if config.held_shards_mb < 1:
        raise ConfigError("held_shards_mb: must be at least 1")
    for name in ("shard_expiry_interval", "search_rate"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name}: must be positive")
    for entry in config.resolve:
        parse_resolve(entry)
    if config.history_step < MIN_HISTORY_STEP:
        raise ConfigError(f"history_step: at least {MIN_HISTORY_STEP} s")
    for proxy in config.trusted_proxies:
        try:
            ipaddress.ip_address(proxy)
        except ValueError:
            raise ConfigError(f"trusted_proxies: {proxy!r} is not an IP address") from None
    if 0 < config.writer_heap_mb < MIN_WRITER_HEAP_MB or config.writer_heap_mb < 0:
        raise ConfigError("writer_heap_mb: tantivy needs at least 16 MiB (0: by memory)")
    for name, choices in CHOICES.items():
        if getattr(config, name) not in choices:
            raise ConfigError(f"{name}: one of {', '.join(choices)}")
    if config.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log_level: one of {', '.join(LOG_LEVELS)}")
    if config.relay_max_nodes < 0:
        raise ConfigError("relay_max_nodes: must not be negative")
    if config.direct_max_links < 0:
        raise ConfigError("direct_max_links: must not be negative")
    if config.relay_mb_per_node_hour <= 0:
        raise ConfigError("relay_mb_per_node_hour: must be positive")
