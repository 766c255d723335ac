"""Registrable domains (eTLD+1): who owns a host, by the Public Suffix List.

The list is the snapshot that ships inside the ``publicsuffixlist`` wheel (updated with
each release), read from disk: nothing is fetched, so a node works offline. Private
suffixes count (``github.io``, ``blogspot.com``): each user's site there is its own domain.
"""

from __future__ import annotations

import ipaddress
from functools import cache, lru_cache

from publicsuffixlist import PublicSuffixList

# Every discovered link's host, and every host with due URLs while the crawler looks for
# work, goes through here (in the frontier's thread): ~6 µs uncached, a site's links share
# a few hosts.
DOMAIN_CACHE_SIZE = 16_384


@cache
def _suffixes() -> PublicSuffixList:
    # Loaded on first use (~0.1 s): crawl worker processes import this package but never
    # ask, and must start fast.
    return PublicSuffixList()


@lru_cache(maxsize=DOMAIN_CACHE_SIZE)
def registrable_domain(host: str) -> str:
    """``a.b.example.co.uk`` → ``example.co.uk``. IP addresses, single-label hosts and
    public suffixes themselves (``github.io``) map to themselves."""
    host = host.lower().rstrip(".")
    if "." not in host or ":" in host:  # single label, or an IPv6 address
        return host
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    return _suffixes().privatesuffix(host) or host


@lru_cache(maxsize=DOMAIN_CACHE_SIZE)
def domain_of(host_key: str) -> str:
    """The registrable domain of a politeness key (``host`` or ``host:port``).

    A name's port is dropped: ``a.spam.example:8080`` and ``b.spam.example`` are one
    domain, or a link farm would mint a budget per port. An IP literal keeps its port: it
    has no registrable domain, and its ports are as often different servers (a LAN, the
    test fixtures) as not; literals cannot be minted the way wildcard names can.
    """
    if host_key.startswith("["):
        return host_key  # an IPv6 literal, with or without a port
    name, colon, port = host_key.rpartition(":")
    if not colon or not port.isdigit():
        name = host_key
    return host_key if _is_ip(name) else registrable_domain(name)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
