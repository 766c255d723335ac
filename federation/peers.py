"""The seam between a federated query and the other nodes: ``Peers``.

``NetworkPeers`` asks real nodes over HTTP (holders found through the DHT, owners by their
signed endpoints); ``LocalPeers`` serves the same answers from in-process index stores,
through the same wire codecs, so peer choice, snippet routing, ranking and merging are
unit-tested without a network.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from rhizome.dht import Peer, VerifiedRecords
from rhizome.index import TermShard

from .answer import MAX_OWNER_RESULTS
from .client import Params, PeerClient
from .direct import DirectPaths
from .endpoints import relayed_endpoint
from .errors import PeerError
from .membership import Membership
from .settings import FederationSettings
from .shard_cache import CachedTerm, ShardCache
from .shard_store import ShardStore
from .wire import (
    MAX_SNIPPET_URLS,
    PATH_SEARCH,
    PATH_SHARDS,
    PATH_SNIPPETS,
    SUMMARIES_KEY,
    PeerAnswer,
    ShardCopy,
    SnippetFields,
    decode_lookup,
    decode_summaries,
    parse_owner_answer,
    parse_snippets,
    verify_lookups,
)

Merged = dict[str, dict[str, TermShard]]  # term -> publisher (hex id) -> shard
# A holder's answer to a lookup: (holder, terms asked, this node's own records or None, a
# peer's answer as it came, or this node's own summaries in that form); decoded and
# verified together, off the loop.
HolderAnswer = tuple[str, list[str], dict[str, list[bytes]] | None, object]
MAX_KNOWN_PEERS = 10_000  # endpoints remembered between queries (bounded memory)


@dataclass(slots=True)
class QueryTally:
    """Which remote peers one query asked, and which answered in time."""

    asked: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)
    unresponsive: set[str] = field(default_factory=set)
    # holder -> {term: publishers whose copies other holders of the term served and it
    # did not}: a holder that withholds (or has not yet received) what its peers hold.
    omitted: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @property
    def silent(self) -> list[str]:
        """Peers that failed or missed a request of this query (named in the response).
        A peer that answered one request (a lookup, as a holder) and failed another (its
        search, as an owner) is named: its results are missing all the same, and with two
        holders read per term that overlap is common."""
        return sorted(self.unresponsive)


class Peers(Protocol):
    """The other nodes, as one federated query needs them. Peers are hex node ids.

    Contract: no method raises for a peer's failure. A peer that fails, answers garbage or
    misses ``deadline`` (``time.monotonic()``) is added to ``tally.unresponsive`` and
    counts as having said nothing (garbage that still parses as JSON counts as an empty
    answer, and in ``tally.answered``); every peer a method sends to is in ``tally.asked``.
    Publishers this node distrusts are never in what ``shards`` returns, nor is any byte a
    publisher did not sign.
    """

    async def shards(self, terms: list[str], tally: QueryTally) -> Merged:
        """Every publisher's shard of each term, as its holders have them."""
        ...

    async def reachable(self, owners: Sequence[str], others: Sequence[str]) -> set[str]:
        """Which of these peers (never this node) may be asked now. ``owners`` are found
        even beyond the routing table (a signed endpoint lookup); ``others`` only if known."""
        ...

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
        """An owner's results for ``q`` (at most ``depth``, the first ``snippet_hits`` of
        them with snippets, all when None), weights, and snippets of the ``named`` pages
        it does not return; None if it did not answer. ``meaning``: the query's vector
        in its wire form (``semantic.vector_text``), which the owner re-ranks by instead
        of embedding ``q`` itself."""
        ...

    async def snippets(
        self, peer: str, q: str, urls: Sequence[str], deadline: float, tally: QueryTally
    ) -> dict[str, SnippetFields]:
        """Snippets of ``q`` for some of a peer's pages ({} if it did not answer)."""
        ...


class NetworkPeers:
    """``Peers`` over HTTP: holders from the DHT, answers through ``PeerClient``."""

    def __init__(
        self,
        *,
        membership: Membership,
        client: PeerClient,
        shard_store: ShardStore,
        settings: FederationSettings,
        distrusted: Callable[[], Collection[str]],
        direct: DirectPaths | None = None,
    ) -> None:
        """``direct``: links past the relays of owners behind NAT (None: always relayed)."""
        self.membership = membership
        self.client = client
        self.direct = direct
        self.shard_store = shard_store
        self.settings = settings
        self._distrusted = distrusted
        self._shard_cache = ShardCache(settings.shard_cache_seconds, settings.shard_cache_postings)
        self._by_hex: dict[str, Peer] = {}
        self.verifier = VerifiedRecords()

    def forget_stale(self) -> int:
        """Terms cached longer than ``shard_cache_seconds`` dropped (``Network`` runs it)."""
        return self._shard_cache.expire(time.monotonic())

    async def _ask(
        self,
        peer: Peer,
        path: str,
        params: Params,
        tally: QueryTally,
        deadline: float | None = None,
    ) -> dict[str, object] | None:
        """One request of a federated query, counted in ``tally``. A peer that fails or
        misses the deadline is backed off and named unresponsive (None); an answer that is
        not a JSON object counts as an empty one."""
        peer_hex = peer.node_id.hex()
        tally.asked.add(peer_hex)
        request = self._get(peer, path, params)
        try:
            if deadline is None:
                data = await request
            else:
                data = await asyncio.wait_for(request, max(0.05, deadline - time.monotonic()))
        except (PeerError, TimeoutError):
            self.client.mark_slow(peer)
            tally.unresponsive.add(peer_hex)
            return None
        tally.answered.add(peer_hex)
        return data if isinstance(data, dict) else {}

    async def _get(self, peer: Peer, path: str, params: Params) -> object:
        """``peer``'s JSON answer: over a direct link when there is one (or one opens in
        time: ``DirectPaths.ask``), else by HTTP (through its relay, if it is behind NAT)."""
        if self.direct is not None:
            answer = await self.direct.ask(peer, path, params)
            if answer is not None:
                return self.client.read_linked(peer, path, answer)
        return await self.client.get_json(peer, path, params)

    # --- collect: shards ---------------------------------------------------------------
    async def shards(self, terms: list[str], tally: QueryTally) -> Merged:
        """Each term is read from two of its holders (``replicas_read``); only copies whose
        publisher's signature verifies count, the newest per publisher. A term that comes
        back empty (its holders died, or are new and still being filled while shards are
        re-placed) is asked of the next holder, up to all replicas. A holder that lacks
        copies another holder served is named in ``tally.omitted``."""
        merged: Merged = {t: {} for t in terms}
        now = time.monotonic()
        cache = self._shard_cache
        for term in terms:
            cached = cache.get(term, now)
            if cached is not None:
                merged[term] = dict(cached.shards)
                for holder, publishers in cached.withheld.items():  # still what was withheld
                    tally.omitted.setdefault(holder, {})[term] = publishers
        missing = [t for t in terms if not merged[t]]
        if missing:
            await self._fetch_missing(missing, merged, tally)
            for term in missing:
                if merged[term]:
                    omitted = {h: o[term] for h, o in tally.omitted.items() if term in o}
                    cache.put(term, CachedTerm(now, dict(merged[term]), omitted))
        distrusted = self._distrusted()  # may have grown since caching
        return {t: {p: s for p, s in c.items() if p not in distrusted} for t, c in merged.items()}

    async def _fetch_missing(self, terms: list[str], merged: Merged, tally: QueryTally) -> None:
        candidates = await self.membership.query_holders(terms)
        peers = {h.node_id: h for holders in candidates.values() for h in holders}
        me = self.membership.dht.node_id
        # term -> holder -> the publishers it served: compared once every holder answered.
        served: dict[str, dict[str, set[str]]] = defaultdict(dict)
        issued: dict[tuple[str, str], float] = {}

        # term -> holder -> publisher -> its summary (a shard without postings)
        summaries: dict[str, dict[str, dict[str, TermShard]]] = defaultdict(dict)

        async def ask(node_id: bytes, wanted: list[str]) -> HolderAnswer | None:
            if node_id == me:
                records, cut = await self.shard_store.lookup(wanted)
                as_sent = {
                    SUMMARIES_KEY: {
                        t: {p: orjson.loads(b) for p, b in c.items()} for t, c in cut.items()
                    }
                }
                return node_id.hex(), wanted, records, as_sent
            raw = await self._ask(
                peers[node_id], PATH_SHARDS, {"terms": ",".join(sorted(wanted))}, tally
            )
            return None if raw is None else (node_id.hex(), wanted, None, raw)

        # Records already checked in this query, by (term, bytes): the second holder of a
        # copy costs no signature check and no parse.
        seen: dict[tuple[str, bytes], ShardCopy | None] = {}

        def check(answer: HolderAnswer) -> dict[str, list[ShardCopy]]:
            """An answer decoded (base64, up to MAX_LOOKUP_ANSWER_BYTES) and every copy's
            signature checked (~70 us) once, though two holders serve it byte for byte, and
            not again while the verifier remembers it: all of it off the loop."""
            holder, wanted, own, raw = answer
            records = own if own is not None else decode_lookup(raw, wanted)
            for term, cut in decode_summaries(raw, wanted).items():
                summaries[term][holder] = cut
            return verify_lookups({holder: records}, time.time(), self.verifier, seen)[holder]

        def take(holder: str, found: dict[str, list[ShardCopy]], wanted: list[str]) -> None:
            distrusted = self._distrusted()
            for term in wanted:
                copies = [c for c in found.get(term, []) if c.publisher not in distrusted]
                served[term][holder] = {c.publisher for c in copies}
                for copy in copies:  # the newest copy of a publisher wins
                    if copy.issued_at > issued.get((term, copy.publisher), -1.0):
                        merged[term][copy.publisher] = copy.shard
                        issued[term, copy.publisher] = copy.issued_at

        for round_no in range(self.settings.replicas):
            open_terms = {
                t: [h.node_id for h in candidates[t] if self.client.usable(h)]
                for t in terms
                if not merged[t]
            }
            # As few requests as possible: our own copy first (no request at all), then the
            # holders that serve the most of the remaining terms; the first round reads
            # ``replicas_read`` of them, later rounds one more where all came back empty.
            coverage = Counter(h for holders in open_terms.values() for h in set(holders))
            width = self.settings.replicas_read if round_no == 0 else 1
            plan: dict[bytes, list[str]] = defaultdict(list)
            for term, holders in open_terms.items():
                ranked = sorted(holders, key=lambda h: (h != me, -coverage[h]))
                for best in ranked[:width]:
                    plan[best].append(term)
            if not plan:
                break
            for node_id, wanted in plan.items():  # not asked again in the next round
                for term in wanted:
                    candidates[term] = [h for h in candidates[term] if h.node_id != node_id]
            # Each answer is checked as it arrives, while slower holders are still answering.
            asking = [asyncio.create_task(ask(n, w)) for n, w in plan.items()]
            try:
                for arrived in asyncio.as_completed(asking):
                    answer = await arrived
                    if answer is not None:
                        take(answer[0], await asyncio.to_thread(check, answer), answer[1])
            finally:
                for task in asking:  # (the query's deadline passed: the rest are not read)
                    task.cancel()
        _take_summaries(merged, summaries, served, self._distrusted())
        for term, by_holder in served.items():
            if len(by_holder) < 2:
                continue
            every = set().union(*by_holder.values())
            for holder, publishers in by_holder.items():
                if missing := sorted(every - publishers):
                    tally.omitted.setdefault(holder, {})[term] = missing

    # --- owners ------------------------------------------------------------------------
    async def reachable(self, owners: Sequence[str], others: Sequence[str]) -> set[str]:
        me = self.membership.dht.node_id.hex()
        if len(self._by_hex) > MAX_KNOWN_PEERS:
            self._by_hex.clear()
        # Updated, not replaced: a query running beside this one still asks its peers.
        members = {p.node_id.hex(): p for p in await self.membership.members()}
        self._by_hex.update(members)
        # Owners outside the routing table (nodes behind NAT, reached through a relay, and
        # large networks) are looked up each time: their signed endpoint is usually in the
        # contact book already (no request), and a relayed node that moved is found at its
        # new relay at once; only those never heard of cost a lookup.
        for owner in [o for o in owners if o not in members and o != me]:
            if (known := self.membership.contact_of(bytes.fromhex(owner))) is not None:
                self._by_hex[owner] = known
        for missing in [o for o in owners if o not in self._by_hex and o != me]:
            node_id, within = bytes.fromhex(missing), self.settings.peer_timeout / 3
            peer = await self.membership.endpoint_of(node_id, within)
            if peer is None:  # nobody can dial it: its closest nodes hold its hello
                peer = await relayed_endpoint(self.membership, self.client, node_id, within)
            if peer is not None:
                self._by_hex[missing] = peer
        by_hex = self._by_hex
        return {
            i
            for i in (*owners, *others)
            if i != me and i in by_hex and self.client.usable(by_hex[i])
        }

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
        named = list(named[:MAX_SNIPPET_URLS])
        params = [
            ("q", q),
            ("limit", str(min(depth, MAX_OWNER_RESULTS))),
            *(("snippet_url", u) for u in named),
            *(() if snippet_hits is None else (("snippet_hits", str(snippet_hits)),)),
            *(() if meaning is None else (("meaning", meaning),)),
        ]
        data = await self._ask(self._by_hex[peer], PATH_SEARCH, params, tally, deadline)
        return None if data is None else parse_owner_answer(data, peer, named)

    async def snippets(
        self, peer: str, q: str, urls: Sequence[str], deadline: float, tally: QueryTally
    ) -> dict[str, SnippetFields]:
        named = list(urls[:MAX_SNIPPET_URLS])
        params = [("q", q), *(("url", u) for u in named)]
        data = await self._ask(self._by_hex[peer], PATH_SNIPPETS, params, tally, deadline)
        return {} if data is None else parse_snippets(data, named)


def _take_summaries(
    merged: Merged,
    summaries: Mapping[str, Mapping[str, Mapping[str, TermShard]]],
    served: Mapping[str, Mapping[str, object]],
    distrusted: Collection[str],
) -> None:
    """Publishers that holders know only by summary join ``merged`` without postings, for
    owner choice and the network's statistics. Unsigned, so a summary counts only where
    every holder that answered for the term (two, or one if only one could) served it;
    of differing claims the smallest df. A whole copy always wins."""
    for term, by_holder in summaries.items():
        answered = max(1, min(2, len(served.get(term, {}))))
        claims: dict[str, list[TermShard]] = defaultdict(list)
        for cut in by_holder.values():
            for publisher, shard in cut.items():
                claims[publisher].append(shard)
        for publisher, shards in claims.items():
            if len(shards) >= answered and publisher not in merged[term]:
                if publisher not in distrusted:
                    merged[term][publisher] = min(shards, key=lambda s: s.df)
