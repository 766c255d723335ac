"""Per-client limits on the public search endpoints (/api/search, the web UI's /?q=,
/api/suggest).

One federated search makes this node send DHT lookups (tens of datagrams a term) and HTTP
requests to holders and owners; without a limit one client could make the node flood the
network at the client's request rate. A client is its address (IPv4, or IPv6 /64:
``dht.quotas.source_key``), with a token bucket of ``search_rate`` tokens a second and
``SEARCH_BURST_SECONDS`` of them saved up (at the default 2/s: a burst of 30, far more than
a person types). A network search costs one token; a local one (``scope=local``, a node not
on a network, suggestions) costs ``LOCAL_SEARCH_COST``: it costs this node a few ms of a
reader thread and nobody else anything. Beyond the bucket: 429 with Retry-After.

Reverse proxies: X-Forwarded-For is believed only from ``trusted_proxies`` (anyone can send
the header; believing it by default would give every request its own bucket). Behind a
proxy not listed there, all clients share the proxy's bucket.
"""

from __future__ import annotations

import ipaddress
import logging

from aiohttp import web

from rhizome.dht.quotas import RateLimiter, source_key

from .config import NodeConfig

log = logging.getLogger(__name__)

SEARCH_BURST_SECONDS = 15.0  # the bucket holds this many seconds of the sustained rate
NETWORK_SEARCH_COST = 1.0
# Measured: a local search is ~2-5 ms of one of 4 reader threads; a network one adds
# ~20-50 KB of lookups and 1-4 peer requests. Five local ones for one network one.
LOCAL_SEARCH_COST = 0.2


def _address(text: str) -> str:
    """``text`` as the canonical string of an IP address ('' if it is not one)."""
    try:
        return str(ipaddress.ip_address(text.strip().strip("[]")))
    except ValueError:
        return ""


class SearchQuota:
    def __init__(self, rate: float, trusted_proxies: tuple[str, ...] = ()) -> None:
        self.limiter = RateLimiter(rate, max(1.0, rate * SEARCH_BURST_SECONDS))
        self.trusted = frozenset(_address(p) for p in trusted_proxies) - {""}

    def client(self, request: web.Request) -> str:
        """The bucket's key: the peer address, or behind a trusted proxy the address that
        proxy says it forwarded for (the rightmost X-Forwarded-For entry it did not add
        itself; entries further left are the client's own words)."""
        remote = _address(request.remote or "")
        if remote in self.trusted:
            chain = ",".join(request.headers.getall("X-Forwarded-For", []))
            for hop in reversed([_address(h) for h in chain.split(",")]):
                if hop and hop not in self.trusted:
                    remote = hop
                    break
        return source_key(remote or request.remote or "unknown")

    def refuse(self, request: web.Request, *, network: bool) -> int | None:
        """Seconds the client must wait if it is over its rate (nothing taken), else None
        (the search's tokens taken)."""
        cost = NETWORK_SEARCH_COST if network else LOCAL_SEARCH_COST
        key = self.client(request)
        if self.limiter.allow(key, cost):
            return None
        wait = self.limiter.retry_after(key, cost)
        log.info("429 for %s on %s: over the search rate", key, request.path)
        return wait


SEARCH_QUOTA = web.AppKey("search_quota", SearchQuota)


def refusal(wait: int) -> web.Response:
    """The JSON API's 429 (the web UI makes its own page)."""
    return web.json_response(
        {"error": f"too many searches from your address; retry in {wait} s", "status": 429},
        status=429,
        headers={"Retry-After": str(wait)},
    )


def setup(app: web.Application, config: NodeConfig) -> None:
    app[SEARCH_QUOTA] = SearchQuota(config.search_rate, config.trusted_proxies)
