"""Holding shards for the network: pushed batches verified, decoded and stored.

Decoding runs on a thread: a batch is megabytes of JSON, and queries wait on the loop.
The store (``shard_store.ShardStore``) keeps each publisher's copy apart and serves its
records as signed; every reader verifies them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

from rhizome.dht import DhtError

from .errors import PushRefused
from .shard_store import DEFAULT_SHARD_TTL, ShardStore, Stored
from .wire import PushedBatch, open_batch


class ShardHolder:
    def __init__(self, store: ShardStore, *, distrusted: Callable[[], Collection[str]]) -> None:
        self.store = store
        self._distrusted = distrusted

    async def accept_push(self, body: bytes) -> Stored:
        """A peer's signed batch: verify, decode within limits, store under its node id.
        Returns how many terms were stored and why others were not (quota, budgets);
        PushRefused says why a whole batch was not."""
        batch = await asyncio.to_thread(self._open, body)
        return await self.store.put(batch.publisher, batch.records)

    def _open(self, body: bytes) -> PushedBatch:
        try:
            batch = open_batch(body, max_ttl=DEFAULT_SHARD_TTL)
        except (DhtError, ValueError) as exc:
            raise PushRefused(str(exc)) from exc
        if batch.publisher in self._distrusted():  # failed spot checks
            raise PushRefused("publisher is distrusted (failed spot-checks)")
        return batch
