"""Shards this node holds for the network: (term, publisher) → that publisher's shard.

Publishers push their shards to the nodes closest to each term's key; a holder keeps every
publisher's copy apart (no last-writer-wins between publishers), expires copies that are
not republished, and answers lookups with all copies of a term so the asker can merge them.
SQLite in WAL mode on its own thread, like the frontier.

Shards are stored and served as their publisher encoded them (one JSON array a term, at
most ``MAX_SHARD_BYTES``): parsing and re-encoding every shard of every push cost holders
more CPU than everything else in placement, and every reader parses through
``TermShard.from_json``, which holds a publisher to ``MAX_POSTINGS_PER_SHARD`` pages a term,
bounded counts (``MAX_DOCS_PER_PUBLISHER``) and clamped weights, whatever was stored.

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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import orjson

from index import TermShard

from .wire import MAX_LOOKUP_TERMS

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_SHARD_TTL = 24 * 3600.0
MAX_TERMS_PER_LOOKUP = MAX_LOOKUP_TERMS
# Terms one publisher may hold here. A holder gets ~3/N of a publisher's terms (3 replicas,
# N nodes); 200k is the share of an index with millions of distinct terms on a small
# network, and caps what one key can make us store at ~200k x 50 postings.
MAX_TERMS_PER_PUBLISHER = 200_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS shards (
    term TEXT NOT NULL,
    publisher TEXT NOT NULL,
    body TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (term, publisher)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shards_expiry ON shards(expires_at);
CREATE INDEX IF NOT EXISTS shards_publisher ON shards(publisher, expires_at);
"""


def _quoted(text: str) -> str:
    return orjson.dumps(text).decode()


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

    async def put(self, publisher: str, shards: Iterable[TermShard], expires_at: float) -> int:
        """Store ``publisher``'s shards; how many were stored (the rest were over quota)."""
        rows = [(s.term, orjson.dumps(s.to_json()).decode()) for s in shards]
        return await self.put_encoded(publisher, rows, expires_at)

    async def put_encoded(
        self, publisher: str, rows: list[tuple[str, str]], expires_at: float
    ) -> int:
        """Store (term, shard JSON) rows as ``split_batch`` gave them."""
        stored = await self._run(self._put, publisher, rows, expires_at, time.time())
        if stored < len(rows):
            self.over_quota += len(rows) - stored
            log.info(
                "publisher %s is at its quota of %d terms: %d of %d terms not stored",
                publisher,
                self.max_terms_per_publisher,
                len(rows) - stored,
                len(rows),
            )
        return stored

    def _put(
        self, publisher: str, rows: list[tuple[str, str]], expires_at: float, now: float
    ) -> int:
        assert self._db is not None
        db = self._db
        db.execute("BEGIN")
        try:
            held = db.execute(
                "SELECT count(*) FROM shards WHERE publisher=? AND expires_at > ?",
                (publisher, now),
            ).fetchone()[0]
            room = self.max_terms_per_publisher - held
            accepted = []
            for row in rows:
                known = db.execute(
                    "SELECT 1 FROM shards WHERE term=? AND publisher=? AND expires_at > ?",
                    (row[0], publisher, now),
                ).fetchone()
                if known is None:
                    if room <= 0:
                        continue  # a new term over the quota; refreshing held ones is fine
                    room -= 1
                accepted.append((row[0], publisher, row[1], expires_at))
            db.executemany("INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?)", accepted)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return len(accepted)

    async def get(self, terms: list[str]) -> dict[str, list[tuple[str, TermShard]]]:
        """Every unexpired copy of each term: {term: [(publisher, shard), ...]}."""
        return await self._run(self._get, terms[:MAX_TERMS_PER_LOOKUP], time.time())

    def _get(self, terms: list[str], now: float) -> dict[str, list[tuple[str, TermShard]]]:
        out: dict[str, list[tuple[str, TermShard]]] = {}
        for term, rows in self._get_raw(terms, now).items():
            out[term] = []
            for pub, body in rows:
                try:
                    out[term].append((pub, TermShard.from_json(term, orjson.loads(body))))
                except (TypeError, ValueError):
                    # Written by an older release (another shard format): it expires
                    # unless its publisher, upgraded, sends it again.
                    continue
        return out

    async def get_json(self, terms: list[str]) -> bytes:
        """The answer to a peer's lookup, ``{term: [[publisher, shard], ...]}`` as JSON, built
        from the stored bodies as they are: readers parse and bound them, and parsing them
        here only to encode them again cost a holder more than the rest of a lookup."""
        found = await self._run(self._get_raw, terms[:MAX_TERMS_PER_LOOKUP], time.time())
        parts = [
            _quoted(term) + ":[" + ",".join(f"[{_quoted(p)},{b}]" for p, b in rows) + "]"
            for term, rows in found.items()
        ]
        return ("{" + ",".join(parts) + "}").encode()

    def _get_raw(self, terms: list[str], now: float) -> dict[str, list[tuple[str, str]]]:
        assert self._db is not None
        return {
            term: self._db.execute(
                "SELECT publisher, body FROM shards WHERE term=? AND expires_at > ?", (term, now)
            ).fetchall()
            for term in terms
        }

    async def all_for_range(self, accept: Callable[[str], bool]) -> dict[str, list[str]]:
        """Terms (by publisher) that ``accept`` says belong elsewhere now: for hand-over."""
        return await self._run(self._select, accept)

    def _select(self, accept: Callable[[str], bool]) -> dict[str, list[str]]:
        assert self._db is not None
        out: dict[str, list[str]] = {}
        for term, publisher in self._db.execute("SELECT term, publisher FROM shards"):
            if accept(term):
                out.setdefault(publisher, []).append(term)
        return out

    async def drop_publisher(self, publisher: str) -> int:
        """Delete every copy from ``publisher`` (distrusted by spot-checks); returns how many."""
        return await self._run(self._drop_publisher, publisher)

    def _drop_publisher(self, publisher: str) -> int:
        assert self._db is not None
        return self._db.execute("DELETE FROM shards WHERE publisher = ?", (publisher,)).rowcount

    async def expire(self) -> int:
        return await self._run(self._expire, time.time())

    def _expire(self, now: float) -> int:
        assert self._db is not None
        return self._db.execute("DELETE FROM shards WHERE expires_at <= ?", (now,)).rowcount

    async def count(self) -> int:
        return await self._run(self._count)

    def _count(self) -> int:
        assert self._db is not None
        return int(self._db.execute("SELECT count(*) FROM shards").fetchone()[0])
