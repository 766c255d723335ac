"""The persistent URL frontier: SQLite in WAL mode, owned by one dedicated thread.

States: QUEUED (due at ``next_fetch``), LEASED (handed to a fetcher, not yet committed to the
index), DONE (committed; due again at ``next_fetch`` for recrawl), FAILED (retry at
``next_fetch``). A URL only becomes DONE once the index has committed it, so a crash loses
nothing: at start-up every LEASED URL is queued again.

A full disk (or another storage failure) never takes the crawl down: writes that record
an outcome or new URLs are kept in memory, in order, and replayed once the database
accepts writes again; meanwhile nothing new is leased.

Longer than 400 lines because every SQL statement on the frontier's table lives here, with
the disk-full backlog that must wrap each of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TypeVar

from .budgets import Budgets
from .config import DEFAULT_ANCHOR_CACHE, DEFAULT_RECRAWL_INTERVAL, DEFAULT_SEEN_CACHE
from .domains import domain_of
from .errors import FrontierError
from .urls import host_of, looks_like_trap

log = logging.getLogger(__name__)


class UrlState(IntEnum):
    """A URL row's ``state`` column (see the module's docstring)."""

    QUEUED = 0
    LEASED = 1
    DONE = 2
    FAILED = 3


QUEUED, LEASED, DONE, FAILED = UrlState
MAX_ANCHORS_PER_URL = 16
STORAGE_RETRY = 2.0  # seconds between write attempts while the database cannot write
# Rows kept in memory while the disk is full. Outcomes (done, failed, released) are
# always kept (at most one per leased URL); new links beyond this are dropped, and found
# again by later crawls.
MAX_BACKLOG_ROWS = 200_000
STORAGE_ERRORS = (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)
FORGET_CHUNK = 500  # hosts deleted per statement (SQLite's bound parameters: 32,766)

T = TypeVar("T")
CommittedCheck = Callable[[list[tuple[str, float | None]]], set[str]]

# Hosts with due URLs, one index probe per host: urls_due is walked from host to next host
# (a skip scan SQLite does not do by itself), each asked whether it has a due URL. A
# DISTINCT over the rows read every row of every host: 8.8 ms a supervisor tick on an
# idle node with 26k done URLs (5% of its CPU under query load), 7 us this way.
HOSTS_WITH_DUE_URLS = f"""
WITH RECURSIVE walk(host) AS (
    SELECT (SELECT host FROM urls WHERE state != {LEASED} ORDER BY host LIMIT 1)
    UNION ALL
    SELECT (
        SELECT host FROM urls WHERE state != {LEASED} AND host > walk.host ORDER BY host LIMIT 1
    ) FROM walk WHERE walk.host IS NOT NULL
)
SELECT host FROM walk WHERE host IS NOT NULL AND EXISTS (
    SELECT 1 FROM urls
    WHERE urls.host = walk.host AND state != {LEASED} AND next_fetch <= ?
)
"""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS urls (
    url TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    depth INTEGER NOT NULL,
    state INTEGER NOT NULL DEFAULT {QUEUED},
    next_fetch REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    fetched_at REAL,
    last_error TEXT,
    anchor TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS urls_due ON urls(host, next_fetch) WHERE state != {LEASED};
CREATE INDEX IF NOT EXISTS urls_next ON urls(next_fetch) WHERE state != {LEASED};
CREATE TABLE IF NOT EXISTS hosts (
    host TEXT PRIMARY KEY,
    urls INTEGER NOT NULL DEFAULT 0,
    pinned INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""


def _storage_error(exc: BaseException) -> int | None:
    """SQLITE_FULL or SQLITE_IOERR (the disk, not the query) when ``exc`` is one; else None."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.OperationalError) and isinstance(code, int):
        primary = code & 0xFF  # extended codes (SQLITE_IOERR_WRITE...) keep it in the low byte
        if primary in STORAGE_ERRORS:
            return primary
    return None


def _rollback(db: sqlite3.Connection) -> None:
    # SQLite may already have rolled back on SQLITE_FULL; a second ROLLBACK would raise
    # and hide the error that matters.
    if db.in_transaction:
        db.execute("ROLLBACK")


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
    queued: int  # due now, in any state but LEASED (new, to retry, to recrawl)
    leased: int
    done: int
    failed: int
    hosts: int
    waiting: int  # rows in state QUEUED, due or not (never fetched, or re-queued)


@dataclass(slots=True, frozen=True)
class HostQueue:
    """One host's URLs by state (``Frontier.queue_by_host``)."""

    host: str
    due: int  # queued or to be fetched again, due now
    leased: int
    done: int
    failed: int
    next_fetch: float | None  # the earliest time one of its URLs is due


class Frontier:
    """All methods are coroutines that run their SQL on the frontier's own thread."""

    def __init__(
        self,
        path: Path,
        *,
        max_urls_per_host: int,
        max_depth: int,
        committed_before_crash: CommittedCheck | None = None,
        recrawl_after: float = DEFAULT_RECRAWL_INTERVAL,
        max_seen: int = DEFAULT_SEEN_CACHE,
        max_anchor_urls: int = DEFAULT_ANCHOR_CACHE,
        budgets: Budgets | None = None,
    ) -> None:
        self.path = path
        self.max_seen = max_seen
        self.max_anchor_urls = max_anchor_urls
        self.max_depth = max_depth
        # Per host, per registrable domain, in total (crawler/budgets.py).
        self.budgets = budgets or Budgets(per_host=max_urls_per_host)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frontier")
        self._db: sqlite3.Connection | None = None
        self._seen: set[str] = set()
        self._anchors: dict[str, list[str]] = {}
        # Writes the database refused (disk full), oldest first: (function, args, rows).
        self._backlog: deque[tuple[Callable[..., object], tuple[object, ...], int]] = deque()
        self._backlog_rows = 0
        self._retry_at = 0.0  # monotonic time of the next write attempt while failing
        self._failing_since = 0.0
        self._dropped_links = 0
        self.storage_error: str | None = None  # why writes fail right now; None when fine
        self.disk_full = False
        # Given by whoever owns the index: of the URLs a crash left LEASED, given as
        # (url, fetched_at before that lease), which did the index commit anyway (the kill
        # fell between the commit and mark_done)? Those become DONE, due again after
        # ``recrawl_after``, instead of being fetched a second time. Runs on the
        # frontier's thread before anything is leased.
        self.committed_before_crash = committed_before_crash
        self.recrawl_after = recrawl_after

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except sqlite3.Error as exc:
            raise FrontierError(f"frontier database: {exc}") from exc

    # --- writes that survive a full disk (frontier thread only) -------------------------
    def _persist(self, fn: Callable[..., T], args: tuple[object, ...], rows: int, default: T) -> T:
        """Run a write that must not be lost; if the disk refuses it, keep it for later.

        Returns ``fn``'s result, or ``default`` when the write was kept in the backlog.
        """
        if not self._writable():
            self._keep(fn, args, rows)
            return default
        try:
            result = fn(*args)
        except sqlite3.OperationalError as exc:
            if _storage_error(exc) is None:
                raise
            self._failed_write(exc)
            self._keep(fn, args, rows)
            return default
        self._wrote()
        return result

    def _writable(self) -> bool:
        """False while writes are known to fail; otherwise replays the backlog first, so
        writes reach the database in the order they were made."""
        if self.storage_error is not None and time.monotonic() < self._retry_at:
            return False
        if not self._backlog:
            return True
        while self._backlog:
            fn, args, _rows = self._backlog[0]
            try:
                fn(*args)
            except sqlite3.OperationalError as exc:
                if _storage_error(exc) is None:
                    self._drop_head()  # would fail forever and block everything after it
                    raise
                self._failed_write(exc)
                return False
            self._drop_head()
        self._wrote()
        return True

    def _drop_head(self) -> None:
        _fn, _args, rows = self._backlog.popleft()
        self._backlog_rows -= rows

    def _keep(self, fn: Callable[..., object], args: tuple[object, ...], rows: int) -> None:
        if fn == self._add and self._backlog_rows + rows > MAX_BACKLOG_ROWS:
            self._dropped_links += rows
            return
        self._backlog.append((fn, args, rows))
        self._backlog_rows += rows

    def _failed_write(self, exc: sqlite3.OperationalError) -> None:
        self._retry_at = time.monotonic() + STORAGE_RETRY
        if self.storage_error is None:
            self._failing_since = time.monotonic()
            # Once per episode, not per write: a full disk must not flood the log.
            log.error(
                "frontier %s cannot write (%s%s); keeping changes in memory, retrying every "
                "%g s, leasing nothing new until then",
                self.path,
                "disk full: " if _storage_error(exc) == sqlite3.SQLITE_FULL else "",
                exc,
                STORAGE_RETRY,
            )
        self.disk_full = _storage_error(exc) == sqlite3.SQLITE_FULL
        self.storage_error = f"{type(exc).__name__}: {exc}"

    def _wrote(self) -> None:
        if self.storage_error is not None and not self._backlog:
            log.warning(
                "frontier writes again after %.1f s (%d new links dropped meanwhile)",
                time.monotonic() - self._failing_since,
                self._dropped_links,
            )
            self.storage_error = None
            self.disk_full = False
            self._dropped_links = 0

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
        if self.committed_before_crash is not None:
            leased = db.execute(f"SELECT url, fetched_at FROM urls WHERE state={LEASED}").fetchall()
            committed = self.committed_before_crash(leased) if leased else set()
            now = time.time()
            db.executemany(
                f"UPDATE urls SET state={DONE}, next_fetch=?, fetched_at=?, attempts=0, "
                f"last_error=NULL WHERE url=? AND state={LEASED}",
                [(now + self.recrawl_after, now, url) for url in committed],
            )
        cur = db.execute(f"UPDATE urls SET state={QUEUED} WHERE state={LEASED}")
        self.budgets.open(db)
        self._db = db
        return cur.rowcount

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._last_flush)
            await self._run(self._db.close)
            self._db = None
        self._pool.shutdown(wait=True)

    def _last_flush(self) -> None:
        self._retry_at = 0.0  # one more try, whenever the last one was
        with contextlib.suppress(sqlite3.Error):
            self._writable()
        if self._backlog:
            # Not lost for good: their URLs are still LEASED on disk, so the next start
            # queues them again (and refetching a page re-adds its links).
            log.warning(
                "frontier closed with %d changes it could not write (%s)",
                len(self._backlog),
                self.storage_error,
            )

    # --- adding ----------------------------------------------------------------------
    async def add(
        self,
        urls: Iterable[tuple[str, int]],
        *,
        now: float | None = None,
        force: bool = False,
        anchors: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Add (url, depth) pairs; returns the hosts that got new work.

        ``force`` re-queues URLs already known (an operator's seed means "fetch this now").
        ``anchors``: what the linking page calls each URL (see ``_note_anchor``).
        """
        fresh: list[tuple[str, int]] = []
        for url, depth in urls:
            text = anchors.get(url) if anchors else None
            if force or url not in self._seen:
                if depth > self.max_depth:
                    # Not "seen": the same URL may yet be linked from a shallower page.
                    continue
                if not looks_like_trap(url):
                    fresh.append((url, depth))
                    if text:
                        self._note_anchor(url, text, new=True)
                if len(self._seen) >= self.max_seen:
                    self._seen.clear()  # SQLite's primary key still de-duplicates
                self._seen.add(url)
            elif text:
                self._note_anchor(url, text, new=False)
        if not fresh:
            return []
        when = now or time.time()
        return await self._run(self._persist, self._add, (fresh, when, force), len(fresh), [])

    def _add(self, fresh: list[tuple[str, int]], now: float, force: bool) -> list[str]:
        assert self._db is not None
        db = self._db
        rows: list[tuple[str, str, int, float, str | None]] = []
        admission = self.budgets.admission(db, force=force)
        for url, depth in fresh:
            host = host_of(url)
            if not admission.admit(host):
                continue
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
                    admission.inserted(row[1])
                elif force:
                    db.execute(
                        "UPDATE urls SET next_fetch=?, attempts=0 "
                        f"WHERE url=? AND state != {LEASED}",
                        (now, row[0]),
                    )
                    added.setdefault(row[1], 0)
            db.executemany(
                "INSERT INTO hosts(host, urls) VALUES (?, ?) "
                "ON CONFLICT(host) DO UPDATE SET urls = urls + excluded.urls",
                list(added.items()),
            )
            admission.write(db)
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        admission.done(added)
        return list(added)

    def _note_anchor(self, target: str, text: str, *, new: bool) -> None:
        """Remember what linking pages call a URL until that URL is crawled.

        Memory only (bounded): the first anchor of each URL is also stored with its row,
        so a restart keeps the most important one without a write per link. Only a URL
        queued here gets an entry (``new``: first seen now); a link to one already crawled
        or left out (another host, a trap) adds nothing. Before, every link's target got
        one: on the large corpus that was every external link and every page already
        crawled, up to 16 anchors each, never taken.
        """
        texts = self._anchors.get(target)
        if texts is None:
            if not new:
                return
            if len(self._anchors) >= self.max_anchor_urls:
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
    async def hosts_with_work(
        self,
        limit: int,
        exclude: set[str],
        *,
        busy_domains: Mapping[str, int] | None = None,
        per_domain: int = 0,
    ) -> list[str]:
        """Up to ``limit`` hosts with due URLs, not in ``exclude`` (being crawled). With
        ``per_domain``, no registrable domain gets more hosts than that, counting its
        ``busy_domains`` (domain -> hosts of it being crawled)."""
        taken = dict(busy_domains or {})
        return await self._run(
            self._hosts_with_work, limit, exclude, time.time(), taken, per_domain
        )

    def _hosts_with_work(
        self, limit: int, exclude: set[str], now: float, taken: dict[str, int], per_domain: int
    ) -> list[str]:
        assert self._db is not None
        if not self._writable():
            return []  # a lease could not be recorded: start no host until writes work
        hosts: list[str] = []
        # Hosts with due URLs, in host order, read lazily past the busy ones and those of
        # domains at their cap.
        cur = self._db.execute(HOSTS_WITH_DUE_URLS, (now,))
        for (host,) in cur:
            if host in exclude:
                continue
            if per_domain:
                domain = domain_of(host)
                if taken.get(domain, 0) >= per_domain:
                    continue
                taken[domain] = taken.get(domain, 0) + 1
            hosts.append(host)
            if len(hosts) >= limit:
                break
        cur.close()  # a statement left mid-way would hold its read snapshot open
        return hosts

    async def lease(self, host: str, n: int) -> list[Lease]:
        return await self._run(self._lease, host, n, time.time())

    def _lease(self, host: str, n: int, now: float) -> list[Lease]:
        assert self._db is not None
        db = self._db
        if not self._writable():
            return []
        rows = db.execute(
            "SELECT url, depth, attempts, anchor, fetched_at IS NOT NULL, state FROM urls "
            f"WHERE host=? AND state != {LEASED} AND next_fetch <= ? "
            "ORDER BY next_fetch LIMIT ?",
            (host, now, n),
        ).fetchall()
        if rows:
            # One transaction: a failed write must not leave some rows LEASED by nobody.
            try:
                db.execute("BEGIN")
                db.executemany(
                    f"UPDATE urls SET state={LEASED} WHERE url=?", [(r[0],) for r in rows]
                )
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                _rollback(db)
                if _storage_error(exc) is None:
                    raise
                self._failed_write(exc)
                return []
            self._wrote()
            self.budgets.leased(sum(1 for r in rows if r[5] == QUEUED))
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
        if self._backlog:
            return True  # changes not yet on disk: the crawl is not over
        row = self._db.execute(
            f"SELECT 1 FROM urls WHERE state != {LEASED} AND next_fetch <= ? LIMIT 1", (now,)
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
            await self._run(self._persist, self._mark_done, (rows,), len(rows), None)

    def _mark_done(self, rows: list[tuple[str, str, int, float, float]]) -> None:
        assert self._db is not None
        db = self._db
        db.execute("BEGIN")
        try:
            self._upsert_done(db, rows)
        except BaseException:
            _rollback(db)
            raise
        db.execute("COMMIT")

    @staticmethod
    def _upsert_done(
        db: sqlite3.Connection, rows: list[tuple[str, str, int, float, float]]
    ) -> None:
        db.executemany(
            "INSERT INTO urls(url, host, depth, state, next_fetch, fetched_at) "
            f"VALUES (?,?,?,{DONE},?,?) ON CONFLICT(url) DO UPDATE SET state={DONE}, "
            "next_fetch=excluded.next_fetch, fetched_at=excluded.fetched_at, attempts=0, "
            "last_error=NULL",
            rows,
        )

    async def mark_failed(self, url: str, error: str, retry_at: float | None) -> None:
        """retry_at None: give up until the next recrawl round (the caller decides)."""
        self._anchors.pop(url, None)
        await self._run(self._persist, self._mark_failed, (url, error[:500], retry_at), 1, None)

    def _mark_failed(self, url: str, error: str, retry_at: float | None) -> None:
        assert self._db is not None
        self._db.execute(
            f"UPDATE urls SET state={FAILED}, attempts=attempts+1, last_error=?, next_fetch=? "
            "WHERE url=?",
            (error, retry_at if retry_at is not None else time.time() + 365 * 86400, url),
        )

    async def release(self, leases: Iterable[str]) -> None:
        """Give leased URLs back untouched (shutdown, host deferred)."""
        rows = [(u,) for u in leases]
        if rows:
            await self._run(self._persist, self._release, (rows,), len(rows), None)

    def _release(self, rows: list[tuple[str]]) -> None:
        assert self._db is not None
        cur = self._db.executemany(
            f"UPDATE urls SET state={QUEUED} WHERE url=? AND state={LEASED}", rows
        )
        self.budgets.released(cur.rowcount)

    async def defer_host(self, host: str, until: float) -> None:
        await self._run(self._persist, self._defer_host, (host, until), 1, None)

    def _defer_host(self, host: str, until: float) -> None:
        assert self._db is not None
        self._db.execute(
            f"UPDATE urls SET next_fetch=? WHERE host=? AND state != {LEASED} AND next_fetch < ?",
            (until, host, until),
        )

    # --- the operator's ------------------------------------------------------------------
    async def requeue_host(self, host: str) -> int:
        """Every URL of ``host`` (a host key, port included) due now: "recrawl this site".
        Returns how many; those in flight are left to finish."""
        return await self._run(self._persist, self._requeue_host, (host, time.time()), 1, 0)

    def _requeue_host(self, host: str, now: float) -> int:
        assert self._db is not None
        cur = self._db.execute(
            f"UPDATE urls SET next_fetch=?, attempts=0 WHERE host=? AND state != {LEASED}",
            (now, host),
        )
        return cur.rowcount

    async def forget_hosts(self, blocked: Callable[[str], bool]) -> list[str]:
        """Delete every URL of the hosts ``blocked`` names (the blocklist): none is leased
        again, and links to them are not queued (the crawler checks before adding).
        Returns the hosts. The seen-URL cache is emptied so that a host unblocked later
        can be queued again from its links."""
        hosts = await self._run(self._forget_hosts, blocked)
        if hosts:
            self._seen.clear()
        return hosts

    def _forget_hosts(self, blocked: Callable[[str], bool]) -> list[str]:
        assert self._db is not None
        db = self._db
        hosts = [h for (h,) in db.execute("SELECT host FROM hosts") if blocked(h)]
        if hosts:
            db.execute("BEGIN")
            try:
                # One pass over the table per chunk: no index has every row of a host.
                for start in range(0, len(hosts), FORGET_CHUNK):
                    chunk = hosts[start : start + FORGET_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    self.budgets.forget_hosts(db, chunk)
                    db.execute(f"DELETE FROM urls WHERE host IN ({marks})", chunk)
                    db.execute(f"DELETE FROM hosts WHERE host IN ({marks})", chunk)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            self.budgets.count_waiting(db)
        return hosts

    async def forget(self, url: str) -> None:
        """Delete one URL (leased from a host blocked since it was queued)."""
        self._anchors.pop(url, None)
        await self._run(self._persist, self._forget, (url,), 1, None)

    def _forget(self, url: str) -> None:
        assert self._db is not None
        self._db.execute("DELETE FROM urls WHERE url=?", (url,))

    async def queue_by_host(self, limit: int) -> list[HostQueue]:
        """The hosts with the most URLs due, then the most URLs: the crawl queue as the
        operator page shows it. One pass over the table (on the frontier's thread)."""
        return await self._run(self._queue_by_host, limit, time.time())

    def _queue_by_host(self, limit: int, now: float) -> list[HostQueue]:
        assert self._db is not None
        rows = self._db.execute(
            f"SELECT host, sum(state != {LEASED} AND next_fetch <= ?), sum(state = {LEASED}), "
            f"sum(state = {DONE}), sum(state = {FAILED}), min(CASE WHEN state != {LEASED} "
            "THEN next_fetch END) FROM urls GROUP BY host ORDER BY 2 DESC, count(*) DESC LIMIT ?",
            (now, limit),
        ).fetchall()
        return [HostQueue(*row) for row in rows]

    async def counts(self) -> FrontierCounts:
        return await self._run(self._counts, time.time())

    def _counts(self, now: float) -> FrontierCounts:
        assert self._db is not None
        db = self._db
        by_state = dict(db.execute("SELECT state, count(*) FROM urls GROUP BY state").fetchall())
        queued = db.execute(
            f"SELECT count(*) FROM urls WHERE state != {LEASED} AND next_fetch <= ?", (now,)
        ).fetchone()[0]
        hosts = db.execute("SELECT count(*) FROM hosts").fetchone()[0]
        return FrontierCounts(
            queued=queued,
            leased=by_state.get(LEASED, 0),
            done=by_state.get(DONE, 0),
            failed=by_state.get(FAILED, 0),
            hosts=hosts,
            waiting=by_state.get(QUEUED, 0),
        )

    def map_sizes(self) -> dict[str, int]:
        """Entries in the in-memory maps keyed by crawled URLs and hosts (all bounded)."""
        return {"seen": len(self._seen), "anchors": len(self._anchors), **self.budgets.map_sizes()}

    async def state_of(self, url: str) -> tuple[int, int] | None:
        """(state, attempts) of one URL, for status pages and tests."""
        return await self._run(self._state_of, url)

    def _state_of(self, url: str) -> tuple[int, int] | None:
        assert self._db is not None
        row = self._db.execute("SELECT state, attempts FROM urls WHERE url=?", (url,)).fetchone()
        return (row[0], row[1]) if row else None
