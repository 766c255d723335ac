"""Finding a node that nobody can dial: its signed hello, from the nodes that hold it.

A node behind NAT says hello (over UDP, outbound) to the contacts of its routing table,
its closest nodes among them, so they hold its signed contact record with its relayed URL;
it is in no routing table, so a lookup of its id finds them and not it. A querier that has
never heard of it asks those closest nodes ``GET /api/peer/contact?node=ID`` and keeps the
first record that verifies (signed by the id's key: a holder can withhold it, not forge it).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging

from rhizome.dht import InvalidContact, Peer

from .client import PeerClient
from .errors import PeerError
from .membership import Membership
from .relay_wire import PATH_CONTACT

log = logging.getLogger(__name__)

CONTACT_ASKED = 3  # closest nodes asked at once: one that withholds is outvoted


async def relayed_endpoint(
    membership: Membership, client: PeerClient, node_id: bytes, within: float
) -> Peer | None:
    """``node_id``'s endpoint from the hellos its closest nodes hold (None: none has it)."""
    try:
        async with asyncio.timeout(within):
            closest = await membership.dht.closest_nodes(node_id, CONTACT_ASKED)
            asked = [p for p in closest if p.http_url and p.node_id != membership.dht.node_id]
            for done in asyncio.as_completed([_ask(client, p, node_id) for p in asked]):
                record = await done
                if record is None:
                    continue
                try:
                    url = membership.dht.accept_contact(node_id, record)
                except InvalidContact as exc:
                    log.info("a forged contact record for %s: %s", node_id.hex()[:12], exc)
                    continue
                if url:
                    return Peer(node_id, "", 0, url)
    except (TimeoutError, OSError, ValueError):
        pass
    return None


async def _ask(client: PeerClient, peer: Peer, node_id: bytes) -> bytes | None:
    try:
        answer = await client.get_json(peer, PATH_CONTACT, {"node": node_id.hex()})
        return base64.b64decode(str(answer["record"]), validate=True)
    except (PeerError, KeyError, TypeError, binascii.Error):
        return None
