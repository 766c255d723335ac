"""What a node tells peers about its index, and the bounds a reader holds it to.

Term shards (per term: df per field, N, the publisher's average field lengths and its top
pages with per-field boost x tf-norm and field lengths) and an owner's page weights are
built by this package (``shards.py``) and read by peers, who may be hostile: every reader
parses through ``TermShard.from_json`` / ``PageWeights.from_json``, which cap postings and
counts and clamp weights and lengths, so a holder may store and serve shards as sent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, overload

import numpy as np
import numpy.typing as npt

from .bm25 import (
    MAX_FIELD_WEIGHT,
    NO_LENGTHS,
    FieldLengths,
    FieldWeights,
    recovered_round_tf,
)
from .schema import SHARD_FIELDS

MAX_POSTINGS_PER_SHARD = 50  # a publisher's influence on a term is capped at this many pages
MAX_DOCS_PER_PUBLISHER = 100_000_000  # a claimed N beyond this is a lie that skews every IDF
MAX_TERM_CHARS = 40
MAX_FIELD_LENGTH = 10_000_000  # more tokens than a capped page can hold: a peer lying


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


class ShardColumns(NamedTuple):
    """A shard's postings as columns: what a querying node scores them from."""

    urls: tuple[str, ...]
    weights: npt.NDArray[np.float64]  # postings x SHARD_FIELDS
    lengths: npt.NDArray[np.float64]


class ParsedPostings(Sequence[Posting]):
    """A parsed shard's postings, kept as the checked arrays they were read into, made
    ``Posting`` tuples only when something walks them all: a querying node parses
    thousands of postings a query and its ranking reads them as columns, so making every
    tuple (and two more for its weights and lengths) was most of parsing a shard."""

    __slots__ = ("_lengths", "_made", "_titles", "_urls", "_weights")

    def __init__(
        self,
        urls: tuple[str, ...],
        titles: tuple[str, ...],
        weights: npt.NDArray[np.float64],
        lengths: npt.NDArray[np.int64],
    ) -> None:
        self._urls, self._titles, self._weights, self._lengths = urls, titles, weights, lengths
        self._made: tuple[Posting, ...] | None = None

    def pages(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """URLs and titles, without making the postings."""
        return self._urls, self._titles

    def _all(self) -> tuple[Posting, ...]:
        if self._made is None:
            self._made = tuple(
                map(
                    Posting,
                    self._urls,
                    self._titles,
                    map(tuple, self._weights.tolist()),
                    map(tuple, self._lengths.tolist()),
                )
            )
        return self._made

    def __len__(self) -> int:
        return len(self._urls)

    @overload
    def __getitem__(self, i: int) -> Posting: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Posting, ...]: ...
    def __getitem__(self, i: int | slice) -> Posting | tuple[Posting, ...]:
        if isinstance(i, slice) or self._made is not None:
            return self._all()[i]
        return Posting(
            self._urls[i],
            self._titles[i],
            tuple(self._weights[i].tolist()),
            tuple(self._lengths[i].tolist()),
        )

    def __iter__(self) -> Iterator[Posting]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ParsedPostings | tuple):
            return self._all() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return repr(self._all())


@dataclass(slots=True, frozen=True)
class TermShard:
    term: str
    df: int  # documents with the term in any field
    n_docs: int
    field_df: tuple[int, ...]  # per SHARD_FIELDS
    postings: Sequence[Posting]  # a tuple, or ParsedPostings when read from a peer
    avgdl: tuple[float, ...] = (0.0,) * len(SHARD_FIELDS)  # the publisher's, per field
    _columns: ShardColumns | None = field(default=None, init=False, repr=False, compare=False)
    _titles: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    def columns(self) -> ShardColumns:
        """The postings as columns, made once: a querying node keeps the shards of recent
        terms and scores their postings again at every query that has the term (turning
        tuples into arrays was a quarter of its ranking, profiled with terms cached)."""
        found = self._columns
        if found is None:
            found = _columns(
                tuple(p.url for p in self.postings),
                [p.weights for p in self.postings],
                [p.lengths for p in self.postings],
            )
            object.__setattr__(self, "_columns", found)  # a cache, not a field's value
        return found

    def titles(self) -> Mapping[str, str]:
        """Each posting's page and title (a page listed twice: its first title), made once
        and never to be changed: the querying node's ranking took them apart at every
        query that had the term, a third of its work with terms cached."""
        found = self._titles
        if found is None:
            if isinstance(self.postings, ParsedPostings):
                urls, titles = self.postings.pages()
            else:
                urls = tuple(p.url for p in self.postings)
                titles = tuple(p.title for p in self.postings)
            found = dict(zip(urls, titles, strict=True))
            if len(found) < len(urls):
                found = {}
                for url, title in zip(urls, titles, strict=True):
                    found.setdefault(url, title)
            object.__setattr__(self, "_titles", found)  # a cache, not a field's value
        return found

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
        parsed, columns = _postings(postings[:MAX_POSTINGS_PER_SHARD])
        shard = cls(
            term=str(term),
            df=min(max(int(df), 0), n),
            n_docs=n,
            field_df=tuple(min(max(int(d), 0), n) for d in field_df),
            postings=parsed,
            avgdl=average_lengths(avgdl),
        )
        if columns is not None:  # made from the rows already taken apart for the checks
            object.__setattr__(shard, "_columns", columns)
        return shard


_FIELDS = len(SHARD_FIELDS)


def _postings(rows: Sequence[Any]) -> tuple[Sequence[Posting], ShardColumns | None]:
    """A shard's postings, bounded, and in the honest case their columns. A querying node
    parses hundreds per query, so the honest case (a number in range everywhere) is
    checked for the whole shard at once, as arrays, which the postings are then read
    from; anything else goes through the per-posting checks, which clamp or refuse."""
    try:
        if not rows:
            return (), None
        urls, titles, weights, lengths = zip(*rows, strict=True)
        if set(map(type, urls)) == set(map(type, titles)) == {str}:
            # Ragged rows raise; numbers as strings or bools read as numbers, as one by
            # one; NaN fails every comparison.
            w = np.array(weights, dtype=np.float64)
            n = np.array(lengths, dtype=np.int64)
            if (
                w.shape == n.shape == (len(rows), _FIELDS)
                and w.min() >= 0.0
                and w.max() <= MAX_FIELD_WEIGHT
                and n.min() >= 0
                and n.max() <= MAX_FIELD_LENGTH
            ):
                columns = ShardColumns(urls, w, n.astype(np.float64))
                return ParsedPostings(urls, titles, w, n), columns
    except (TypeError, ValueError, OverflowError):
        pass  # a malformed row: the checks below say which and how
    postings = tuple(
        Posting(str(u), str(t), _weights(w), field_lengths(dl)) for u, t, w, dl in rows
    )
    return postings, None


def _columns(urls: tuple[str, ...], weights: Sequence[Any], lengths: Sequence[Any]) -> ShardColumns:
    """Columns of postings from their weights and lengths, per posting or flattened."""
    rows = len(urls)
    return ShardColumns(
        urls,
        np.array(weights, dtype=np.float64).reshape(rows, _FIELDS),
        np.array(lengths, dtype=np.float64).reshape(rows, _FIELDS),
    )


def _honest_weights(raw: Any) -> dict[str, dict[str, FieldWeights]] | None:
    """An owner's page weights when every value is a number in range, checked all at once
    as one array, as a shard's postings are (a querying node reads ~100 a answer, one by
    one ~7% of its CPU), and read from it; None otherwise, for ``_checked_weights``."""
    try:
        if not isinstance(raw, dict) or set(map(type, raw.values())) - {dict}:
            return None
        rows = [v for units in raw.values() for v in units.values()]
        if not rows:
            return {str(u): {} for u in raw}
        w = np.array(rows, dtype=np.float64)  # ragged rows raise; NaN fails the checks
        if w.shape == (len(rows), _FIELDS) and w.min() >= 0.0 and w.max() <= MAX_FIELD_WEIGHT:
            read = iter(map(tuple, w.tolist()))
            return {str(u): {str(k): next(read) for k in units} for u, units in raw.items()}
    except (TypeError, ValueError, OverflowError):
        pass
    return None


def _checked_weights(raw: Any) -> dict[str, dict[str, FieldWeights]]:
    """An owner's page weights value by value: malformed parts dropped, values clamped."""
    weights: dict[str, dict[str, FieldWeights]] = {}
    for url, units in (raw if isinstance(raw, dict) else {}).items():
        if isinstance(units, dict):
            clean = {}
            for key, values in units.items():
                try:
                    clean[str(key)] = _weights(values)
                except (TypeError, ValueError):
                    continue
            weights[str(url)] = clean
    return weights


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
            tuple(
                recovered_round_tf(i, w, p.lengths[i], shard.avgdl[i])
                for i, w in enumerate(p.weights)
            ),
        )
        for p in shard.postings
    )
    return hash((shard.term, shard.df, shard.field_df, postings))


@dataclass(slots=True, frozen=True)
class PageWeights:
    """What an owner tells a querying node about some of its pages: per-field weights of
    each query unit (keyed by ``unit_key``), each page's field lengths, and its own average
    field lengths — enough to score the pages exactly with global statistics."""

    weights: dict[str, dict[str, FieldWeights]]
    lengths: dict[str, FieldLengths]
    avgdl: tuple[float, ...]
    # Each page's cosine similarity to the query (index.semantic), where the owner has one.
    semantic: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "weights": {u: {k: list(w) for k, w in ws.items()} for u, ws in self.weights.items()},
            "lengths": {u: list(n) for u, n in self.lengths.items()},
            "avgdl": list(self.avgdl),
            "semantic": {u: round(v, 4) for u, v in self.semantic.items()},
        }

    @classmethod
    def from_json(cls, data: Any) -> PageWeights:
        """A peer's answer, bounded like shard postings (peers may lie); malformed parts
        are dropped, never raised."""
        if not isinstance(data, dict):
            data = {}
        raw_weights = data.get("weights")
        weights = _honest_weights(raw_weights)
        if weights is None:
            weights = _checked_weights(raw_weights)
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
        semantic: dict[str, float] = {}
        raw_semantic = data.get("semantic")
        for url, value in (raw_semantic if isinstance(raw_semantic, dict) else {}).items():
            if isinstance(value, int | float) and -1.0 <= value <= 1.0:  # NaN fails too
                semantic[str(url)] = float(value)
        return cls(weights, lengths, avgdl, semantic)
