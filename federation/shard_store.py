"""Shards this node holds for the network: (term, publisher) → that publisher's record.

Publishers push their shards to the nodes closest to each term's key; a holder keeps every
publisher's copy apart (no last-writer-wins between publishers), expires copies that are
not republished, and answers lookups with the copies of a term so the asker can merge them.
SQLite in WAL mode on its own thread, like the frontier. Longer than 400 lines because
the rows, the budgets kept beside them and the per-term bound change together in one
transaction on that thread (the row sizes are ``held_rows``, the bound's rule ``term_slots``).

Bounded per term (``term_slots``): of a term's publishers a holder keeps the
``PUBLISHERS_PER_TERM`` strongest whole (the most pages with the term, as each one's record
claims) and the next ``SUMMARIES_PER_TERM`` as summaries (no postings), so a word that
every node publishes costs a holder, and a lookup, the same at 300 publishers as at
10,000. A stronger newcomer takes the weakest whole one's place, which becomes a summary;
one weaker than all is ``OUTRANKED``, which its publisher does not take for a miss. Fake
publishers cannot crowd honest ones out cheaply: one address may push for only a few
publishers (api/peer_routes.py).

A copy is its publisher's signed term record (``wire.ShardGroup.held``), stored and served byte
for byte: the querier verifies each one, so a holder cannot alter what it serves, and the
holder does not parse or re-encode shards (that cost holders more CPU than everything else
in placement). This node's own reads (``get``) verify like any querier's.

Quotas, because publishers may be hostile: a publisher holds at most
``max_terms_per_publisher`` unexpired terms here (terms it already holds can always be
refreshed; new ones beyond the quota are skipped), and bytes within two budgets: its own
(``max_bytes_per_publisher``) and the holder's (``max_bytes``). Sizes are kept as running
totals in memory (read from SQL once at open), so a push checks them in O(1) a record; a
record that does not fit is refused and the rest of the batch still goes in. How many
publishers one address may push for is the HTTP layer's business (api/peer_routes.py).

Disk is given back: ``expire`` (run every few minutes by ``Network``) deletes expired copies,
then ``incremental_vacuum`` returns their pages to the file system and a checkpoint truncates
the WAL, which ``journal_size_limit`` keeps small between checkpoints.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .held_rows import ROW_BYTES_SQL, row_bytes
from .term_slots import Keep, Slot, place
from .wire import (
    MAX_COPIES_PER_TERM,
    MAX_LOOKUP_TERMS,
    PUBLISHERS_PER_TERM,
    SUMMARIES_PER_TERM,
    HeldRecord,
    ShardCopy,
    encode_lookup,
    shard_summary,
    verify_copies,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_SHARD_TTL = 24 * 3600.0
MAX_TERMS_PER_LOOKUP = MAX_LOOKUP_TERMS
# Terms one publisher may hold here. A holder gets ~3/N of a publisher's terms (3 replicas,
# N nodes); 200k is the share of an index with millions of distinct terms on a small
# network, and caps what one key can make us store at ~200k x 50 postings.
MAX_TERMS_PER_PUBLISHER = 200_000
MIB = 1024 * 1024
# Bytes all publishers' copies may take here: the default of the node's ``held_shards_mb``.
DEFAULT_MAX_BYTES = 1024 * MIB
# One publisher's share of a holder. Measured (a lone node crawling the corpus's Django
# site): 692 pages made 10,665 terms, 26 MB as counted here (16.5 MB of records), ~38 KB
# a page; a holder keeps ~3/N of a publisher's terms (3 replicas, N nodes). 64 MiB holds
# a ~1,800-page index on a 3-node network, ~18,000 pages' on 30 nodes, ~60,000 on 100.
MAX_BYTES_PER_PUBLISHER = 64 * MIB
# ...and never more than this share of the holder's budget, so a small budget is not
# filled by a single key (at least 16 publishers are needed to fill a holder).
MIN_PUBLISHERS_TO_FILL = 16
# The WAL is truncated to this after each checkpoint (without it, it stays as large as the
# largest push ever was, up to MAX_PUSH_DECODED).
WAL_LIMIT = 4 * MIB
AUTO_VACUUM_INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL


# Why records of a push were not stored (keys of ``Stored.refused`` and of the holder's
# JSON answer).
OVER_TERMS = "publisher_term_quota"
OVER_PUBLISHER_BYTES = "publisher_byte_budget"
OVER_HOLDER_BYTES = "holder_byte_budget"
OUTRANKED = "term_has_stronger_publishers"
NOT_A_SHARD = "not_a_shard"  # a record whose payload has no shard's shape
Summaries = dict[str, dict[str, bytes]]  # term -> publisher -> its shard without postings


@dataclass(slots=True)
class Stored:
    """What ``put`` did with a publisher's records: how many went in, and why not the rest."""

    stored: int = 0
    refused: dict[str, int] = field(default_factory=dict)

    @property
    def refused_count(self) -> int:
        return sum(self.refused.values())


# "shards" held unsigned JSON lines (shards/3): no reader accepts them now, and their
# publishers, upgraded, push records again.
SCHEMA = """
DROP TABLE IF EXISTS shards;
CREATE TABLE IF NOT EXISTS records (
    term TEXT NOT NULL,
    publisher TEXT NOT NULL,
    record BLOB NOT NULL,
    expires_at REAL NOT NULL,
    strength INTEGER NOT NULL DEFAULT 0,
    summary BLOB,
    PRIMARY KEY (term, publisher)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_expiry ON records(expires_at);
CREATE INDEX IF NOT EXISTS records_publisher ON records(publisher, expires_at);
"""


class ShardStore:
    def __init__(
        self,
        path: Path,
        *,
        max_terms_per_publisher: int = MAX_TERMS_PER_PUBLISHER,
        max_bytes: int = DEFAULT_MAX_BYTES,
        own: str = "",
        publishers_per_term: int = PUBLISHERS_PER_TERM,
        summaries_per_term: int = SUMMARIES_PER_TERM,
    ) -> None:
        self.path = path
        # This node's own shards (it is one of their holders) are outside the budgets:
        # their size is the operator's choice of what to crawl, and counting them would
        # let a node's own index crowd out the copies it holds for others.
        self.own = own
        self.max_terms_per_publisher = max_terms_per_publisher
        self.publishers_per_term = publishers_per_term
        self.summaries_per_term = summaries_per_term
        self.max_bytes = max_bytes
        self.max_bytes_per_publisher = min(
            MAX_BYTES_PER_PUBLISHER, max_bytes // MIN_PUBLISHERS_TO_FILL
        )
        self.over_quota = 0  # records refused: their publisher or this holder was full
        self.outranked = 0  # copies refused or evicted: their term had stronger publishers
        self.expired = 0  # copies deleted because they expired
        # Running totals of row_bytes, expired rows included (they hold disk until
        # ``expire`` deletes them), this node's own not in ``held_bytes``; written only
        # on the store's thread.
        self.held_bytes = 0
        self._by_publisher: dict[str, int] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shards")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if db.execute("PRAGMA auto_vacuum").fetchone()[0] != AUTO_VACUUM_INCREMENTAL:
            # Takes effect on a new file at once; a file made before needs one rebuild
            # (measured 0.5 s for 26 MB: ~20 s for a full 1 GiB holder, once), after which
            # deletions can be given back to the file system.
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("VACUUM")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        db.executescript(SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(records)")}
        if "strength" not in columns:
            # Held before the per-term bound: ranked weakest until their publishers
            # republish (within 12 h).
            db.execute("ALTER TABLE records ADD COLUMN strength INTEGER NOT NULL DEFAULT 0")
        if "summary" not in columns:
            db.execute("ALTER TABLE records ADD COLUMN summary BLOB")
        self._by_publisher = {
            publisher: int(size)
            for publisher, size in db.execute(
                f"SELECT publisher, sum({ROW_BYTES_SQL}) FROM records GROUP BY publisher"
            )
        }
        self.held_bytes = sum(v for k, v in self._by_publisher.items() if k != self.own)
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._pool.shutdown(wait=True)

    async def put(self, publisher: str, records: list[HeldRecord]) -> Stored:
        """Store ``publisher``'s term records, each if it fits its publisher's term quota
        and both byte budgets (a refresh counts its size difference), and its term's
        bound on publishers (taking the weakest one's place if it is stronger)."""
        done = await self._run(self._put, publisher, records, time.time())
        outranked = done.refused.get(OUTRANKED, 0)
        self.outranked += outranked
        if done.refused_count > outranked:
            self.over_quota += done.refused_count - outranked
            log.info(
                "publisher %s: %d of %d terms not stored (%s); it holds %d bytes, all %d of %d",
                publisher,
                done.refused_count,
                len(records),
                done.refused,
                self._by_publisher.get(publisher, 0),
                self.held_bytes,
                self.max_bytes,
            )
        return done

    def _put(self, publisher: str, records: list[HeldRecord], now: float) -> Stored:
        assert self._db is not None
        db = self._db
        done = Stored()
        mine = self._by_publisher.get(publisher, 0)
        total = self.held_bytes
        budgeted = publisher != self.own
        db.execute("BEGIN")
        try:
            held = db.execute(
                "SELECT count(*) FROM records WHERE publisher=? AND expires_at > ?",
                (publisher, now),
            ).fetchone()[0]
            room = self.max_terms_per_publisher - held
            for record in records:
                # The term's copies (within the bounds, plus expired ones not yet deleted).
                rows = db.execute(
                    f"SELECT publisher, {ROW_BYTES_SQL}, expires_at, strength,"
                    " length(record) > 0 FROM records WHERE term=?",
                    (record.term,),
                ).fetchall()
                old = next((r for r in rows if r[0] == publisher), None)
                new_term = old is None or old[2] <= now
                decision = place(
                    publisher,
                    record.strength,
                    record.expires_at,
                    [Slot(r[0], r[3], r[2], bool(r[4])) for r in rows],
                    now=now,
                    full=self.publishers_per_term,
                    summaries=self.summaries_per_term,
                )
                whole, summary = record.record, None
                if decision.keep is Keep.SUMMARY:
                    whole, summary = b"", shard_summary(record.record)
                grows = row_bytes(record.term, whole, summary or b"") - (
                    0 if old is None else old[1]
                )
                if decision.keep is Keep.NOTHING:
                    reason = OUTRANKED
                elif decision.keep is Keep.SUMMARY and summary is None:
                    reason = NOT_A_SHARD
                elif new_term and room <= 0:
                    reason = OVER_TERMS  # refreshing held terms is fine; new ones are not
                elif budgeted and grows > 0 and mine + grows > self.max_bytes_per_publisher:
                    reason = OVER_PUBLISHER_BYTES
                elif budgeted and grows > 0 and total + grows > self.max_bytes:
                    reason = OVER_HOLDER_BYTES
                else:
                    sizes = {r[0]: int(r[1]) for r in rows}
                    if decision.drop is not None:
                        total -= self._evict(record.term, decision.drop, sizes[decision.drop])
                    if decision.demote is not None:
                        total -= self._demote(record.term, decision.demote, sizes[decision.demote])
                    # One row at a time, so a term twice in a batch is counted once.
                    db.execute(
                        "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            record.term,
                            publisher,
                            whole,
                            record.expires_at,
                            record.strength,
                            summary,
                        ),
                    )
                    room -= new_term
                    mine += grows
                    total += grows if budgeted else 0
                    done.stored += 1
                    continue
                done.refused[reason] = done.refused.get(reason, 0) + 1
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        if mine > 0:
            self._by_publisher[publisher] = mine
        else:  # keys refused outright are not remembered (they are free to make)
            self._by_publisher.pop(publisher, None)
        self.held_bytes = total
        return done

    def _evict(self, term: str, publisher: str, size: int) -> int:
        """Delete ``publisher``'s copy of ``term`` (outranked); the bytes it freed of the
        holder's budget."""
        assert self._db is not None
        self._db.execute("DELETE FROM records WHERE term=? AND publisher=?", (term, publisher))
        self.outranked += 1
        return self._shrink(publisher, size)

    def _demote(self, term: str, publisher: str, size: int) -> int:
        """``publisher``'s whole copy of ``term`` becomes its summary; the bytes freed."""
        assert self._db is not None
        (raw,) = self._db.execute(
            "SELECT record FROM records WHERE term=? AND publisher=?", (term, publisher)
        ).fetchone()
        summary = shard_summary(bytes(raw))
        if summary is None:
            return self._evict(term, publisher, size)
        self._db.execute(
            "UPDATE records SET record=X'', summary=? WHERE term=? AND publisher=?",
            (summary, term, publisher),
        )
        now = row_bytes(term, b"", summary)
        self._by_publisher[publisher] = self._by_publisher.get(publisher, 0) + now
        return self._shrink(publisher, size) - (0 if publisher == self.own else now)

    def _shrink(self, publisher: str, size: int) -> int:
        left = self._by_publisher.pop(publisher, 0) - size
        if left > 0:
            self._by_publisher[publisher] = left
        return 0 if publisher == self.own else size

    async def get(self, terms: list[str]) -> dict[str, list[ShardCopy]]:
        """Every unexpired copy of each term that verifies, one per publisher."""
        return await self._run(self._get, terms[:MAX_TERMS_PER_LOOKUP], time.time())

    def _get(self, terms: list[str], now: float) -> dict[str, list[ShardCopy]]:
        return {
            term: verify_copies(term, records, now)
            for term, records in self._get_raw(terms, now).items()
        }

    async def records(self, terms: list[str]) -> dict[str, list[bytes]]:
        """The unexpired copies of each term as signed, strongest first (not verified)."""
        return await self._run(self._get_raw, terms[:MAX_TERMS_PER_LOOKUP], time.time())

    async def get_json(self, terms: list[str]) -> bytes:
        """The answer to a peer's lookup (``wire.encode_lookup``): the records as signed,
        and the further publishers' summaries."""
        terms = terms[:MAX_TERMS_PER_LOOKUP]
        found, summaries = await self._run(self._lookup, terms, time.time())
        return await asyncio.to_thread(encode_lookup, found, summaries)

    async def lookup(self, terms: list[str]) -> tuple[dict[str, list[bytes]], Summaries]:
        """What a lookup of ``terms`` serves: records as signed, and summaries."""
        return await self._run(self._lookup, terms[:MAX_TERMS_PER_LOOKUP], time.time())

    def _lookup(self, terms: list[str], now: float) -> tuple[dict[str, list[bytes]], Summaries]:
        assert self._db is not None
        summaries = {
            term: {
                str(publisher): bytes(summary)
                for publisher, summary in self._db.execute(
                    "SELECT publisher, summary FROM records WHERE term=? AND expires_at > ?"
                    " AND length(record) = 0 AND summary IS NOT NULL"
                    " ORDER BY strength DESC, expires_at DESC LIMIT ?",
                    (term, now, self.summaries_per_term),
                )
            }
            for term in terms
        }
        return self._get_raw(terms, now), summaries

    def _get_raw(self, terms: list[str], now: float) -> dict[str, list[bytes]]:
        assert self._db is not None
        # Strongest first (a holder keeps at most the bound; one whose bound was lowered
        # serves its strongest until the rest expire).
        return {
            term: [
                bytes(row[0])
                for row in self._db.execute(
                    "SELECT record FROM records WHERE term=? AND expires_at > ?"
                    " AND length(record) > 0 ORDER BY strength DESC, expires_at DESC LIMIT ?",
                    (term, now, MAX_COPIES_PER_TERM),
                )
            ]
            for term in terms
        }

    async def all_for_range(self, accept: Callable[[str], bool]) -> dict[str, list[str]]:
        """Terms (by publisher) that ``accept`` says belong elsewhere now: for hand-over."""
        return await self._run(self._select, accept)

    def _select(self, accept: Callable[[str], bool]) -> dict[str, list[str]]:
        assert self._db is not None
        out: dict[str, list[str]] = {}
        for term, publisher in self._db.execute("SELECT term, publisher FROM records"):
            if accept(term):
                out.setdefault(publisher, []).append(term)
        return out

    async def drop_publisher(self, publisher: str) -> int:
        """Delete every copy from ``publisher`` (distrusted by spot-checks); returns how many."""
        return await self._run(self._drop_publisher, publisher)

    def _drop_publisher(self, publisher: str) -> int:
        assert self._db is not None
        dropped = self._db.execute("DELETE FROM records WHERE publisher = ?", (publisher,)).rowcount
        dropped_bytes = self._by_publisher.pop(publisher, 0)
        if publisher != self.own:
            self.held_bytes -= dropped_bytes
        self._reclaim()
        return int(dropped)

    async def expire(self) -> int:
        """Delete expired copies and give their space back; how many were deleted."""
        removed = await self._run(self._expire, time.time())
        self.expired += removed
        return removed

    def _expire(self, now: float) -> int:
        assert self._db is not None
        db = self._db
        db.execute("BEGIN")
        try:
            freed = db.execute(
                f"SELECT publisher, sum({ROW_BYTES_SQL}) FROM records WHERE expires_at <= ?"
                " GROUP BY publisher",
                (now,),
            ).fetchall()
            removed = db.execute("DELETE FROM records WHERE expires_at <= ?", (now,)).rowcount
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        for publisher, size in freed:
            left = self._by_publisher.pop(publisher, 0) - int(size)
            if left > 0:
                self._by_publisher[publisher] = left
            if publisher != self.own:
                self.held_bytes -= int(size)
        if removed:
            self._reclaim()
        return int(removed)

    def _reclaim(self) -> None:
        """Free pages back to the file system: moved to the end and cut off (in the WAL
        first; the checkpoint writes that to the file and truncates the WAL)."""
        assert self._db is not None
        # executescript steps the pragma to its end; execute() frees one page a step.
        self._db.executescript("PRAGMA incremental_vacuum;")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    async def count(self) -> int:
        return await self._run(self._count)

    def _count(self) -> int:
        assert self._db is not None
        return int(self._db.execute("SELECT count(*) FROM records").fetchone()[0])
