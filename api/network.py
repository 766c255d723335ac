"""The network side of a node: DHT membership, shard publishing and federated search.

Kademlia (``dht.DhtNode``) says who is who and who holds which term; shard bodies travel
over HTTP in signed, zstd-compressed batches. A federated query fetches the merged shards
of its terms from their holders, scores every publisher's postings with global df/N, and
asks the owners of the best candidates (plus itself) for snippets and deeper results,
all under one deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sqlite3
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from crawler import CrawlerError
from crawler.ssrf import GuardedSocketFactory
from dht import DhtNode, Identity, Peer, compress, decompress, sign_record, verify_record
from dht.placement import HolderMap
from dht.shard_store import DEFAULT_SHARD_TTL, ShardStore, encode_batch, split_batch
from index import IndexStore, PageWeights, SearchPage, Snippet, TermShard
from index.shards import content_key

from .config import NodeConfig, split_host_port
from .ranking import GlobalScorer, title_bonus
from .spot_check import SpotChecker  # hostile peers (#5)

log = logging.getLogger(__name__)

REPLICAS = 3  # holders per term
PUBLISH_QUIET = 1.0  # seconds after the last commit before shards are rebuilt
PUBLISH_BATCH_TERMS = 5_000
NEIGHBOURHOOD_FIRST = 2.0  # seconds after start of the first self-lookup; doubles
NEIGHBOURHOOD_EVERY = 300.0
LOOKUP_BUDGET = 0.25  # seconds of a query's deadline that finding its holders may take
# A holder verifies, decompresses and stores a batch of thousands of terms: on a busy
# home server that takes seconds, and giving up early only makes it all be sent again.
PUSH_TIMEOUT = 60.0
PUBLISH_RETRY = 2.0  # seconds before shards a holder missed are pushed again; doubles
MAX_PUBLISH_RETRY = 60.0
MAX_PUSH_BYTES = 16 * 1024 * 1024
MAX_PUSH_DECODED = 64 * 1024 * 1024
QUERY_DEADLINE = 2.0
SHARD_CACHE_SECONDS = 30.0  # how stale a query's view of a term may be
SHARD_CACHE_TERMS = 20_000  # ~20 KB each at most: bounded memory
PEER_TIMEOUT = 1.5
BACKOFF_SECONDS = 60.0
CANDIDATES = 50
OWNERS_ASKED = 2
# A second owner is asked only for candidates within this share of the best one's score:
# each remote owner is a search with snippets on someone's home server.
OWNER_SCORE_SHARE = 0.25
OWNER_DEPTH = 10  # results each owner returns (at least a page), scored with global statistics
MAX_SNIPPET_URLS = 100  # pages named to an owner for snippets: a page's worth, with room
# Shard candidates that get snippets: this many pages' worth. 1 leaves one result in eight
# a bare title (none: one in five) at no measurable cost; 2 leaves one in 125 but cost the
# bench's median 5-6 ms (docs/BENCHMARKS.md).
SNIPPET_PAGES = 1
SHARD_KIND = "shards/3"  # /3: a term a line, stored as sent; older pushes are refused
FORWARD_BATCH = 1_000
TRAFFIC_IN = {
    "/api/peer/shards": "lookup_received",
    "/api/peer/search": "search_received",
    "/api/peer/snippets": "search_received",
}
# What a peer request can fail with: HTTP and socket errors, our timeouts, bad JSON, and
# the SSRF guard refusing a private address a peer advertised.
PEER_ERRORS = (aiohttp.ClientError, TimeoutError, ValueError, OSError, CrawlerError)


class PublishIncomplete(Exception):
    """Some holders did not take their shards; the publisher tries those terms again."""


def term_key(term: str) -> bytes:
    return hashlib.sha1(term.encode("utf-8")).digest()


def _distance(a: bytes, b: bytes) -> int:
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def _parse_lookup(raw: Any, wanted: Mapping[str, object]) -> dict[str, list[tuple[str, TermShard]]]:
    """A holder's answer to a lookup; copies that do not parse (a hostile or older holder)
    are dropped one by one, never the whole answer."""
    found: dict[str, list[tuple[str, TermShard]]] = {}
    if not isinstance(raw, dict):
        return found
    for term, copies in raw.items():
        if term not in wanted or not isinstance(copies, list):
            continue
        for copy in copies:
            try:
                publisher, body = copy
                found.setdefault(term, []).append((str(publisher), TermShard.from_json(term, body)))
            except (TypeError, ValueError):
                continue
    return found


class PhaseTimer:
    """Milliseconds each phase of a query took, for the Server-Timing header."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[phase] = round((now - self._last) * 1000, 2)
        self._last = now


@dataclass(slots=True)
class QueryTally:
    """Which remote peers one query asked, and which answered in time."""

    asked: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)
    unresponsive: set[str] = field(default_factory=set)


@dataclass(slots=True)
class PeerAnswer:
    peer: str
    results: list[dict[str, Any]]
    weights: PageWeights = field(default_factory=lambda: PageWeights.from_json({}))
    # Snippets of pages the querier named that are not among ``results``.
    snippets: dict[str, dict[str, str]] = field(default_factory=dict)


class Network:
    def __init__(self, config: NodeConfig, store: IndexStore) -> None:
        self.config = config
        self.store = store
        self.identity = Identity.load_or_create(config.data_dir)
        self.node_id = self.identity.node_id.hex()
        self._dht: DhtNode | None = None
        self.shards = ShardStore(config.data_dir / "shards.sqlite3")
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._published_generation = -1
        self._published_hash: dict[str, int] = {}
        self._published_members: frozenset[bytes] = frozenset()
        self._publishing = False
        self._backoff: dict[str, float] = {}
        self._members_cache: list[Peer] = []
        self.placement = HolderMap(self._lookup)
        # Bytes of peer traffic by kind (HTTP bodies): what a query or a publication costs.
        self.traffic: Counter[str] = Counter()
        self._lookups: set[asyncio.Future[dict[str, list[Peer]]]] = set()
        self._pinned = frozenset(h.lower() for h in config.pin_host)
        self.last_publish: dict[str, Any] = {}
        self.spot_checker = SpotChecker(config.data_dir, self.node_id)  # hostile peers (#5)
        # Merged shards of recent query terms: common words recur in most queries, and a
        # shard changes at most once a publish. {term: (fetched at, {publisher: shard})}
        self._shard_cache: OrderedDict[str, tuple[float, dict[str, TermShard]]] = OrderedDict()

    # --- lifecycle -------------------------------------------------------------------
    async def start(self, http_url: str) -> None:
        host, port = split_host_port(self.config.dht, "dht")
        await self.shards.open()
        self._dht = DhtNode(self.config.data_dir, http_url=http_url, identity=self.identity)
        bootstrap = [split_host_port(b, "bootstrap") for b in self.config.bootstrap]
        await self.dht.start(host, port, bootstrap)
        print(f"rhizome: dht on udp://{self.dht.host}:{self.dht.port}/", flush=True)
        # Peers advertise their own URLs: without this guard a stranger could point this
        # node's requests at the volunteer's router or NAS.
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT * 4),
            connector=aiohttp.TCPConnector(
                limit=64,
                socket_factory=GuardedSocketFactory(allow_private=self.config.allow_private_peers),
            ),
        )
        self._members_cache = await self._members()
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="shard-publisher"),
            asyncio.create_task(self._neighbourhood_loop(), name="dht-neighbourhood"),
        ]

    async def stop(self) -> None:
        pending: list[asyncio.Future[Any]] = [*self._tasks, *self._lookups]
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
        if self._dht is not None:
            await self._dht.stop()
        await self.shards.close()

    @property
    def dht(self) -> DhtNode:
        assert self._dht is not None, "Network.start() was not awaited"
        return self._dht

    @property
    def started(self) -> bool:
        return self._dht is not None

    @property
    def idle(self) -> bool:
        return not self._publishing and self._published_generation == self.store.generation

    async def status(self) -> dict[str, Any]:
        peers = await self.dht.peers()
        now = time.monotonic()
        return {
            "node_id": self.node_id,
            "dht": f"{self.dht.host}:{self.dht.port}",
            "peers": len(peers),
            "shards_held": await self.shards.count(),
            "published_generation": self._published_generation,
            "last_publish": self.last_publish,
            "unresponsive_peers": [p for p, until in self._backoff.items() if until > now],
            "traffic_bytes": dict(self.traffic),
            "holder_lookups": self.placement.lookups,
            "distrusted_peers": sorted(self.spot_checker.distrusted),  # hostile peers (#5)
            "spot_checks": self.spot_checker.stats(),  # hostile peers (#5)
            "dht_dropped": self.dht.dropped,  # datagrams refused, by reason (hostile peers #5)
        }

    # --- host slices -----------------------------------------------------------------
    def owner_of_host(self, host: str) -> Peer | None:
        """The member closest to the host's key (None before the network is known)."""
        if not self._members_cache:
            return None
        key = hashlib.sha1(f"host:{host}".encode()).digest()
        return min(self._members_cache, key=lambda p: _distance(p.node_id, key))

    def owns(self, host: str) -> bool:
        """HostRouter: pinned hosts are always ours; others belong to the closest member."""
        if host in self._pinned:
            return True
        owner = self.owner_of_host(host)
        return owner is None or owner.node_id == self.identity.node_id or not self._usable(owner)

    async def forward(self, urls: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """HostRouter: send URLs to their hosts' owners; return what could not be sent."""
        by_owner: dict[bytes, list[tuple[str, int]]] = defaultdict(list)
        peers: dict[bytes, Peer] = {}
        undelivered: list[tuple[str, int]] = []
        for url, depth in urls:
            owner = self.owner_of_host(url.split("/", 3)[2] if "://" in url else "")
            if owner is None or not owner.http_url or owner.node_id == self.identity.node_id:
                undelivered.append((url, depth))
                continue
            by_owner[owner.node_id].append((url, depth))
            peers[owner.node_id] = owner

        async def send(node_id: bytes, batch: list[tuple[str, int]]) -> None:
            peer = peers[node_id]
            assert self._session is not None and peer.http_url
            try:
                for start in range(0, len(batch), FORWARD_BATCH):
                    chunk = batch[start : start + FORWARD_BATCH]
                    async with self._session.post(
                        peer.http_url.rstrip("/") + "/api/peer/urls",
                        json={"urls": chunk},
                        timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT),
                    ) as resp:
                        resp.raise_for_status()
            except PEER_ERRORS:
                self._mark_slow(peer)
                undelivered.extend(batch)  # crawl them ourselves rather than lose them

        await asyncio.gather(*(send(n, b) for n, b in by_owner.items()))
        return undelivered

    # --- placement -------------------------------------------------------------------
    async def _members(self) -> list[Peer]:
        peers = [p for p in await self.dht.peers() if p.http_url]
        me = Peer(self.dht.node_id, self.dht.host, self.dht.port, self.dht.http_url)
        return [me, *peers]

    async def _lookup(self, key: bytes, count: int) -> list[Peer]:
        """The nodes closest to ``key`` in the network that can take HTTP requests."""
        return [p for p in await self.dht.closest_nodes(key, count) if p.http_url]

    async def holders_of(self, terms: list[str], count: int = REPLICAS) -> dict[str, list[Peer]]:
        """Each term's ``count`` closest nodes in the network (DHT lookups, reused)."""
        by_key = await self.placement.holders_of([term_key(t) for t in terms], count)
        return {t: by_key[term_key(t)] for t in terms}

    async def _query_holders(self, terms: list[str]) -> dict[str, list[Peer]]:
        """Holders for a query, within LOOKUP_BUDGET: a lookup stuck on a dead contact
        (it waits for UDP timeouts) finishes in the background for the next query, and
        this one uses the routing table's view, exact in small networks."""
        lookup = asyncio.ensure_future(self.holders_of(terms))
        self._lookups.add(lookup)
        lookup.add_done_callback(self._lookup_done)
        try:
            return await asyncio.wait_for(asyncio.shield(lookup), LOOKUP_BUDGET)
        except TimeoutError:
            members = await self._members()
            return {
                t: sorted(members, key=lambda p: _distance(p.node_id, term_key(t)))[:REPLICAS]
                for t in terms
            }

    def _lookup_done(self, lookup: asyncio.Future[dict[str, list[Peer]]]) -> None:
        self._lookups.discard(lookup)
        if not lookup.cancelled() and lookup.exception() is not None:
            log.info("holder lookup failed: %r", lookup.exception())

    async def _neighbourhood_loop(self) -> None:
        """Look ourselves up now and then: the library refreshes buckets hourly, so nodes
        that (re)started together would otherwise know only their bootstrap contact for an
        hour, and place shards on what they think are the closest nodes."""
        interval = NEIGHBOURHOOD_FIRST
        while True:
            await asyncio.sleep(interval)
            try:
                await self.dht.closest_nodes(self.dht.node_id, REPLICAS)
            except Exception:
                log.warning("neighbourhood lookup failed", exc_info=True)
            interval = min(interval * 2, NEIGHBOURHOOD_EVERY)

    # --- publishing ------------------------------------------------------------------
    async def _publish_loop(self) -> None:
        retry_in = PUBLISH_RETRY
        while True:
            await asyncio.sleep(0.25)
            generation = self.store.generation
            self._members_cache = await self._members()
            members = frozenset(p.node_id for p in self._members_cache)
            if members != self._published_members and self._published_generation >= 0:
                # Someone joined or left: the closest nodes of some terms changed, so every
                # shard is placed again (holders that already have a copy just overwrite it).
                self._published_hash.clear()
                self.placement.clear()
                self._published_generation = -1
            if generation == self._published_generation:
                continue
            if time.time() - self.store.last_commit_at < PUBLISH_QUIET and self.store.pending:
                continue  # still crawling hard: wait for a pause, then publish once
            self._publishing = True
            try:
                await self.publish()
                self._published_generation = generation
                self._published_members = members
                retry_in = PUBLISH_RETRY
            except PublishIncomplete as exc:
                # Only what did not reach every holder goes again, after a growing pause.
                log.warning("%s; retrying in %.0f s", exc, retry_in)
                await asyncio.sleep(retry_in)
                retry_in = min(retry_in * 2, MAX_PUBLISH_RETRY)
            except (OSError, sqlite3.Error) as exc:
                # A full disk or a failing store: one line per attempt, no traceback spam.
                log.warning("shard publishing failed: %s; retrying in %.0f s", exc, retry_in)
                await asyncio.sleep(retry_in)
                retry_in = min(retry_in * 2, MAX_PUBLISH_RETRY)
            except Exception:
                log.exception("shard publishing failed; retrying in %.0f s", retry_in)
                await asyncio.sleep(retry_in)
                retry_in = min(retry_in * 2, MAX_PUBLISH_RETRY)
            finally:
                self._publishing = False

    async def publish(self) -> None:
        started = time.monotonic()
        shards = await self.store.term_shards()
        # Keys that survive commits which only shift the averages; computed off the loop.
        hashes = await asyncio.to_thread(lambda: {s.term: content_key(s) for s in shards})
        changed = [s for s in shards if self._published_hash.get(s.term) != hashes[s.term]]
        by_holder: dict[bytes, list[TermShard]] = defaultdict(list)
        peers_by_id: dict[bytes, Peer] = {}
        placement = await self.holders_of([shard.term for shard in changed])
        for shard in changed:
            for holder in placement[shard.term]:
                by_holder[holder.node_id].append(shard)
                peers_by_id[holder.node_id] = holder
        expires_at = time.time() + DEFAULT_SHARD_TTL
        results = await asyncio.gather(
            *(
                self._push(peers_by_id[node_id], batch, expires_at)
                for node_id, batch in by_holder.items()
            ),
            return_exceptions=True,
        )
        unplaced: set[str] = set()
        for (node_id, batch), result in zip(by_holder.items(), results, strict=True):
            if result is not True:
                log.info("shards not placed on %s: %r", peers_by_id[node_id].http_url, result)
                self._mark_slow(peers_by_id[node_id])
                unplaced.update(shard.term for shard in batch)
        failed = sum(1 for r in results if r is not True)
        # A term counts as published once every one of its holders has it.
        self._published_hash = {t: h for t, h in hashes.items() if t not in unplaced}
        self.last_publish = {
            "terms": len(shards),
            "changed": len(changed),
            "holders": len(by_holder),
            "failed_holders": failed,
            "seconds": round(time.monotonic() - started, 2),
        }
        log.info("published shards: %s", self.last_publish)
        if failed:
            raise PublishIncomplete(f"{failed} holder(s) refused or missed {len(unplaced)} terms")

    async def _push(self, holder: Peer, shards: list[TermShard], expires_at: float) -> bool:
        if holder.node_id == self.dht.node_id:
            await self.shards.put(self.node_id, shards, expires_at)
            return True
        assert self._session is not None and holder.http_url
        for start in range(0, len(shards), PUBLISH_BATCH_TERMS):
            part = shards[start : start + PUBLISH_BATCH_TERMS]
            body = await asyncio.to_thread(self.sign_batch, part, expires_at)  # not on the loop
            self.traffic["push_sent"] += len(body)
            async with self._session.post(
                holder.http_url.rstrip("/") + "/api/peer/shards",
                data=body,
                headers={"Content-Type": "application/octet-stream"},
                timeout=aiohttp.ClientTimeout(total=PUSH_TIMEOUT),
            ) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"{holder.http_url} refused shards: {resp.status}")
        return True

    def sign_batch(self, shards: list[TermShard], expires_at: float) -> bytes:
        payload = compress(encode_batch(shards))
        return sign_record(
            self.dht.identity,
            kind=SHARD_KIND,
            key=b"batch",
            payload=payload,
            issued_at=time.time(),
            expires_at=expires_at,
        )

    async def accept_push(self, body: bytes) -> int:
        """A peer's signed batch: verify, decode within limits, store under its node id.
        Decoding runs on a thread: a batch is megabytes of JSON, and queries wait on the loop."""
        publisher, rows, expires_at = await asyncio.to_thread(self._decode_push, body)
        return await self.shards.put_encoded(publisher, rows, expires_at)

    def _decode_push(self, body: bytes) -> tuple[str, list[tuple[str, str]], float]:
        record = verify_record(body, now=time.time(), max_size=MAX_PUSH_BYTES)
        if record.publisher_id.hex() in self.spot_checker.distrusted:  # hostile peers (#5)
            raise ValueError("publisher is distrusted (failed spot-checks)")
        if record.kind != SHARD_KIND:
            raise ValueError("not a shard batch")
        rows = split_batch(decompress(record.payload, MAX_PUSH_DECODED))
        expires_at = min(record.expires_at, time.time() + DEFAULT_SHARD_TTL)
        return record.publisher_id.hex(), rows, expires_at

    # --- querying --------------------------------------------------------------------
    def _usable(self, peer: Peer) -> bool:
        if peer.node_id.hex() in self.spot_checker.distrusted:  # hostile peers (#5)
            return False
        return self._backoff.get(peer.node_id.hex(), 0.0) <= time.monotonic()

    def _mark_slow(self, peer: Peer) -> None:
        self._backoff[peer.node_id.hex()] = time.monotonic() + BACKOFF_SECONDS

    async def _get_json(
        self, peer: Peer, path: str, params: Mapping[str, str] | Sequence[tuple[str, str]]
    ) -> Any:
        assert self._session is not None and peer.http_url
        async with self._session.get(
            peer.http_url.rstrip("/") + path,
            params=params,
            timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT),
        ) as resp:
            resp.raise_for_status()
            raw = await resp.read()
            wire = resp.content_length or len(raw)  # compressed size when gzipped
        self.traffic[TRAFFIC_IN.get(path, "other_in")] += wire
        return orjson.loads(raw)

    async def _ask_peer(
        self,
        peer: Peer,
        path: str,
        params: Mapping[str, str] | Sequence[tuple[str, str]],
        tally: QueryTally,
        deadline: float | None = None,
    ) -> dict[str, Any] | None:
        """One request of a federated query, counted in ``tally``. A peer that fails or
        misses the deadline is backed off and named unresponsive (None); an answer that is
        not a JSON object counts as an empty one."""
        peer_hex = peer.node_id.hex()
        tally.asked.add(peer_hex)
        request = self._get_json(peer, path, params)
        try:
            if deadline is None:
                data = await request
            else:
                data = await asyncio.wait_for(request, max(0.05, deadline - time.monotonic()))
        except PEER_ERRORS:
            self._mark_slow(peer)
            tally.unresponsive.add(peer_hex)
            return None
        tally.answered.add(peer_hex)
        return data if isinstance(data, dict) else {}

    async def fetch_shards(
        self, terms: list[str], tally: QueryTally
    ) -> dict[str, dict[str, TermShard]]:
        """Merged copies of each term: {term: {publisher: shard}}, from its holders.

        Each term is asked of its nearest responsive holder; a term that comes back empty
        (that holder died, or is new and still being filled while shards are re-placed) is
        asked of the next holder, up to all replicas.
        """
        merged: dict[str, dict[str, TermShard]] = {t: {} for t in terms}
        now = time.monotonic()
        for term in terms:
            cached = self._shard_cache.get(term)
            if cached is not None and now - cached[0] < SHARD_CACHE_SECONDS:
                merged[term] = dict(cached[1])
                self._shard_cache.move_to_end(term)
        missing = [t for t in terms if not merged[t]]
        if missing:
            await self._fetch_missing(missing, merged, tally)
            for term in missing:
                if merged[term]:
                    self._shard_cache[term] = (now, merged[term])
                    self._shard_cache.move_to_end(term)
            while len(self._shard_cache) > SHARD_CACHE_TERMS:
                self._shard_cache.popitem(last=False)
        distrusted = self.spot_checker.distrusted  # (#5) may have grown since caching
        return {t: {p: s for p, s in c.items() if p not in distrusted} for t, c in merged.items()}

    async def _fetch_missing(
        self, terms: list[str], merged: dict[str, dict[str, TermShard]], tally: QueryTally
    ) -> None:
        candidates = await self._query_holders(terms)
        peers = {h.node_id: h for holders in candidates.values() for h in holders}

        async def ask(node_id: bytes, wanted: list[str]) -> None:
            peer = peers[node_id]
            if node_id == self.dht.node_id:
                found = await self.shards.get(wanted)
            else:
                raw = await self._ask_peer(
                    peer, "/api/peer/shards", {"terms": ",".join(wanted)}, tally
                )
                if raw is None:
                    return
                found = _parse_lookup(raw, merged)
            for term, copies in found.items():
                for publisher, shard in copies:
                    if publisher not in self.spot_checker.distrusted:  # hostile peers (#5)
                        merged[term].setdefault(publisher, shard)

        me = self.dht.node_id
        for _round in range(REPLICAS):
            open_terms = {
                t: [h.node_id for h in candidates[t] if self._usable(h)]
                for t in terms
                if not merged[t]
            }
            # As few requests as possible: our own copy first (no request at all), then the
            # holder that serves the most of the remaining terms, and so on.
            coverage = Counter(h for holders in open_terms.values() for h in set(holders))
            plan: dict[bytes, list[str]] = defaultdict(list)
            for term, holders in open_terms.items():
                if holders:
                    best = me if me in holders else max(holders, key=lambda h: coverage[h])
                    plan[best].append(term)
            if not plan:
                break
            for node_id, wanted in plan.items():  # not asked again in the next round
                for term in wanted:
                    candidates[term] = [h for h in candidates[term] if h.node_id != node_id]
            await asyncio.gather(*(ask(n, w) for n, w in plan.items()))

    async def search(self, q: str, *, limit: int, offset: int) -> dict[str, Any]:
        """Federated search; returns the fields the API merges into its response."""
        started = time.monotonic()
        deadline = started + QUERY_DEADLINE
        units = self.store.query_units(q)
        terms = list(dict.fromkeys(t for unit in units for t in unit))
        members = await self._members()
        tally = QueryTally()
        depth = max(limit + offset, OWNER_DEPTH)
        # While some of this node's pages are not in the shards yet (not yet published), it
        # answers for them whatever the shards say, beside the lookups. Otherwise it answers
        # like any owner, only when it owns one of the best candidates: its search and
        # snippets would take the CPU the query's own scoring needs.
        timings = PhaseTimer()
        own = None if self.idle else asyncio.create_task(self._own_answer(q, depth, []))
        try:
            merged = await asyncio.wait_for(
                self.fetch_shards(terms, tally), max(0.1, deadline - time.monotonic())
            )
            timings.lap("shards")
        except TimeoutError:
            merged = {}
        except BaseException:
            if own is not None:
                own.cancel()
            raise
        scorer = GlobalScorer(units, merged)
        owner, titles = scorer.owner, scorer.titles
        scores = scorer.shard_scores()
        timings.lap("score")
        ranked = sorted(scores, key=lambda u: scores[u], reverse=True)[:CANDIDATES]
        # Ask the owners of the best candidates (and ourselves) for snippets and their own
        # deeper results, each under what is left of the deadline.
        owners: list[str] = []
        for url in ranked:
            if scores[url] < OWNER_SCORE_SHARE * scores[ranked[0]]:
                break  # far behind the best page: its title from the shard will do
            if owner[url] not in owners:
                owners.append(owner[url])
            if len(owners) >= OWNERS_ASKED:
                break
        by_hex = {p.node_id.hex(): p for p in members}
        for missing in [o for o in owners if o not in by_hex]:
            # An owner outside our routing table (large networks): its signed endpoint.
            with contextlib.suppress(*PEER_ERRORS):
                endpoint = await asyncio.wait_for(
                    self.dht.endpoint_of(bytes.fromhex(missing)), PEER_TIMEOUT / 3
                )
                if endpoint:
                    by_hex[missing] = Peer(bytes.fromhex(missing), "", 0, endpoint)
        asked = [
            by_hex[o]
            for o in owners
            if o != self.node_id and o in by_hex and self._usable(by_hex[o])
        ]
        # The first page as the shards see it (SNIPPET_PAGES): an owner asked anyway makes
        # snippets for its pages there that its own search does not return; the other
        # publishers there are asked for just those pages' snippets, meanwhile. Without
        # them, one result in five showed a bare title.
        shown: dict[str, list[str]] = defaultdict(list)
        for url in ranked[offset : offset + SNIPPET_PAGES * limit]:
            shown[owner[url]].append(url)
        if own is None and (self.node_id in owners or not ranked):
            own = asyncio.create_task(self._own_answer(q, depth, shown.get(self.node_id, [])))
        snipped = [
            by_hex[p]
            for p in shown
            if p not in owners and p != self.node_id and p in by_hex and self._usable(by_hex[p])
        ]
        mine = [] if own is not None else shown.get(self.node_id, [])
        try:
            remote, snippets, local = await asyncio.gather(
                self._ask_owners(asked, q, depth, shown, deadline, tally),
                self._fetch_snippets(snipped, q, shown, deadline, tally),
                self.store.snippets(q, mine),
            )
            snippets.update(snippet_fields(local))
            answers = [*([await own] if own is not None else []), *remote]
        finally:
            if own is not None:
                own.cancel()
        timings.lap("owners")
        for answer in answers:
            snippets.update(answer.snippets)
        results: dict[str, dict[str, Any]] = {}
        for answer in answers:
            for r in answer.results:
                raw_url = r.get("url")
                if not isinstance(raw_url, str):
                    continue
                url = raw_url
                r = dict(r)
                if url in answer.weights.weights:
                    # The owner's own weights for this page: exact, global-statistics score.
                    scores[url] = scorer.score(scorer.owner_weights(answer.weights, url))
                r["score"] = round(scores.get(url, 0.0), 4)
                r["peers"] = [answer.peer]
                if url in results:
                    results[url]["peers"].append(answer.peer)
                else:
                    results[url] = r
        for url in ranked:  # candidates no owner returned: title (and a snippet if named)
            if url not in results:
                snippet = snippets.get(url, {})
                results[url] = {
                    "url": url,
                    "title": titles.get(url) or url,
                    "content": snippet.get("content", ""),
                    "content_html": snippet.get("content_html", ""),
                    "host": url.split("/", 3)[2] if "://" in url else "",
                    "score": round(scores[url], 4),
                    "engine": "rhizome",
                    "peers": [owner[url]],
                }
        tokens = [t for unit in units for t in unit]
        for r in results.values():
            bonus = title_bonus(tokens, str(r.get("title") or ""), self.store.analyzer.analyze)
            if bonus != 1.0:
                r["score"] = round(r["score"] * bonus, 4)
        ordered = sorted(results.values(), key=lambda r: r["score"], reverse=True)
        self.spot_checker.offer_page(ordered[offset : offset + limit], answers, terms)  # (#5)
        timings.lap("merge")
        return {
            "timings": timings.laps,
            "results": ordered[offset : offset + limit],
            "number_of_results": max(len(ordered), len(scores)),
            "unresponsive_peers": sorted(tally.unresponsive - tally.answered),
            "peers_asked": len(tally.asked),
            "peers_answered": len(tally.answered),
            "partial": bool(tally.unresponsive - tally.answered),
        }

    async def _fetch_snippets(
        self,
        peers: list[Peer],
        q: str,
        urls: Mapping[str, list[str]],
        deadline: float,
        tally: QueryTally,
    ) -> dict[str, dict[str, str]]:
        """Snippets of ``urls[peer]`` from each of ``peers``: {url: content fields}. A peer
        that does not answer in time leaves its pages with their titles."""

        async def ask(peer: Peer) -> dict[str, dict[str, str]]:
            named = urls[peer.node_id.hex()][:MAX_SNIPPET_URLS]
            params = [("q", q), *(("url", u) for u in named)]
            data = await self._ask_peer(peer, "/api/peer/snippets", params, tally, deadline)
            return {} if data is None else _parse_snippets(data, named)

        found: dict[str, dict[str, str]] = {}
        for part in await asyncio.gather(*(ask(p) for p in peers)):
            found.update(part)
        return found

    async def _own_answer(self, q: str, depth: int, named: list[str]) -> PeerAnswer:
        from .search import hit_to_result  # local: avoid an import cycle

        page, weights, snippets = await answer_locally(self.store, q, min(depth, 100), 0, named)
        return PeerAnswer(
            self.node_id,
            [hit_to_result(h, i + 1, self.node_id) for i, h in enumerate(page.hits)],
            weights,
            snippet_fields(snippets),
        )

    async def _ask_owners(
        self,
        peers: list[Peer],
        q: str,
        depth: int,
        shown: Mapping[str, list[str]],
        deadline: float,
        tally: QueryTally,
    ) -> list[PeerAnswer]:
        async def ask(peer: Peer) -> PeerAnswer | None:
            named = shown.get(peer.node_id.hex(), [])[:MAX_SNIPPET_URLS]
            params = [
                ("q", q),
                ("limit", str(min(depth, 100))),
                *(("snippet_url", u) for u in named),
            ]
            data = await self._ask_peer(peer, "/api/peer/search", params, tally, deadline)
            if data is None:
                return None
            results = data.get("results")
            return PeerAnswer(
                peer.node_id.hex(),
                [r for r in results if isinstance(r, dict)] if isinstance(results, list) else [],
                PageWeights.from_json(data),
                _parse_snippets(data, named),
            )

        answers = await asyncio.gather(*(ask(p) for p in peers))
        return [a for a in answers if a is not None]


async def answer_locally(
    store: IndexStore, q: str, limit: int, offset: int, named: list[str]
) -> tuple[SearchPage, PageWeights, dict[str, Snippet]]:
    """An owner's answer to a federated query: its search, the hits' term weights, and
    snippets of the ``named`` pages its search does not return (pages the querying node
    expects on its first page from shards; they would show as bare titles)."""
    page, weights = await store.search_with_weights(q, limit=limit, offset=offset)
    returned = {hit.url for hit in page.hits}
    others = [u for u in named[:MAX_SNIPPET_URLS] if u not in returned]
    return page, weights, await store.snippets(q, others)


def snippet_fields(found: Mapping[str, Snippet]) -> dict[str, dict[str, str]]:
    """Snippets as a result's fields (and a peer answer's ``snippets``): {url: fields}."""
    return {url: {"content": s.text, "content_html": s.to_html()} for url, s in found.items()}


def _parse_snippets(raw: Any, asked: list[str]) -> dict[str, dict[str, str]]:
    """An owner's snippets of the pages we named, as strings (peer input)."""
    found: dict[str, dict[str, str]] = {}
    items = raw.get("snippets") if isinstance(raw, dict) else None
    if not isinstance(items, dict):
        return found
    wanted = set(asked)
    for url, fields in items.items():
        if url in wanted and isinstance(fields, dict):
            content, html = fields.get("content"), fields.get("content_html")
            if isinstance(content, str) and isinstance(html, str):
                found[url] = {"content": content, "content_html": html}
    return found
