"""Tunables of the DHT node, each with the reason for its default."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_KSIZE = 20  # Kademlia's k: bucket size and replication of lookups
DEFAULT_ALPHA = 3  # lookups in parallel per crawl step
DEFAULT_RPC_TIMEOUT = 2.0  # seconds; loopback answers in < 1 ms, home links in < 500 ms
DEFAULT_MAX_FAILURES = 3  # consecutive timeouts before a peer leaves the routing table
DEFAULT_MAX_INFLIGHT = 16  # outgoing RPCs at once; 32 overflowed the receive buffer
DEFAULT_REFRESH_INTERVAL = 3600.0  # seconds between bucket refreshes (the paper's hour)
DEFAULT_SAVE_INTERVAL = 600.0  # seconds between routing-table saves
DEFAULT_RECV_BUFFER = 4 * 1024 * 1024  # SO_RCVBUF; the default buffer dropped bursts
# Datagrams a second one source (IPv4 address, IPv6 /64) may make us handle, and how many
# it may save up. Honest peers send a few a second; twenty in-process test nodes sharing
# 127.0.0.1 peak at a few hundred. Beyond, datagrams are dropped before they are parsed.
DEFAULT_SOURCE_RATE = 1000.0
DEFAULT_SOURCE_BURST = 2000.0
DEFAULT_MAX_SOURCES = 10_000  # token buckets kept (LRU); bounds the limiter's memory
# Contacts one address range may hold in a full bucket before it gives up a slot to a
# newcomer from another range (an attacker with one /24 cannot fill a bucket).
DEFAULT_RANGE_CAP = 2
DEFAULT_IPV4_RANGE = 24  # prefix lengths of "one address range" for that cap
DEFAULT_IPV6_RANGE = 64
# A peer that did not answer is skipped by lookups for silent_backoff x 2^(failures-1)
# seconds (at most MAX_SILENT_BACKOFF), so each silent peer costs a lookup one timeout.
DEFAULT_SILENT_BACKOFF = 5.0
DEFAULT_LOOKUP_TIMEOUT = 8.0  # seconds a whole lookup may take; then the best found so far


@dataclass(frozen=True, slots=True, kw_only=True)
class DhtSettings:
    ksize: int = DEFAULT_KSIZE
    alpha: int = DEFAULT_ALPHA
    rpc_timeout: float = DEFAULT_RPC_TIMEOUT
    max_failures: int = DEFAULT_MAX_FAILURES
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    refresh_interval: float = DEFAULT_REFRESH_INTERVAL
    save_interval: float = DEFAULT_SAVE_INTERVAL
    recv_buffer: int = DEFAULT_RECV_BUFFER
    source_rate: float = DEFAULT_SOURCE_RATE
    source_burst: float = DEFAULT_SOURCE_BURST
    max_sources: int = DEFAULT_MAX_SOURCES
    range_cap: int = DEFAULT_RANGE_CAP
    ipv4_range: int = DEFAULT_IPV4_RANGE
    ipv6_range: int = DEFAULT_IPV6_RANGE
    silent_backoff: float = DEFAULT_SILENT_BACKOFF
    lookup_timeout: float = DEFAULT_LOOKUP_TIMEOUT

    def __post_init__(self) -> None:
        if self.ksize < 1 or self.alpha < 1 or self.max_failures < 1 or self.max_inflight < 1:
            raise ValueError("ksize, alpha, max_failures and max_inflight must be positive")
        if self.rpc_timeout <= 0 or self.refresh_interval <= 0 or self.save_interval <= 0:
            raise ValueError("timeouts and intervals must be positive")
        if self.source_rate <= 0 or self.source_burst < 1 or self.max_sources < 1:
            raise ValueError("source_rate, source_burst and max_sources must be positive")
        if self.range_cap < 1 or not 0 <= self.ipv4_range <= 32 or not 0 <= self.ipv6_range <= 128:
            raise ValueError("range_cap must be positive and prefix lengths valid")
        if self.silent_backoff <= 0 or self.lookup_timeout <= 0:
            raise ValueError("silent_backoff and lookup_timeout must be positive")
