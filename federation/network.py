"""A node's place in the network: the federation's parts, composed and run together.

``Network`` owns the DHT node, the shard store it holds for others, the peer client, and
the parts built on them: membership, host slices (the crawler's ``HostRouter``), the
publisher, the holder of pushed shards, federated search and spot checks. It is built
whole from its dependencies, started once (``start``), stopped once (``stop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from typing import Any

from dht import DhtNode, Identity
from index import IndexStore, PreparedQuery

from .answer import LocalOwner
from .client import PeerClient
from .holding import ShardHolder
from .membership import Membership
from .peers import NetworkPeers
from .publisher import Publisher
from .search import FederatedPage, FederatedSearch
from .settings import DEFAULT_SETTINGS, FederationSettings
from .shard_store import ShardStore
from .slices import HostSlices
from .spot_check import SpotChecker

log = logging.getLogger(__name__)


class Network:
    def __init__(
        self,
        *,
        store: IndexStore,
        identity: Identity,
        dht: DhtNode,
        shard_store: ShardStore,
        spot_checker: SpotChecker,
        bootstrap: list[tuple[str, int]],
        listen: tuple[str, int],
        allow_private_peers: bool,
        pinned: tuple[str, ...] = (),
        settings: FederationSettings = DEFAULT_SETTINGS,
    ) -> None:
        self.store = store
        self.identity = identity
        self.node_id = identity.node_id.hex()
        self.dht = dht
        self.shards = shard_store
        self.spot_checker = spot_checker
        self.settings = settings
        self._bootstrap = bootstrap
        self._listen = listen
        distrusted = lambda: spot_checker.distrusted  # noqa: E731  (read at each use)
        self.client = PeerClient(settings, allow_private=allow_private_peers, distrusted=distrusted)
        self.membership = Membership(dht, settings)
        self.slices = HostSlices(self.membership, self.client, pinned=pinned)
        self.holder = ShardHolder(shard_store, distrusted=distrusted)
        self.publisher = Publisher(
            store=store,
            identity=identity,
            membership=self.membership,
            client=self.client,
            shards=shard_store,
            settings=settings,
        )
        self.searcher = FederatedSearch(
            local=LocalOwner(store, self.node_id),
            peers=NetworkPeers(
                membership=self.membership,
                client=self.client,
                shard_store=shard_store,
                settings=settings,
                distrusted=distrusted,
            ),
            settings=settings,
            analyze=store.analyzer.analyze,
            published=lambda: self.publisher.idle,
            spot_checker=spot_checker,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False

    @property
    def traffic(self) -> Any:
        return self.client.traffic

    @property
    def idle(self) -> bool:
        return self.publisher.idle

    async def start(self) -> None:
        """Open the shard store, join the DHT, start publishing. (Spot checks start with
        the crawler whose Fetcher they use: ``spot_checker.start``.)"""
        await self.shards.open()
        await self.dht.start(*self._listen, self._bootstrap)
        await self.client.open()
        await self.membership.refresh()
        self._tasks = [
            asyncio.create_task(self.publisher.run(), name="shard-publisher"),
            asyncio.create_task(self.membership.neighbourhood_loop(), name="dht-neighbourhood"),
            asyncio.create_task(self._expire_loop(), name="shard-expiry"),
        ]
        self.started = True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.membership.stop()
        await self.client.close()
        await self.dht.stop()
        await self.shards.close()

    async def _expire_loop(self) -> None:
        """Expired copies deleted and their space given back: now, then every
        ``expire_every`` seconds (without it they stayed on disk for ever)."""
        while True:
            try:
                removed = await self.shards.expire()
            except sqlite3.Error as exc:  # a full or failing disk: next round
                log.warning("expiring held shards failed: %s", exc)
            else:
                if removed:
                    log.info("expired %d held shard copies", removed)
            await asyncio.sleep(self.settings.expire_every)

    async def search(self, query: PreparedQuery, *, limit: int, offset: int) -> FederatedPage:
        return await self.searcher.search(self.searcher.plan(query, limit=limit, offset=offset))

    async def status(self) -> dict[str, Any]:
        peers = await self.dht.peers()
        return {
            "node_id": self.node_id,
            "dht": f"{self.dht.host}:{self.dht.port}",
            "peers": len(peers),
            "shards_held": await self.shards.count(),
            "shards_held_bytes": self.shards.held_bytes,  # others' copies, as budgeted
            "shards_refused": self.shards.over_quota,
            "shards_expired": self.shards.expired,
            "published_generation": self.publisher.published_generation,
            "last_publish": self.publisher.last_publish,
            "unresponsive_peers": self.client.backed_off(),
            "traffic_bytes": dict(self.client.traffic),
            "holder_lookups": self.membership.placement.lookups,
            "distrusted_peers": sorted(self.spot_checker.distrusted),
            "dropped_holders": sorted(n.hex() for n in self.publisher.dropped),
            "spot_checks": self.spot_checker.stats(),
            "dht_dropped": self.dht.dropped,  # datagrams refused, by reason
        }
