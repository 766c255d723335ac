"""DNS resolution on the crawler's own threads, with a negative cache.

aiohttp's default resolver runs getaddrinfo on the event loop's default executor; a few
slow or failing lookups (seconds each) would starve everything else that uses it.

The operator's ``resolve`` overrides (name → address, ``*.name`` for every subdomain)
answer before DNS, as curl's ``--resolve`` does: a site on a LAN without a DNS name, or a
test's wildcard site on loopback. The SSRF guard checks their addresses like any other.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from aiohttp.abc import AbstractResolver, ResolveResult

RESOLVER_THREADS = 16
NEGATIVE_TTL = 600.0
MAX_NEGATIVE_ENTRIES = 50_000


class ThreadPoolResolver(AbstractResolver):
    def __init__(
        self, threads: int = RESOLVER_THREADS, overrides: Iterable[tuple[str, str]] = ()
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dns")
        self._failed: dict[str, tuple[float, str]] = {}
        self._exact: dict[str, str] = {}
        self._wildcards: list[tuple[str, str]] = []  # (".example", address)
        for name, address in overrides:
            name = name.lower().rstrip(".")
            if name.startswith("*."):
                self._wildcards.append((name[1:], address))
            else:
                self._exact[name] = address

    def _override(self, host: str) -> str | None:
        host = host.lower().rstrip(".")
        address = self._exact.get(host)
        if address is None:
            address = next((a for suffix, a in self._wildcards if host.endswith(suffix)), None)
        return address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        override = self._override(host)
        if override is not None:
            ip = ipaddress.ip_address(override)
            return [
                ResolveResult(
                    hostname=host,
                    host=str(ip),
                    port=port,
                    family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                    proto=socket.IPPROTO_TCP,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            ]
        failed = self._failed.get(host)
        if failed is not None and failed[0] > time.monotonic():
            raise OSError(f"DNS lookup of {host} failed recently: {failed[1]}")
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.run_in_executor(
                self._pool,
                lambda: socket.getaddrinfo(
                    host,
                    port,
                    family=family,
                    type=socket.SOCK_STREAM,
                    flags=socket.AI_ADDRCONFIG,
                ),
            )
        except OSError as exc:
            if len(self._failed) >= MAX_NEGATIVE_ENTRIES:
                self._failed.clear()
            self._failed[host] = (time.monotonic() + NEGATIVE_TTL, str(exc))
            raise
        results: list[ResolveResult] = []
        for fam, _type, proto, _canon, address in infos:
            if fam == socket.AF_INET6 and len(address) >= 4 and address[3]:
                continue  # scoped link-local IPv6: never a crawl target
            results.append(
                ResolveResult(
                    hostname=host,
                    host=str(address[0]),
                    port=int(address[1]),
                    family=fam,
                    proto=proto,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        return results

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
