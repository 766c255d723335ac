"""The local tantivy index: one writer, batched commits on a worker thread, BM25 search.

Everything that touches tantivy runs on the store's own threads (tantivy releases the GIL),
so the event loop never waits on indexing or searching.

Longer than 400 lines because the writer thread, the reader pool and the commit loop guard
one tantivy index together; the query, shard and snippet logic is in their own modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import tantivy
from yarl import URL

from .bm25 import FieldLengths
from .changes import ChangedTerms
from .compaction import (
    MIN_SMALL_SEGMENTS,
    compact,
    drop_placeholders,
    has_placeholders,
    small_segments,
)
from .errors import IndexUnavailable, QuerySyntaxError
from .query import ParsedQuery, Unit, clause_units, near_unit, parse_user_query
from .schema import ANALYZER, SHARD_FIELDS, build_analyzer, build_schema, site_terms, url_words
from .semantic import (
    OWNER_RERANK_DEPTH,
    RERANK_DEPTH,
    Embedder,
    page_text,
    semantic_factor,
    shared_vector,
)
from .shard_codec import PageWeights, TermShard
from .shards import (
    DEFAULT_TOP_K,
    LoadedPage,
    all_terms,
    build_shards,
    doc_lengths,
    field_averages,
    term_weights,
    token_count,
)
from .snippets import NO_SNIPPET, Snippet, make_snippet

log = logging.getLogger(__name__)

DEFAULT_COMMIT_INTERVAL = 1.0  # seconds from the first uncommitted change to its commit
DEFAULT_COMMIT_DOCS = 2_000
DEFAULT_WRITER_HEAP = 64 * 1024 * 1024
DEFAULT_QUEUE_SIZE = 4_000
SEARCH_THREADS = 4
UNSUPPORTED_QUERY_ERRORS = ("is not a fast field", "The field does not exist")
UNSUPPORTED_QUERY = "field:* (any value) is not supported; search for words instead"
QUIET_COMMIT = 0.1  # seconds without a new change that trigger an early commit
# Seconds without a change after a commit before small segments are merged: a crawl that
# goes on commits more often than this, one that ended or waits on politeness does not.
COMPACT_QUIET = 5.0
MAX_RESULTS_WINDOW = 1_000  # offset + limit
SNIPPET_CHARS = 240
MAX_BODY_CHARS = 100_000
MAX_CACHED_LENGTHS = 200_000  # pages whose field lengths are remembered (~100 B each)
MAX_ANCHOR_TEXT = 4_000
COMMIT_RETRY = 5.0  # seconds between attempts to commit a batch that failed (disk full)
COMMIT_FAILURE_LOG_INTERVAL = 60.0  # a failure that persists is logged again this often
# How tantivy words a full disk (it raises ValueError with the Rust io::Error inside).
DISK_FULL_MARKERS = ("StorageFull", "No space left on device", "os error 28")
# After an error that does not say why (tantivy's "index writer was killed"), a write of
# this size into the index directory tells whether the disk has room.
SPACE_PROBE_BYTES = 256 * 1024


@dataclass(slots=True)
class IndexDoc:
    url: str
    title: str = ""
    description: str = ""
    body: str = ""
    anchors: list[str] = field(default_factory=list)
    language: str = ""
    fetched: float = 0.0
    canonical: str | None = None
    aliases: list[str] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class Commit:
    """What one commit made durable: upserted and removed URLs (with their aliases)."""

    urls: list[str]
    upserted: list[str]
    removed: list[str]
    opstamp: int


@dataclass(slots=True, frozen=True)
class Hit:
    url: str
    title: str
    snippet: Snippet
    score: float
    host: str
    language: str
    fetched: float
    canonical: str
    similarity: float | None = None  # cosine to the query, for the re-ranked head


@dataclass(slots=True, frozen=True)
class SearchPage:
    query: str
    hits: list[Hit]
    total: int
    took_ms: float


T = TypeVar("T")

CommitListener = Callable[[Commit], Awaitable[None]]


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return any(marker in str(exc) for marker in DISK_FULL_MARKERS)


def _no_room(directory: Path | None) -> bool:
    """True if ``directory`` cannot take a small file now (ENOSPC)."""
    if directory is None:
        return False
    probe = directory / ".space-probe"
    try:
        with probe.open("wb") as file:
            file.write(bytes(SPACE_PROBE_BYTES))
            file.flush()
            os.fsync(file.fileno())
    except OSError as exc:
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return False


@dataclass(slots=True, frozen=True)
class PreparedQuery:
    """A query's text parsed once: the tantivy-side plan, the units a federated query
    scores, and the distinct tokens (the DHT's term keys, and what snippets look for)."""

    parsed: ParsedQuery
    units: list[Unit]
    focus: list[str]
    near: Unit = ()  # the proximity phrase's tokens (index.query.near_unit)

    @property
    def text(self) -> str:
        return self.parsed.text


# A search's own weighing of its hits before their snippets, (searcher, loaded pages) ->
# the words to look for in a page's body, by URL.
Weigh = Callable[[tantivy.Searcher, Mapping[str, LoadedPage]], Callable[[str], list[str]]]
BODY = SHARD_FIELDS.index("body")
NO_WEIGHTS = (0.0,) * len(SHARD_FIELDS)


def body_words(weights: PageWeights, focus: list[str], singles: Set[str], url: str) -> list[str]:
    """The query's words worth looking for in a page's body: not the single-word units
    (``singles``) its weights show the body lacks; an absent word was a scan of the whole
    body for each snippet, most of an owner's snippet time."""
    found = weights.weights.get(url, {})
    return [w for w in focus if w not in singles or found.get(w, NO_WEIGHTS)[BODY] > 0.0]


class IndexStore:
    """Owns the tantivy index in ``path`` (in RAM when ``path`` is None)."""

    def __init__(
        self,
        path: Path | None,
        *,
        commit_interval: float = DEFAULT_COMMIT_INTERVAL,
        commit_docs: int = DEFAULT_COMMIT_DOCS,
        writer_heap: int = DEFAULT_WRITER_HEAP,
        writer_threads: int = 1,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        embedder: Embedder | None = None,
        compact_quiet: float = COMPACT_QUIET,
    ) -> None:
        self.path = path
        self.compact_quiet = compact_quiet
        self.embedder = embedder
        self._has_vectors = True  # False for an index made before the embedding field
        self.commit_interval = commit_interval
        self.commit_docs = commit_docs
        self.writer_heap = writer_heap
        self.writer_threads = writer_threads
        self.schema = build_schema()
        self.analyzer = build_analyzer()
        self._queue: asyncio.Queue[IndexDoc | str] = asyncio.Queue(maxsize=queue_size)
        self._listeners: list[CommitListener] = []
        self._index: tantivy.Index | None = None
        self._writer: Any = None
        self._compact_due = False  # a commit since the last compaction
        self._task: asyncio.Task[None] | None = None
        self._uncommitted = 0  # items taken off the queue and not yet committed
        self.last_commit_at = 0.0
        self.last_error: str | None = None
        self.disk_full = False  # the last commit failed for want of space
        self.failing_since: float | None = None  # wall time of the first failed attempt
        self.num_docs = 0
        self.generation = 0  # bumps on every commit: shard publishing watches it
        self.changes = ChangedTerms()  # the terms each commit touched, for the publisher
        self.shard_cpu = 0.0  # CPU seconds spent building term shards (publishing's cost)
        self._averages: tuple[int, tuple[float, ...]] = (-1, ())
        self._lengths: OrderedDict[tuple[str, int], FieldLengths] = OrderedDict()
        self._lengths_lock = threading.Lock()
        # Own threads: the loop's default executor is shared and may be busy elsewhere.
        self._write_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-write")
        self._read_pool = ThreadPoolExecutor(
            max_workers=SEARCH_THREADS, thread_name_prefix="search"
        )

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        await self._in(self._write_pool, self._open)
        self._task = asyncio.create_task(self._commit_loop(), name="index-commits")

    def _open(self) -> None:
        try:
            if self.path is None:
                index = tantivy.Index(self.schema)
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                try:
                    index = tantivy.Index(self.schema, path=str(self.path), reuse=True)
                except ValueError as exc:
                    if "schema does not match" not in str(exc):
                        raise
                    # Made by a version without page vectors: served as it is; pages get
                    # vectors (and the semantic re-rank) once the index is made anew.
                    index = tantivy.Index.open(str(self.path))
                    self.schema = index.schema
                    self._has_vectors = False
                    log.warning("index at %s has no page vectors: semantic re-rank off", self.path)
            index.register_tokenizer(ANALYZER, self.analyzer)
            # Reloaded by hand after each commit: compaction's placeholder pages
            # (compaction.py) are committed but never searched.
            index.config_reader(reload_policy="Manual")
            self._writer = index.writer(self.writer_heap, self.writer_threads)
            if has_placeholders(index.searcher(), self.schema):  # a crash mid-compaction
                drop_placeholders(self._writer)
                self._writer.commit()
        except (ValueError, OSError) as exc:
            raise IndexUnavailable(f"cannot open index at {self.path}: {exc}") from exc
        self._index = index
        index.reload()
        self.num_docs = index.searcher().num_docs
        self._compact_due = True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # Whatever was queued but not committed is re-fetched after restart (the frontier
        # never marked it done), so dropping it here loses nothing.
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await self._in(self._write_pool, self._close_writer, writer)
        self._write_pool.shutdown(wait=False)
        self._read_pool.shutdown(wait=False)

    @staticmethod
    def _close_writer(writer: Any) -> None:
        with contextlib.suppress(Exception):
            writer.rollback()
        with contextlib.suppress(Exception):
            writer.wait_merging_threads()

    @staticmethod
    async def _in(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def on_commit(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    @property
    def index(self) -> tantivy.Index:
        assert self._index is not None, "IndexStore.start() was not awaited"
        return self._index

    @property
    def pending(self) -> int:
        return self._queue.qsize() + self._uncommitted

    # --- writing ---------------------------------------------------------------------
    async def submit(self, doc: IndexDoc) -> None:
        await self._queue.put(doc)

    async def remove(self, url: str) -> None:
        await self._queue.put(url)

    async def _commit_loop(self) -> None:
        while True:
            first = await self._next_change()
            batch: list[IndexDoc | str] = [first]
            self._uncommitted = 1
            deadline = time.monotonic() + self.commit_interval
            while len(batch) < self.commit_docs:
                # Commit early once the stream pauses: the end of a crawl (or a lone
                # seed) becomes searchable at once instead of a full interval later.
                timeout = min(deadline - time.monotonic(), QUIET_COMMIT)
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                    self._uncommitted = len(batch)
                except TimeoutError:
                    break
            attempts = 0
            logged_at = 0.0
            while True:
                try:
                    commit = await self._in(self._write_pool, self._apply, batch)
                    break
                except Exception as exc:
                    # Disk full or similar: keep the node up and retry the same batch (the
                    # writer was rolled back); the queue fills meanwhile and back-pressure
                    # slows the crawler down. Logged once, then once a minute: no flood.
                    attempts += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self.disk_full = is_disk_full(exc) or await self._in(
                        self._write_pool, _no_room, self.path
                    )
                    if self.failing_since is None:
                        self.failing_since = time.time()
                    if time.monotonic() - logged_at >= COMMIT_FAILURE_LOG_INTERVAL:
                        logged_at = time.monotonic()
                        log.error(
                            "index commit failed%s (attempt %d, %d changes waiting): %s; "
                            "retrying every %.0f s",
                            ": disk full" if self.disk_full else "",
                            attempts,
                            self.pending,
                            self.last_error,
                            COMMIT_RETRY,
                        )
                    await asyncio.sleep(COMMIT_RETRY)
            if attempts:
                log.warning(
                    "index commit succeeded after %d failed attempts over %.0f s",
                    attempts,
                    time.time() - (self.failing_since or time.time()),
                )
            self.last_error = None
            self.disk_full = False
            self.failing_since = None
            self._uncommitted = 0
            self.last_commit_at = time.time()
            for listener in self._listeners:
                try:
                    await listener(commit)
                except Exception:
                    log.exception("commit listener failed")

    async def _next_change(self) -> IndexDoc | str:
        """The next change to commit; meanwhile, once the index has been quiet for
        ``compact_quiet`` seconds after a commit, its small segments merged."""
        while self._compact_due:
            try:
                return await asyncio.wait_for(self._queue.get(), self.compact_quiet)
            except TimeoutError:
                self._compact_due = False
                await self._in(self._write_pool, self._compact)
        return await self._queue.get()

    def _compact(self) -> None:
        if self.path is None or small_segments(self.path) < MIN_SMALL_SEGMENTS:
            return
        try:
            self._writer, _before, _after = compact(
                self.index, self._writer, self.path, self._new_writer
            )
        except Exception as exc:
            # Disk full or similar: searches go on as they were; the next commit opens a
            # writer again and deletes any placeholder this left.
            log.warning("index compaction failed: %s", exc)
            self._writer = None
            return
        self.index.reload()
        self._averages = (-1, ())  # the merge dropped deleted pages' lengths

    def _new_writer(self) -> Any:
        return self.index.writer(self.writer_heap, self.writer_threads)

    def _apply(self, batch: list[IndexDoc | str]) -> Commit:
        if self._writer is None:  # a compaction failed
            self._writer = self._new_writer()
            drop_placeholders(self._writer)
        writer = self._writer
        urls: list[str] = []
        upserted: list[str] = []
        removed: list[str] = []
        vectors = self._vectors([item for item in batch if not isinstance(item, str)])
        touched: set[str] = set()
        searcher = self.index.searcher()  # the committed versions this batch replaces
        try:
            for item in batch:
                if isinstance(item, str):
                    touched |= self._stored_terms(searcher, item)
                    writer.delete_documents_by_term("url", item)
                    removed.append(item)
                    urls.append(item)
                    continue
                for url in (item.url, *item.aliases):
                    touched |= self._stored_terms(searcher, url)
                    writer.delete_documents_by_term("url", url)
                document = self._to_document(item, vectors.get(item.url))
                touched |= self.changes.page_terms(
                    item.url,
                    item.title,
                    item.description,
                    item.body[:MAX_BODY_CHARS],
                    str(document.get_first("anchor") or ""),
                )
                writer.add_document(document)
                upserted.append(item.url)
                urls.append(item.url)
                urls.extend(item.aliases)
            opstamp = writer.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                writer.rollback()
            raise
        self.index.reload()
        self.num_docs = self.index.searcher().num_docs
        self.generation += 1
        self._compact_due = True
        self.changes.committed(touched, self.generation)
        return Commit(urls=urls, upserted=upserted, removed=removed, opstamp=opstamp)

    def _stored_terms(self, searcher: Any, url: str) -> set[str]:
        """Terms of the committed page at ``url`` (none if there is none): its shards
        change when it is replaced or removed."""
        doc = self._doc_of(searcher, url)
        return set() if doc is None else self.changes.stored_page_terms(doc)

    @property
    def _reranks(self) -> bool:
        """Pages get vectors and searches the semantic re-rank (a model, and an index
        with the vector field)."""
        return self.embedder is not None and self._has_vectors

    def _vectors(self, docs: list[IndexDoc]) -> dict[str, bytes]:
        """Page vectors for a batch, in one call to the model (on the writer thread)."""
        if self.embedder is None or not self._reranks or not docs:
            return {}
        texts = [page_text(d.title, d.body) for d in docs]
        return dict(zip((d.url for d in docs), self.embedder.page_vectors(texts), strict=True))

    def _to_document(self, doc: IndexDoc, vector: bytes | None = None) -> tantivy.Document:
        anchor_text = " | ".join(doc.anchors)[:MAX_ANCHOR_TEXT]
        url = URL(doc.url)
        host = url.host or ""
        port = url.explicit_port
        host_key = f"{host}:{port}" if port else host
        return tantivy.Document.from_dict(
            {
                "url": doc.url,
                "canonical": doc.canonical or doc.url,
                "host": host_key,
                "site": site_terms(host_key),
                "title": doc.title,
                "description": doc.description,
                "body": doc.body[:MAX_BODY_CHARS],
                "anchor": anchor_text,
                "anchor_tokens": token_count(anchor_text),
                "url_words": url_words(doc.url),
                "language": doc.language,
                "fetched": int(doc.fetched),
                **({"embedding": vector} if vector is not None else {}),
            },
            self.schema,
        )

    # --- reading ---------------------------------------------------------------------
    def prepare(self, text: str | PreparedQuery) -> PreparedQuery:
        """The query parsed once (on the loop, before any thread hop), with its units
        and the words snippets look for: analysed here, one analyzer used on the loop only.
        Every search method takes the text or this, so a federated query parses once."""
        if isinstance(text, PreparedQuery):
            return text
        parsed = parse_user_query(text)
        units = clause_units(parsed.clauses, self.analyzer.analyze)
        focus = list(dict.fromkeys(t for unit in units for t in unit))
        near = near_unit(parsed.clauses, self.analyzer.analyze)
        return PreparedQuery(parsed=parsed, units=units, focus=focus, near=near)

    async def search(
        self, text: str | PreparedQuery, *, limit: int = 10, offset: int = 0
    ) -> SearchPage:
        query = self.prepare(text)
        return await self._in(
            self._read_pool, self._search, query.parsed, limit, offset, query.focus
        )

    def _search(
        self,
        parsed: ParsedQuery,
        limit: int,
        offset: int,
        focus: list[str],
        snippets: int | None = None,
        weigh: Weigh | None = None,
        count: bool = True,
        meaning: np.ndarray | None = None,
        rerank_depth: int = RERANK_DEPTH,
    ) -> SearchPage:
        """The asked page of hits; only the first ``snippets`` of them get a snippet (all
        when None): an owner's snippets took half its answer's CPU, and most of its hits
        never reach the querier's first page. ``weigh`` is called with the hits' stored
        pages (by URL) before any snippet is made, on the same searcher; the words its
        answer shows a page's body lacks are not looked for in that body. ``count``: the
        page's ``total`` is counted (0 otherwise). ``meaning``: the query's vector, when
        the querier sent it (``semantic.parse_vector``); embedded here otherwise.
        ``rerank_depth``: how many of tantivy's first pages are re-scored by meaning."""
        started = time.perf_counter()
        limit = max(1, min(limit, MAX_RESULTS_WINDOW))
        offset = max(0, min(offset, MAX_RESULTS_WINDOW - limit))
        query, snippet_query = parsed.build(self.index, self.schema)
        searcher = self.index.searcher()
        # Over-fetch so de-duplication by canonical URL still fills the page.
        want = offset + limit
        # Pages taken in tantivy's order: the asked page, and the re-ranked head if any.
        depth = max(want, rerank_depth) if self._reranks else want
        try:
            fetch = min(depth * 2, MAX_RESULTS_WINDOW * 2)
            result = searcher.search(query, limit=fetch, count=count)
        except ValueError as exc:
            # tantivy parses ``title:*`` (field has any value) but refuses to run it on a
            # field that is not a fast field or does not exist: the query's fault.
            if any(m in str(exc) for m in UNSUPPORTED_QUERY_ERRORS):
                raise QuerySyntaxError(UNSUPPORTED_QUERY) from None
            raise
        generator = self._snippet_generator(searcher, snippet_query)
        # Unique pages (by canonical URL) in tantivy's order, enough for the asked page
        # and the re-ranked head.
        seen: set[str] = set()
        found: list[tuple[float, tantivy.Document, str]] = []
        addresses: dict[str, Any] = {}  # canonical URL -> where its page is
        for score, address in result.hits:
            doc = searcher.doc(address)
            canonical = _first(doc, "canonical") or _first(doc, "url")
            if canonical in seen:
                continue
            seen.add(canonical)
            found.append((float(score), doc, canonical))
            addresses[canonical] = address
            if len(found) >= depth:
                break
        similarity = self._rerank(found, parsed, meaning, rerank_depth)
        page = found[offset : offset + limit]
        words = None
        if weigh is not None:
            words = weigh(
                searcher, {_first(d, "url"): LoadedPage(addresses[c], d) for _s, d, c in page}
            )
        hits: list[Hit] = []
        snipped = limit if snippets is None else max(0, snippets)
        for rank, (score, doc, canonical) in enumerate(page):
            url = _first(doc, "url")
            hits.append(
                Hit(
                    url=url,
                    title=_first(doc, "title"),
                    snippet=(
                        make_snippet(generator, doc, parsed, focus if words is None else words(url))
                        if rank < snipped
                        else NO_SNIPPET
                    ),
                    score=score,
                    host=_first(doc, "host"),
                    language=_first(doc, "language"),
                    fetched=float(_first(doc, "fetched") or 0),
                    canonical=canonical,
                    similarity=similarity.get(canonical),
                )
            )
        return SearchPage(
            query=parsed.text,
            hits=hits,
            total=int(getattr(result, "count", 0) or 0),
            took_ms=(time.perf_counter() - started) * 1000.0,
        )

    def _rerank(
        self,
        found: list[tuple[float, tantivy.Document, str]],
        parsed: ParsedQuery,
        meaning: np.ndarray | None,
        depth: int,
    ) -> dict[str, float]:
        """The first ``depth`` of ``found`` scored by meaning too (semantic.py), in place;
        each re-scored page's similarity, by canonical URL."""
        if self.embedder is None or not self._reranks or not found or not parsed.free_text:
            return {}
        query = self.embedder.query_vector(parsed.free_text) if meaning is None else meaning
        head = found[:depth]
        similarity: dict[str, float] = {}
        rescored = []
        stored = [_first(doc, "embedding") or None for _s, doc, _c in head]
        for (score, doc, canonical), sim in zip(
            head, self.embedder.similarities_to(query, stored), strict=True
        ):
            if sim is not None:
                similarity[canonical] = sim
                score *= semantic_factor(sim)
            rescored.append((score, doc, canonical))
        rescored.sort(key=lambda item: item[0], reverse=True)
        found[: len(head)] = rescored
        return similarity

    def _snippet_generator(self, searcher: Any, snippet_query: Any) -> Any:
        if snippet_query is None:
            return None
        generator = tantivy.SnippetGenerator.create(searcher, snippet_query, self.schema, "body")
        generator.set_max_num_chars(SNIPPET_CHARS)
        return generator

    async def get(self, url: str) -> dict[str, Any] | None:
        """The stored fields of one URL, or None."""
        return await self._in(self._read_pool, self._get, url)

    def _get(self, url: str) -> dict[str, Any] | None:
        doc = self._doc_of(self.index.searcher(), url)
        return None if doc is None else dict(doc.to_dict())

    def _doc_of(self, searcher: Any, url: str) -> tantivy.Document | None:
        hits = searcher.search(tantivy.Query.term_query(self.schema, "url", url), limit=1).hits
        return searcher.doc(hits[0][1]) if hits else None

    async def term_shards(self, terms: list[str], *, top_k: int = DEFAULT_TOP_K) -> list[TermShard]:
        """This node's shard of each of ``terms`` (``indexed_terms`` names them all)."""
        return await self._in(self._read_pool, self._term_shards, terms, top_k)

    async def indexed_terms(self) -> list[str]:
        """Every term of the shard fields, sorted (what a full publish builds, in parts)."""
        return await self._in(self._read_pool, lambda: sorted(all_terms(self.index.searcher())))

    def _term_shards(self, terms: list[str], top_k: int) -> list[TermShard]:
        started = time.thread_time()
        searcher = self.index.searcher()
        shards = build_shards(
            searcher, self.schema, terms, top_k=top_k, lengths_of=self._lengths_of
        )
        with self._lengths_lock:  # (reader threads build at once)
            self.shard_cpu += time.thread_time() - started
        return shards

    async def search_with_weights(
        self,
        text: str | PreparedQuery,
        *,
        limit: int,
        offset: int = 0,
        snippets: int | None = None,
        meaning: np.ndarray | None = None,
    ) -> tuple[SearchPage, PageWeights]:
        """A search and its hits' term weights in one trip to a reader thread: a federated
        query's own answer would otherwise queue its second half behind the scoring that
        occupies the event loop meanwhile. ``meaning``: the querier's query vector."""
        query = self.prepare(text)

        def both() -> tuple[SearchPage, PageWeights]:
            found: list[PageWeights] = []
            singles = {unit[0] for unit in query.units if len(unit) == 1}

            def weigh(
                searcher: tantivy.Searcher, loaded: Mapping[str, LoadedPage]
            ) -> Callable[[str], list[str]]:
                # The pages the search loaded, looked at again by their addresses, which
                # only that searcher's segments give meaning.
                weights = self._term_weights(
                    list(loaded), query.units, query.near, searcher, loaded
                )
                found.append(weights)
                return partial(body_words, weights, query.focus, singles)

            # Uncounted: a querier counts the network's matches from the shards, never
            # from its owners' totals (0.1-0.4 ms of an answer, small corpus).
            page = self._search(
                query.parsed,
                limit,
                offset,
                query.focus,
                snippets,
                weigh,
                count=False,
                meaning=meaning,
                rerank_depth=OWNER_RERANK_DEPTH,
            )
            weights = found[0]
            weights.semantic.update(
                (h.url, h.similarity) for h in page.hits if h.similarity is not None
            )
            return page, weights

        return await self._in(self._read_pool, both)

    async def query_vector(self, text: str | PreparedQuery) -> tuple[np.ndarray, str] | None:
        """The query's vector as the owners a querier asks will read it, and its wire form
        (``semantic.shared_vector``); None when this node re-ranks nothing by meaning or
        the query has no words to embed."""
        query = self.prepare(text)
        embedder, words = self.embedder, query.parsed.free_text
        if embedder is None or not self._reranks or not words:
            return None
        return await self._in(self._read_pool, lambda: shared_vector(embedder.query_vector(words)))

    async def snippets(
        self, text: str | PreparedQuery, urls: Collection[str]
    ) -> dict[str, Snippet]:
        """Snippets of the query for these pages (those this index holds): pages a querying
        node expects on its result page that this node's own search ranks lower."""
        if not urls:
            return {}
        query = self.prepare(text)
        return await self._in(
            self._read_pool, self._snippets, query.parsed, list(urls), query.focus
        )

    def _snippets(
        self, parsed: ParsedQuery, urls: list[str], focus: list[str]
    ) -> dict[str, Snippet]:
        searcher = self.index.searcher()
        _query, snippet_query = parsed.build(self.index, self.schema)
        generator = self._snippet_generator(searcher, snippet_query)
        found: dict[str, Snippet] = {}
        for url in urls:
            doc = self._doc_of(searcher, url)
            if doc is not None:
                found[url] = make_snippet(generator, doc, parsed, focus)
        return found

    async def term_weights(
        self, urls: list[str], units: list[Unit], near: Unit = ()
    ) -> PageWeights:
        return await self._in(self._read_pool, self._term_weights, urls, units, near)

    def _term_weights(
        self,
        urls: list[str],
        units: list[Unit],
        near: Unit = (),
        searcher: tantivy.Searcher | None = None,
        loaded: Mapping[str, LoadedPage] | None = None,
    ) -> PageWeights:
        if searcher is None:
            searcher = self.index.searcher()
        generation, averages = self._averages
        if generation != self.generation:
            # tantivy's average field lengths change only with a commit.
            averages = field_averages(searcher, self.schema)
            self._averages = (self.generation, averages)
        return term_weights(
            searcher, self.schema, urls, units, averages, self._lengths_of, near, loaded
        )

    def _lengths_of(self, doc: tantivy.Document) -> FieldLengths:
        """Field lengths of a stored page, remembered: counting a long body's tokens costs
        more than the rest of an owner's answer. Publishing fills the cache for nearly
        every page, so queries seldom count."""
        key = (str(doc.get_first("url") or ""), int(doc.get_first("fetched") or 0))
        with self._lengths_lock:
            found = self._lengths.get(key)
            if found is not None:
                self._lengths.move_to_end(key)
                return found
        lengths = doc_lengths(doc)
        with self._lengths_lock:
            self._lengths[key] = lengths
            while len(self._lengths) > MAX_CACHED_LENGTHS:
                self._lengths.popitem(last=False)
        return lengths

    def query_units(self, text: str) -> list[Unit]:
        """The terms and phrases a federated query scores (empty for text without words)."""
        return self.prepare(text).units


def _first(doc: tantivy.Document, name: str) -> Any:
    values = doc.get_all(name)
    return values[0] if values else ""


__all__ = ["Commit", "Hit", "IndexDoc", "IndexStore", "QuerySyntaxError", "SearchPage"]
