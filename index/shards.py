"""Term shards: what this node's index says about one term, for peers to merge.

tantivy scores a query term as the sum over the searched fields of boost x idf_field x
tf-norm. A shard therefore carries, per field, the term's local document frequency, and for
each of its top-K pages the IDF-free part (boost x tf-norm) per field. A querying node sums
the df of every publisher per field, computes each field's global IDF, and scores every
publisher's pages on one scale, the way one index over all their pages would.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import tantivy

from .schema import FIELD_BOOSTS

DEFAULT_TOP_K = 50
SHARD_FIELDS = ("title", "body", "anchor", "description")
MAX_TERM_CHARS = 40

FieldWeights = tuple[float, ...]  # one entry per SHARD_FIELDS


@dataclass(slots=True, frozen=True)
class Posting:
    url: str
    title: str
    weights: FieldWeights  # boost x tf-norm per field

    @property
    def weight(self) -> float:
        return sum(self.weights)


@dataclass(slots=True, frozen=True)
class TermShard:
    term: str
    df: int  # documents with the term in any field
    n_docs: int
    field_df: tuple[int, ...]  # per SHARD_FIELDS
    postings: tuple[Posting, ...]

    def to_json(self) -> list[Any]:
        return [
            self.df,
            self.n_docs,
            list(self.field_df),
            [[p.url, p.title, [round(w, 4) for w in p.weights]] for p in self.postings],
        ]

    @classmethod
    def from_json(cls, term: str, data: Any) -> TermShard:
        df, n_docs, field_df, postings = data
        if len(field_df) != len(SHARD_FIELDS):
            raise ValueError("shard has the wrong number of fields")
        return cls(
            term=str(term),
            df=int(df),
            n_docs=int(n_docs),
            field_df=tuple(int(d) for d in field_df),
            postings=tuple(Posting(str(u), str(t), _weights(w)) for u, t, w in postings),
        )


def _weights(raw: Sequence[Any]) -> FieldWeights:
    if len(raw) != len(SHARD_FIELDS):
        raise ValueError("posting has the wrong number of fields")
    return tuple(min(max(float(w), 0.0), MAX_FIELD_WEIGHT) for w in raw)


# boost x tf-norm is at most boost x (k1 + 1) = 3 x 2.2 in tantivy's BM25; anything larger
# is a peer lying about its pages.
MAX_FIELD_WEIGHT = max(FIELD_BOOSTS.values()) * 2.2 + 1e-6


def bm25_idf(df: int, n_docs: int) -> float:
    """tantivy's (Lucene's) BM25 IDF."""
    return math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))


def all_terms(searcher: tantivy.Searcher) -> set[str]:
    terms: set[str] = set()
    for field in SHARD_FIELDS:
        terms.update(t for t, _count in searcher.terms_with_prefix(field, ""))
    return {t for t in terms if 0 < len(t) <= MAX_TERM_CHARS}


def _field_hits(
    searcher: tantivy.Searcher,
    schema: tantivy.Schema,
    term: str,
    n_docs: int,
    limit: int,
    restrict: tantivy.Query | None = None,
) -> tuple[list[int], dict[tuple[int, int], list[float]], dict[tuple[int, int], Any]]:
    """Per field: df, and boost x tf-norm of the term's best pages (within ``restrict``)."""
    field_df: list[int] = []
    weights: dict[tuple[int, int], list[float]] = {}
    addresses: dict[tuple[int, int], Any] = {}
    for i, field in enumerate(SHARD_FIELDS):
        df = int(searcher.doc_freq(field, term))
        field_df.append(df)
        if not df:
            continue
        idf = bm25_idf(df, n_docs) or 1e-6
        query = tantivy.Query.term_query(schema, field, term)
        if restrict is not None:
            query = tantivy.Query.boolean_query(
                [(tantivy.Occur.Must, query), (tantivy.Occur.Must, restrict)]
            )
        for score, address in searcher.search(query, limit=limit).hits:
            key = (address.segment_ord, address.doc)
            w = weights.setdefault(key, [0.0] * len(SHARD_FIELDS))
            w[i] = FIELD_BOOSTS[field] * float(score) / idf
            addresses[key] = address
    return field_df, weights, addresses


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
        field_df, weights, addresses = _field_hits(searcher, schema, term, n_docs, top_k)
        if not weights:
            continue
        df = int(
            getattr(searcher.search(_any_field(schema, term), limit=1, count=True), "count", 0)
        )
        best = sorted(weights, key=lambda k: sum(weights[k]), reverse=True)[:top_k]
        postings = []
        for key in best:
            fields = docs.get(key)
            if fields is None:
                doc = searcher.doc(addresses[key])
                fields = docs[key] = (
                    str(doc.get_first("url") or ""),
                    str(doc.get_first("title") or ""),
                )
            postings.append(Posting(fields[0], fields[1], tuple(weights[key])))
        shards.append(
            TermShard(
                term=term,
                df=max(df, 1),
                n_docs=n_docs,
                field_df=tuple(field_df),
                postings=tuple(postings),
            )
        )
    return shards


def term_weights(
    searcher: tantivy.Searcher, schema: tantivy.Schema, urls: list[str], terms: list[str]
) -> dict[str, dict[str, list[float]]]:
    """Per-field weights of each term in each of ``urls`` (as in the shards), so a querying
    node can score this node's pages exactly with global statistics."""
    n_docs = searcher.num_docs
    out: dict[str, dict[str, list[float]]] = {u: {} for u in urls}
    if not urls or not n_docs:
        return out
    only = tantivy.Query.const_score_query(tantivy.Query.term_set_query(schema, "url", urls), 0.0)
    for term in terms:
        _df, weights, addresses = _field_hits(searcher, schema, term, n_docs, len(urls), only)
        for key, w in weights.items():
            url = str(searcher.doc(addresses[key]).get_first("url") or "")
            if url in out:
                out[url][term] = w
    return out


def _any_field(schema: tantivy.Schema, term: str) -> tantivy.Query:
    return tantivy.Query.boolean_query(
        [(tantivy.Occur.Should, tantivy.Query.term_query(schema, f, term)) for f in SHARD_FIELDS]
    )
