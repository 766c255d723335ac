"""Term shards: what this node's index says about one term, for peers to merge.

A shard carries the term's local document frequency and document count, and its top-K
postings with an IDF-free weight: tantivy's field-boosted BM25 score divided by the local
IDF. A querying node multiplies the weights by the IDF computed from the df and N of every
publisher, so pages from every node are scored on the same scale.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import tantivy

from .schema import FIELD_BOOSTS

DEFAULT_TOP_K = 30
SHARD_FIELDS = ("title", "body", "anchor", "description")
MAX_TERM_CHARS = 40


@dataclass(slots=True, frozen=True)
class Posting:
    url: str
    title: str
    weight: float


@dataclass(slots=True, frozen=True)
class TermShard:
    term: str
    df: int
    n_docs: int
    postings: tuple[Posting, ...]

    def to_json(self) -> list[Any]:
        return [self.df, self.n_docs, [[p.url, p.title, round(p.weight, 4)] for p in self.postings]]

    @classmethod
    def from_json(cls, term: str, data: Any) -> TermShard:
        df, n_docs, postings = data
        return cls(
            term=str(term),
            df=int(df),
            n_docs=int(n_docs),
            postings=tuple(Posting(str(u), str(t), float(w)) for u, t, w in postings),
        )


def bm25_idf(df: int, n_docs: int) -> float:
    """tantivy's (Lucene's) BM25 IDF."""
    return math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))


def all_terms(searcher: tantivy.Searcher) -> set[str]:
    terms: set[str] = set()
    for field in SHARD_FIELDS:
        terms.update(t for t, _count in searcher.terms_with_prefix(field, ""))
    return {t for t in terms if 0 < len(t) <= MAX_TERM_CHARS}


def build_shards(
    searcher: tantivy.Searcher,
    schema: tantivy.Schema,
    terms: Iterable[str],
    *,
    top_k: int = DEFAULT_TOP_K,
) -> list[TermShard]:
    """Shards for ``terms`` (already analysed). Runs on a thread: tantivy releases the GIL."""
    n_docs = searcher.num_docs
    if n_docs == 0:
        return []
    docs: dict[tuple[int, int], tuple[str, str]] = {}
    shards: list[TermShard] = []
    for term in terms:
        # Per field: tantivy's score is boost x idf_f x tf-norm; dividing by that field's
        # own idf leaves boost x tf-norm, bounded and comparable across nodes.
        weights: dict[tuple[int, int], float] = {}
        addresses: dict[tuple[int, int], Any] = {}
        for field in SHARD_FIELDS:
            field_df = searcher.doc_freq(field, term)
            if not field_df:
                continue
            boost = FIELD_BOOSTS[field]
            idf = bm25_idf(field_df, n_docs) or 1e-6
            query = tantivy.Query.term_query(schema, field, term)
            for score, address in searcher.search(query, limit=top_k).hits:
                key = (address.segment_ord, address.doc)
                weights[key] = weights.get(key, 0.0) + boost * float(score) / idf
                addresses[key] = address
        if not weights:
            continue
        df = int(
            getattr(searcher.search(_any_field(schema, term), limit=1, count=True), "count", 0)
        )
        best = sorted(weights, key=weights.__getitem__, reverse=True)[:top_k]
        postings = []
        for key in best:
            fields = docs.get(key)
            if fields is None:
                doc = searcher.doc(addresses[key])
                fields = docs[key] = (
                    str(doc.get_first("url") or ""),
                    str(doc.get_first("title") or ""),
                )
            postings.append(Posting(fields[0], fields[1], weights[key]))
        shards.append(TermShard(term=term, df=max(df, 1), n_docs=n_docs, postings=tuple(postings)))
    return shards


def _any_field(schema: tantivy.Schema, term: str) -> tantivy.Query:
    return tantivy.Query.boolean_query(
        [(tantivy.Occur.Should, tantivy.Query.term_query(schema, f, term)) for f in SHARD_FIELDS]
    )
