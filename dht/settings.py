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

    def __post_init__(self) -> None:
        if self.ksize < 1 or self.alpha < 1 or self.max_failures < 1 or self.max_inflight < 1:
            raise ValueError("ksize, alpha, max_failures and max_inflight must be positive")
        if self.rpc_timeout <= 0 or self.refresh_interval <= 0 or self.save_interval <= 0:
            raise ValueError("timeouts and intervals must be positive")
