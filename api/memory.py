"""The ``memory`` setting's profiles, and glibc malloc kept from hoarding freed memory.

Measured on the large corpus' rustdoc site (21,468 pages, one node, 2 parser workers):
with glibc's defaults the node held 206 MB anonymous memory when idle and each parser
process 91-99 MB; with at most 2 malloc arenas and a fixed 128 KiB mmap threshold
(``GLIBC_TUNABLES``) 138 MB and 59-72 MB, peak 604 -> 529 MB, at the same crawl rate.
The node runs threads (index writer, 4 searchers, frontier, tantivy's merges) and each
gets an arena of its own by default (8 per core), which keeps what it freed; page
bodies of 128 KiB to 4 MiB raised glibc's dynamic mmap threshold, after which they were
carved from the heap and fragmented it.
"""

from __future__ import annotations

import ctypes
import gc
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

MEMORY_PROFILES = ("normal", "small")
# mallopt(3) parameters.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MALLOC_ARENAS = 2
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, made fixed (no dynamic raise)
TRIM_THRESHOLD = 128 * 1024


@dataclass(frozen=True, slots=True)
class MemoryProfile:
    """What ``memory = "small"|"normal"`` sets. ``parse_workers`` and ``writer_heap_mb``
    are settings of their own too; the profile's value is used while they are 0."""

    parse_workers: int  # 0: one per CPU core but the node's
    writer_heap_mb: int
    index_queue_docs: int  # parsed pages waiting for the index writer (back-pressure)
    commit_docs: int  # pages in one commit at most
    seen_cache: int  # URLs the frontier remembers having seen
    anchor_cache: int  # queued URLs whose anchor texts wait in memory


PROFILES: dict[str, MemoryProfile] = {
    # Pages wait for the writer in a queue of 1,000 and commits take at most 1,000: a
    # commit every second holds ~200 pages at 200 pages/s, so these only bind when the
    # writer falls behind, and then bound what waits (was 4,000 + 2,000 pages of up to
    # 100 KB of text each).
    "normal": MemoryProfile(
        parse_workers=0,
        writer_heap_mb=64,
        index_queue_docs=1_000,
        commit_docs=1_000,
        seen_cache=100_000,
        anchor_cache=100_000,
    ),
    # A 1 GB machine: one parser process (-45..95 MB), tantivy's smallest writer heap,
    # fewer pages waiting, smaller caches (a cleared seen-cache costs SQLite lookups).
    "small": MemoryProfile(
        parse_workers=1,
        writer_heap_mb=16,
        index_queue_docs=200,
        commit_docs=250,
        seen_cache=20_000,
        anchor_cache=20_000,
    ),
}


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt  # noqa: B018 - glibc (and musl) have it; others do not
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune_malloc() -> bool:
    """Few arenas and a fixed mmap threshold for this process (call before threads
    start). False where the C library has no mallopt."""
    libc = _libc()
    if libc is None:
        return False
    ok = all(
        libc.mallopt(param, value) == 1
        for param, value in (
            (M_ARENA_MAX, MALLOC_ARENAS),
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        )
    )
    if not ok:
        log.debug("mallopt refused a setting; malloc keeps its defaults")
    return ok


def trim_heap() -> None:
    """Give freed heap pages back to the system (blocking: run it off the event loop)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


# Python's cyclic garbage collector, measured on the 5-node small-corpus network (bench/
# phase_timing.py, gc.callbacks): the querying node ran 4 full collections in 400 queries,
# 68-125 ms each, that found nothing to free (of ~222k tracked objects: what the imports,
# the embedding model and aiohttp made at startup), and ~2,000 young ones; each pause
# stalls every query in flight. What exists once the node has started lives as long as
# the process, so it is set aside where collections do not walk it (``gc.freeze``), and
# young collections run less often: a query allocates thousands of short-lived objects.
GC_YOUNG_THRESHOLD = 10_000  # allocations between young collections (Python's: 700)


def settle_gc() -> None:
    """Collect once, then leave everything that survived out of later collections, and
    collect the young generation less often (call once the node has started)."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
