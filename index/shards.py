"""Term shards: what this node's index says about one term, for peers to merge.

tantivy scores a query term as the sum over the searched fields of boost x idf_field x
tf-norm. A shard therefore carries, per field, the term's local document frequency, and for
each of its top-K pages the IDF-free part (boost x tf-norm) per field and the page's field
lengths; and the publisher's average field lengths. A querying node sums the df of every
publisher per field, computes each field's global IDF and average length, re-normalises
every tf-norm to that average (``renormalize``), and so scores every publisher's pages on
one scale, the way one index over all their pages would.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, NamedTuple

import tantivy

from .query import Unit, unit_key
from .schema import FIELD_BOOSTS, url_words

DEFAULT_TOP_K = 50
MAX_POSTINGS_PER_SHARD = 50  # a publisher's influence on a term is capped at this many pages
MAX_DOCS_PER_PUBLISHER = 100_000_000  # a claimed N beyond this is a lie that skews every IDF
WEIGHT_DECIMALS = 4
SHARD_FIELDS = ("title", "body", "anchor", "description", "url_words")
MAX_TERM_CHARS = 40

FieldWeights = tuple[float, ...]  # one entry per SHARD_FIELDS
FieldLengths = tuple[int, ...]  # tokens per SHARD_FIELDS field; 0 = not known
NO_LENGTHS: FieldLengths = (0,) * len(SHARD_FIELDS)
# tantivy's BM25 constants.
K1 = 1.2
B = 0.75
MAX_FIELD_LENGTH = 10_000_000  # more tokens than a capped page can hold: a peer lying
AVGDL_PROBES = 8
_TOKEN = re.compile(r"[^\W_]+")  # what the simple tokenizer calls a token


class Posting(NamedTuple):
    """One page of a term's shard. A tuple, not a dataclass: a querying node builds
    hundreds of these per query, and a frozen dataclass costs three times as much."""

    url: str
    title: str
    weights: FieldWeights  # boost x tf-norm per field
    lengths: FieldLengths = NO_LENGTHS

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
    avgdl: tuple[float, ...] = (0.0,) * len(SHARD_FIELDS)  # the publisher's, per field

    def to_json(self) -> list[Any]:
        return [
            self.df,
            self.n_docs,
            list(self.field_df),
            [[p.url, p.title, list(p.weights), list(p.lengths)] for p in self.postings],
            list(self.avgdl),
        ]

    @classmethod
    def from_json(cls, term: str, data: Any) -> TermShard:
        """A shard as some peer sent or served it, within what one publisher may claim:
        at most ``MAX_POSTINGS_PER_SHARD`` pages, counts up to ``MAX_DOCS_PER_PUBLISHER``,
        weights and lengths clamped. Every reader parses through here, so a holder may
        store and serve shards as they were sent (a hostile holder gains nothing)."""
        df, n_docs, field_df, postings, avgdl = data
        if len(field_df) != len(SHARD_FIELDS):
            raise ValueError("shard has the wrong number of fields")
        n = min(max(int(n_docs), 0), MAX_DOCS_PER_PUBLISHER)
        return cls(
            term=str(term),
            df=min(max(int(df), 0), n),
            n_docs=n,
            field_df=tuple(min(max(int(d), 0), n) for d in field_df),
            postings=_postings(postings[:MAX_POSTINGS_PER_SHARD]),
            avgdl=average_lengths(avgdl),
        )


_FIELDS = len(SHARD_FIELDS)
_NUMBERS = {float, int}


def _postings(rows: Sequence[Any]) -> tuple[Posting, ...]:
    """A shard's postings, bounded. A querying node parses hundreds per query, so the
    honest case (every value a float or int in range) is checked for the whole shard at
    once; anything else goes through the per-posting checks, which clamp or refuse."""
    try:
        if not rows:
            return ()
        urls, titles, weights, lengths = zip(*rows, strict=True)
        flat_w = list(chain.from_iterable(weights))
        flat_l = list(chain.from_iterable(lengths))
        if (
            len(flat_w) == len(flat_l) == _FIELDS * len(rows)
            and set(map(len, weights)) == set(map(len, lengths)) == {_FIELDS}
            and set(map(type, urls)) == set(map(type, titles)) == {str}
            and set(map(type, flat_w)) <= _NUMBERS
            and set(map(type, flat_l)) == {int}
            and min(flat_w) >= 0.0
            and max(flat_w) <= MAX_FIELD_WEIGHT
            and (total := sum(flat_w)) == total  # min and max let a NaN in the middle pass
            and min(flat_l) >= 0
            and max(flat_l) <= MAX_FIELD_LENGTH
        ):
            return tuple(map(Posting, urls, titles, map(tuple, weights), map(tuple, lengths)))
    except (TypeError, ValueError):
        pass  # a malformed row: the checks below say which and how
    return tuple(Posting(str(u), str(t), _weights(w), field_lengths(dl)) for u, t, w, dl in rows)


_MAX_TF_NORM = tuple(FIELD_BOOSTS[f] * (K1 + 1.0) for f in SHARD_FIELDS)  # boost x (k1 + 1)


def _weights(raw: Sequence[Any]) -> FieldWeights:
    """A peer's claimed weights, each within [0, MAX_FIELD_WEIGHT] (NaN becomes 0).
    A querying node parses thousands of these per query: the honest case is checked in
    bulk, the clamping done one by one only when something is out of range."""
    if len(raw) != _FIELDS:
        raise ValueError("posting has the wrong number of fields")
    weights = tuple(map(float, raw))
    total = sum(weights)
    if total == total and min(weights) >= 0.0 and max(weights) <= MAX_FIELD_WEIGHT:
        return weights
    return tuple(min(w, MAX_FIELD_WEIGHT) if w > 0.0 else 0.0 for w in weights)


def field_lengths(raw: Any) -> FieldLengths:
    """A peer's claimed field lengths, bounded (all 0, unknown, when malformed)."""
    if not isinstance(raw, list) or len(raw) != _FIELDS:
        return NO_LENGTHS
    try:
        lengths = tuple(map(int, raw))
    except (TypeError, ValueError, OverflowError):
        return NO_LENGTHS
    if min(lengths) >= 0 and max(lengths) <= MAX_FIELD_LENGTH:
        return lengths
    return tuple(min(max(n, 0), MAX_FIELD_LENGTH) for n in lengths)


def average_lengths(raw: Any) -> tuple[float, ...]:
    """A peer's claimed average field lengths, bounded (all 0, unknown, when malformed)."""
    if not isinstance(raw, list) or len(raw) != len(SHARD_FIELDS):
        return (0.0,) * len(SHARD_FIELDS)
    try:
        values = [float(a) for a in raw]
    except (TypeError, ValueError):
        return (0.0,) * len(SHARD_FIELDS)
    # (NaN fails every comparison: it becomes 0, unknown.)
    return tuple(min(a, float(MAX_FIELD_LENGTH)) if a > 0.0 else 0.0 for a in values)


def renormalize(
    weights: Sequence[float],
    lengths: Sequence[int],
    avgdl_from: Sequence[float],
    avgdl_to: Sequence[float],
) -> FieldWeights:
    """boost x tf-norm computed against one index's average field lengths, re-computed
    against another's (the whole network's). tf-norm = tf / (tf + K1 (1 - B + B dl/avgdl))
    gives back tf from the weight and dl; a field whose length or averages are unknown
    keeps its weight. (A querying node runs this for every posting it is sent.)"""
    out = list(weights)
    for i, w in enumerate(weights):
        if w <= 0.0:
            continue
        dl, a_to = lengths[i], avgdl_to[i]
        tf = _recovered_tf(i, w, dl, avgdl_from[i])
        if tf is None or a_to <= 0.0:
            continue
        out[i] = _MAX_TF_NORM[i] * tf / (tf + K1 * (1.0 - B + B * dl / a_to))
    return tuple(out)


def _recovered_tf(i: int, weight: float, dl: int, avgdl: float) -> float | None:
    """The term frequency behind field ``i``'s boost x tf-norm ``weight`` (> 0) at field
    length ``dl`` and average ``avgdl``; None where it cannot be told (unknown lengths, or
    a weight at the ceiling)."""
    norm = weight / _MAX_TF_NORM[i]
    if dl <= 0 or avgdl <= 0.0 or norm >= 0.999:
        return None
    return norm * K1 * (1.0 - B + B * dl / avgdl) / (1.0 - norm)


def content_key(shard: TermShard) -> int:
    """A hash of what ``shard`` says that does not move with the publisher's average field
    lengths or document count: its df and each posting's page, lengths and term frequency
    (recovered from the weight). Every commit shifts the averages and so every weight; a
    publisher that compared whole shards re-sent its entire index after each commit."""
    postings = tuple(
        (
            p.url,
            p.title,
            p.lengths,
            tuple(_tf(i, w, p.lengths[i], shard.avgdl[i]) for i, w in enumerate(p.weights)),
        )
        for p in shard.postings
    )
    return hash((shard.term, shard.df, shard.field_df, postings))


def _tf(i: int, weight: float, dl: int, avgdl: float) -> float:
    if weight <= 0.0:
        return 0.0
    tf = _recovered_tf(i, weight, dl, avgdl)
    return round(weight, 2) if tf is None else float(round(tf))


# tantivy keeps a field's length in one byte, as Lucene does: exact below 24 tokens, then
# 3 significant bits (rounding down). BM25 sees that value, so the federated side must too.
_EXACT_LENGTHS = 24


def quantized_length(tokens: int) -> int:
    """The field length tantivy's BM25 uses for a field of ``tokens`` tokens."""
    if tokens < _EXACT_LENGTHS:
        return max(tokens, 0)
    rest = tokens - _EXACT_LENGTHS
    bits = rest.bit_length()
    if bits < 4:
        return tokens
    shift = bits - 4
    return _EXACT_LENGTHS + ((rest >> shift) << shift)


def token_count(text: str) -> int:
    """Tokens in ``text`` as the simple tokenizer splits it."""
    return len(_TOKEN.findall(text))


def doc_lengths(doc: tantivy.Document) -> FieldLengths:
    """Each field's length as tantivy's BM25 sees it, from the stored document (the anchor
    text is not stored; its token count is)."""
    url = str(doc.get_first("url") or "")
    counts = {
        "title": token_count(str(doc.get_first("title") or "")),
        "body": token_count(str(doc.get_first("body") or "")),
        "description": token_count(str(doc.get_first("description") or "")),
        "url_words": token_count(url_words(url)),
        "anchor": int(doc.get_first("anchor_tokens") or 0),
    }
    return tuple(quantized_length(counts[f]) for f in SHARD_FIELDS)


LengthsOf = Callable[[tantivy.Document], FieldLengths]


def field_averages(searcher: tantivy.Searcher, schema: tantivy.Schema) -> tuple[float, ...]:
    """tantivy's own average length of each field (what its BM25 divides by), read from
    the explanation of one match per field."""
    out = []
    for field in SHARD_FIELDS:
        average = 0.0
        for tries, (term, _count) in enumerate(searcher.terms_with_prefix(field, "")):
            query = tantivy.Query.term_query(schema, field, term)
            hits = searcher.search(query, limit=1).hits
            if hits:  # (a term may live only in deleted documents)
                average = _find_avgdl(json.loads(query.explain(searcher, hits[0][1]).to_json()))
            if hits or tries >= AVGDL_PROBES:
                break
        out.append(average)
    return tuple(out)


def _find_avgdl(node: Any) -> float:
    if isinstance(node, dict):
        if str(node.get("description", "")).startswith("avgdl"):
            return float(node.get("value", 0.0))
        return _find_avgdl(node.get("details", []))
    if isinstance(node, list):
        for child in node:
            found = _find_avgdl(child)
            if found:
                return found
    return 0.0


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
    unit: Unit,
    n_docs: int,
    limit: int,
    restrict: tantivy.Query | None = None,
) -> tuple[list[int], dict[tuple[int, int], list[float]], dict[tuple[int, int], Any]]:
    """Per field: df, and boost x tf-norm of the unit's best pages (within ``restrict``).

    A unit is a term or a phrase; tantivy scores a phrase like a term whose IDF is the sum
    of its tokens' IDFs and whose frequency is the phrase's, so the same division by the
    IDF leaves the phrase's boost x tf-norm.
    """
    field_df: list[int] = []
    weights: dict[tuple[int, int], list[float]] = {}
    addresses: dict[tuple[int, int], Any] = {}
    for i, field in enumerate(SHARD_FIELDS):
        dfs = [int(searcher.doc_freq(field, token)) for token in unit]
        field_df.append(min(dfs))
        if not min(dfs):
            continue
        idf = sum(bm25_idf(df, n_docs) for df in dfs) or 1e-6
        query = (
            tantivy.Query.term_query(schema, field, unit[0])
            if len(unit) == 1
            else tantivy.Query.phrase_query(schema, field, list(unit))
        )
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
    lengths_of: LengthsOf = doc_lengths,
) -> list[TermShard]:
    """Shards for ``terms`` (already analysed). Runs on a thread: tantivy releases the GIL."""
    n_docs = searcher.num_docs
    if n_docs == 0:
        return []
    docs: dict[tuple[int, int], tuple[str, str, FieldLengths]] = {}
    shards: list[TermShard] = []
    avgdl = field_averages(searcher, schema)
    for term in terms:
        field_df, weights, addresses = _field_hits(searcher, schema, (term,), n_docs, top_k)
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
                    lengths_of(doc),
                )
            # Rounded once here: four decimals are plenty for ranking, and shorter on the wire.
            rounded = tuple(round(w, WEIGHT_DECIMALS) for w in weights[key])
            postings.append(Posting(fields[0], fields[1], rounded, fields[2]))
        shards.append(
            TermShard(
                term=term,
                df=max(df, 1),
                n_docs=n_docs,
                field_df=tuple(field_df),
                postings=tuple(postings),
                avgdl=tuple(round(a, 3) for a in avgdl),
            )
        )
    return shards


@dataclass(slots=True, frozen=True)
class PageWeights:
    """What an owner tells a querying node about some of its pages: per-field weights of
    each query unit (keyed by ``unit_key``), each page's field lengths, and its own average
    field lengths — enough to score the pages exactly with global statistics."""

    weights: dict[str, dict[str, FieldWeights]]
    lengths: dict[str, FieldLengths]
    avgdl: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "weights": {u: {k: list(w) for k, w in ws.items()} for u, ws in self.weights.items()},
            "lengths": {u: list(n) for u, n in self.lengths.items()},
            "avgdl": list(self.avgdl),
        }

    @classmethod
    def from_json(cls, data: Any) -> PageWeights:
        """A peer's answer, bounded like shard postings (peers may lie); malformed parts
        are dropped, never raised."""
        if not isinstance(data, dict):
            data = {}
        weights: dict[str, dict[str, FieldWeights]] = {}
        raw_weights = data.get("weights")
        for url, units in (raw_weights if isinstance(raw_weights, dict) else {}).items():
            if isinstance(units, dict):
                clean = {}
                for key, values in units.items():
                    try:
                        clean[str(key)] = _weights(values)
                    except (TypeError, ValueError):
                        continue
                weights[str(url)] = clean
        lengths: dict[str, FieldLengths] = {}
        raw_lengths = data.get("lengths")
        for url, values in (raw_lengths if isinstance(raw_lengths, dict) else {}).items():
            try:
                lengths[str(url)] = field_lengths(values)
            except (TypeError, ValueError):
                continue
        try:
            avgdl = average_lengths(data.get("avgdl"))
        except (TypeError, ValueError):
            avgdl = (0.0,) * len(SHARD_FIELDS)
        return cls(weights, lengths, avgdl)


def term_weights(
    searcher: tantivy.Searcher,
    schema: tantivy.Schema,
    urls: list[str],
    units: list[Unit],
    averages: tuple[float, ...],
    lengths_of: LengthsOf = doc_lengths,
) -> PageWeights:
    """Per-field weights of each unit in each of ``urls``, as in the shards, so a querying
    node can score this node's pages exactly with global statistics, phrases included."""
    n_docs = searcher.num_docs
    out: dict[str, dict[str, FieldWeights]] = {u: {} for u in urls}
    lengths: dict[str, FieldLengths] = {}
    if not urls or not n_docs:
        return PageWeights(out, lengths, averages)
    # A disjunction of url terms, not a term_set_query: that one scans the url field's
    # whole term dictionary on every search (0.3 ms each, 15 searches a query).
    only = tantivy.Query.const_score_query(
        tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(schema, "url", u)) for u in urls]
        ),
        0.0,
    )
    url_of: dict[tuple[int, int], str] = {}  # a stored page is loaded once, not per unit
    for unit in units:
        _df, weights, addresses = _field_hits(searcher, schema, unit, n_docs, len(urls), only)
        for key, w in weights.items():
            url = url_of.get(key)
            if url is None:
                doc = searcher.doc(addresses[key])
                url = url_of[key] = str(doc.get_first("url") or "")
                if url in out:
                    lengths[url] = lengths_of(doc)
            if url in out:
                out[url][unit_key(unit)] = tuple(w)
    return PageWeights(out, lengths, averages)


def _any_field(schema: tantivy.Schema, term: str) -> tantivy.Query:
    return tantivy.Query.boolean_query(
        [(tantivy.Occur.Should, tantivy.Query.term_query(schema, f, term)) for f in SHARD_FIELDS]
    )
