"""Refuse to connect to addresses a home-server crawler must never reach.

The check runs in the connector's ``socket_factory``: it sees the address actually being
connected to, so IP-literal URLs, DNS answers and every redirect hop all pass through it
(a check in the resolver alone is bypassed by IP literals).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from .errors import BlockedAddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance-metadata services: they hand out credentials to whoever asks from the
# machine, and a crawled page could then make them searchable. No site lives there.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS, over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)
THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_public_address(ip: IPAddress) -> bool:
    """True for globally routable unicast addresses only."""
    ip = _unmapped(ip)
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def is_never_address(ip: IPAddress) -> bool:
    """Addresses refused even when the operator allows private networks.

    0.0.0.0 (and the rest of 0/8, and ::) is not a host: Linux connects it to the local
    machine, a known way round "no localhost" rules. Multicast and broadcast are never
    web servers. The metadata services hold the machine's cloud credentials.
    """
    ip = _unmapped(ip)
    if ip.is_unspecified or ip.is_multicast or ip in METADATA_ADDRESSES:
        return True
    return isinstance(ip, ipaddress.IPv4Address) and (
        ip in THIS_NETWORK or ip == ipaddress.IPv4Address("255.255.255.255")
    )


def check_address(host: str, *, allow_private: bool) -> None:
    """Raise BlockedAddress unless ``host`` (an IP literal) may be connected to."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError as exc:
        if allow_private:
            return  # a name the resolver left as is (never happens with IP sockaddrs)
        raise BlockedAddress(f"not an IP address: {host!r}") from exc
    if is_never_address(ip):
        raise BlockedAddress(f"refusing {ip}: never a crawl target")
    if not allow_private and not is_public_address(ip):
        raise BlockedAddress(f"refusing non-public address {ip}")


class GuardedSocketFactory:
    """A ``socket_factory`` for aiohttp's TCPConnector that applies ``check_address``."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private

    def __call__(self, addr_info: Any) -> socket.socket:
        family, type_, proto, _canon, sockaddr = addr_info
        check_address(str(sockaddr[0]), allow_private=self.allow_private)
        sock = socket.socket(family=family, type=type_, proto=proto)
        sock.setblocking(False)
        return sock
