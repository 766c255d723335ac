"""The frontier's budgets: URLs per host, per registrable domain, and queued in total.

A host and a registrable domain (crawler/domains.py) may each add so many URLs to the
frontier, ever (queued and fetched alike); a farm of 10,000 wildcard subdomains shares its
domain's budget. And the frontier holds so many QUEUED URLs in all. Past a budget a new
URL is dropped, counted by reason in ``Budgets.dropped``; the operator's seeds are never
over budget. A dropped link is found again by later crawls.

Dropped, not evicted: URLs come in breadth-first order (shallow first, see
``Frontier._add``), so what arrives when the frontier is full is rarely worth more than
what waits, and evicting would cost a sorted DELETE on every batch.

Everything here runs on the frontier's thread, inside its transactions.
"""

from __future__ import annotations

import sqlite3
import time

from .config import (
    DEFAULT_HOST_MEMORY,
    DEFAULT_MAX_QUEUED_URLS,
    DEFAULT_MAX_URLS_PER_DOMAIN,
)
from .domains import domain_of
from .lru import Lru

DOMAINS_SCHEMA = """
CREATE TABLE IF NOT EXISTS domains (
    domain TEXT PRIMARY KEY,
    urls INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""
SCHEMA_VERSION = 1  # PRAGMA user_version: 1 has the domains table filled
# While the frontier is at its total budget, how often the QUEUED rows are counted again
# (a scan: ~80 ms a million rows); in between the kept count only errs high.
WAITING_RECOUNT = 10.0
DROP_REASONS = ("host_budget", "domain_budget", "frontier_full")
QUEUED_STATE = 0  # frontier.UrlState.QUEUED (that module imports this one)


class Budgets:
    def __init__(
        self,
        *,
        per_host: int,
        per_domain: int = DEFAULT_MAX_URLS_PER_DOMAIN,
        max_queued: int = DEFAULT_MAX_QUEUED_URLS,
        max_hosts: int = DEFAULT_HOST_MEMORY,
    ) -> None:
        self.per_host = per_host
        self.per_domain = per_domain
        self.max_queued = max_queued
        # URLs each host and domain has added (their rows in hosts / domains): the recently
        # used ones; the others are read again when needed.
        self._hosts: Lru[str, int] = Lru(max_hosts)
        self._domains: Lru[str, int] = Lru(max_hosts)
        # QUEUED rows: exact, but for a queued URL that becomes DONE as another page's
        # redirect alias (mark_done), which stays counted until the next recount.
        self.waiting = 0
        self._recount_at = 0.0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)  # new URLs not queued, by reason

    def open(self, db: sqlite3.Connection) -> None:
        """After the frontier's schema: fill the domains table of an older frontier from
        its hosts' counts, and count what waits."""
        db.executescript(DOMAINS_SCHEMA)
        if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            totals: dict[str, int] = {}
            for host, urls in db.execute("SELECT host, urls FROM hosts"):
                domain = domain_of(host)
                totals[domain] = totals.get(domain, 0) + urls
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT INTO domains(domain, urls) VALUES (?, ?) "
                    "ON CONFLICT(domain) DO UPDATE SET urls = excluded.urls",
                    list(totals.items()),
                )
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        self._recount(db)

    def _recount(self, db: sqlite3.Connection) -> None:
        self._recount_at = time.monotonic() + WAITING_RECOUNT
        row = db.execute(f"SELECT count(*) FROM urls WHERE state={QUEUED_STATE}").fetchone()
        self.waiting = int(row[0])

    def admission(self, db: sqlite3.Connection, *, force: bool) -> Admission:
        """Admits the URLs of one ``Frontier._add`` batch, host by host."""
        if self.waiting >= self.max_queued and time.monotonic() >= self._recount_at:
            self._recount(db)
        return Admission(self, db, force=force, room=max(0, self.max_queued - self.waiting))

    def added(self, db: sqlite3.Connection, key: str, *, domain: bool) -> int:
        """URLs a host (or a registrable domain) has added so far."""
        cache = self._domains if domain else self._hosts
        count = cache.get(key)
        if count is None:
            sql = "SELECT urls FROM " + (
                "domains WHERE domain=?" if domain else "hosts WHERE host=?"
            )
            row = db.execute(sql, (key,)).fetchone()
            count = int(row[0]) if row else 0
            cache.put(key, count)
        return count

    def leased(self, queued: int) -> None:
        """``queued`` QUEUED rows became LEASED (the others leased were DONE or FAILED)."""
        self.waiting -= queued

    def released(self, rows: int) -> None:
        """``rows`` LEASED rows became QUEUED again."""
        self.waiting += max(0, rows)

    def forget_hosts(self, db: sqlite3.Connection, hosts: list[str]) -> None:
        """``hosts`` are blocked and their rows about to be deleted (inside that
        transaction): their URLs leave their domains' counts. ``count_waiting`` after."""
        marks = ",".join("?" * len(hosts))
        per_domain: dict[str, int] = {}
        for host, urls in db.execute(
            f"SELECT host, urls FROM hosts WHERE host IN ({marks})", hosts
        ):
            domain = domain_of(host)
            per_domain[domain] = per_domain.get(domain, 0) + int(urls)
            self._hosts.pop(host)
        db.executemany(
            "UPDATE domains SET urls = max(0, urls - ?) WHERE domain=?",
            [(n, d) for d, n in per_domain.items()],
        )
        for domain in per_domain:
            self._domains.pop(domain)

    def count_waiting(self, db: sqlite3.Connection) -> None:
        """Count the QUEUED rows again (after rows were deleted)."""
        self._recount(db)

    def map_sizes(self) -> dict[str, int]:
        return {"host_counts": len(self._hosts), "domain_counts": len(self._domains)}


class Admission:
    """One batch: ``admit(host)`` before a row is built, ``inserted(host)`` for each row
    the INSERT took, ``write(db)`` inside the batch's transaction, ``done()`` after its
    commit."""

    def __init__(self, budgets: Budgets, db: sqlite3.Connection, *, force: bool, room: int) -> None:
        self.budgets = budgets
        self.db = db
        self.force = force
        self.room = room
        self._domain: dict[str, str] = {}  # host -> its registrable domain
        self._hosts: dict[str, int] = {}  # admitted in this batch
        self._domains: dict[str, int] = {}
        self._admitted = 0
        self._inserted: dict[str, int] = {}  # by domain

    def admit(self, host: str) -> bool:
        domain = self._domain.get(host)
        if domain is None:
            domain = self._domain[host] = domain_of(host)
        b = self.budgets
        if not self.force:  # the operator's seeds are never over budget
            reason = None
            if b.added(self.db, host, domain=False) + self._hosts.get(host, 0) >= b.per_host:
                reason = "host_budget"
            elif b.added(self.db, domain, domain=True) + self._domains.get(domain, 0) >= (
                b.per_domain
            ):
                reason = "domain_budget"
            elif self._admitted >= self.room:
                reason = "frontier_full"
            if reason is not None:
                b.dropped[reason] += 1
                return False
        self._hosts[host] = self._hosts.get(host, 0) + 1
        self._domains[domain] = self._domains.get(domain, 0) + 1
        self._admitted += 1
        return True

    def inserted(self, host: str) -> None:
        domain = self._domain[host]
        self._inserted[domain] = self._inserted.get(domain, 0) + 1

    def write(self, db: sqlite3.Connection) -> None:
        db.executemany(
            "INSERT INTO domains(domain, urls) VALUES (?, ?) "
            "ON CONFLICT(domain) DO UPDATE SET urls = urls + excluded.urls",
            list(self._inserted.items()),
        )

    def done(self, hosts_added: dict[str, int]) -> None:
        """After the commit: ``hosts_added`` is what the hosts table got."""
        b = self.budgets
        for cache, counts in ((b._hosts, hosts_added), (b._domains, self._inserted)):
            for key, n in counts.items():
                known = cache.get(key)
                if known is not None:  # else it is read from its row, written just now
                    cache.put(key, known + n)
        b.waiting += sum(self._inserted.values())
