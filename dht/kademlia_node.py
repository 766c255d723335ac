"""``DhtNode``: a Kademlia node with a verifiable identity, on one UDP socket.

It wraps a ``kademlia.network.Server`` subclass (``_Server``) that uses the hardened
``RhizomeProtocol``, reschedules its refresh at the right interval, and keeps its routing
table as JSON in the data dir (the library pickles it). The rest of Rhizome sees only
``Peer`` values and node ids.

Longer than 400 lines because it wraps the library's whole server (lifecycle, saved state,
lookups, endpoints, client mode) behind this one class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kademlia.crawling import NodeSpiderCrawl, RPCFindResponse
from kademlia.network import Server
from kademlia.node import Node

from .contacts import ContactBook, Peer, check_url
from .errors import DhtNotRunning
from .identity import NODE_ID_BYTES, Identity
from .protocol import RhizomeProtocol
from .routing_state import SavedPeer, load_peers, save_peers
from .settings import DhtSettings
from .storage import NoValues, refuse_values

MIN_LOOKUP_WIDTH = 8  # shortlist size of a lookup at the least
log = logging.getLogger(__name__)

MAX_BOOTSTRAP_CONTACTS = 32  # saved peers pinged at restart; the lookup finds the rest
HANDSHAKE_SETTLE = 3  # RPC timeouts start() waits for its first contacts to be proven


class _Lookup(NodeSpiderCrawl):  # type: ignore[misc]
    """kademlia's node lookup, except that a node that failed to answer stays out.

    The library drops a failed node from the shortlist, but the next answer that names it
    puts it back, already marked as contacted, so it ends up among the results as if it
    had answered (and a silent or backed-off peer is reported as a holder).
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.failed: set[bytes] = set()

    async def _nodes_found(self, responses: dict[bytes, Any]) -> list[Node]:
        for peer_id, response in responses.items():
            answer = RPCFindResponse(response)
            if not answer.happened():
                self.failed.add(peer_id)
            else:
                self.nearest.push([n for n in answer.get_node_list() if n.id not in self.failed])
        self.nearest.remove(self.failed)
        if self.nearest.have_contacted_all():
            return list(self.nearest)
        result: list[Node] = await self.find()
        return result


class _Server(Server):  # type: ignore[misc]
    """kademlia's Server: our protocol, a refresh keeping its interval, no pickle, no values."""

    protocol_class = RhizomeProtocol

    def __init__(
        self,
        identity: Identity,
        settings: DhtSettings,
        contacts: ContactBook,
        http_url: Any,
    ) -> None:
        super().__init__(
            ksize=settings.ksize,
            alpha=settings.alpha,
            node_id=identity.node_id,
            storage=NoValues(),
        )
        self.identity = identity
        self.settings = settings
        self.contacts = contacts
        self.http_url = http_url
        self.refreshes = 0
        self._refresh_task: asyncio.Task[None] | None = None

    def _create_protocol(self) -> RhizomeProtocol:
        return RhizomeProtocol(
            self.node,
            self.storage,
            self.ksize,
            identity=self.identity,
            contacts=self.contacts,
            settings=self.settings,
            http_url=self.http_url,
        )

    async def listen_on(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self.transport, self.protocol = await loop.create_datagram_endpoint(
            self._create_protocol, sock=sock
        )
        self.refresh_loop = loop.call_later(
            self.settings.refresh_interval, self.refresh_table, self.settings.refresh_interval
        )

    async def listen(self, port: int, interface: str = "0.0.0.0") -> None:
        raise NotImplementedError("use DhtNode.start(): it sets up the socket")

    def refresh_table(self, interval: float | None = None) -> None:
        # The library reschedules itself without the interval, falling back to an hour.
        interval = self.settings.refresh_interval if interval is None else interval
        self.refreshes += 1
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.ensure_future(self._refresh_guarded())
        self.refresh_loop = asyncio.get_running_loop().call_later(
            interval, self.refresh_table, interval
        )

    async def _refresh_guarded(self) -> None:
        try:
            await self._refresh_table()
        except Exception:
            log.warning("routing table refresh failed", exc_info=True)

    async def bootstrap_node(self, addr: tuple[str, int]) -> Node | None:
        ok, node_id = await self.protocol.ping(addr, self.node.id)
        if not ok or not isinstance(node_id, bytes) or len(node_id) != NODE_ID_BYTES:
            return None
        if node_id == self.node.id:
            return None  # our own (old) address
        return Node(node_id, addr[0], addr[1])

    get = set = set_digest = refuse_values  # the library's value store: see storage.py

    def save_state(self, fname: str) -> None:
        raise NotImplementedError("the routing table is saved as JSON by DhtNode")

    @classmethod
    async def load_state(cls, fname: str, port: int, interface: str = "0.0.0.0") -> None:
        raise NotImplementedError("the routing table is loaded from JSON by DhtNode")

    def save_state_regularly(self, fname: str, frequency: int = 600) -> None:
        raise NotImplementedError("DhtNode saves the routing table regularly")

    async def close(self) -> None:
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh_task
        self.stop()
        if self.protocol is not None:
            await self.protocol.close()


class DhtNode:
    """One node of the Rhizome DHT; ``start`` it, ask it for peers, ``stop`` it."""

    def __init__(
        self,
        data_dir: Path,
        *,
        http_url: str | None = None,
        settings: DhtSettings | None = None,
        identity: Identity | None = None,
        client_mode: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self._client_at_start = client_mode  # see set_client_mode
        self.settings = settings or DhtSettings()
        self.identity = identity or Identity.load_or_create(self.data_dir)
        if http_url:
            check_url(http_url)
        self._http_url = http_url
        self.contacts = ContactBook()
        self._server: _Server | None = None
        self._save_task: asyncio.Task[None] | None = None
        self.host = ""
        self.port = 0

    # --- properties ------------------------------------------------------------------
    @property
    def node_id(self) -> bytes:
        return self.identity.node_id

    @property
    def http_url(self) -> str | None:
        return self._http_url

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def server(self) -> Any:
        """The underlying ``kademlia.network.Server`` (its get/set raise: no values)."""
        return self._require_server()

    @property
    def protocol(self) -> RhizomeProtocol:
        protocol: RhizomeProtocol = self._require_server().protocol
        return protocol

    @property
    def dropped(self) -> dict[str, int]:
        """Datagrams and requests dropped since start, by reason."""
        return dict(self.protocol.dropped)

    @property
    def refreshes(self) -> int:
        """How many times the routing-table refresh has been scheduled to run."""
        return self._require_server().refreshes

    def _require_server(self) -> _Server:
        if self._server is None:
            raise DhtNotRunning("the DHT node is not running")
        return self._server

    # --- lifecycle -------------------------------------------------------------------
    async def start(self, host: str, port: int, bootstrap: Iterable[tuple[str, int]] = ()) -> None:
        """Listen on ``host:port`` (0: any free port, see ``self.port``) and join.

        Joins through ``bootstrap`` plus the peers saved by the previous run.
        """
        if self._server is not None:
            raise RuntimeError("DhtNode already started")
        sock = await self._bind(host, port)
        server = _Server(self.identity, self.settings, self.contacts, lambda: self._http_url)
        await server.listen_on(sock)
        server.protocol.client_mode = self._client_at_start  # before any contact is made
        self._server = server
        self.host, self.port = sock.getsockname()[:2]
        log.info("DHT node %s listening on %s:%d", self.node_id.hex(), self.host, self.port)
        addresses = await self._resolve(bootstrap, sock.family)
        for saved in load_peers(self.data_dir, self.node_id)[:MAX_BOOTSTRAP_CONTACTS]:
            if (saved.ip, saved.port) not in addresses:
                addresses.append((saved.ip, saved.port))
        addresses = [a for a in addresses if a != (self.host, self.port)]
        if addresses:
            found = await server.bootstrap(addresses)
            # Contacts enter the table once proven: wait for those challenges, so a started
            # node is in its bootstrap contacts' tables and they are in its own.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HANDSHAKE_SETTLE * self.settings.rpc_timeout):
                    await server.protocol.settle()
            log.info(
                "joined the DHT through %d contacts; %d nodes near us", len(addresses), len(found)
            )
        self._save_state()
        self._save_task = asyncio.create_task(self._save_regularly())

    async def _bind(self, host: str, port: int) -> socket.socket:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            # Bursts of replies to parallel lookups overflow the default buffer (measured).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.settings.recv_buffer)
            sock.bind(sockaddr)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if got < self.settings.recv_buffer:
            # Linux reports double the granted size; less than asked means rmem_max capped it.
            log.warning(
                "UDP receive buffer is %d bytes (asked %d): raise net.core.rmem_max",
                got,
                self.settings.recv_buffer,
            )
        return sock

    async def _resolve(
        self, addresses: Iterable[tuple[str, int]], family: int
    ) -> list[tuple[str, int]]:
        """IP literals for (host, port) pairs: uvloop refuses sendto to a hostname."""
        loop = asyncio.get_running_loop()
        resolved: list[tuple[str, int]] = []
        for host, port in addresses:
            try:
                infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
            except OSError as exc:
                log.warning("cannot resolve bootstrap address %s:%s: %s", host, port, exc)
                continue
            ip, resolved_port = infos[0][4][:2]
            if (ip, resolved_port) not in resolved:
                resolved.append((str(ip), int(resolved_port)))
        return resolved

    async def stop(self) -> None:
        """Save the routing table and close the socket. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        if self._save_task is not None:
            self._save_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._save_task
            self._save_task = None
        self._save_table(server)
        await server.close()
        log.info("DHT node %s stopped", self.node_id.hex())

    def _save_state(self) -> None:
        if self._server is not None:
            self._save_table(self._server)

    def _save_table(self, server: _Server) -> None:
        me = Node(self.node_id)
        nearest = server.protocol.router.find_neighbors(me, len(server.protocol.router.contacts()))
        if not nearest:
            # Keep the last good file: an isolated moment must not erase how to rejoin.
            return
        try:
            save_peers(
                self.data_dir, self.node_id, [SavedPeer(n.id, n.ip, n.port) for n in nearest]
            )
        except OSError as exc:
            log.warning("cannot save the routing table: %s", exc)

    async def _save_regularly(self) -> None:
        while True:
            await asyncio.sleep(self.settings.save_interval)
            self._save_state()

    # --- queries ---------------------------------------------------------------------
    def _peer(self, node: Node) -> Peer:
        contact = self.contacts.get(node.id, now=time.time())
        if contact is None:
            return Peer(node.id, node.ip, node.port)
        return Peer(node.id, node.ip, node.port, contact.http_url, contact.public_key)

    def _self_peer(self) -> Peer:
        return Peer(self.node_id, self.host, self.port, self._http_url, self.identity.public_key)

    async def closest_nodes(self, key: bytes, count: int) -> list[Peer]:
        """The ``count`` nodes closest to the 20-byte ``key`` in the network (maybe us)."""
        if len(key) != NODE_ID_BYTES:
            raise ValueError("a DHT key is 20 bytes (sha1)")
        if count < 1:
            raise ValueError("count must be positive")
        server = self._require_server()
        target = Node(key)
        # A shortlist as narrow as a tiny k stops a lookup at the first plateau; a few more
        # candidates per round keep small-k networks exact at almost no cost (k=20: no change).
        width = max(count, server.ksize, MIN_LOOKUP_WIDTH)
        nearest = server.protocol.router.find_neighbors(target, width)
        found: list[Node] = []
        if nearest:
            spider = _Lookup(server.protocol, target, nearest, width, server.alpha)
            try:
                found = await asyncio.wait_for(spider.find(), self.settings.lookup_timeout)
            except TimeoutError:
                # Slow peers must not hold a query hostage: the best found so far.
                log.info(
                    "lookup of %s hit its %.1f s limit", key.hex(), self.settings.lookup_timeout
                )
                found = list(spider.nearest)
        nodes = {n.id: n for n in found if n.id != self.node_id}
        # A client holds nothing for others: it is never its own closest node either.
        me = [] if self.client_mode else [server.node]
        ranked = sorted([*nodes.values(), *me], key=target.distance_to)[:count]
        return [self._self_peer() if n.id == self.node_id else self._peer(n) for n in ranked]

    async def peers(self) -> list[Peer]:
        """Every contact in the routing table."""
        server = self._require_server()
        return [self._peer(n) for n in server.protocol.router.contacts()]

    async def endpoint_of(self, node_id: bytes) -> str | None:
        """The HTTP URL that ``node_id`` signed for, asking it (after a lookup) if needed."""
        if node_id == self.node_id:
            return self._http_url
        server = self._require_server()
        contact = self.contacts.get(node_id, now=time.time())
        if contact is not None:
            return contact.http_url
        node = server.protocol.router.find_contact(node_id)
        if node is None and len(node_id) == NODE_ID_BYTES:
            for peer in await self.closest_nodes(node_id, 1):
                if peer.node_id == node_id:
                    node = Node(peer.node_id, peer.ip, peer.port)
        if node is None:
            return None
        found = await server.protocol.call_hello(node)
        return found.http_url if found is not None else None

    async def ping(self, peer: Peer) -> bool:
        """One ping; failures count towards the peer's eviction."""
        ok, _ = await self.protocol.call_ping(Node(peer.node_id, peer.ip, peer.port))
        return bool(ok)

    def contact_record(self, node_id: bytes) -> bytes | None:
        """``node_id``'s signed hello as we hold it (for nodes that cannot be asked)."""
        contact = self.contacts.get(node_id, now=time.time())
        return contact.record if contact is not None and contact.record else None

    def accept_contact(self, node_id: bytes, record: bytes) -> str | None:
        """Keep a hello passed on by a third party; its URL. InvalidContact if forged."""
        return self.contacts.accept(node_id, record, now=time.time()).http_url

    @property
    def client_mode(self) -> bool:
        """True while others must not dial us (see ``protocol``): in no routing table."""
        return self._server is not None and self.protocol.client_mode

    def set_client_mode(self, client: bool) -> None:
        """Enter or leave client mode; leaving proves us to our contacts (they admit us)."""
        protocol = self.protocol
        if protocol.client_mode == client:
            return
        protocol.client_mode = client
        log.info("DHT %s mode", "client" if client else "server")
        if not client:
            protocol.prove_to_contacts()

    async def advertise(self, http_url: str | None, *, wait: bool = True) -> None:
        """Change the HTTP URL we advertise and tell the peers in our routing table
        (``wait=False``: in the background, so a dead contact's timeout delays nothing)."""
        if http_url:
            check_url(http_url)
        self._http_url = http_url
        protocol = self.protocol
        protocol.forget_own_contact_record()
        if not wait:
            for node in protocol.router.contacts():
                protocol.schedule_hello(node)
            return
        await asyncio.gather(*(protocol.call_hello(n) for n in protocol.router.contacts()))
