"""Scoring every publisher's pages on one scale, as one index over all of them would.

tantivy scores a query as the sum, over its units (terms, and phrases for words that
analyse to several tokens) and over the searched fields, of boost x IDF x tf-norm, and
multiplies by (1 + ALL_TERMS_BOOST) when a page matches every unit. Shards and owners
supply boost x tf-norm per field; this module supplies the IDFs from the df and N of every
publisher together, and the same conjunctive bonus.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain, repeat
from operator import mul

import numpy as np
import numpy.typing as npt

from rhizome.index import SHARD_FIELDS, PageWeights, TermShard, bm25_idf
from rhizome.index.bm25 import renormalize, renormalize_array
from rhizome.index.query import ALL_TERMS_BOOST as LOCAL_ALL_TERMS_BOOST
from rhizome.index.query import PROXIMITY_BOOST, Unit, near_key, unit_key

from .wire import speaks_for

FIELD_RANGE = range(len(SHARD_FIELDS))
_ONES = np.ones(len(SHARD_FIELDS))
# The local ranker adds a conjunctive clause boosted by ALL_TERMS_BOOST on top of the
# disjunctive one, so a page with every unit scores (1 + boost) times its plain score.
ALL_TERMS_FACTOR = 1.0 + LOCAL_ALL_TERMS_BOOST
# Shards cannot tell whether a page's tokens stand in a row: a page holding all of a
# phrase's tokens is credited this share of their smallest weights until its owner answers
# with the phrase's exact weights.
PHRASE_GUESS = 0.5
# No publisher's claims count for more than this many times all the others' together in
# the network's N, df and average lengths: one liar claiming df = N = 10^8 for a word once
# drove its IDF to ~0 for everyone; now it moves the statistics as far as a node twice the
# rest of the network's size could, and no further. Binding only for a publisher with over
# 2/3 of the network's pages (the small corpus's largest of 5 has 35%).
STAT_SHARE_CAP = 2.0

UnitWeights = Mapping[str, Sequence[float]]  # unit_key -> boost x tf-norm per field
Merged = Mapping[str, Mapping[str, TermShard]]  # term -> publisher -> shard


def bounded_counts(n_by_publisher: Mapping[str, int]) -> dict[str, float]:
    """Each publisher's N as the network's statistics count it: at most STAT_SHARE_CAP
    times the others' together (a lone publisher counts in full)."""
    total = sum(n_by_publisher.values())
    if len(n_by_publisher) < 2:
        return {p: float(n) for p, n in n_by_publisher.items()}
    return {p: float(min(n, STAT_SHARE_CAP * (total - n))) for p, n in n_by_publisher.items()}


@dataclass(slots=True)
class GlobalScorer:
    """Global statistics of one query, and the candidates its shards name."""

    units: list[Unit]
    merged: Merged
    near: Unit = ()  # the proximity phrase's tokens: scored from owners' weights only
    idfs: dict[str, list[float]] = field(default_factory=dict)  # unit_key -> per field
    near_idf: list[float] = field(default_factory=list)  # per field
    avgdl: list[float] = field(default_factory=list)  # the network's, per field
    owner: dict[str, str] = field(default_factory=dict)  # url -> publisher
    titles: dict[str, str] = field(default_factory=dict)
    _floor: dict[tuple[str, str], Sequence[float]] = field(default_factory=dict)
    _chunks: list[tuple[str, str, TermShard]] = field(default_factory=list)  # term, publisher

    def __post_init__(self) -> None:
        # Every publisher's N counted once; per field, df summed over publishers.
        n_by_publisher: dict[str, int] = {}
        for copies in self.merged.values():
            for publisher, shard in copies.items():
                n_by_publisher[publisher] = max(n_by_publisher.get(publisher, 0), shard.n_docs)
        counted = bounded_counts(n_by_publisher)
        scale = {p: counted[p] / n if n else 1.0 for p, n in n_by_publisher.items()}
        n_total = max(1, round(sum(counted.values())))
        # The network's average field lengths: every publisher's, weighted by its N. A
        # publisher re-sends only shards whose pages changed, so its copies may carry older
        # N and averages: the copy with the largest N is its newest word on both.
        publisher_avgdl: dict[str, tuple[float, ...]] = {}
        for copies in self.merged.values():
            for publisher, shard in copies.items():
                if shard.n_docs == n_by_publisher[publisher] or publisher not in publisher_avgdl:
                    publisher_avgdl[publisher] = shard.avgdl
        for i in FIELD_RANGE:
            known = [(a[i], counted[p]) for p, a in publisher_avgdl.items() if a[i] > 0]
            weight = sum(n for _a, n in known)
            self.avgdl.append(sum(a * n for a, n in known) / weight if weight else 0.0)
        token_idf: dict[str, list[float]] = {}
        for term, copies in self.merged.items():
            if copies:
                scales = [scale[p] for p in copies]
                columns = zip(*(s.field_df for s in copies.values()), strict=True)
                field_df = [sum(map(mul, column, scales)) for column in columns]
                token_idf[term] = [bm25_idf(d, n_total) if d else 0.0 for d in field_df]
        for unit in self.units:
            idf = _phrase_idf(unit, token_idf)
            if idf is not None:
                self.idfs[unit_key(unit)] = idf
        if self.near:
            self.near_idf = _phrase_idf(self.near, token_idf) or []
        # Of two publishers naming a page (for a while after a host changed hands, or a
        # liar), the one nearer its host's key speaks for it; the other's postings of it
        # are not scored. A publisher's shards name the same pages again and again (1,000
        # repeats a small-corpus query), so pages are taken a publisher at a time, in bulk,
        # and only those two publishers name are compared; candidates keep the order in
        # which the shards first named them.
        named_by: dict[str, list[Mapping[str, str]]] = {}
        order: dict[str, str] = {}
        for term, copies in self.merged.items():
            for publisher, shard in copies.items():
                self._chunks.append((term, publisher, shard))
                named = shard.titles()
                named_by.setdefault(publisher, []).append(named)
                order.update(named)
                # A shard lists only its top postings: a page missing from a common term's
                # list still very likely has the term. Credit it with the list's lowest
                # weights, scaled by how likely that is, instead of nothing.
                listed = len(shard.postings)
                if listed and shard.df > listed:
                    share = min(1.0, (shard.df - listed) / max(1, shard.n_docs - listed))
                    lowest = shard.columns().weights[-1]
                    self._floor[(publisher, term)] = (lowest * share).tolist()
            self._summary_floors(term, copies)
        owner: dict[str, str] = {}
        titles = self.titles
        for publisher, maps in named_by.items():
            mine: dict[str, str] = {}
            for named in reversed(maps):  # a page's first title wins
                mine.update(named)
            kept = {
                url: (owner[url], titles[url])
                for url in mine.keys() & owner.keys()
                if not speaks_for(publisher, owner[url], url)
            }
            owner.update(dict.fromkeys(mine, publisher))
            titles.update(mine)
            for url, (first, title) in kept.items():
                owner[url], titles[url] = first, title
        self.owner = dict(zip(order, map(owner.__getitem__, order), strict=True))

    def _summary_floors(self, term: str, copies: Mapping[str, TermShard]) -> None:
        """A publisher a holder keeps only by summary for ``term`` (no postings, beyond the
        term's strongest: ``term_slots``) still has the term on df of its N pages: its
        candidates are credited the median of the whole copies' lowest weights, scaled by
        that share, as a whole copy's unlisted pages are."""
        if all(s.postings for s in copies.values()):
            return
        lowest = sorted(
            (s.columns().weights[-1].tolist() for s in copies.values() if s.postings),
            key=sum,
        )
        if not lowest:
            return
        typical = lowest[len(lowest) // 2]
        for publisher, shard in copies.items():
            if not shard.postings and shard.df and shard.n_docs:
                share = min(1.0, shard.df / shard.n_docs)
                self._floor[(publisher, term)] = [w * share for w in typical]

    @property
    def candidates(self) -> list[str]:
        return list(self.owner)

    def _exact(self, url: str) -> dict[str, Sequence[float]]:
        """A candidate's per-term weights re-normalised to the network's averages."""
        publisher = self.owner.get(url)
        return {
            term: renormalize(p.weights, p.lengths, shard.avgdl, self.avgdl)
            for term, by, shard in self._chunks
            if by == publisher
            for p in shard.postings
            if p.url == url
        }

    def shard_weights(self, url: str) -> dict[str, Sequence[float]]:
        """Per-unit weights of a candidate as far as the shards tell (page by page: the
        reference that ``shard_scores`` computes for all at once)."""
        own = self._exact(url)
        publisher = self.owner.get(url, "")
        out: dict[str, Sequence[float]] = {}
        for unit in self.units:
            w = self._unit_weight(own, publisher, unit)
            if w is not None:
                out[unit_key(unit)] = w
        return out

    def _unit_weight(
        self, per_term: Mapping[str, Sequence[float]], publisher: str, unit: Unit
    ) -> Sequence[float] | None:
        """A unit's per-field weights from a page's term weights, or from the floor of the
        publisher's shard; a phrase is guessed from its tokens. None: the shards say nothing."""
        found = []
        for token in unit:
            w = per_term.get(token) or self._floor.get((publisher, token))
            if w is None:
                return None
            found.append(w)
        if len(found) == 1:
            return found[0]
        return [PHRASE_GUESS * least for least in map(min, *found)]

    def shard_scores(self) -> dict[str, float]:
        """``score(shard_weights(url))`` of every candidate, all at once over arrays
        (terms x candidates x fields): a query can name thousands of candidates, and this
        runs on the event loop (page by page it was a fifth of a query's CPU)."""
        by_key = {unit_key(unit): unit for unit in self.units}
        scored = [(by_key[key], idf) for key, idf in self.idfs.items()]
        terms = list(dict.fromkeys(t for unit, _idf in scored for t in unit))
        if not terms or not self.owner:
            return dict.fromkeys(self.owner, 0.0)
        t_index = {t: i for i, t in enumerate(terms)}
        n = len(self.owner)
        c_index = dict(zip(self.owner, range(n), strict=True))
        publishers = list(dict.fromkeys(self.owner.values()))
        p_index = {p: i for i, p in enumerate(publishers)}
        width = len(SHARD_FIELDS)
        of = np.fromiter(map(p_index.__getitem__, self.owner.values()), dtype=np.intp, count=n)
        # Each candidate's own postings, of the publisher that speaks for it, on the
        # network's scale: every shard's columns at once.
        chunks = [(t_index[t], p, s) for t, p, s in self._chunks if t in t_index and s.postings]
        columns = [s.columns() for _t, _p, s in chunks]
        counts = [len(c.urls) for c in columns]
        urls = list(chain.from_iterable(c.urls for c in columns))
        rows_t = np.repeat(np.array([t for t, _p, _s in chunks], dtype=np.intp), counts)
        rows_c = np.fromiter(map(c_index.__getitem__, urls), dtype=np.intp, count=len(urls))
        # (-1: a publisher that speaks for none of the pages it names)
        by = [p_index.get(p, -1) for _t, p, _s in chunks]
        rows_p = np.repeat(np.array(by, dtype=np.intp), counts)
        avgdl_from = np.repeat(_matrix([s.avgdl for _t, _p, s in chunks], width), counts, axis=0)
        if columns:
            own = renormalize_array(
                np.concatenate([c.weights for c in columns]),
                np.concatenate([c.lengths for c in columns]),
                avgdl_from,
                self.avgdl,
            )
        else:
            own = np.zeros((0, width))
        speaking = rows_p == of[rows_c]
        rows_t, rows_c, own = rows_t[speaking], rows_c[speaking], own[speaking]
        # Everyone else starts from its publisher's floor of the term (or nothing).
        floors = np.zeros((len(terms), len(publishers), width))
        has_floor = np.zeros((len(terms), len(publishers)), dtype=bool)
        for (publisher, term), floor in self._floor.items():
            t, p = t_index.get(term), p_index.get(publisher)
            if t is not None and p is not None:
                floors[t, p] = floor
                has_floor[t, p] = True
        weights = floors[:, of, :]
        known = has_floor[:, of]
        weights[rows_t, rows_c] = own
        known[rows_t, rows_c] = True
        total = np.zeros(n)
        matched = np.zeros(n, dtype=np.intp)
        # Weights are never negative, so a unit is present where its fields sum above 0;
        # the single-term units at once, as (units x candidates x fields) products: one
        # unit at a time, the numpy calls' own cost was a fifth of the scoring.
        singles = [(t_index[unit[0]], idf) for unit, idf in scored if len(unit) == 1]
        if singles:
            rows = np.array([t for t, _idf in singles], dtype=np.intp)
            every = len(rows) == len(terms) and bool((rows == np.arange(len(rows))).all())
            unit_w, present = (weights, known) if every else (weights[rows], known[rows])
            hit = present & (unit_w @ _ONES > 0.0)
            idfs = np.array([idf for _t, idf in singles], dtype=np.float64)
            total += np.where(hit, np.matmul(unit_w, idfs[:, :, None])[..., 0], 0.0).sum(axis=0)
            matched += hit.sum(axis=0)
        for unit, idf in scored:
            if len(unit) > 1:  # a phrase's tokens in a row: guessed from the least of them
                tokens = [t_index[t] for t in unit]
                phrase_w = PHRASE_GUESS * weights[tokens].min(axis=0)
                hit = known[tokens].all(axis=0) & (phrase_w @ _ONES > 0.0)
                total += np.where(hit, phrase_w @ np.asarray(idf, dtype=np.float64), 0.0)
                matched += hit
        total *= np.where(matched >= len(scored), ALL_TERMS_FACTOR, 1.0)
        return dict(zip(self.owner, total.tolist(), strict=True))

    def owner_weights(self, answer: PageWeights, url: str) -> dict[str, Sequence[float]]:
        """An owner's exact per-unit weights of one of its pages, on the network's scale
        (page by page: the reference that ``owner_scores`` computes for an answer at once)."""
        lengths = answer.lengths.get(url)
        units = answer.weights.get(url, {})
        if lengths is None:
            return dict(units)
        return {k: renormalize(w, lengths, answer.avgdl, self.avgdl) for k, w in units.items()}

    def owner_scores(self, answer: PageWeights, urls: Sequence[str]) -> list[float]:
        """``score(owner_weights(answer, url))`` of each of ``urls``, pages of one owner's
        answer, as one array product (pages x units x fields): page by page, re-scaling
        each unit's weights in Python was most of the merge phase's ~2 ms a query."""
        keys = list(self.idfs)
        near = near_key(self.near) if self.near_idf else None
        if near is not None:
            keys.append(near)
        width, n_keys = len(SHARD_FIELDS), len(keys)
        if not urls or not keys:
            return [0.0] * len(urls)
        zero = (0.0,) * width
        rows = map(answer.weights.get, urls, repeat({}))
        weights = _matrix(
            chain.from_iterable(map(units.get, keys, repeat(zero)) for units in rows), width
        )
        # (A page without lengths keeps its weights: unknown lengths do not re-scale.)
        lengths = _matrix(map(answer.lengths.get, urls, repeat(zero)), width)
        scaled = renormalize_array(
            weights,
            np.repeat(lengths, n_keys, axis=0),
            np.asarray(answer.avgdl, dtype=np.float64),
            self.avgdl,
        ).reshape(len(urls), n_keys, width)
        n_units = len(self.idfs)
        unit_w = scaled[:, :n_units, :]
        idfs = np.array(list(self.idfs.values()), dtype=np.float64).reshape(n_units, width)
        total = (unit_w * idfs).sum(axis=2).sum(axis=1)
        matched = (unit_w @ _ONES > 0.0).sum(axis=1)
        if n_units:
            total *= np.where(matched >= n_units, ALL_TERMS_FACTOR, 1.0)
        if near is not None:
            total += PROXIMITY_BOOST * (scaled[:, n_units, :] * self.near_idf).sum(axis=1)
        out: list[float] = total.tolist()
        return out

    def score(self, weights: UnitWeights) -> float:
        """As the local query scores: the units' BM25 sum, times the conjunctive factor
        when every unit matched, plus the boosted proximity phrase. One page's weights at a
        time: the reference ``shard_scores`` and ``owner_scores`` are tested against."""
        total = 0.0
        matched = 0
        for key, field_idf in self.idfs.items():
            w = weights.get(key)
            if w and any(w):
                matched += 1
                total += sum(i * x for i, x in zip(field_idf, w, strict=False))
        total *= ALL_TERMS_FACTOR if self.idfs and matched >= len(self.idfs) else 1.0
        near = weights.get(near_key(self.near)) if self.near_idf else None
        if near:
            total += PROXIMITY_BOOST * sum(map(mul, self.near_idf, near))
        return total


def _matrix(rows: Iterable[Sequence[float]], width: int) -> npt.NDArray[np.float64]:
    flat = np.fromiter(chain.from_iterable(rows), dtype=np.float64)
    return flat.reshape(len(flat) // width, width)


def _phrase_idf(unit: Unit, token_idf: Mapping[str, list[float]]) -> list[float] | None:
    """A phrase weighs the sum of its tokens' IDFs (tantivy's phrase weight), in fields
    holding all of them; None when a token is in no shard at all."""
    per_token = [token_idf.get(t) for t in unit]
    if not all(per_token):
        return None
    if len(per_token) == 1:
        return list(per_token[0] or ())
    return [
        sum(p[i] for p in per_token if p) if all(p and p[i] for p in per_token) else 0.0
        for i in FIELD_RANGE
    ]


# Title evidence, on top of BM25: a query that says exactly what a page's title says (its
# site-wide suffix aside) is, far more often than not, asking for that page. One index's
# BM25 ranks "Django 1.7.8 release notes" and "Django 1.7 release notes" within 1-2% of
# each other for the second; this bonus settles it. Applied to federated results only:
# scope=local stays tantivy's own ranking.
EXACT_TITLE_BONUS = 0.25
SITE_SUFFIX = re.compile(r"\s+[—|–-]\s+[^—|–]+$")


def title_bonus(
    query_tokens: Sequence[str], title: str, analyze: Callable[[str], list[str]]
) -> float:
    """The factor a page's score is multiplied by for its title: 1 + EXACT_TITLE_BONUS when
    the title, without a site suffix, analyses to the query's tokens (in any order)."""
    if not query_tokens or not title:
        return 1.0
    remembered = len(title) <= CACHED_TITLE_CHARS
    core = (_remembered_tokens if remembered else _title_tokens)(title, analyze)
    return 1.0 + EXACT_TITLE_BONUS if core == tuple(sorted(query_tokens)) else 1.0


def _title_tokens(title: str, analyze: Callable[[str], list[str]]) -> tuple[str, ...]:
    return tuple(sorted(analyze(SITE_SUFFIX.sub("", title))))


# Titles whose tokens are remembered: a query's candidates are mostly pages earlier queries
# named too, and analysing each candidate's title again was ~2% of a querying node's CPU
# (py-spy, small-corpus network). Only titles of at most CACHED_TITLE_CHARS: an owner's
# answer may carry a title of megabytes, which is analysed and not kept, so the cache
# stays within ~20,000 x (256 chars + its tokens), a few MB.
TITLE_TOKENS_CACHED = 20_000
CACHED_TITLE_CHARS = 256
_remembered_tokens = lru_cache(maxsize=TITLE_TOKENS_CACHED)(_title_tokens)
