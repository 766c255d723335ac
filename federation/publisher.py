"""Publishing: after commits settle, this node's changed term shards go to their holders.

A shard is re-sent only when its *content key* changed (df, pages, lengths, term
frequencies; not the averages, which move with every commit), to the ``replicas`` nodes
closest to sha1(term), as signed zstd batches over HTTP. Membership changes re-place
everything (holders that already have a copy just overwrite it). A holder that misses its
batch gets just those terms again, after a growing pause; one that misses
``HOLDER_FAILURES_TO_DROP`` in a row (dead, refusing, or a URL that does not prove itself)
is treated as gone: its terms go to the next closest nodes instead, until, after
``DROPPED_HOLDER_SECONDS``, it proves its URL again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import defaultdict
from typing import Any

from dht import Identity, Peer
from dht.placement import LOOKUP_WIDTH
from index import IndexStore, TermShard
from index.shard_codec import content_key

from .client import PeerClient
from .errors import PeerBusy, PeerError, PublishIncomplete
from .membership import Membership
from .settings import FederationSettings
from .shard_store import DEFAULT_SHARD_TTL, ShardStore
from .wire import PATH_SHARDS, HeldRecord, sign_batch, sign_held

log = logging.getLogger(__name__)

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
        self._publishing = False
        self.last_publish: dict[str, Any] = {}
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
            generation = self.store.generation
            members = frozenset(p.node_id for p in await self.membership.refresh())
            if members != self._published_members and self.published_generation >= 0:
                # Someone joined or left: the closest nodes of some terms changed.
                self._published_hash.clear()
                self.membership.placement.clear()
                self.published_generation = -1
            if generation == self.published_generation:
                continue
            quiet = time.time() - self.store.last_commit_at >= self.settings.publish_quiet
            if not quiet and self.store.pending:
                continue  # still crawling hard: wait for a pause, then publish once
            self._publishing = True
            try:
                await self.publish()
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

    async def _pause(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return min(seconds * 2, self.settings.max_publish_retry)

    async def publish(self) -> None:
        started = time.monotonic()
        shards = await self.store.term_shards()
        # Keys that survive commits which only shift the averages; computed off the loop.
        hashes = await asyncio.to_thread(lambda: {s.term: content_key(s) for s in shards})
        changed = [s for s in shards if self._published_hash.get(s.term) != hashes[s.term]]
        by_holder: dict[bytes, list[TermShard]] = defaultdict(list)
        peers_by_id: dict[bytes, Peer] = {}
        placement = await self._placement([shard.term for shard in changed])
        for shard in changed:
            for holder in placement[shard.term]:
                by_holder[holder.node_id].append(shard)
                peers_by_id[holder.node_id] = holder
        expires_at = time.time() + DEFAULT_SHARD_TTL
        # Each term is signed once (~50 us) and the same record goes to all its holders.
        signed = await asyncio.to_thread(sign_held, self.identity, changed, expires_at)
        records = {held.term: held for held in signed}
        results = await asyncio.gather(
            *(
                self._push(peers_by_id[node_id], [records[s.term] for s in batch], expires_at)
                for node_id, batch in by_holder.items()
            ),
            return_exceptions=True,
        )
        unplaced: set[str] = set()
        for (node_id, batch), result in zip(by_holder.items(), results, strict=True):
            if result is True:
                self._failures.pop(node_id, None)
                continue
            log.info("shards not placed on %s: %r", peers_by_id[node_id].http_url, result)
            busy = isinstance(result, PeerBusy)
            if not busy:  # a busy holder still answers lookups and searches
                self.client.mark_slow(peers_by_id[node_id])
            unplaced.update(shard.term for shard in batch)
            self._failures[node_id] += BUSY_MISS if busy else 1
            if self._failures[node_id] >= HOLDER_FAILURES_TO_DROP:
                self._drop(peers_by_id[node_id])
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

    async def _push(self, holder: Peer, records: list[HeldRecord], expires_at: float) -> bool:
        if holder.node_id == self.identity.node_id:
            await self.shards.put(self.identity.node_id.hex(), records)
            return True
        size = self.settings.publish_batch_terms
        for start in range(0, len(records), size):
            part = [r.record for r in records[start : start + size]]
            # Signing compresses megabytes: not on the loop.
            body = await asyncio.to_thread(sign_batch, self.identity, part, expires_at)
            self.client.traffic["push_sent"] += len(body)
            await self.client.post(
                holder, PATH_SHARDS, data=body, within=self.settings.push_timeout
            )
        return True
