"""The querying node's memory of recent query terms' merged shards.

Common words recur in most queries, and a shard changes at most once a publish, so a term
fetched in the last ``shard_cache_seconds`` is not fetched again. The cache is bounded by
the postings it holds, not by terms: a term's entry holds one shard per publisher, so its
size grows with the network (203 KB a term with 8 large-corpus publishers, at 616 B a
decoded posting); bounded at 20,000 terms it could have grown to 4 GB. The budget is
``FederationSettings.shard_cache_postings``. Stale terms are dropped as they are asked for
and by ``expire``, which the network runs every ``shard_cache_seconds``: a querier that
stopped being asked kept its last burst's shards (up to the whole budget) for ever.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from rhizome.index import TermShard


@dataclass(slots=True, frozen=True)
class CachedTerm:
    fetched_at: float  # time.monotonic()
    shards: dict[str, TermShard]  # publisher -> its newest verified shard
    withheld: dict[str, list[str]]  # holder -> the publishers it did not serve

    @property
    def postings(self) -> int:
        # A shard without postings still costs its statistics: count it as one.
        return sum(max(1, len(s.postings)) for s in self.shards.values())


class ShardCache:
    """Least recently used terms first out, once ``max_postings`` is passed or ``ttl``
    seconds have gone by since a term was fetched."""

    def __init__(self, ttl: float, max_postings: int) -> None:
        self.ttl = ttl
        self.max_postings = max_postings
        self.postings = 0  # held now
        self._terms: OrderedDict[str, CachedTerm] = OrderedDict()

    def __len__(self) -> int:
        return len(self._terms)

    def get(self, term: str, now: float) -> CachedTerm | None:
        found = self._terms.get(term)
        if found is None:
            return None
        if now - found.fetched_at >= self.ttl:
            self._drop(term)
            return None
        self._terms.move_to_end(term)
        return found

    def put(self, term: str, entry: CachedTerm) -> None:
        if term in self._terms:
            self._drop(term)
        self._terms[term] = entry
        self.postings += entry.postings
        while self.postings > self.max_postings and self._terms:
            self._drop(next(iter(self._terms)))

    def expire(self, now: float) -> int:
        """Drop every term fetched ``ttl`` or more seconds before ``now``; how many went."""
        stale = [t for t, entry in self._terms.items() if now - entry.fetched_at >= self.ttl]
        for term in stale:
            self._drop(term)
        return len(stale)

    def _drop(self, term: str) -> None:
        self.postings -= self._terms.pop(term).postings
