"""Per-source quotas: token buckets keyed by address range, bounded in memory.

One address must not be able to starve the others, whether it floods the UDP socket or
the peer HTTP endpoints. A source is keyed by its address range rather than its exact
address where addresses are cheap: an IPv6 host usually owns a whole /64, so keying by
the full address would hand it 2^64 buckets.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_MAX_SOURCES = 10_000  # buckets kept; the least recently used source is forgotten
IPV6_SOURCE_PREFIX = 64  # an IPv6 source is its /64 (what one host or home usually gets)
SOURCE_KEY_CACHE = 4096  # addresses whose key is remembered


def address_range(ip: str, ipv4_prefix: int, ipv6_prefix: int) -> str:
    """The network ``ip`` belongs to at the given prefix lengths, as a string key.

    IPv4-mapped IPv6 addresses count as the IPv4 address; anything unparsable is its own
    key (it cannot be grouped, but it must not raise inside a datagram handler).
    """
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = ipv4_prefix if addr.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


@functools.lru_cache(maxsize=SOURCE_KEY_CACHE)
def source_key(ip: str) -> str:
    """The key a source address is charged under: its IPv4 address, or its IPv6 /64."""
    # Cached: parsing the address costs ~5 us, more than the rest of a dropped datagram.
    return address_range(ip, 32, IPV6_SOURCE_PREFIX)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per key: ``rate`` tokens a second, at most ``burst`` saved up.

    ``charge`` may push a bucket into debt (down to ``-burst``): a source that sends junk
    pays more than one token per message and is then ignored until the debt is repaid.
    Memory is bounded: beyond ``max_keys`` the least recently charged key is forgotten
    (it comes back with a full bucket, which costs an attacker one burst per eviction).
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = DEFAULT_MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be positive, burst at least 1, max_keys at least 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.refused = 0

    def _bucket(self, key: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        return bucket

    def allow(self, key: str, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if the bucket holds them; False (and nothing taken) if not."""
        bucket = self._bucket(key)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return True
        self.refused += 1
        return False

    def charge(self, key: str, cost: float) -> None:
        """Take ``cost`` tokens whatever the balance (a penalty), down to ``-burst``."""
        bucket = self._bucket(key)
        bucket.tokens = max(-self.burst, bucket.tokens - cost)

    def retry_after(self, key: str, cost: float = 1.0) -> int:
        """Whole seconds until ``cost`` tokens will be there (at least 1)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 1
        missing = cost - bucket.tokens
        return max(1, math.ceil(missing / self.rate))

    def __len__(self) -> int:
        return len(self._buckets)


class DistinctCap:
    """At most ``limit`` distinct values per key within ``window`` seconds (e.g. publishers
    per address). Bounded: ``max_keys`` keys, each holding at most ``limit`` values."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_keys: int = DEFAULT_MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._seen: OrderedDict[str, dict[str, float]] = OrderedDict()

    def _values(self, key: str, now: float) -> dict[str, float]:
        values = self._seen.get(key)
        if values is None:
            values = self._seen[key] = {}
            if len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(key)
        for old in [v for v, seen in values.items() if seen + self.window <= now]:
            del values[old]
        return values

    def allows(self, key: str, value: str) -> bool:
        """True if ``value`` is, or could become, one of ``key``'s values (nothing recorded)."""
        values = self._values(key, self._clock())
        return value in values or len(values) < self.limit

    def admit(self, key: str, value: str) -> bool:
        """Record ``value`` for ``key`` if the cap allows; whether it did."""
        now = self._clock()
        values = self._values(key, now)
        if value not in values and len(values) >= self.limit:
            return False
        values[value] = now
        return True

    def retry_after(self, key: str) -> int:
        """Whole seconds until ``key``'s oldest value leaves the window (at least 1)."""
        values = self._seen.get(key)
        if not values:
            return 1
        return max(1, math.ceil(min(values.values()) + self.window - self._clock()))
