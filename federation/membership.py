"""Who is on the network and who holds a term: the DHT's answers, as the federation uses them.

Kademlia (``dht.DhtNode``) says who is who; a term's holders are the ``replicas`` nodes
closest to sha1(term), found by lookups (``dht.placement.HolderMap``, one lookup serving
many keys). A query may not wait on a lookup stuck on a dead contact: past its budget it
uses the routing table's view, exact in small networks, and the lookup finishes for the
next query.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

from rhizome.dht import DhtNode, Peer
from rhizome.dht.placement import HolderMap, distance

from .settings import FederationSettings

log = logging.getLogger(__name__)


def term_key(term: str) -> bytes:
    return hashlib.sha1(term.encode("utf-8")).digest()


class Membership:
    def __init__(self, dht: DhtNode, settings: FederationSettings) -> None:
        self.dht = dht
        self.settings = settings
        self.placement = HolderMap(self._lookup)
        # The members as last seen (refreshed by the publisher's loop): host slices are
        # decided on every crawled link, and must not wait for the routing table.
        self.known: list[Peer] = []
        self._lookups: set[asyncio.Future[dict[str, list[Peer]]]] = set()

    @property
    def me(self) -> Peer:
        return Peer(self.dht.node_id, self.dht.host, self.dht.port, self.dht.http_url)

    async def members(self) -> list[Peer]:
        """Every peer we know that can take HTTP requests, and this node unless it is a
        DHT client (behind NAT, or not known to be reachable): it holds nothing for others
        and owns no host slice, so it is never its own holder or owner either."""
        peers = [p for p in await self.dht.peers() if p.http_url]
        return peers if self.dht.client_mode else [self.me, *peers]

    async def refresh(self) -> list[Peer]:
        self.known = await self.members()
        return self.known

    async def _lookup(self, key: bytes, count: int) -> list[Peer]:
        """The nodes closest to ``key`` in the network that can take HTTP requests."""
        return [p for p in await self.dht.closest_nodes(key, count) if p.http_url]

    async def holders_of(self, terms: list[str], count: int | None = None) -> dict[str, list[Peer]]:
        """Each term's ``count`` closest nodes in the network (DHT lookups, reused)."""
        width = count or self.settings.replicas
        by_key = await self.placement.holders_of([term_key(t) for t in terms], width)
        return {t: by_key[term_key(t)] for t in terms}

    async def query_holders(self, terms: list[str]) -> dict[str, list[Peer]]:
        """Holders for a query, within the lookup budget (see the module's docstring)."""
        lookup = asyncio.ensure_future(self.holders_of(terms))
        self._lookups.add(lookup)
        lookup.add_done_callback(self._lookup_done)
        try:
            return await asyncio.wait_for(asyncio.shield(lookup), self.settings.lookup_budget)
        except TimeoutError:
            members = await self.members()
            return {
                t: sorted(members, key=lambda p: distance(p.node_id, term_key(t)))[
                    : self.settings.replicas
                ]
                for t in terms
            }

    def _lookup_done(self, lookup: asyncio.Future[dict[str, list[Peer]]]) -> None:
        self._lookups.discard(lookup)
        if not lookup.cancelled() and lookup.exception() is not None:
            log.info("holder lookup failed: %r", lookup.exception())

    def contact_of(self, node_id: bytes) -> Peer | None:
        """A node's signed endpoint if its hello is in our contact book (no request)."""
        contact = self.dht.contacts.get(node_id, now=time.time())
        if contact is None or not contact.http_url:
            return None
        return Peer(node_id, "", 0, contact.http_url, contact.public_key)

    async def endpoint_of(self, node_id: bytes, within: float) -> Peer | None:
        """A node outside the routing table (large networks), by its signed endpoint."""
        try:
            endpoint = await asyncio.wait_for(self.dht.endpoint_of(node_id), within)
        except (TimeoutError, OSError, ValueError):
            return None
        return Peer(node_id, "", 0, endpoint) if endpoint else None

    async def neighbourhood_loop(self) -> None:
        """Look ourselves up now and then: the library refreshes buckets hourly, so nodes
        that (re)started together would otherwise know only their bootstrap contact for an
        hour, and place shards on what they think are the closest nodes."""
        interval = self.settings.neighbourhood_first
        while True:
            await asyncio.sleep(interval)
            try:
                await self.dht.closest_nodes(self.dht.node_id, self.settings.replicas)
            except Exception:
                log.warning("neighbourhood lookup failed", exc_info=True)
            interval = min(interval * 2, self.settings.neighbourhood_every)

    async def stop(self) -> None:
        for lookup in list(self._lookups):
            lookup.cancel()
        await asyncio.gather(*self._lookups, return_exceptions=True)
