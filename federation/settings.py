"""The federation's tunables, in one frozen object (each default beside its reason)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class FederationSettings:
    # --- placement -------------------------------------------------------------------
    replicas: int = 3  # holders per term
    # Holders each term is read from at once: with two, a holder that withholds a
    # publisher's copy is outvoted and named (a lookup costs one more request a term).
    replicas_read: int = 2
    # First self-lookup this many seconds after start, doubling up to ``neighbourhood_every``:
    # the library refreshes buckets hourly, too late for nodes that (re)started together.
    neighbourhood_first: float = 2.0
    neighbourhood_every: float = 300.0
    # --- publishing ------------------------------------------------------------------
    publish_quiet: float = 1.0  # seconds after the last commit before shards are rebuilt
    publish_batch_terms: int = 5_000
    # A holder verifies, decompresses and stores a batch of thousands of terms: on a busy
    # home server that takes seconds, and giving up early only makes it all be sent again.
    push_timeout: float = 60.0
    publish_retry: float = 2.0  # seconds before shards a holder missed go again; doubles
    max_publish_retry: float = 60.0
    # --- amortised publishing (issue #13) ---------------------------------------------
    # While commits keep coming, a publish at most this often, of the terms no holder has
    # yet (a crawled page is findable by its rarer words within this many seconds) ...
    publish_every: float = 30.0
    # ... and every touched term (common words too) this often; all of them at a pause.
    # Small corpus, lone node, before: every term re-sent after nearly every commit.
    publish_refresh: float = 300.0
    # Every term rebuilt and placed again this often: copies expire after 24 h
    # (shard_store.DEFAULT_SHARD_TTL), so twice in a lifetime keeps one placed.
    republish_every: float = 12 * 3600.0
    # --- holding ---------------------------------------------------------------------
    # Seconds between deletions of expired copies (and once at start): a copy lives 24 h,
    # so this keeps at most ~1% of the budget dead, for one indexed DELETE a run.
    expire_every: float = 600.0
    # --- host slices -----------------------------------------------------------------
    forward_batch: int = 1_000  # URLs a request when forwarding to a host's owner
    # --- querying --------------------------------------------------------------------
    query_deadline: float = 2.0  # one deadline for a whole federated query
    lookup_budget: float = 0.25  # of the deadline, for finding the query's holders
    peer_timeout: float = 1.5  # one peer request
    backoff_seconds: float = 60.0  # a peer that failed is not asked again for this long
    shard_cache_seconds: float = 30.0  # how stale a query's view of a term may be
    # Postings the query-term cache holds: ~107 MB at most, at 616 B each (``shard_cache.py``)
    # and ~100 B more for their columns (``TermShard.columns``: 581 -> 681 B, tracemalloc).
    # Terms found cached over the large-corpus bench's 300 tune queries (8 publishers, 940
    # distinct terms, 265k postings in all): 0.44 at 50k, 0.57 at 100k, 0.64 at 150k, 0.68
    # unbounded; at 50k the querier spent 48 instead of 31 ms of CPU a query re-fetching and
    # re-checking shards.
    shard_cache_postings: int = 150_000
    candidates: int = 50  # shard candidates ranked for owners and the result list
    # Owners asked for their own ranking: first those of the best shard candidates, then
    # the publishers likeliest to hold the answer by their term summaries (CORI,
    # federation/selection.py). Measured in-process on the data of a real 8-node
    # large-corpus run, 300 tune-half queries, MRR@10 (by candidates + by summaries):
    # 4 + 0 (the old choice) 0.585, 0 + 4 0.591, 2 + 2 0.621, 3 + 1 0.629, 3 + 2 0.628,
    # 2 + 3 0.656, 3 + 3 0.670. On 5 one-site small nodes, 911 tune queries: 0.787 with
    # the old choice, 0.784 with 2 + 2. Each owner asked is a search on someone's home
    # server, run in parallel with the others: six is a page of results from each.
    owners_asked: int = 6
    owners_by_candidates: int = 3
    # A second owner is taken from the candidates only within this share of the best
    # one's score.
    owner_score_share: float = 0.25
    # A publisher is asked by its summaries only if its belief above the floor is at
    # least this share of the best publisher's (0: up to owners_asked, whatever they say).
    # In-process, tune half (session 11), MRR@10 and owners asked a query, share 0 / 0.5 /
    # 0.7 / 0.85: 5 one-site small nodes (911 queries) .794 / .794 / .794 / .792 with
    # 4.97 / 4.64 / 4.01 / 3.19 owners; 12 one-site large nodes (200 queries) .716 / .716 /
    # .711 / .704 with 5.96 / 4.61 / 4.20 / 3.75. Each owner is ~6 ms of someone's CPU a
    # query, and on the bench's two cores the small network's p50 is ~0.7 x the CPU of all
    # its nodes.
    owner_belief_share: float = 0.7
    owner_depth: int = 10  # results each owner returns (at least a page)
    # Shard candidates that get snippets: this many pages' worth. 1 leaves one result in
    # eight a bare title (none: one in five) at no measurable cost; 2 leaves one in 125 but
    # cost the bench's median 5-6 ms (docs/BENCHMARKS.md).
    snippet_pages: int = 1
    # An owner makes snippets for as many of its hits as the shards put on the first page,
    # plus this many (its own ranking, with proximity, may lift others there); a hit of its
    # that reaches the page anyway is asked for in a second, small request. Making them all
    # took half of an owner's CPU: 2.8 of 5.1 ms per search over a small-corpus site.
    snippet_margin: int = 3


DEFAULT_SETTINGS = FederationSettings()
