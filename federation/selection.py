"""Which publishers a query should ask: resource selection from per-term summaries.

A term's shard lists only its publisher's top postings, so a page that matches every word
of a description moderately tops no term's list, and the owner of the best shard
candidates is often not the owner of the answer. Every shard also carries its
publisher's summary of the term (df, and N), which is what federated search engines rank
collections by. CORI (Callan, Lu & Croft 1995) turns those into a belief per publisher:
for each query term, ``T = df / (df + DF_BASE + DF_LENGTH * N / mean N)`` (how much of
the publisher is about the term, damped for large publishers) times
``I = log((P + 0.5) / cf) / log(P + 1)`` (how few of the P publishers have it at all),
averaged over the terms with a floor ``DEFAULT_BELIEF`` for a term a publisher lacks.

Measured on the tune half of the large corpus's judged queries (8 nodes, 600 queries,
replayed in-process on the data of a real run): the answer's owner is the first choice
for 75% of queries by belief and 61% by best shard candidate, among the first four 96%
and 91%.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from rhizome.index import TermShard

DF_BASE = 50.0  # CORI's constants, as published: they held on this corpus unchanged
DF_LENGTH = 150.0
DEFAULT_BELIEF = 0.4
BELIEF_WEIGHT = 1.0 - DEFAULT_BELIEF


def publisher_beliefs(merged: Mapping[str, Mapping[str, TermShard]]) -> dict[str, float]:
    """Each publisher's CORI belief for the query whose terms' shards are ``merged``
    (term -> publisher -> shard); higher means more likely to hold what it asks for."""
    terms = [copies for copies in merged.values() if copies]
    n_docs: dict[str, int] = {}
    for copies in terms:
        for publisher, copy in copies.items():
            n_docs[publisher] = max(n_docs.get(publisher, 0), copy.n_docs)
    if not n_docs:
        return {}
    publishers = len(n_docs)
    mean_n = sum(n_docs.values()) / publishers
    spread = math.log(publishers + 1.0)
    belief = dict.fromkeys(n_docs, 0.0)
    for copies in terms:
        rarity = math.log((publishers + 0.5) / len(copies)) / spread
        for publisher in n_docs:
            shard = copies.get(publisher)
            if shard is None:
                belief[publisher] += DEFAULT_BELIEF
                continue
            damped = DF_BASE + DF_LENGTH * n_docs[publisher] / mean_n
            belief[publisher] += (
                DEFAULT_BELIEF + BELIEF_WEIGHT * shard.df / (shard.df + damped) * rarity
            )
    return {p: b / len(terms) for p, b in belief.items()}


def likely_publishers(merged: Mapping[str, Mapping[str, TermShard]], share: float) -> list[str]:
    """Publishers by belief, best first, down to those whose belief above the floor
    (``DEFAULT_BELIEF``, what a publisher lacking every word gets) is at least ``share`` of
    the best one's: one with a word on one page in a thousand holds the answer by accident."""
    beliefs = publisher_beliefs(merged)
    best = max(beliefs.values(), default=DEFAULT_BELIEF)
    floor = DEFAULT_BELIEF + share * (best - DEFAULT_BELIEF)
    ranked = sorted(beliefs, key=lambda p: (-beliefs[p], p))
    return [p for p in ranked if beliefs[p] >= floor]
