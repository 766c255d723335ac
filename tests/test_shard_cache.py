"""The querier's cache of recent terms' shards is bounded by the postings it holds."""

from __future__ import annotations

from rhizome.federation.shard_cache import CachedTerm, ShardCache
from rhizome.index import Posting, TermShard


def shards(publishers: int, postings: int) -> dict[str, TermShard]:
    return {
        f"p{i}": TermShard(
            term="word",
            df=postings,
            n_docs=1_000,
            field_df=(postings, 0, 0, 0, 0),
            postings=tuple(
                Posting(f"http://h{i}.example/{n}", "", (1.0, 0, 0, 0, 0)) for n in range(postings)
            ),
            avgdl=(3.0, 100.0, 0.0, 0.0, 4.0),
        )
        for i in range(publishers)
    }


def test_terms_with_more_publishers_take_more_of_the_budget() -> None:
    cache = ShardCache(ttl=30.0, max_postings=1_000)
    for n in range(10):  # 100 postings a term: all ten fit
        cache.put(f"small{n}", CachedTerm(0.0, shards(2, 50), {}))
    assert len(cache) == 10 and cache.postings == 1_000
    cache.put("popular", CachedTerm(0.0, shards(8, 50), {}))  # 400 postings
    assert cache.postings <= 1_000
    assert cache.get("popular", 1.0) is not None
    assert [cache.get(f"small{n}", 1.0) is None for n in range(10)] == [True] * 4 + [False] * 6


def test_a_term_read_again_is_kept_over_older_ones() -> None:
    cache = ShardCache(ttl=30.0, max_postings=300)
    for term in ("a", "b", "c"):
        cache.put(term, CachedTerm(0.0, shards(1, 100), {}))
    assert cache.get("a", 1.0) is not None
    cache.put("d", CachedTerm(0.0, shards(1, 100), {}))
    assert cache.get("b", 1.0) is None
    assert all(cache.get(t, 1.0) is not None for t in ("a", "c", "d"))


def test_a_stale_term_is_fetched_again_and_frees_its_room() -> None:
    cache = ShardCache(ttl=30.0, max_postings=1_000)
    cache.put("a", CachedTerm(0.0, shards(3, 50), {"h1": ["p0"]}))
    assert cache.get("a", 29.9) is not None
    assert cache.get("a", 30.0) is None
    assert cache.postings == 0 and len(cache) == 0
    cache.put("a", CachedTerm(31.0, shards(1, 10), {}))
    cache.put("a", CachedTerm(32.0, shards(1, 20), {}))  # replaced, not counted twice
    assert cache.postings == 20


def test_an_idle_querier_forgets_stale_terms_nobody_asks_for_again() -> None:
    """A burst of queries filled the cache, then nobody searched: the stale terms must go
    (and their memory with them) without waiting for a query to ask for them."""
    cache = ShardCache(ttl=30.0, max_postings=1_000)
    cache.put("old", CachedTerm(0.0, shards(3, 50), {}))
    cache.put("older", CachedTerm(-5.0, shards(2, 50), {}))
    cache.put("fresh", CachedTerm(20.0, shards(1, 40), {}))
    assert cache.expire(24.9) == 0 and cache.postings == 290
    assert cache.expire(30.0) == 2  # "older" since 25, "old" since 30
    assert len(cache) == 1 and cache.postings == 40
    assert cache.get("fresh", 30.0) is not None
    assert cache.expire(50.0) == 1 and cache.postings == 0
