"""Who holds a key: the nodes closest to it in the whole network, found by lookups.

A routing table knows its own neighbourhood well and the rest of the id space only
sparsely (k contacts per bucket), so "the closest nodes in my table" is the true answer
only in small networks; two nodes with different tables would pick different holders.
A Kademlia lookup finds the true closest nodes, at ~log N round trips, and one lookup
answers for many keys: if a lookup of K returned the ``width`` nodes closest to K, all
within distance r, then no node outside them is closer to a key K' than r - d(K, K')
(the XOR metric obeys the triangle inequality). So the ``count`` closest to K' are known
whenever the count-th closest of the set is within that bound. A lookup that returned
fewer than ``width`` nodes saw the whole network and answers for every key.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from .contacts import Peer

LOOKUP_WIDTH = 20  # nodes asked of one lookup (Kademlia's k): the set reused for nearby keys
HOLDER_TTL = 120.0  # seconds a lookup's answer is reused; joins and deaths show up after it
MAX_LOOKUPS_CACHED = 4_096
NEIGHBOURS_CHECKED = 2  # cached lookups tried on each side of a key, in key order

Lookup = Callable[[bytes, int], Awaitable[list[Peer]]]


def distance(a: bytes, b: bytes) -> int:
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


@dataclass(slots=True, frozen=True)
class _Found:
    key: int
    peers: tuple[Peer, ...]
    radius: int | None  # None: the lookup saw every node there is
    at: float


class HolderMap:
    """The ``count`` nodes closest to keys, from as few lookups as possible."""

    def __init__(
        self,
        lookup: Lookup,
        *,
        width: int = LOOKUP_WIDTH,
        ttl: float = HOLDER_TTL,
        max_cached: int = MAX_LOOKUPS_CACHED,
    ) -> None:
        self._lookup = lookup
        self.width = width
        self.ttl = ttl
        self.max_cached = max_cached
        self._keys: list[int] = []  # sorted, parallel to _found
        self._found: list[_Found] = []
        self.lookups = 0  # lookups run (for status and benchmarks)

    def clear(self) -> None:
        self._keys.clear()
        self._found.clear()

    def cached(self, key: bytes, count: int) -> list[Peer] | None:
        """The ``count`` closest nodes to ``key`` if a cached lookup proves them."""
        now = time.monotonic()
        target = int.from_bytes(key, "big")
        at = bisect.bisect_left(self._keys, target)
        lo, hi = max(0, at - NEIGHBOURS_CHECKED), min(len(self._keys), at + NEIGHBOURS_CHECKED)
        for found in self._found[lo:hi]:
            if now - found.at > self.ttl:
                continue
            ranked = sorted(found.peers, key=lambda p: distance(p.node_id, key))
            best = ranked[:count]
            if found.radius is None:
                return best
            if len(best) < count:
                continue
            bound = found.radius - (found.key ^ target)
            if distance(best[-1].node_id, key) <= bound:
                return best
        return None

    async def holders(self, key: bytes, count: int) -> list[Peer]:
        hit = self.cached(key, count)
        if hit is not None:
            return hit
        peers = await self._lookup(key, self.width)
        self.lookups += 1
        self._remember(key, peers)
        return sorted(peers, key=lambda p: distance(p.node_id, key))[:count]

    async def holders_of(self, keys: Iterable[bytes], count: int) -> dict[bytes, list[Peer]]:
        """Holders of many keys; in key order, so each lookup serves its neighbours."""
        out: dict[bytes, list[Peer]] = {}
        for key in sorted(set(keys)):
            out[key] = await self.holders(key, count)
        return out

    def _remember(self, key: bytes, peers: list[Peer]) -> None:
        target = int.from_bytes(key, "big")
        radius = None if len(peers) < self.width else max(distance(p.node_id, key) for p in peers)
        found = _Found(target, tuple(peers), radius, time.monotonic())
        if len(self._found) >= self.max_cached:
            oldest = min(range(len(self._found)), key=lambda i: self._found[i].at)
            del self._keys[oldest], self._found[oldest]
        at = bisect.bisect_left(self._keys, target)
        self._keys.insert(at, target)
        self._found.insert(at, found)
