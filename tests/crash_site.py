"""A generated site and on-disk readers for the crash and disk-full tests (and bench/crash_stress).

Every page carries one word no other page has (``word_of(i)``), so "is page i searchable?"
is one query with exactly one right answer. Pages link in a ring plus a few pseudo-random
jumps, so a crawl discovers them in waves instead of all at once from the index page.
"""

from __future__ import annotations

import random
import sqlite3
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

import tantivy

HTML = "text/html; charset=utf-8"
LINKS_PER_PAGE = 3
FILLER_WORDS = 40  # words of shared filler per page: small pages, but not trivially small
DONE = 2  # crawler.frontier.DONE (the tests read the database with no node running)


def word_of(i: int) -> str:
    """The one word only page ``i`` contains (letters only: the analyzer keeps it whole)."""
    letters = "".join(chr(ord("a") + int(d)) for d in f"{i:04d}")
    return f"zq{letters}marker"


def page_path(i: int) -> str:
    return f"/p/{i}.html"


def index_of(path: str) -> int | None:
    """The page number of a generated page's path, None for anything else."""
    if path.startswith("/p/") and path.endswith(".html"):
        try:
            return int(path[3:-5])
        except ValueError:
            return None
    return None


def generated_pages(count: int, *, seed: int = 7) -> dict[str, tuple[bytes, str]]:
    """``count`` pages under /p/ plus an index page linking to the first few."""
    rng = random.Random(seed)
    filler = " ".join(f"common{n}" for n in range(FILLER_WORDS))
    pages: dict[str, tuple[bytes, str]] = {}
    first = "".join(f'<a href="{page_path(i)}">start {i}</a> ' for i in range(min(4, count)))
    pages["/index.html"] = (
        f"<!doctype html><title>Generated site</title><p>Front page. {first}</p>".encode(),
        HTML,
    )
    for i in range(count):
        targets = {(i + 1) % count, *(rng.randrange(count) for _ in range(LINKS_PER_PAGE - 1))}
        links = "".join(f'<a href="{page_path(t)}">to {t}</a> ' for t in sorted(targets))
        pages[page_path(i)] = (
            f"<!doctype html><title>Page {i}</title><main><p>Page {i} says {word_of(i)}. "
            f"{filler}</p><p>{links}</p></main>".encode(),
            HTML,
        )
    return pages


def path_of(url: str) -> str:
    return urllib.parse.urlsplit(url).path


def index_urls(data_dir: Path) -> list[str]:
    """Every URL in the node's on-disk index, duplicates included (no node running).

    Opening the index is itself the corruption check: tantivy refuses a damaged meta.json
    or a missing segment file.
    """
    index = tantivy.Index.open(str(data_dir / "index"))
    searcher = index.searcher()
    hits = searcher.search(tantivy.Query.all_query(), limit=100_000).hits
    return [searcher.doc(address)["url"][0] for _, address in hits]


def frontier_done(data_dir: Path) -> set[str]:
    """URLs the frontier says are DONE, read-only (a killed node may have left a WAL)."""
    path = data_dir / "frontier.sqlite3"
    if not path.exists():
        return set()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT url FROM urls WHERE state = ?", (DONE,))}
    finally:
        db.close()


def integrity_problems(paths: Iterable[Path]) -> list[str]:
    """``PRAGMA integrity_check`` of each existing database; [] when all say ok."""
    problems = []
    for path in paths:
        if not path.exists():
            continue
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = [r[0] for r in db.execute("PRAGMA integrity_check")]
        finally:
            db.close()
        if rows != ["ok"]:
            problems.append(f"{path.name}: {rows[:5]}")
    return problems
