"""robots.txt (RFC 9309) per host, cached, with one fetch in flight per host at most."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from protego import Protego
from yarl import URL

from .config import DEFAULT_HOST_MEMORY, MAX_CRAWL_DELAY, ROBOTS_ERROR_TTL, ROBOTS_TTL
from .errors import FetchError, HTTPStatusError
from .lru import Lru

log = logging.getLogger(__name__)

# Fetches an origin's /robots.txt: returns the body, or raises FetchError/HTTPStatusError.
RobotsFetch = Callable[[str], Awaitable[bytes]]


@dataclass(slots=True)
class RobotsPolicy:
    """What one host's robots.txt says for our user agent."""

    parser: Protego | None  # None: allow everything
    disallow_all: bool = False
    crawl_delay: float | None = None
    sitemaps: tuple[str, ...] = ()
    expires: float = 0.0
    unreachable: bool = False

    def allows(self, url: str, user_agent: str) -> bool:
        if self.disallow_all:
            return False
        return self.parser is None or bool(self.parser.can_fetch(url, user_agent))


def parse_robots(body: bytes, user_agent: str, *, now: float) -> RobotsPolicy:
    # utf-8-sig: with a BOM left in, the first line no longer reads "User-agent", so
    # the first group's rules would silently apply to nobody.
    text = body.decode("utf-8-sig", "replace")
    try:
        parser = Protego.parse(text)
        delay = parser.crawl_delay(user_agent)
        sitemaps = tuple(parser.sitemaps)
    except Exception:  # a hostile robots.txt must not take the crawler down
        log.warning("unparseable robots.txt; treating as allow-all", exc_info=True)
        return RobotsPolicy(parser=None, expires=now + ROBOTS_TTL)
    return RobotsPolicy(
        parser=parser,
        crawl_delay=min(float(delay), MAX_CRAWL_DELAY) if delay is not None else None,
        sitemaps=sitemaps[:10],
        expires=now + ROBOTS_TTL,
    )


class RobotsCache:
    """Maps an origin (``scheme://host:port``) to its RobotsPolicy.

    RFC 9309: 4xx means no restrictions; 5xx or an unreachable server means complete
    disallow, retried after ROBOTS_ERROR_TTL.
    """

    def __init__(
        self, fetch: RobotsFetch, user_agent_name: str, *, max_hosts: int = DEFAULT_HOST_MEMORY
    ) -> None:
        self._fetch = fetch
        self.user_agent = user_agent_name
        # Least recently used goes first: the hosts being crawled ask on every URL and stay.
        self._cache: Lru[str, RobotsPolicy] = Lru(max_hosts)
        self._inflight: dict[str, asyncio.Task[RobotsPolicy]] = {}

    async def policy(self, origin: str) -> RobotsPolicy:
        now = time.monotonic()
        cached = self._cache.get(origin)
        if cached is not None and cached.expires > now:
            return cached
        pending = self._inflight.get(origin)
        if pending is None:
            # The fetch runs in a task of its own: a caller that is cancelled (its URL's slot
            # stopped) must not cancel the fetch every other caller for the origin waits on.
            pending = asyncio.create_task(self._load_and_store(origin, now))
            self._inflight[origin] = pending
            pending.add_done_callback(lambda task: self._loaded(origin, task))
        return await asyncio.shield(pending)

    def _loaded(self, origin: str, task: asyncio.Task[RobotsPolicy]) -> None:
        if self._inflight.get(origin) is task:
            del self._inflight[origin]
        if not task.cancelled():
            task.exception()  # mark retrieved: the waiters re-raise it themselves

    async def _load_and_store(self, origin: str, now: float) -> RobotsPolicy:
        result = await self._load(origin, now)
        self._cache.put(origin, result)
        return result

    @property
    def cached(self) -> int:
        """Origins whose policy is cached."""
        return len(self._cache)

    async def _load(self, origin: str, now: float) -> RobotsPolicy:
        try:
            body = await self._fetch(origin + "/robots.txt")
        except HTTPStatusError as exc:
            if 400 <= exc.status < 500 and exc.status != 429:
                return RobotsPolicy(parser=None, expires=now + ROBOTS_TTL)
            return RobotsPolicy(parser=None, disallow_all=True, expires=now + ROBOTS_ERROR_TTL)
        except FetchError as exc:
            log.info("robots.txt of %s unreachable: %s", origin, exc)
            return RobotsPolicy(
                parser=None, disallow_all=True, expires=now + ROBOTS_ERROR_TTL, unreachable=True
            )
        return parse_robots(body, self.user_agent, now=now)

    async def allowed(self, url: str) -> bool:
        origin = str(URL(url).origin())
        return (await self.policy(origin)).allows(url, self.user_agent)
