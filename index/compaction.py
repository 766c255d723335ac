"""Fewer segments once the index is quiet: a search costs tantivy about the same in each.

tantivy merges a level's segments only when ``LOG_MERGE_SEGMENTS`` of them are there (its
default ``LogMergePolicy``), so a node that commits every second or so while it crawls is
left with one to seven small segments when the crawl ends, and every query pays for each:
on the kept small-corpus nodes (7, 2, 4, 1 and 6 segments) an owner's main search took
1.59 / 0.62 / 1.20 / 0.49 / 1.53 ms, and 0.62 / 0.40 / 0.61 / 0.59 / 0.54 ms with each
index in one segment (200 tune queries, in-process, ``/tmp/exp/search_break.py``), and
the restricted searches of its term weights gain alike.

The binding (tantivy-py 0.27) exposes neither ``IndexWriter::merge`` nor a merge policy.
What it does expose is enough: each commit of one document adds a one-document segment to
the smallest level, and the policy merges that level once it holds
``LOG_MERGE_SEGMENTS``. So compaction commits placeholder documents one at a time until
the committed segment count drops (read from ``meta.json``, which tantivy rewrites when a
merge ends; waited for with ``wait_merging_threads``), then deletes them. The reader
reloads only by hand (``Manual``), so no search ever sees a placeholder; one left by a
crash is deleted when the index opens.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tantivy

log = logging.getLogger(__name__)

# tantivy's LogMergePolicy::default() min_num_segments: a level merges at this many.
LOG_MERGE_SEGMENTS = 8
# At most this many placeholders a compaction: one level short of a merge has 1 segment.
MAX_PLACEHOLDERS = LOG_MERGE_SEGMENTS - 1
# tantivy's lowest level holds segments up to its min_layer_size (10,000 documents, more
# within its level_log_size of 0.75): those with at most this many are surely in it.
SMALL_SEGMENT_DOCS = 10_000
# Compaction runs when the lowest level has at least this many segments: merging one
# real segment with placeholders would rewrite it for nothing.
MIN_SMALL_SEGMENTS = 2
# Placeholders are pages no crawler can fetch or link to (not http or https).
PLACEHOLDER_URLS = tuple(f"rhizome:compaction/{k}" for k in range(MAX_PLACEHOLDERS))


def committed_segments(path: Path) -> int:
    """Segments in the index's last committed ``meta.json`` (placeholders included)."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return 0
    segments = meta.get("segments") if isinstance(meta, dict) else None
    return len(segments) if isinstance(segments, list) else 0


def has_placeholders(searcher: tantivy.Searcher, schema: tantivy.Schema) -> bool:
    """Whether a placeholder is live (a crash between its commit and its deletion)."""
    query = tantivy.Query.boolean_query(
        [
            (tantivy.Occur.Should, tantivy.Query.term_query(schema, "url", url))
            for url in PLACEHOLDER_URLS
        ]
    )
    return bool(searcher.search(query, limit=1).hits)


def drop_placeholders(writer: Any) -> None:
    """Delete every placeholder (uncommitted: the caller commits)."""
    for url in PLACEHOLDER_URLS:
        writer.delete_documents_by_term("url", url)


def small_segments(path: Path) -> int:
    """Committed segments of at most ``SMALL_SEGMENT_DOCS`` live pages: tantivy's lowest
    level, which compaction merges into one."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return 0
    segments = meta.get("segments") if isinstance(meta, dict) else None
    if not isinstance(segments, list):
        return 0
    return sum(1 for s in segments if isinstance(s, dict) and _live(s) <= SMALL_SEGMENT_DOCS)


def _live(segment: dict[str, Any]) -> int:
    deletes = segment.get("deletes")
    deleted = deletes.get("num_deleted_docs", 0) if isinstance(deletes, dict) else 0
    return int(segment.get("max_doc", 0)) - int(deleted)


def compact(
    index: tantivy.Index, writer: Any, path: Path, new_writer: Callable[[], Any]
) -> tuple[Any, int, int]:
    """Merge the smallest level of the index at ``path`` (on the writer's thread, the
    reader not reloaded meanwhile): the writer to use from now on, and the committed
    segments before and after. ``new_writer`` opens a writer on ``index``: waiting for
    tantivy's merges (the only way to know one ended) consumes the old one."""
    before = committed_segments(path)
    added = 0
    try:
        while added < MAX_PLACEHOLDERS:
            writer.add_document(tantivy.Document.from_dict({"url": PLACEHOLDER_URLS[added]}))
            writer.commit()
            added += 1
            writer.wait_merging_threads()
            writer = new_writer()
            if committed_segments(path) < before + added:
                break
    finally:
        drop_placeholders(writer)
        writer.commit()
    after = committed_segments(path)
    log.info("index compacted: %d segments, now %d (%d placeholders)", before, after, added)
    return writer, before, after
