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


def term_query(schema: tantivy.Schema, term: str) -> tantivy.Query:
    """The analysed term over every searched field, with the index's boosts."""
    return tantivy.Query.boolean_query(
        [
            (
                tantivy.Occur.Should,
                tantivy.Query.boost_query(tantivy.Query.term_query(schema, field, term), boost),
            )
            for field, boost in FIELD_BOOSTS.items()
            if field in SHARD_FIELDS
        ]
    )


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
        result = searcher.search(term_query(schema, term), limit=top_k, count=True)
        df = int(getattr(result, "count", 0) or 0)
        if df == 0:
            continue
        idf = bm25_idf(df, n_docs) or 1e-6
        postings = []
        for score, address in result.hits:
            key = (address.segment_ord, address.doc)
            fields = docs.get(key)
            if fields is None:
                doc = searcher.doc(address)
                url = doc.get_first("url") or ""
                title = doc.get_first("title") or ""
                fields = docs[key] = (str(url), str(title))
            postings.append(Posting(fields[0], fields[1], float(score) / idf))
        shards.append(TermShard(term=term, df=df, n_docs=n_docs, postings=tuple(postings)))
    return shards
