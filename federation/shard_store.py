"""Shards this node holds for the network: (term, publisher) → that publisher's record.

Publishers push their shards to the nodes closest to each term's key; a holder keeps every
publisher's copy apart (no last-writer-wins between publishers), expires copies that are
not republished, and answers lookups with all copies of a term so the asker can merge them.
SQLite in WAL mode on its own thread, like the frontier.

A copy is its publisher's signed term record (``wire.sign_shard``), stored and served byte
for byte: the querier verifies each one, so a holder cannot alter what it serves, and the
holder does not parse or re-encode shards (that cost holders more CPU than everything else
in placement). This node's own reads (``get``) verify like any querier's.

Quotas, because publishers may be hostile: a publisher holds at most
``max_terms_per_publisher`` unexpired terms here (terms it already holds can always be
refreshed; new ones beyond the quota are skipped). How many publishers one address may push
for is the HTTP layer's business (api/peer_routes.py).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from .wire import (
    MAX_COPIES_PER_TERM,
    MAX_LOOKUP_TERMS,
    HeldRecord,
    ShardCopy,
    encode_lookup,
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

# "shards" held unsigned JSON lines (shards/3): no reader accepts them now, and their
# publishers, upgraded, push records again.
SCHEMA = """
DROP TABLE IF EXISTS shards;
CREATE TABLE IF NOT EXISTS records (
    term TEXT NOT NULL,
    publisher TEXT NOT NULL,
    record BLOB NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (term, publisher)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_expiry ON records(expires_at);
CREATE INDEX IF NOT EXISTS records_publisher ON records(publisher, expires_at);
"""


class ShardStore:
    def __init__(
        self, path: Path, *, max_terms_per_publisher: int = MAX_TERMS_PER_PUBLISHER
    ) -> None:
        self.path = path
        self.max_terms_per_publisher = max_terms_per_publisher
        self.over_quota = 0  # terms refused because their publisher was at its quota
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shards")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._pool.shutdown(wait=True)

    async def put(self, publisher: str, records: list[HeldRecord]) -> int:
        """Store ``publisher``'s term records; how many were stored (the rest were over
        quota)."""
        stored = await self._run(self._put, publisher, records, time.time())
        if stored < len(records):
            self.over_quota += len(records) - stored
            log.info(
                "publisher %s is at its quota of %d terms: %d of %d terms not stored",
                publisher,
                self.max_terms_per_publisher,
                len(records) - stored,
                len(records),
            )
        return stored

    def _put(self, publisher: str, records: list[HeldRecord], now: float) -> int:
        assert self._db is not None
        db = self._db
        db.execute("BEGIN")
        try:
            held = db.execute(
                "SELECT count(*) FROM records WHERE publisher=? AND expires_at > ?",
                (publisher, now),
            ).fetchone()[0]
            room = self.max_terms_per_publisher - held
            accepted = []
            for held in records:
                known = db.execute(
                    "SELECT 1 FROM records WHERE term=? AND publisher=? AND expires_at > ?",
                    (held.term, publisher, now),
                ).fetchone()
                if known is None:
                    if room <= 0:
                        continue  # a new term over the quota; refreshing held ones is fine
                    room -= 1
                accepted.append((held.term, publisher, held.record, held.expires_at))
            db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)", accepted)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return len(accepted)

    async def get(self, terms: list[str]) -> dict[str, list[ShardCopy]]:
        """Every unexpired copy of each term that verifies, one per publisher."""
        return await self._run(self._get, terms[:MAX_TERMS_PER_LOOKUP], time.time())

    def _get(self, terms: list[str], now: float) -> dict[str, list[ShardCopy]]:
        return {
            term: verify_copies(term, records, now)
            for term, records in self._get_raw(terms, now).items()
        }

    async def get_json(self, terms: list[str]) -> bytes:
        """The answer to a peer's lookup (``wire.encode_lookup``): the records as signed."""
        found = await self._run(self._get_raw, terms[:MAX_TERMS_PER_LOOKUP], time.time())
        return await asyncio.to_thread(encode_lookup, found)

    def _get_raw(self, terms: list[str], now: float) -> dict[str, list[bytes]]:
        assert self._db is not None
        # Newest first, so a term with more publishers than a lookup carries keeps the
        # ones that published last.
        return {
            term: [
                bytes(row[0])
                for row in self._db.execute(
                    "SELECT record FROM records WHERE term=? AND expires_at > ?"
                    " ORDER BY expires_at DESC LIMIT ?",
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
        return self._db.execute("DELETE FROM records WHERE publisher = ?", (publisher,)).rowcount

    async def expire(self) -> int:
        return await self._run(self._expire, time.time())

    def _expire(self, now: float) -> int:
        assert self._db is not None
        return self._db.execute("DELETE FROM records WHERE expires_at <= ?", (now,)).rowcount

    async def count(self) -> int:
        return await self._run(self._count)

    def _count(self) -> int:
        assert self._db is not None
        return int(self._db.execute("SELECT count(*) FROM records").fetchone()[0])
