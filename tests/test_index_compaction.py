"""A quiet index has its small segments merged, and no search ever sees how.

Real tantivy indexes on disk: the segments are tantivy's own, counted from its meta.json and
from the searcher."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import tantivy

from rhizome.index import IndexDoc, IndexStore
from rhizome.index.compaction import PLACEHOLDER_URLS, committed_segments
from rhizome.index.schema import ANALYZER, build_analyzer

BATCHES = 6
PAGES_A_BATCH = 5


def page(batch: int, k: int) -> IndexDoc:
    return IndexDoc(
        url=f"https://docs.example/b{batch}/p{k}.html",
        title=f"Garden page {batch}-{k}",
        body=f"tomatoes and basil grow in the backyard garden, batch {batch} page {k}",
    )


POLL = 0.02
WAIT = 15.0


async def until(predicate: Callable[[], bool]) -> None:
    # Polling: the store signals nothing when it has committed or merged.
    for _ in range(int(WAIT / POLL)):
        if predicate():
            return
        await asyncio.sleep(POLL)
    raise AssertionError(f"not reached in {WAIT} s")


async def committed_in_batches(store: IndexStore) -> None:
    """``BATCHES`` commits, each waited for: one segment each."""
    for batch in range(BATCHES):
        for k in range(PAGES_A_BATCH):
            await store.submit(page(batch, k))
        await until(lambda b=batch: store.num_docs >= (b + 1) * PAGES_A_BATCH)  # type: ignore[misc]


def every_url(store: IndexStore) -> list[str]:
    searcher = store.index.searcher()
    hits = searcher.search(tantivy.Query.all_query(), limit=1_000).hits
    return [str(searcher.doc(address).get_first("url")) for _score, address in hits]


async def test_an_index_committed_in_many_batches_ends_in_one_segment_once_quiet(
    tmp_path: Path,
) -> None:
    store = IndexStore(tmp_path / "index", commit_interval=0.01, compact_quiet=0.5)
    await store.start()
    try:
        await committed_in_batches(store)
        assert store.index.searcher().num_segments >= 2, "each batch should be its own segment"
        await until(lambda: store.index.searcher().num_segments == 1)
        assert store.index.searcher().num_segments == 1
        assert committed_segments(tmp_path / "index") == 1
        found = await store.search("backyard garden", limit=100)
        assert len(found.hits) == BATCHES * PAGES_A_BATCH
        assert store.num_docs == BATCHES * PAGES_A_BATCH
    finally:
        await store.stop()
    reopened = IndexStore(tmp_path / "index")
    await reopened.start()
    try:
        assert reopened.num_docs == BATCHES * PAGES_A_BATCH
        assert sorted(every_url(reopened)) == sorted(
            page(b, k).url for b in range(BATCHES) for k in range(PAGES_A_BATCH)
        )
    finally:
        await reopened.stop()


async def test_searches_during_a_compaction_never_see_a_placeholder(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index", commit_interval=0.01, compact_quiet=0.2)
    await store.start()
    seen: set[str] = set()
    try:
        await committed_in_batches(store)
        deadline = time.monotonic() + 15.0
        while store.index.searcher().num_segments > 1 and time.monotonic() < deadline:
            # "-site:..." alone matches every page the index serves.
            found = await store.search("-site:nowhere.example", limit=100)
            seen.update(hit.url for hit in found.hits)
            assert store.num_docs == BATCHES * PAGES_A_BATCH
        assert store.index.searcher().num_segments == 1
        assert not seen & set(PLACEHOLDER_URLS)
        assert len(seen) == BATCHES * PAGES_A_BATCH
    finally:
        await store.stop()


async def test_a_placeholder_left_by_a_crash_is_gone_when_the_index_opens(
    tmp_path: Path,
) -> None:
    store = IndexStore(tmp_path / "index", commit_interval=0.01, compact_quiet=3600.0)
    await store.start()
    await store.submit(page(0, 0))
    await until(lambda: store.num_docs == 1)
    await store.stop()
    # What a kill -9 between a placeholder's commit and its deletion leaves on disk.
    index = tantivy.Index.open(str(tmp_path / "index"))
    index.register_tokenizer(ANALYZER, build_analyzer())
    writer = index.writer(15_000_000, 1)
    writer.add_document(tantivy.Document.from_dict({"url": PLACEHOLDER_URLS[0]}))
    writer.commit()
    writer.wait_merging_threads()
    del writer, index
    reopened = IndexStore(tmp_path / "index")
    await reopened.start()
    try:
        assert reopened.num_docs == 1
        assert every_url(reopened) == [page(0, 0).url]
    finally:
        await reopened.stop()
