"""Per-host politeness: how often and how many at once one host is asked.

The delay between requests to a host is the largest of: the operator's crawl delay,
robots.txt Crawl-delay, the current back-off (after 429/503), and an adaptive term that
follows the host's response time (a slow server gets fewer requests).
"""

from __future__ import annotations

import asyncio
import time

from .config import MAX_BACKOFF, MAX_CRAWL_DELAY, CrawlerConfig

LATENCY_EWMA = 0.2
INITIAL_BACKOFF = 5.0
BACKOFF_DECAY = 0.5
MIN_BACKOFF = 0.5


class HostSlot:
    def __init__(self, host: str, config: CrawlerConfig) -> None:
        self.host = host
        self.base_delay = config.crawl_delay
        self.concurrency = max(1, config.host_concurrency)
        self.robots_delay = 0.0
        self.backoff = 0.0
        self.latency = 0.0
        self.stopped = False
        self._next_at = 0.0
        self._last_turn = 0.0
        self._lock = asyncio.Lock()

    @property
    def delay(self) -> float:
        # Follow the server's response time only when the operator asked for politeness
        # at all: with crawl_delay 0 (a site you run yourself) it would only measure the
        # node's own queueing and throttle it.
        adaptive = self.latency / self.concurrency if self.base_delay > 0 else 0.0
        return min(max(self.base_delay, self.robots_delay, self.backoff, adaptive), MAX_BACKOFF)

    def apply_robots_delay(self, delay: float | None) -> None:
        self.robots_delay = min(delay or 0.0, MAX_CRAWL_DELAY)
        if self.robots_delay >= 1.0:
            # A host that asks for seconds between requests gets one request at a time.
            self.concurrency = 1
        if self._last_turn:
            # robots.txt is read after the first turn was taken with the operator's delay;
            # the next request must already keep the host's Crawl-delay from this one.
            self._next_at = max(self._next_at, self._last_turn + self.delay)

    async def wait_turn(self) -> None:
        delay = self.delay
        if delay <= 0.0:
            return
        async with self._lock:
            wait = self._next_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_turn = time.monotonic()
            self._next_at = self._last_turn + self.delay

    def observe(self, latency: float, *, ok: bool) -> None:
        self.latency = (
            latency
            if self.latency == 0.0
            else ((1 - LATENCY_EWMA) * self.latency + LATENCY_EWMA * latency)
        )
        if ok and self.backoff:
            self.backoff = 0.0 if self.backoff < MIN_BACKOFF else self.backoff * BACKOFF_DECAY

    def back_off(self, retry_after: float | None) -> None:
        self.backoff = min(max(self.backoff * 2, INITIAL_BACKOFF, retry_after or 0.0), MAX_BACKOFF)

    def stop(self) -> None:
        self.stopped = True
