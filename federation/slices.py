"""Host slices: each host is crawled by one member, the one closest to sha1("host:" + host).

``HostSlices`` is the crawler's ``HostRouter``: URLs and seeds of hosts another member owns
are forwarded to it in batches; URLs whose owner cannot be reached are crawled here rather
than lost; pinned hosts are always crawled here. Before the network is known (no members
yet) every host is ours.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable

from rhizome.dht import Peer
from rhizome.dht.placement import distance

from .client import PeerClient
from .errors import PeerError
from .membership import Membership
from .wire import PATH_URLS, host_key


class HostSlices:
    def __init__(
        self, membership: Membership, client: PeerClient, *, pinned: Iterable[str] = ()
    ) -> None:
        self.membership = membership
        self.client = client
        self._pinned = {h.lower() for h in pinned}

    @property
    def pinned(self) -> frozenset[str]:
        return frozenset(self._pinned)

    def pin(self, host: str) -> None:
        """Crawl ``host`` (a host key: name, and port if not the default) here from now on."""
        self._pinned.add(host.lower())

    def unpin(self, host: str) -> None:
        self._pinned.discard(host.lower())

    def owner_of_host(self, host: str) -> Peer | None:
        """The member closest to the host's key (None before the network is known)."""
        members = self.membership.known
        if not members:
            return None
        key = host_key(host)
        return min(members, key=lambda p: distance(p.node_id, key))

    def owns(self, host: str) -> bool:
        """HostRouter: pinned hosts are always ours; others belong to the closest member."""
        if host in self._pinned:
            return True
        owner = self.owner_of_host(host)
        return (
            owner is None
            or owner.node_id == self.membership.dht.node_id
            or not self.client.usable(owner)
        )

    async def forward(self, urls: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """HostRouter: send URLs to their hosts' owners; return what could not be sent."""
        by_owner: dict[bytes, list[tuple[str, int]]] = defaultdict(list)
        peers: dict[bytes, Peer] = {}
        undelivered: list[tuple[str, int]] = []
        me = self.membership.dht.node_id
        for url, depth in urls:
            owner = self.owner_of_host(url.split("/", 3)[2] if "://" in url else "")
            if owner is None or not owner.http_url or owner.node_id == me:
                undelivered.append((url, depth))
                continue
            by_owner[owner.node_id].append((url, depth))
            peers[owner.node_id] = owner

        async def send(node_id: bytes, batch: list[tuple[str, int]]) -> None:
            peer = peers[node_id]
            size = self.client.settings.forward_batch
            try:
                for start in range(0, len(batch), size):
                    await self.client.post(
                        peer, PATH_URLS, json={"urls": batch[start : start + size]}
                    )
            except PeerError:
                self.client.mark_slow(peer)
                undelivered.extend(batch)  # crawl them ourselves rather than lose them

        await asyncio.gather(*(send(n, b) for n, b in by_owner.items()))
        return undelivered
