"""Publishing: after commits, this node's changed term shards go to their holders.

Incremental: a commit can change only the shards of the terms on the pages it added or
removed (``IndexStore.changes``), so only those are rebuilt, and of those only the ones
whose *content key* changed (df, pages, lengths, term frequencies; not the averages,
which move with every commit) are signed and sent, to the ``replicas`` nodes closest to
sha1(term), as signed zstd batches over HTTP. Amortised: while commits keep coming a
publish runs at most every ``publish_every`` seconds and sends only terms no holder has
yet (new pages become findable by their words); terms already placed wait for a pause
in the commits (or ``publish_refresh``), so a common word is not re-sent after every
commit. Every ``republish_every`` (and after a start, or a membership change) every
term is rebuilt and placed again: copies expire at holders, and a deleted page's anchor
words or tantivy's merges are seen by no commit.

A holder that misses its batch gets just those terms again, after a growing pause; one
that misses ``HOLDER_FAILURES_TO_DROP`` in a row (dead, refusing, or a URL that does not
prove itself) is treated as gone: its terms go to the next closest nodes instead, until,
after ``DROPPED_HOLDER_SECONDS``, it proves its URL again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rhizome.dht import Identity, Peer
from rhizome.dht.identity import SIGNATURE_BYTES
from rhizome.dht.placement import LOOKUP_WIDTH
from rhizome.index import IndexStore, TermShard
from rhizome.index.shard_codec import content_key

from .client import PeerClient
from .errors import PeerBusy, PeerError, PublishIncomplete
from .membership import Membership
from .settings import FederationSettings
from .shard_store import DEFAULT_SHARD_TTL, ShardStore
from .wire import PATH_SHARDS, ShardGroup, sign_batch, sign_groups

log = logging.getLogger(__name__)

T = TypeVar("T")

LOOP_TICK = 0.25  # seconds between looks at the index's generation and the members
# Consecutive missed batches after which a holder is taken for gone: with the growing pause
# (2, 4, 8 s) about 15 s, long enough for a restart, short enough that the terms are placed.
HOLDER_FAILURES_TO_DROP = 3
# A busy answer (429/503: pushes in flight, a quota) counts as this much of a miss: the
# holder is up, and a burst of publishers must not drop it, but one that is busy for ever
# (12 answers in a row, ~8 min with the pauses) is as good as refusing.
BUSY_MISS = 0.25
# A dropped holder is not pushed to for this long; then it must prove its URL afresh.
DROPPED_HOLDER_SECONDS = 600.0
MAX_DROPPED_HOLDERS = 256  # the oldest is forgotten first (it may simply be asked again)
# Terms built, signed and pushed at a time. Building all 45,439 shards of a 25,859-page site
# (467k postings) at once left the node 237 MB of anonymous memory after a full republish
# (82 MB before it): the heap those postings fragmented stays. Anonymous memory after, and
# the republish's CPU, a lone node on that site: 5,000 terms a part 136 MB, 8.8-9.4 s;
# 10,000 152 MB, 8.8 s; 20,000 171 MB, 8.1 s; all at once 237 MB, 8.1 s (a term's pages
# are read again in each part that names them).
BUILD_CHUNK_TERMS = 10_000


@dataclass(slots=True)
class _Placed:
    """What one publish built and placed, over its chunks of terms."""

    built: int = 0
    sent: int = 0
    record_bytes: int = 0
    cpu: float = 0.0
    hashes: dict[str, int] = field(default_factory=dict)  # term -> content key
    unplaced: set[str] = field(default_factory=set)  # terms a holder did not take
    # node id -> (the holder, whether it missed a batch, whether every miss was "busy")
    holders: dict[bytes, tuple[Peer, bool, bool]] = field(default_factory=dict)


class Publisher:
    def __init__(
        self,
        *,
        store: IndexStore,
        identity: Identity,
        membership: Membership,
        client: PeerClient,
        shards: ShardStore,
        settings: FederationSettings,
    ) -> None:
        self.store = store
        self.identity = identity
        self.membership = membership
        self.client = client
        self.shards = shards
        self.settings = settings
        self.published_generation = -1
        self._published_hash: dict[str, int] = {}
        self._published_members: frozenset[bytes] = frozenset()
        # Terms touched by commits (or missed by a holder) and not yet placed since.
        self._pending: set[str] = set()
        self._everything = True  # the next publish rebuilds and places every term
        self._last_publish_at = 0.0  # monotonic: of the last publish, of the last that
        self._last_flush_at = 0.0  # sent every pending term, and of the last full one
        self._last_full_at = time.monotonic()
        self._publishing = False
        self.last_publish: dict[str, Any] = {}
        # What publishing has cost since start (the operator's status; bench/publish_bench).
        self.totals: dict[str, float] = defaultdict(float)
        # Consecutive missed batches, by holder (a busy answer a fraction of one).
        self._failures: defaultdict[bytes, float] = defaultdict(float)
        # Holders taken for gone: node id -> (the peer, monotonic time it was dropped).
        self.dropped: dict[bytes, tuple[Peer, float]] = {}

    @property
    def idle(self) -> bool:
        """Every committed page is in the shards its holders have."""
        return not self._publishing and self.published_generation == self.store.generation

    async def run(self) -> None:
        retry_in = self.settings.publish_retry
        while True:
            await asyncio.sleep(LOOP_TICK)
            members = frozenset(p.node_id for p in await self.membership.refresh())
            if members != self._published_members and self.published_generation >= 0:
                # Someone joined or left: the closest nodes of some terms changed.
                self._replace_everything()
                self.membership.placement.clear()
            now = time.monotonic()
            if now - self._last_full_at >= self.settings.republish_every:
                self._replace_everything()  # before the holders' copies expire
            if self.store.generation == self.published_generation and not self._pending:
                continue
            quiet = (
                time.time() - self.store.last_commit_at >= self.settings.publish_quiet
                and not self.store.pending
            )
            if not quiet and now - self._last_publish_at < self.settings.publish_every:
                continue  # still crawling hard: publish now and then, and at a pause
            flush = quiet or now - self._last_flush_at >= self.settings.publish_refresh
            self._publishing = True
            try:
                generation = await self.publish(flush=flush)
                if flush:
                    self.published_generation = generation
                    self._published_members = members
                retry_in = self.settings.publish_retry
            except PublishIncomplete as exc:
                # Only what did not reach every holder goes again, after a growing pause.
                log.warning("%s; retrying in %.0f s", exc, retry_in)
                retry_in = await self._pause(retry_in)
            except (OSError, sqlite3.Error) as exc:
                # A full disk or a failing store: one line per attempt, no traceback spam.
                log.warning("shard publishing failed: %s; retrying in %.0f s", exc, retry_in)
                retry_in = await self._pause(retry_in)
            except Exception:
                log.exception("shard publishing failed; retrying in %.0f s", retry_in)
                retry_in = await self._pause(retry_in)
            finally:
                self._publishing = False
                self._last_publish_at = time.monotonic()

    def _replace_everything(self) -> None:
        """Forget what was placed: the next publish rebuilds and places every term."""
        self._published_hash.clear()
        self._everything = True
        self.published_generation = -1

    async def _pause(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return min(seconds * 2, self.settings.max_publish_retry)

    async def publish(self, *, flush: bool = True) -> int:
        """Rebuild the terms touched since the last publish (every term after a start or
        a membership change) and place those whose content changed. Not ``flush``ing,
        only terms no holder has yet go; the rest wait. Returns the index generation
        whose changes are now placed (when flushed)."""
        started = time.monotonic()
        generation, touched = self.store.changes.take()
        self._pending |= touched
        everything = self._everything
        if everything:
            wanted = await self.store.indexed_terms()
        elif flush:
            wanted = sorted(self._pending)
        else:
            wanted = sorted(t for t in self._pending if t not in self._published_hash)
        done = _Placed()
        for first in range(0, len(wanted), BUILD_CHUNK_TERMS):
            await self._place(wanted[first : first + BUILD_CHUNK_TERMS], done)
        # A holder that missed any of its batches missed this publish, once.
        for node_id, (peer, missed, busy) in done.holders.items():
            if not missed:
                self._failures.pop(node_id, None)
                continue
            self._failures[node_id] += BUSY_MISS if busy else 1
            if self._failures[node_id] >= HOLDER_FAILURES_TO_DROP:
                self._drop(peer)
        failed = sum(1 for _peer, missed, _busy in done.holders.values() if missed)
        # A term counts as published once every one of its holders has it.
        if everything:
            self._published_hash.clear()  # (terms no page has any more are forgotten)
            self._pending.clear()
            self._everything = False
            self._last_full_at = started
        else:
            built = set(wanted)
            for term in built.difference(done.hashes):
                self._published_hash.pop(term, None)  # no page has it any more
            self._pending -= built
        for term, key in done.hashes.items():
            if term in done.unplaced:
                self._published_hash.pop(term, None)
                self._pending.add(term)
            else:
                self._published_hash[term] = key
        if flush:
            self._last_flush_at = started
        self._count(done, full=everything)
        self.last_publish = {
            "terms": done.built,
            "changed": done.sent,
            "deferred": len(self._pending),
            "full": everything,
            "holders": len(done.holders),
            "failed_holders": failed,
            "cpu_seconds": round(done.cpu, 3),
            "seconds": round(time.monotonic() - started, 2),
        }
        log.info("published shards: %s", self.last_publish)
        if failed:
            raise PublishIncomplete(
                f"{failed} holder(s) refused or missed {len(done.unplaced)} terms"
            )
        return generation

    async def _place(self, wanted: list[str], done: _Placed) -> None:
        """Build ``wanted``'s shards and place those whose content changed, into ``done``."""
        shard_cpu = self.store.shard_cpu
        built = await self.store.term_shards(wanted)
        done.cpu += self.store.shard_cpu - shard_cpu
        done.built += len(built)
        # Keys that survive commits which only shift the averages; computed off the loop.
        hashes, key_cpu = await asyncio.to_thread(
            _timed, lambda: {s.term: content_key(s) for s in built}
        )
        done.cpu += key_cpu
        done.hashes.update(hashes)
        changed = [s for s in built if self._published_hash.get(s.term) != hashes[s.term]]
        built.clear()  # the unchanged ones: not held while the pushes run
        # Terms bound for the same holders are signed together (``wire.GROUP_TERMS`` a
        # signature), so every holder of a term keeps the same bytes: a querier reading two
        # holders verifies one copy.
        by_holders: dict[tuple[bytes, ...], list[TermShard]] = defaultdict(list)
        peers_by_id: dict[bytes, Peer] = {}
        placement = await self._placement([shard.term for shard in changed])
        for shard in changed:
            holders = placement[shard.term]
            by_holders[tuple(sorted(h.node_id for h in holders))].append(shard)
            peers_by_id.update((h.node_id, h) for h in holders)
        expires_at = time.time() + DEFAULT_SHARD_TTL
        signed, sign_cpu = await asyncio.to_thread(
            _timed,
            lambda: {
                ids: sign_groups(self.identity, shards, expires_at)
                for ids, shards in by_holders.items()
            },
        )
        done.cpu += sign_cpu
        done.sent += len(changed)
        by_holder: dict[bytes, list[ShardGroup]] = defaultdict(list)
        for ids, groups in signed.items():
            done.record_bytes += sum(map(len, (b for g in groups for b in g.bodies)))
            done.record_bytes += len(groups) * SIGNATURE_BYTES
            for node_id in ids:
                by_holder[node_id].extend(groups)
        results = await asyncio.gather(
            *(
                self._push(peers_by_id[node_id], groups, expires_at)
                for node_id, groups in by_holder.items()
            ),
            return_exceptions=True,
        )
        for (node_id, groups), result in zip(by_holder.items(), results, strict=True):
            peer = peers_by_id[node_id]
            _seen, missed, busy = done.holders.get(node_id, (peer, False, True))
            if isinstance(result, float):
                done.cpu += result
                done.holders[node_id] = (peer, missed, busy)
                continue
            log.info("shards not placed on %s: %r", peer.http_url, result)
            busy_now = isinstance(result, PeerBusy)
            if not busy_now:  # a busy holder still answers lookups and searches
                self.client.mark_slow(peer)
            done.unplaced.update(term for group in groups for term in group.terms)
            done.holders[node_id] = (peer, True, busy and busy_now)

    def _count(self, done: _Placed, *, full: bool) -> None:
        totals = self.totals
        totals["publishes"] += 1
        totals["full_rebuilds"] += full
        totals["terms_built"] += done.built
        totals["terms_sent"] += done.sent
        totals["record_bytes"] += done.record_bytes
        totals["cpu_seconds"] += done.cpu

    async def _placement(self, terms: list[str]) -> dict[str, list[Peer]]:
        """Each term's holders: its ``replicas`` closest nodes, but for dropped ones."""
        await self._readmit()
        replicas = self.settings.replicas
        if not self.dropped:
            return await self.membership.holders_of(terms)
        width = min(replicas + len(self.dropped), LOOKUP_WIDTH)
        wider = await self.membership.holders_of(terms, width)
        return {
            t: [p for p in peers if p.node_id not in self.dropped][:replicas]
            for t, peers in wider.items()
        }

    def _drop(self, holder: Peer) -> None:
        self._failures.pop(holder.node_id, None)
        self.dropped[holder.node_id] = (holder, time.monotonic())
        while len(self.dropped) > MAX_DROPPED_HOLDERS:
            del self.dropped[next(iter(self.dropped))]
        self.client.forget_proof(holder)  # it must prove itself afresh to come back
        log.warning(
            "holder %s (%s) missed %d batches in a row: placing its terms elsewhere",
            holder.node_id.hex()[:12],
            holder.http_url,
            HOLDER_FAILURES_TO_DROP,
        )

    async def _readmit(self) -> None:
        """Dropped holders whose time is up come back if their URL proves itself now."""
        now = time.monotonic()
        for node_id, (holder, since) in list(self.dropped.items()):
            if now - since < DROPPED_HOLDER_SECONDS:
                continue
            try:
                await self.client.prove(holder)
            except PeerError:
                self.dropped[node_id] = (holder, now)  # still gone: another period
                continue
            del self.dropped[node_id]
            log.info("holder %s proves itself again: placing on it", node_id.hex()[:12])

    async def _push(self, holder: Peer, groups: list[ShardGroup], expires_at: float) -> float:
        """Place ``groups`` on ``holder``; the CPU seconds their envelopes took."""
        if holder.node_id == self.identity.node_id:
            held = [record for group in groups for record in group.held(expires_at)]
            await self.shards.put(self.identity.node_id.hex(), held)
            return 0.0
        cpu = 0.0
        for part in _batches(groups, self.settings.publish_batch_terms):
            # Signing compresses megabytes: not on the loop.
            body, took = await asyncio.to_thread(
                _timed, lambda part=part: sign_batch(self.identity, part, expires_at)
            )
            cpu += took
            self.client.traffic["push_sent"] += len(body)
            await self.client.post(
                holder, PATH_SHARDS, data=body, within=self.settings.push_timeout
            )
        return cpu


def _batches(groups: list[ShardGroup], terms: int) -> list[list[ShardGroup]]:
    """Whole groups, about ``terms`` terms a batch (a group is never split)."""
    batches: list[list[ShardGroup]] = [[]]
    size = 0
    for group in groups:
        if size and size + len(group.terms) > terms:
            batches.append([])
            size = 0
        batches[-1].append(group)
        size += len(group.terms)
    return batches if batches[0] else []


def _timed(work: Callable[[], T]) -> tuple[T, float]:
    """``work()`` and the CPU seconds it took on this thread (publishing counts its cost)."""
    started = time.thread_time()
    result = work()
    return result, time.thread_time() - started
