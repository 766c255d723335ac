"""The crawl pipeline: frontier → per-host slots → fetch → parse (worker processes) → sink.

The event loop only moves bytes and bookkeeping; parsing runs in worker processes and
SQLite on the frontier's thread, so both cores stay busy.

Longer than 400 lines because the crawl loop, its per-host rounds and the commit hand-back
share one piece of state (leases in flight) that splitting would expose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from yarl import URL

from .blocklist import Blocklist
from .budgets import Budgets
from .config import HOST_UNREACHABLE_DEFER, MAX_BACKOFF, CrawlerConfig, default_workers
from .domains import domain_of
from .errors import FetchError, HTTPStatusError, RobotsDisallowed
from .fetch import Fetcher, decompress
from .frontier import CommittedCheck, Frontier, FrontierCounts, HostQueue, Lease
from .lru import Lru
from .parse import ParsedPage
from .politeness import HostSlot
from .robots import RobotsCache
from .sitemaps import MAX_SITEMAP_URLS, parse_sitemap
from .urls import canonicalize, host_of
from .workers import CrawlWorkers

log = logging.getLogger(__name__)

SUPERVISOR_TICK = 1.0
# How long stop() waits for its cancelled tasks. They do not resist cancellation, so this
# only matters if one is stuck in a bug; stop() must still close the workers and frontier.
TASK_STOP_TIMEOUT = 5.0
RETRY_BASE = 60.0
RATE_WINDOW = 60.0
# Hosts a seed-hosts-only node follows links within. Peers' forwarded URLs add theirs,
# so the set is capped: past it, hosts new to it are not followed (and it is logged).
MAX_SEED_HOSTS = 100_000


class PageSink(Protocol):
    """Where parsed pages go (the index).

    Contract: ``submit`` may wait (back-pressure). Once the page (an upsert, or a removal
    when ``page.noindex``) is durable, the sink calls ``Crawler.committed`` with the page's
    ``url`` and ``aliases``. Until then the crawler counts the URL as in flight.
    """

    async def submit(self, page: ParsedPage) -> None: ...

    async def remove(self, url: str) -> None: ...


class HostRouter(Protocol):
    """Decides which node crawls a host (the DHT's host slices plug in here).

    Contract: ``owns`` is cheap and synchronous. ``forward`` hands (url, depth) pairs to
    the nodes that own their hosts and returns the pairs it could not deliver; the crawler
    keeps those itself, so a URL is never dropped because its owner is unreachable.
    """

    def owns(self, host: str) -> bool: ...

    async def forward(self, urls: list[tuple[str, int]]) -> list[tuple[str, int]]: ...


@dataclass(slots=True, frozen=True)
class CrawlStats:
    queued: int
    in_flight: int
    fetched: int
    failed: int
    pages_per_minute: float
    known_urls: int
    hosts: int
    active_hosts: int
    forwarded: int  # URLs handed to the nodes that own their hosts
    # New URLs not queued, by reason: host_budget, domain_budget, frontier_full.
    dropped: dict[str, int] = field(default_factory=dict)


class Crawler:
    def __init__(
        self,
        config: CrawlerConfig,
        sink: PageSink,
        *,
        router: HostRouter | None = None,
        committed_before_crash: CommittedCheck | None = None,
        blocklist: Blocklist | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.router = router
        # Hosts never fetched, queued or forwarded (the operator's and subscribed lists).
        self.blocklist = blocklist if blocklist is not None else Blocklist()
        self.frontier = Frontier(
            config.data_dir / "frontier.sqlite3",
            max_urls_per_host=config.max_urls_per_host,
            max_depth=config.max_depth,
            committed_before_crash=committed_before_crash,
            recrawl_after=config.recrawl_interval,
            max_seen=config.seen_cache,
            max_anchor_urls=config.anchor_cache,
            budgets=Budgets(
                per_host=config.max_urls_per_host,
                per_domain=config.max_urls_per_domain,
                max_queued=config.max_queued_urls,
                max_hosts=config.host_memory,
            ),
        )
        self.fetcher = Fetcher(config)
        self.robots = RobotsCache(
            self.fetcher.fetch_robots, config.user_agent_name, max_hosts=config.host_memory
        )
        self._slots: dict[str, HostSlot] = {}  # hosts being crawled right now
        self._domain_slots: dict[str, int] = {}  # registrable domain -> its hosts in _slots
        # Politeness state outlives a host's crawl round: the last request time, back-off
        # and Crawl-delay still apply when new links for the host arrive a moment later.
        self._host_state: OrderedDict[str, HostSlot] = OrderedDict()
        self._slot_tasks: set[asyncio.Task[None]] = set()
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._pending: dict[str, int] = {}  # leased URL -> depth, until committed or failed
        self._global = asyncio.Semaphore(config.global_concurrency)
        self._wake = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._workers = CrawlWorkers(config, config.parse_workers or default_workers())
        self._sitemaps_done: Lru[str, bool] = Lru(config.host_memory)  # origins read
        self._idle_since: float | None = None  # monotonic; None while there is work
        self._recent: deque[float] = deque()  # fetch times within RATE_WINDOW
        self._seed_hosts: set[str] = set()  # only kept with seed_hosts_only
        self.fetched = 0
        self.failed = 0
        self.forwarded = 0
        self.blocked = 0  # URLs left out because their host is blocked

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        requeued = await self.frontier.open()
        if requeued:
            log.info("re-queued %d URLs leased before an unclean stop", requeued)
        if self.config.seed_hosts_only:
            self._add_seed_hosts(await self.frontier.seed_hosts())
        await self.fetcher.start()
        await self._workers.start()
        self._supervisor = asyncio.create_task(self._supervise(), name="crawl-supervisor")

    async def stop(self) -> None:
        tasks = [t for t in (self._supervisor, *self._slot_tasks, *self._side_tasks) if t]
        for task in tasks:
            task.cancel()
        try:
            async with asyncio.timeout(TASK_STOP_TIMEOUT):
                await asyncio.gather(*tasks, return_exceptions=True)
        except TimeoutError:
            log.error(
                "crawler tasks ignored cancellation for %.0f s: %s",
                TASK_STOP_TIMEOUT,
                ", ".join(sorted(t.get_name() for t in tasks if not t.done())),
            )
        await self.frontier.release(list(self._pending))
        self._pending.clear()
        await self.fetcher.close()
        await self._workers.close()
        await self.frontier.close()

    # --- inputs ----------------------------------------------------------------------
    async def add_seeds(self, urls: Iterable[str], *, force: bool = True) -> list[str]:
        """Queue operator-given URLs. ``force`` re-queues known ones now (an explicit
        request); seeds from the configuration use force=False, so a restart does not
        refetch them. Returns the accepted (canonical) URLs."""
        accepted = [c for c in (canonicalize(u) for u in urls) if c]
        accepted = self._unblocked(accepted)
        self._add_seed_hosts(host_of(u) for u in accepted)
        await self._route([(u, 0) for u in accepted], force=force)
        return accepted

    async def accept_forwarded(self, urls: Iterable[tuple[str, int]]) -> int:
        """URLs another node forwarded because it thinks we own their hosts.

        They are queued here without routing them again: two nodes whose views of the
        membership differ must not bounce URLs between each other. Returns how many
        canonical URLs were accepted."""
        accepted = [
            (c, max(0, int(depth)))
            for c, depth in ((canonicalize(u), d) for u, d in urls)
            if c and not self.blocklist.blocks_url(c)
        ]
        # The sender followed them within its seed hosts; for a seed-hosts-only node they
        # are now seed hosts here too, or their links would be dropped.
        self._add_seed_hosts(host_of(u) for u, _d in accepted)
        if accepted and await self.frontier.add(accepted):
            self._wake.set()
        return len(accepted)

    def _add_seed_hosts(self, hosts: Iterable[str]) -> None:
        if not self.config.seed_hosts_only:
            return
        for host in hosts:
            if host in self._seed_hosts:
                continue
            if len(self._seed_hosts) >= MAX_SEED_HOSTS:
                log.warning(
                    "%d seed hosts: links of %s and other new ones are not followed",
                    MAX_SEED_HOSTS,
                    host,
                )
                return
            self._seed_hosts.add(host)

    async def committed(self, urls: Iterable[str]) -> None:
        """Called by the sink once pages are durable: only now is a URL DONE."""
        done = []
        for url in urls:
            depth = self._pending.pop(url, None)
            # Not pending: a removal of a page that failed (404) - it stays FAILED.
            if depth is not None:
                done.append((url, depth))
        await self.frontier.mark_done(done, self.config.recrawl_interval)
        self._wake.set()

    async def _route(
        self,
        urls: list[tuple[str, int]],
        *,
        force: bool,
        anchors: dict[str, str] | None = None,
    ) -> None:
        if self.config.seed_hosts_only:
            urls = [(u, d) for u, d in urls if host_of(u) in self._seed_hosts]
        if self.blocklist.rule_count:
            kept = [(u, d) for u, d in urls if not self.blocklist.blocks_url(u)]
            self.blocked += len(urls) - len(kept)
            urls = kept
        if self.router is not None:
            mine: list[tuple[str, int]] = []
            theirs: list[tuple[str, int]] = []
            for url, depth in urls:
                (mine if self.router.owns(host_of(url)) else theirs).append((url, depth))
            if theirs:
                undelivered = await self.router.forward(theirs)
                self.forwarded += len(theirs) - len(undelivered)
                mine.extend(undelivered)
            urls = mine
        if urls and await self.frontier.add(urls, force=force, anchors=anchors):
            self._wake.set()

    def _unblocked(self, urls: list[str]) -> list[str]:
        kept = [u for u in urls if not self.blocklist.blocks_url(u)]
        self.blocked += len(urls) - len(kept)
        return kept

    # --- the operator's ------------------------------------------------------------------
    async def drop_blocked(self) -> list[str]:
        """Forget every queued URL of the hosts the blocklist now names (after it grew);
        those in flight are dropped before their page is indexed. Returns the hosts."""
        return await self.frontier.forget_hosts(lambda h: self.blocklist.match_host(h) is not None)

    async def recrawl_host(self, host: str) -> int:
        """Fetch every known URL of ``host`` (a host key: ``example.org``, ``10.0.0.5:8080``)
        again now. Returns how many URLs are due."""
        count = await self.frontier.requeue_host(host)
        self._wake.set()
        return count

    async def queue_by_host(self, limit: int) -> list[HostQueue]:
        return await self.frontier.queue_by_host(limit)

    # --- status ----------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def is_idle(self) -> bool:
        if self._pending or self._slots:
            return False
        return not await self.frontier.has_due()

    def map_sizes(self) -> dict[str, int]:
        """Entries in each in-memory map keyed by crawled input (each one bounded)."""
        return {
            "host_state": len(self._host_state),
            "robots": self.robots.cached,
            "sitemaps_read": len(self._sitemaps_done),
            "seed_hosts": len(self._seed_hosts),
            **self.frontier.map_sizes(),
        }

    def _trim_recent(self, now: float) -> None:
        while self._recent and self._recent[0] < now - RATE_WINDOW:
            self._recent.popleft()

    async def stats(self) -> CrawlStats:
        counts: FrontierCounts = await self.frontier.counts()
        now = time.monotonic()
        self._trim_recent(now)
        span = min(RATE_WINDOW, max(now - self._recent[0], 1.0)) if self._recent else RATE_WINDOW
        return CrawlStats(
            queued=counts.queued,
            in_flight=len(self._pending),
            fetched=self.fetched,
            failed=self.failed,
            pages_per_minute=round(len(self._recent) * 60.0 / span, 1),
            known_urls=counts.queued + counts.leased + counts.done + counts.failed,
            hosts=counts.hosts,
            active_hosts=len(self._slots),
            forwarded=self.forwarded,
            dropped=dict(self.frontier.budgets.dropped),
        )

    # --- scheduling ------------------------------------------------------------------
    async def _retire_idle_workers(self) -> None:
        """Stop the parser processes once nothing has been crawled for a while."""
        if self._pending or self._slots:
            self._idle_since = None
            return
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        elif now - self._idle_since >= self.config.worker_idle_stop and self._workers.running:
            await self._workers.retire()

    async def _supervise(self) -> None:
        while True:
            self._wake.clear()
            room = self.config.max_active_hosts - len(self._slots)
            if room > 0:
                try:
                    hosts = await self.frontier.hosts_with_work(
                        room,
                        set(self._slots),
                        busy_domains=self._domain_slots,
                        per_domain=self.config.max_active_hosts_per_domain,
                    )
                except Exception:
                    log.exception("frontier unavailable; retrying")
                    hosts = []
                for host in hosts:
                    slot = self._host_state.pop(host, None) or HostSlot(host, self.config)
                    slot.stopped = False
                    self._host_state[host] = slot
                    if len(self._host_state) > self.config.host_memory:
                        self._host_state.popitem(last=False)
                    self._slots[host] = slot
                    domain = domain_of(host)
                    self._domain_slots[domain] = self._domain_slots.get(domain, 0) + 1
                    task = asyncio.create_task(self._run_slot(slot), name=f"slot:{host}")
                    self._slot_tasks.add(task)
                    task.add_done_callback(self._slot_tasks.discard)
            try:
                await self._retire_idle_workers()
            except Exception:
                log.exception("could not stop idle parser workers")
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that arrives after
            # _wake was set but before this task resumed (add_seeds or a finished slot
            # right before stop()), and the supervisor then ran forever with stop()
            # waiting for it. asyncio.timeout awaits the event in this task itself.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SUPERVISOR_TICK):
                    await self._wake.wait()

    async def _run_slot(self, slot: HostSlot) -> None:
        """Crawl one host until the frontier has nothing due for it.

        Workers top the host's queue up before it runs dry, so a slow page never holds
        the others back waiting for a whole batch to finish.
        """
        queue: deque[Lease] = deque()
        refilling = asyncio.Lock()
        busy = 0  # workers crawling a URL right now
        finished = 0  # URLs this slot has finished (their links are in the frontier)
        progress = asyncio.Event()

        async def refill() -> bool:
            async with refilling:
                if len(queue) > slot.concurrency:
                    return True
                leases = await self.frontier.lease(slot.host, slot.concurrency * 4)
                for lease in leases:
                    self._pending[lease.url] = lease.depth
                queue.extend(leases)
                return bool(leases)

        async def worker() -> None:
            nonlocal busy, finished
            while not slot.stopped:
                seen = finished
                if len(queue) <= slot.concurrency:
                    await refill()
                if not queue:
                    if busy == 0 and finished == seen:
                        return
                    if finished == seen:
                        # A host's round starts with one URL (a seed): the others must
                        # wait for its links, not leave, or the whole round runs one URL
                        # at a time and one slow page stalls the host.
                        progress.clear()
                        await progress.wait()
                    continue
                busy += 1
                try:
                    await self._crawl_one(slot, queue.popleft())
                finally:
                    busy -= 1
                    finished += 1
                    progress.set()

        try:
            await asyncio.gather(*(worker() for _ in range(slot.concurrency)))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("host slot %s failed", slot.host)
        finally:
            if queue:  # stopped early (host unreachable, shutdown): hand the rest back
                rest = [lease.url for lease in queue]
                for url in rest:
                    self._pending.pop(url, None)
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.frontier.release(rest))
            if self._slots.pop(slot.host, None) is not None:
                domain = domain_of(slot.host)
                left = self._domain_slots.pop(domain, 1) - 1
                if left > 0:
                    self._domain_slots[domain] = left
            self._wake.set()

    # --- one URL ---------------------------------------------------------------------
    async def _crawl_one(self, slot: HostSlot, lease: Lease) -> None:
        url = lease.url
        if self.blocklist.blocks_url(url):  # blocked after it was queued
            self.blocked += 1
            self._pending.pop(url, None)
            await self.frontier.forget(url)
            return
        try:
            origin = str(URL(url).origin())
            policy = await self.robots.policy(origin)
            if policy.unreachable or policy.disallow_all:
                slot.stop()
                self._pending.pop(url, None)
                await self.frontier.release([url])
                await self.frontier.defer_host(slot.host, time.time() + HOST_UNREACHABLE_DEFER)
                return
            slot.apply_robots_delay(policy.crawl_delay)
            if policy.sitemaps and origin not in self._sitemaps_done:
                self._sitemaps_done.put(origin, True)
                self._spawn(self._load_sitemaps(list(policy.sitemaps), origin))
            if not policy.allows(url, self.robots.user_agent):
                raise RobotsDisallowed(url)
            # The turn is taken after robots.txt is known, so the delay separates the
            # requests themselves, not the moments their URLs were picked.
            await slot.wait_turn()
            async with self._global:
                meta, page = await self._workers.crawl(url)
            slot.observe(meta.elapsed, ok=True)
        except FetchError as exc:
            await self._failed(slot, lease, exc)
            return
        except Exception as exc:  # a hostile page must never kill the slot
            log.exception("unexpected error crawling %s", url)
            await self._failed(slot, lease, FetchError(f"internal: {exc!r}"))
            return
        self.fetched += 1
        now = time.monotonic()
        self._recent.append(now)
        self._trim_recent(now)
        aliases = [u for u in (url, *meta.redirected_from) if u != page.url]
        for alias in aliases:
            self._pending.setdefault(alias, lease.depth)
        self._pending.setdefault(page.url, lease.depth)
        page.aliases = aliases
        if self.blocklist.blocks_url(page.url):
            # Redirected into a blocked host: the sink removes rather than indexes it.
            page.noindex, page.links = True, []
        try:
            if page.links and lease.depth < self.config.max_depth:
                anchors = {
                    link.url: link.anchor
                    for link in page.links
                    if link.anchor and link.url != page.url
                }
                links = [(link.url, lease.depth + 1) for link in page.links]
                await self._route(links, force=False, anchors=anchors)
            # Routed: the sink has no use for them, and up to 20,000 a page would stay in
            # memory while submit waits for room in the index's queue.
            page.links = []
            page.inbound_anchors = self.frontier.take_anchors(page.url, lease.anchor)
            await self.sink.submit(page)
        except Exception as exc:
            # Whatever failed (the frontier's disk, the sink), the URL must not stay in
            # flight forever: that would keep the node from ever reporting idle.
            log.exception("could not hand %s on", page.url)
            for alias in (page.url, *aliases):
                self._pending.pop(alias, None)
            await self._failed(slot, lease, FetchError(f"internal: {exc!r}"))

    async def _failed(self, slot: HostSlot, lease: Lease, exc: FetchError) -> None:
        self.failed += 1
        self._pending.pop(lease.url, None)
        retry_at: float | None = None
        if isinstance(exc, HTTPStatusError) and exc.status in (429, 503):
            slot.back_off(exc.retry_after)
        now = time.time()
        if exc.retryable and lease.attempts + 1 < self.config.max_attempts:
            retry_at = now + max(RETRY_BASE * 2**lease.attempts, slot.backoff)
            retry_at = min(retry_at, now + MAX_BACKOFF)
        else:
            retry_at = now + self.config.recrawl_interval
            if (
                lease.indexed_before
                and isinstance(exc, HTTPStatusError)
                and exc.status
                in (
                    404,
                    410,
                )
            ):
                await self.sink.remove(lease.url)
        log.debug("fetch failed %s: %s", lease.url, exc)
        await self.frontier.mark_failed(lease.url, str(exc), retry_at)

    # --- sitemaps --------------------------------------------------------------------
    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _load_sitemaps(self, sitemaps: list[str], origin: str) -> None:
        todo = deque(sitemaps)
        seen: set[str] = set()
        found = 0
        while todo and found < MAX_SITEMAP_URLS:
            sitemap = canonicalize(todo.popleft())
            if not sitemap or sitemap in seen or not sitemap.startswith(origin):
                continue
            seen.add(sitemap)
            try:
                result = await self.fetcher.fetch(sitemap, html_only=False)
                body = result.body
                if body[:2] == b"\x1f\x8b":
                    body, _ = decompress(body, "gzip", self.config.max_decoded_bytes)
            except FetchError as exc:
                log.info("sitemap %s: %s", sitemap, exc)
                continue
            urls, nested = parse_sitemap(body)
            todo.extend(nested)
            batch = [c for c in (canonicalize(u) for u in urls) if c and c.startswith(origin)]
            found += len(batch)
            await self._route([(u, 1) for u in batch], force=False)
