"""``LocalPeers``: the ``Peers`` seam served by in-process index stores, for tests and
for reasoning about ranking (bench/rank_tune.py) without a network."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import orjson

from rhizome.index import IndexStore, TermShard
from rhizome.index.semantic import parse_vector

from .answer import MAX_OWNER_RESULTS, answer_locally
from .peers import Merged, QueryTally
from .wire import (
    SUMMARIES_PER_TERM,
    PeerAnswer,
    SnippetFields,
    encode_owner_answer,
    parse_owner_answer,
    parse_snippets,
    snippet_fields,
)


class LocalPeers:
    """``Peers`` served by in-process index stores, one per node id, through the wire
    codecs (a shard goes through ``to_json``/``from_json``, an answer through its JSON).
    Nodes in ``down`` never answer; their shards are still served, as the other holders of
    a real network keep them. For tests and for reasoning about ranking."""

    def __init__(
        self,
        stores: Mapping[str, IndexStore],
        *,
        me: str,
        publishers_per_term: int | None = None,
        summaries_per_term: int = SUMMARIES_PER_TERM,
    ) -> None:
        self.stores = dict(stores)
        self.me = me
        self.down: set[str] = set()
        # As holders keep a term (``term_slots``): the strongest whole, the next as
        # summaries; None keeps every publisher whole.
        self.publishers_per_term = publishers_per_term
        self.summaries_per_term = summaries_per_term

    def _answers(self, peer: str, tally: QueryTally) -> bool:
        tally.asked.add(peer)
        if peer in self.down:
            tally.unresponsive.add(peer)
            return False
        tally.answered.add(peer)
        return True

    async def shards(self, terms: list[str], tally: QueryTally) -> Merged:
        merged: Merged = {t: {} for t in terms}
        for node, store in self.stores.items():
            for shard in await store.term_shards(terms):
                wire = orjson.loads(orjson.dumps(shard.to_json()))
                merged[shard.term][node] = TermShard.from_json(shard.term, wire)
        if self.publishers_per_term is None:
            return merged
        bounded: Merged = {}
        for term, copies in merged.items():
            ranked = sorted(copies.items(), key=lambda kv: kv[1].df, reverse=True)
            whole = dict(ranked[: self.publishers_per_term])
            cut = ranked[self.publishers_per_term :][: self.summaries_per_term]
            bounded[term] = whole | {p: replace(s, postings=()) for p, s in cut}
        return bounded

    async def reachable(self, owners: Sequence[str], others: Sequence[str]) -> set[str]:
        known = set(self.stores) - {self.me}  # a dead peer is known until it fails a request
        return {i for i in (*owners, *others) if i in known}

    async def search(
        self,
        peer: str,
        q: str,
        depth: int,
        named: Sequence[str],
        deadline: float,
        tally: QueryTally,
        snippet_hits: int | None = None,
        meaning: str | None = None,
    ) -> PeerAnswer | None:
        if not self._answers(peer, tally):
            return None
        limit = min(depth, MAX_OWNER_RESULTS)
        vector = None if meaning is None else parse_vector(meaning)  # as a peer reads it
        page, weights, found = await answer_locally(
            self.stores[peer], q, limit, 0, named, snippet_hits, vector
        )
        body = orjson.loads(orjson.dumps(encode_owner_answer(q, page, weights, found)))
        return parse_owner_answer(body, peer, named)

    async def snippets(
        self, peer: str, q: str, urls: Sequence[str], deadline: float, tally: QueryTally
    ) -> dict[str, SnippetFields]:
        if not self._answers(peer, tally):
            return {}
        found = snippet_fields(await self.stores[peer].snippets(q, urls))
        return parse_snippets({"snippets": found}, urls)
