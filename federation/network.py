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

from rhizome.crawler import Blocklist
from rhizome.dht import DhtNode, Identity
from rhizome.index import IndexStore, PreparedQuery

from .answer import LocalOwner
from .answering import LocalAnswerer
from .client import PeerClient
from .direct import DirectLimits, DirectPaths
from .direct_serve import DirectServer
from .holding import ShardHolder
from .membership import Membership
from .peers import NetworkPeers
from .phases import FederatedPage
from .publisher import Publisher
from .reachability import Reachability, ReachabilityProbe, Verdict
from .relay import RelayHub, RelayLimits
from .relay_link import RelayLink
from .search import FederatedSearch
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
        reachability: str = "auto",
        relay_limits: RelayLimits | None = None,
        direct_limits: DirectLimits | None = None,
        local_url: str = "",
        blocklist: Blocklist | None = None,
    ) -> None:
        """``reachability``: "auto" (peers dial us back), "public" or "private" (the
        operator knows). ``local_url``: our own HTTP server as this host reaches it (relayed
        and direct requests are answered through it). ``direct_limits``: links past the relays
        (``direct.py``; ``max_links`` 0: none, either way). ``dht`` starts in client mode
        unless public.
        ``blocklist``: hosts whose postings and results a query leaves out."""
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
        self.forced = None if reachability == "auto" else Reachability(reachability)
        self.own_url = dht.http_url  # as configured; peers are told it only once public
        direct_limits = direct_limits or DirectLimits()
        self.direct = DirectPaths(
            identity=identity,
            client=self.client,
            limits=direct_limits,
            public_url=lambda: self.own_url if self.reachability is Reachability.PUBLIC else None,
            observed_ip=lambda: self.relay_link.observed_ip if self._link_task else None,
        )
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
        self.peers = NetworkPeers(
            membership=self.membership,
            client=self.client,
            shard_store=shard_store,
            settings=settings,
            distrusted=distrusted,
            direct=self.direct,
        )
        self.searcher = FederatedSearch(
            local=LocalOwner(store, self.node_id),
            peers=self.peers,
            settings=settings,
            analyze=store.analyzer.analyze,
            published=lambda: self.publisher.idle,
            spot_checker=spot_checker,
            meaning=None if store.embedder is None else store.embedder.similarities,
            blocklist=blocklist,
        )
        self.relay_hub = RelayHub(relay_limits or RelayLimits())
        self.probe = ReachabilityProbe(
            client=self.client,
            node_id=identity.node_id,
            url=lambda: self.own_url,
            members=self.membership.members,
            changed=self._reachability_changed,
        )
        # Relayed and direct requests alike are answered by asking our own HTTP server.
        self.answerer = LocalAnswerer(local_url or (self.own_url or ""))
        self.relay_link = RelayLink(
            identity=identity,
            client=self.client,
            candidates=self.membership.members,
            answerer=self.answerer,
            # A relayed URL is told at once; a contact that died meanwhile delays nothing.
            announce=lambda url: self.dht.advertise(url, wait=False),
        )
        self._link_task: asyncio.Task[None] | None = None
        self.direct_server = DirectServer(
            identity=identity,
            client=self.client,
            answerer=self.answerer,
            max_links=direct_limits.max_links,
            relayed=lambda: self._link_task is not None and self.relay_link.relay is not None,
            observed_ip=lambda: self.relay_link.observed_ip if self._link_task else None,
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
        await self.answerer.open()
        await self.membership.refresh()
        self._tasks = [
            asyncio.create_task(self.publisher.run(), name="shard-publisher"),
            asyncio.create_task(self.membership.neighbourhood_loop(), name="dht-neighbourhood"),
            asyncio.create_task(self._expire_loop(), name="shard-expiry"),
            asyncio.create_task(self._forget_loop(), name="term-cache-expiry"),
        ]
        if self.forced is None:
            self._tasks.append(asyncio.create_task(self.probe.run(), name="reachability"))
        else:
            self.probe.verdict = Verdict(self.forced, 0, 0, None, 0.0)
            await self._reachability_changed(self.probe.verdict)
        self.started = True

    @property
    def reachability(self) -> Reachability:
        return self.probe.verdict.state

    async def _reachability_changed(self, verdict: Verdict) -> None:
        """Take the role the verdict allows (see the module docstring)."""
        if verdict.state is Reachability.PUBLIC:
            await self._stop_link()
            self.dht.set_client_mode(False)
            await self.dht.advertise(self.own_url)
            return
        self.dht.set_client_mode(True)
        if verdict.state is Reachability.PRIVATE and self._link_task is None:
            await self.dht.advertise(None)  # nobody dials our own URL; the relay's comes next
            self._link_task = asyncio.create_task(self.relay_link.run(), name="relay-link")

    async def _stop_link(self) -> None:
        task, self._link_task = self._link_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        await self.direct.close()
        await self.direct_server.close()
        await self._stop_link()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.membership.stop()
        await self.answerer.close()
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

    async def _forget_loop(self) -> None:
        """Stale query terms out of the querier's memory, so an idle node gives it back."""
        while True:
            await asyncio.sleep(self.settings.shard_cache_seconds)
            self.peers.forget_stale()

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
            "shards_outranked": self.shards.outranked,
            "shards_expired": self.shards.expired,
            "published_generation": self.publisher.published_generation,
            "last_publish": self.publisher.last_publish,
            "publish_totals": {k: round(v, 3) for k, v in self.publisher.totals.items()},
            "unresponsive_peers": self.client.backed_off(),
            "traffic_bytes": dict(self.client.traffic),
            "holder_lookups": self.membership.placement.lookups,
            "distrusted_peers": sorted(self.spot_checker.distrusted),
            "dropped_holders": sorted(n.hex() for n in self.publisher.dropped),
            "spot_checks": self.spot_checker.stats(),
            "dht_dropped": self.dht.dropped,  # datagrams refused, by reason
            "reachability": str(self.reachability),
            "relayed": self._link_task is not None and self.relay_link.relay is not None,
            "reachability_check": {
                "mode": "auto" if self.forced is None else "forced",
                "dialled_back": self.probe.verdict.successes,
                "not_dialled_back": self.probe.verdict.failures,
                "checked_at": self.probe.verdict.at or None,
                "checks": self.probe.checks,
                "dht_client": self.dht.client_mode,
                "advertised_url": self.dht.http_url,
            },
            "relay": self.relay_link.status() if self._link_task is not None else None,
            "relaying": self.relay_hub.stats(),
            "direct": {**self.direct.status(), "serving": self.direct_server.status()},
        }
