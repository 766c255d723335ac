"""Whether others can dial this node: peers dial it back (as libp2p's AutoNAT does).

A node asks up to ``DIALBACK_PEERS`` members ``POST /api/peer/dialback`` with its node id
and URL. Each dials the URL **at the address it saw the request come from** (the port and
scheme of the URL, the host it observed; a URL with a host name is dialled as it is) and
asks it for a whoami proof of the node id, so only the asking node itself can pass: a
node behind NAT advertises an address nobody can reach, and its NAT's address has no port
open. More successes than failures: public; more failures: private; a tie or no answer
changes nothing. Until the first verdict the node is ``unknown`` and acts as private
(DHT client: in nobody's routing table), so no one waits on a node that may be behind NAT.

The answer is re-checked every ``RECHECK_SECONDS`` (a home's address changes, a port gets
forwarded); an operator who knows can say ``reachability = "public"`` or ``"private"``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit, urlunsplit

from rhizome.dht import Peer

from .client import PeerClient
from .errors import PeerError
from .relay_wire import PATH_DIALBACK

log = logging.getLogger(__name__)

DIALBACK_PEERS = 3  # asked per check: one liar is outvoted by two honest peers
DIALBACK_SECONDS = 3.0  # a dial back that takes longer counts as failed (home links: <1 s)
# While unknown, a check every 1 s at first (a new network is learning its members),
# doubling to 10 s; once known, every 10 min.
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 10.0
RECHECK_SECONDS = 600.0
# A public node turns private only after this many private verdicts in a row, taken
# CONFIRM_SECONDS apart: turning private takes it out of routing tables, holder placement
# and host slices, and every publisher re-places its shards. A recheck whose dialers time
# out on a loaded machine said "private" once; a home NAT says it every time.
DEMOTE_AFTER = 2
CONFIRM_SECONDS = 30.0


class Reachability(StrEnum):
    UNKNOWN = "unknown"
    PUBLIC = "public"
    PRIVATE = "private"


@dataclass(frozen=True, slots=True)
class Verdict:
    state: Reachability
    successes: int
    failures: int
    url: str | None  # where a dialer reached us (the observed address), if one did
    at: float


def dial_target(claimed_url: str, observed_ip: str) -> str | None:
    """The URL to dial for a node that claims ``claimed_url`` and asked from
    ``observed_ip``: its address as seen, unless its URL names a host (then that URL)."""
    parts = urlsplit(claimed_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        return claimed_url.rstrip("/")  # a name: the operator's own, dialled as it is
    try:
        host = str(ipaddress.ip_address(observed_ip))
    except ValueError:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, "", "", "")).rstrip("/")


async def dial_back(
    client: PeerClient, node_id: bytes, claimed_url: str, observed_ip: str
) -> tuple[bool, str | None]:
    """The dialer's side: whether ``node_id`` answers at its observed address."""
    target = dial_target(claimed_url, observed_ip)
    if target is None:
        return False, None
    return await client.check_whoami(node_id, target, within=DIALBACK_SECONDS), target


def settle(current: Verdict, fresh: Verdict, doubts: int) -> tuple[Verdict, int]:
    """The verdict to act on after a check, and the private verdicts in a row counted
    against a public node (``DEMOTE_AFTER`` of them make it private)."""
    if current.state is Reachability.PUBLIC and fresh.state is Reachability.PRIVATE:
        if doubts + 1 < DEMOTE_AFTER:
            return current, doubts + 1
    return fresh, 0


class ReachabilityProbe:
    """The asker's side: ``check`` once, or ``run`` for ever, calling ``changed``."""

    def __init__(
        self,
        *,
        client: PeerClient,
        node_id: bytes,
        url: Callable[[], str | None],
        members: Callable[[], Awaitable[list[Peer]]],
        changed: Callable[[Verdict], Awaitable[None]],
    ) -> None:
        self.client = client
        self.node_id = node_id
        self._url = url
        self._members = members
        self._changed = changed
        self.verdict = Verdict(Reachability.UNKNOWN, 0, 0, None, 0.0)
        self.checks = 0
        self.doubts = 0  # private verdicts in a row while public

    async def check(self) -> Verdict:
        """Ask a few members to dial us back; the new verdict (maybe unchanged)."""
        url = self._url()
        peers = [p for p in await self._members() if p.node_id != self.node_id and p.http_url]
        asked = random.sample(peers, min(DIALBACK_PEERS, len(peers)))
        if not url or not asked:
            return self.verdict
        answers = await asyncio.gather(*(self._ask(p, url) for p in asked))
        self.checks += 1
        successes = [a for a in answers if a is not None and a[0]]
        failures = sum(1 for a in answers if a is not None and not a[0])
        state = self.verdict.state
        if len(successes) > failures:
            state = Reachability.PUBLIC
        elif failures > len(successes):
            state = Reachability.PRIVATE
        reached = successes[0][1] if successes else None
        return Verdict(state, len(successes), failures, reached, time.time())

    async def _ask(self, peer: Peer, url: str) -> tuple[bool, str | None] | None:
        try:
            answer = await self.client.post_json(
                peer,
                PATH_DIALBACK,
                {"node_id": self.node_id.hex(), "url": url},
                within=DIALBACK_SECONDS + 1.0,
            )
        except PeerError as exc:
            log.debug("dial-back request to %s failed: %s", peer.http_url, exc)
            return None  # the dialer's trouble, not a verdict on us
        if not isinstance(answer, dict) or not isinstance(answer.get("reachable"), bool):
            return None
        reached = answer.get("url")
        return answer["reachable"], reached if isinstance(reached, str) else None

    async def run(self) -> None:
        wait = RETRY_FIRST_SECONDS
        while True:
            try:
                verdict = await self.check()
            except Exception:
                log.warning("reachability check failed", exc_info=True)
                verdict = self.verdict
            verdict, self.doubts = settle(self.verdict, verdict, self.doubts)
            if self.doubts:
                log.info("reachability: a recheck found us unreachable; confirming")
                await asyncio.sleep(CONFIRM_SECONDS)
                continue
            previous, self.verdict = self.verdict, verdict
            if verdict.state != previous.state:
                log.info(
                    "reachability: %s (%d dialled us back, %d could not)",
                    verdict.state,
                    verdict.successes,
                    verdict.failures,
                )
                await self._changed(verdict)
            if verdict.state is Reachability.UNKNOWN:
                await asyncio.sleep(wait)
                wait = min(wait * 2, RETRY_MAX_SECONDS)
            else:
                await asyncio.sleep(RECHECK_SECONDS)
