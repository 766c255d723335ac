"""The persistent URL frontier: SQLite in WAL mode, owned by one dedicated thread.

States: QUEUED (due at ``next_fetch``), LEASED (handed to a fetcher, not yet committed to the
index), DONE (committed; due again at ``next_fetch`` for recrawl), FAILED (retry at
``next_fetch``). A URL only becomes DONE once the index has committed it, so a crash loses
nothing: at start-up every LEASED URL is queued again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .errors import FrontierError
from .urls import host_of, looks_like_trap

log = logging.getLogger(__name__)

QUEUED, LEASED, DONE, FAILED = 0, 1, 2, 3
MAX_SEEN_CACHE = 1_000_000
MAX_ANCHORS_PER_URL = 16
MAX_ANCHOR_CACHE = 500_000

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS urls (
    url TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    depth INTEGER NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    next_fetch REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    fetched_at REAL,
    last_error TEXT,
    anchor TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS urls_due ON urls(host, next_fetch) WHERE state != 1;
CREATE INDEX IF NOT EXISTS urls_next ON urls(next_fetch) WHERE state != 1;
CREATE TABLE IF NOT EXISTS hosts (
    host TEXT PRIMARY KEY,
    urls INTEGER NOT NULL DEFAULT 0,
    pinned INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""


@dataclass(slots=True, frozen=True)
class Lease:
    url: str
    host: str
    depth: int
    attempts: int
    anchor: str | None = None
    indexed_before: bool = False


@dataclass(slots=True, frozen=True)
class FrontierCounts:
    queued: int
    leased: int
    done: int
    failed: int
    hosts: int


class Frontier:
    """All methods are coroutines that run their SQL on the frontier's own thread."""

    def __init__(self, path: Path, *, max_urls_per_host: int, max_depth: int) -> None:
        self.path = path
        self.max_urls_per_host = max_urls_per_host
        self.max_depth = max_depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frontier")
        self._db: sqlite3.Connection | None = None
        self._seen: set[str] = set()
        self._anchors: dict[str, list[str]] = {}
        self._host_urls: dict[str, int] = {}

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except sqlite3.Error as exc:
            raise FrontierError(f"frontier database: {exc}") from exc

    # --- lifecycle -------------------------------------------------------------------
    async def open(self) -> int:
        """Open (creating if needed); re-queue leases a crash left behind. Returns their count."""
        return await self._run(self._open)

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        cur = db.execute("UPDATE urls SET state=0 WHERE state=1")
        self._db = db
        return cur.rowcount

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._pool.shutdown(wait=True)

    # --- adding ----------------------------------------------------------------------
    async def add(
        self, urls: Iterable[tuple[str, int]], *, now: float | None = None, force: bool = False
    ) -> list[str]:
        """Add (url, depth) pairs; returns the hosts that got new work.

        ``force`` re-queues URLs already known (an operator's seed means "fetch this now").
        """
        fresh: list[tuple[str, int]] = []
        for url, depth in urls:
            if force or url not in self._seen:
                if depth > self.max_depth:
                    # Not "seen": the same URL may yet be linked from a shallower page.
                    continue
                if not looks_like_trap(url):
                    fresh.append((url, depth))
                if len(self._seen) >= MAX_SEEN_CACHE:
                    self._seen.clear()  # SQLite's primary key still de-duplicates
                self._seen.add(url)
        if not fresh:
            return []
        return await self._run(self._add, fresh, now or time.time(), force)

    def _add(self, fresh: list[tuple[str, int]], now: float, force: bool) -> list[str]:
        assert self._db is not None
        db = self._db
        rows: list[tuple[str, str, int, float, str | None]] = []
        per_host: dict[str, int] = {}
        for url, depth in fresh:
            host = host_of(url)
            count = self._host_urls.get(host)
            if count is None:
                row = db.execute("SELECT urls FROM hosts WHERE host=?", (host,)).fetchone()
                count = row[0] if row else 0
            if count + per_host.get(host, 0) >= self.max_urls_per_host and not force:
                self._host_urls[host] = count
                continue
            per_host[host] = per_host.get(host, 0) + 1
            self._host_urls[host] = count
            # Shallow pages first: next_fetch grows with depth, so BFS order survives restarts.
            # The offset is never positive: a URL added now is due now (a host slot that
            # leased right after its links were added would otherwise find nothing and end).
            due = now + (depth - self.max_depth) * 1e-3
            texts = self._anchors.get(url)
            rows.append((url, host, depth, due, texts[0] if texts else None))
        db.execute("BEGIN")
        try:
            added: dict[str, int] = {}
            for row in rows:
                cur = db.execute(
                    "INSERT OR IGNORE INTO urls(url, host, depth, next_fetch, anchor) "
                    "VALUES (?,?,?,?,?)",
                    row,
                )
                if cur.rowcount:
                    added[row[1]] = added.get(row[1], 0) + 1
                elif force:
                    db.execute(
                        "UPDATE urls SET next_fetch=?, attempts=0 WHERE url=? AND state != 1",
                        (now, row[0]),
                    )
                    added.setdefault(row[1], 0)
            db.executemany(
                "INSERT INTO hosts(host, urls) VALUES (?, ?) "
                "ON CONFLICT(host) DO UPDATE SET urls = urls + excluded.urls",
                list(added.items()),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        for host, n in added.items():
            self._host_urls[host] = self._host_urls.get(host, 0) + n
        return list(added)

    def note_anchors(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Remember what linking pages call a URL until that URL is crawled.

        Memory only (bounded): the first anchor of each URL is also stored with its row,
        so a restart keeps the most important one without a write per link.
        """
        for target, text in pairs:
            if not text:
                continue
            texts = self._anchors.get(target)
            if texts is None:
                if len(self._anchors) >= MAX_ANCHOR_CACHE:
                    self._anchors.pop(next(iter(self._anchors)))
                self._anchors[target] = [text]
            elif len(texts) < MAX_ANCHORS_PER_URL and text not in texts:
                texts.append(text)

    def take_anchors(self, url: str, stored: str | None) -> list[str]:
        texts = self._anchors.pop(url, [])
        if stored and stored not in texts:
            texts.insert(0, stored)
        return texts

    # --- leasing ---------------------------------------------------------------------
    async def hosts_with_work(self, limit: int, exclude: set[str]) -> list[str]:
        return await self._run(self._hosts_with_work, limit, exclude, time.time())

    def _hosts_with_work(self, limit: int, exclude: set[str], now: float) -> list[str]:
        assert self._db is not None
        hosts: list[str] = []
        # Walk due URLs in time order and collect distinct hosts; skip the busy ones.
        cur = self._db.execute(
            "SELECT DISTINCT host FROM urls WHERE state != 1 AND next_fetch <= ? LIMIT ?",
            (now, limit + len(exclude)),
        )
        for (host,) in cur:
            if host not in exclude:
                hosts.append(host)
                if len(hosts) >= limit:
                    break
        return hosts

    async def lease(self, host: str, n: int) -> list[Lease]:
        return await self._run(self._lease, host, n, time.time())

    def _lease(self, host: str, n: int, now: float) -> list[Lease]:
        assert self._db is not None
        db = self._db
        rows = db.execute(
            "SELECT url, depth, attempts, anchor, fetched_at IS NOT NULL FROM urls "
            "WHERE host=? AND state != 1 AND next_fetch <= ? "
            "ORDER BY next_fetch LIMIT ?",
            (host, now, n),
        ).fetchall()
        if rows:
            db.executemany("UPDATE urls SET state=1 WHERE url=?", [(r[0],) for r in rows])
        return [Lease(r[0], host, r[1], r[2], r[3], bool(r[4])) for r in rows]

    async def seed_hosts(self) -> set[str]:
        return await self._run(self._seed_hosts)

    def _seed_hosts(self) -> set[str]:
        assert self._db is not None
        return {r[0] for r in self._db.execute("SELECT DISTINCT host FROM urls WHERE depth=0")}

    async def has_due(self) -> bool:
        return await self._run(self._has_due, time.time())

    def _has_due(self, now: float) -> bool:
        assert self._db is not None
        row = self._db.execute(
            "SELECT 1 FROM urls WHERE state != 1 AND next_fetch <= ? LIMIT 1", (now,)
        ).fetchone()
        return row is not None

    # --- outcomes --------------------------------------------------------------------
    async def mark_done(self, urls: Iterable[tuple[str, int]], recrawl_after: float) -> None:
        """(url, depth) pairs are committed. Unknown URLs (redirect targets) are inserted
        as DONE, so a later link to them does not fetch them again."""
        now = time.time()
        rows = [(u, host_of(u), d, now + recrawl_after, now) for u, d in urls]
        for u, *_ in rows:
            self._seen.add(u)
        if rows:
            await self._run(self._mark_done, rows)

    def _mark_done(self, rows: list[tuple[str, str, int, float, float]]) -> None:
        assert self._db is not None
        db = self._db
        db.execute("BEGIN")
        try:
            self._upsert_done(db, rows)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def _upsert_done(
        db: sqlite3.Connection, rows: list[tuple[str, str, int, float, float]]
    ) -> None:
        db.executemany(
            "INSERT INTO urls(url, host, depth, state, next_fetch, fetched_at) "
            "VALUES (?,?,?,2,?,?) ON CONFLICT(url) DO UPDATE SET state=2, "
            "next_fetch=excluded.next_fetch, fetched_at=excluded.fetched_at, attempts=0, "
            "last_error=NULL",
            rows,
        )

    async def mark_failed(self, url: str, error: str, retry_at: float | None) -> None:
        """retry_at None: give up until the next recrawl round (the caller decides)."""
        await self._run(self._mark_failed, url, error[:500], retry_at)

    def _mark_failed(self, url: str, error: str, retry_at: float | None) -> None:
        assert self._db is not None
        self._db.execute(
            "UPDATE urls SET state=3, attempts=attempts+1, last_error=?, next_fetch=? WHERE url=?",
            (error, retry_at if retry_at is not None else time.time() + 365 * 86400, url),
        )

    async def release(self, leases: Iterable[str]) -> None:
        """Give leased URLs back untouched (shutdown, host deferred)."""
        rows = [(u,) for u in leases]
        if rows:
            await self._run(self._release, rows)

    def _release(self, rows: list[tuple[str]]) -> None:
        assert self._db is not None
        self._db.executemany("UPDATE urls SET state=0 WHERE url=? AND state=1", rows)

    async def defer_host(self, host: str, until: float) -> None:
        await self._run(self._defer_host, host, until)

    def _defer_host(self, host: str, until: float) -> None:
        assert self._db is not None
        self._db.execute(
            "UPDATE urls SET next_fetch=? WHERE host=? AND state != 1 AND next_fetch < ?",
            (until, host, until),
        )

    async def counts(self) -> FrontierCounts:
        return await self._run(self._counts, time.time())

    def _counts(self, now: float) -> FrontierCounts:
        assert self._db is not None
        db = self._db
        by_state = dict(db.execute("SELECT state, count(*) FROM urls GROUP BY state").fetchall())
        queued = db.execute(
            "SELECT count(*) FROM urls WHERE state != 1 AND next_fetch <= ?", (now,)
        ).fetchone()[0]
        hosts = db.execute("SELECT count(*) FROM hosts").fetchone()[0]
        return FrontierCounts(
            queued=queued,
            leased=by_state.get(LEASED, 0),
            done=by_state.get(DONE, 0),
            failed=by_state.get(FAILED, 0),
            hosts=hosts,
        )

    async def state_of(self, url: str) -> tuple[int, int] | None:
        """(state, attempts) of one URL, for status pages and tests."""
        return await self._run(self._state_of, url)

    def _state_of(self, url: str) -> tuple[int, int] | None:
        assert self._db is not None
        row = self._db.execute("SELECT state, attempts FROM urls WHERE url=?", (url,)).fetchone()
        return (row[0], row[1]) if row else None
