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


def is_public_address(ip: IPAddress) -> bool:
    """True for globally routable unicast addresses only."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def check_address(host: str, *, allow_private: bool) -> None:
    """Raise BlockedAddress unless ``host`` (an IP literal) may be connected to."""
    if allow_private:
        return
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError as exc:
        raise BlockedAddress(f"not an IP address: {host!r}") from exc
    if not is_public_address(ip):
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
