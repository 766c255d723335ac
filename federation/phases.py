"""The typed values a federated query's phases pass on (``search.py``): its plan, the
shards' ranking, the owners chosen, the page, and the time each phase took."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rhizome.index import PreparedQuery

from .peers import QueryTally
from .ranking import GlobalScorer
from .wire import ResultRow

# Terms whose shards one query looks up (each a DHT lookup, ~20 KB of datagrams, and a
# share of the holder requests). A query of 512 chars had up to 171 distinct terms; of the
# 6,863 judged description-style queries (bench/judged) 97% have at most 20, none over 27,
# so none is cut. Owners still rank by the whole text.
MAX_QUERY_TERMS = 32


class PhaseTimer:
    """Milliseconds each phase of a query took, for the Server-Timing header."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[phase] = round((now - self._last) * 1000, 2)
        self._last = now


@dataclass(frozen=True, slots=True)
class QueryPlan:
    query: PreparedQuery
    limit: int
    offset: int
    depth: int  # results each owner is asked for

    @property
    def text(self) -> str:
        return self.query.text

    @property
    def terms(self) -> list[str]:
        """The distinct tokens, the first ``MAX_QUERY_TERMS``: the DHT's term keys."""
        return self.query.focus[:MAX_QUERY_TERMS]

    @property
    def tokens(self) -> list[str]:
        return [t for unit in self.query.units for t in unit]


@dataclass(slots=True)
class Ranking:
    scorer: GlobalScorer
    scores: dict[str, float]  # url -> score from the shards (owners' answers refine it)
    ranked: list[str]  # the best candidates, best first


@dataclass(frozen=True, slots=True)
class PeerChoice:
    owners: list[str]  # owners of the best candidates, in order (this node may be one)
    shown: dict[str, list[str]]  # publisher -> its pages on the first page, from shards
    snippet_hits: dict[str, int] = field(default_factory=dict)  # owner -> hits it snippets


@dataclass(slots=True)
class FederatedPage:
    rows: list[ResultRow]
    number_of_results: int
    tally: QueryTally
    timings: dict[str, float] = field(default_factory=dict)
