"""The node: wires the crawler to the index (and, when configured, to the network)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import tantivy

from rhizome.crawler import Blocklist, Crawler, ParsedPage
from rhizome.dht import DhtNotRunning
from rhizome.federation import Network
from rhizome.index import IndexDoc, IndexStore, SearchPage

from .config import NodeConfig
from .version import VERSION

log = logging.getLogger(__name__)

LOW_SPACE_BYTES = 1024 * 1024  # below this, a failure to open the data is the disk's fault


def disk_full_hint(data_dir: Path) -> str:
    """``"; the disk ... is full"`` when ``data_dir``'s disk is (nearly) full, else ``""``."""
    try:
        free = shutil.disk_usage(data_dir).free
    except OSError:
        return ""
    if free >= LOW_SPACE_BYTES:
        return ""
    return f"; the disk holding {data_dir} is full ({free} bytes free): free space and start again"


# What /api/status, /status and /metrics show anyone: health and counts. Error texts (they
# name paths), free space, the DHT address, traffic per peer and which peers were asked or
# distrusted (they follow what was searched) are for the operator's credential only.
PUBLIC_STATUS: dict[str, tuple[str, ...] | None] = {
    "idle": None,
    "documents": None,
    "crawl": None,  # counts only: queued, in flight, fetched, failed, known URLs, hosts
    "index": ("documents", "pending", "last_commit_at"),
    "storage": ("disk_full", "ok"),
    "network": (
        "node_id",
        "peers",
        "shards_held",
        "published_generation",
        "reachability",
        "relayed",
        "direct",  # counts: how many nodes behind NAT were reached past their relays
    ),
    "uptime_s": None,
    "version": None,
}


def public_status(status: dict[str, Any]) -> dict[str, Any]:
    """The part of ``Node.status()`` that anyone may read (see PUBLIC_STATUS)."""
    public: dict[str, Any] = {}
    for key, keep in PUBLIC_STATUS.items():
        value = status.get(key)
        if keep is not None and isinstance(value, dict):
            value = {k: value[k] for k in keep if k in value}
        public[key] = value
    return public


def committed_before_crash(
    store: IndexStore,
) -> Callable[[list[tuple[str, float | None]]], set[str]]:
    """The frontier's check, at start-up, for URLs a kill left leased: those whose page the
    index holds from a fetch newer than the URL's last DONE were committed just before the
    kill, so not worth fetching again. Runs on the frontier's thread, after the index is
    open."""

    def check(leased: list[tuple[str, float | None]]) -> set[str]:
        searcher = store.index.searcher()
        committed: set[str] = set()
        for url, fetched_before in leased:
            query = tantivy.Query.term_query(store.schema, "url", url)
            hits = searcher.search(query, limit=1).hits
            if not hits:
                continue
            fetched = searcher.doc(hits[0][1]).get_first("fetched") or 0
            if fetched_before is None or fetched > fetched_before:
                committed.add(url)
        if committed:
            log.info("%d URLs were committed just before an unclean stop", len(committed))
        return committed

    return check


class IndexSink:
    """The crawler's PageSink backed by the IndexStore."""

    def __init__(self, store: IndexStore) -> None:
        self.store = store

    async def submit(self, page: ParsedPage) -> None:
        if page.noindex:
            for url in (page.url, *page.aliases):
                await self.store.remove(url)
            return
        await self.store.submit(
            IndexDoc(
                url=page.url,
                title=page.title,
                description=page.description,
                body=page.text,
                anchors=page.inbound_anchors,
                language=page.language,
                fetched=page.fetched_at,
                canonical=page.canonical,
                aliases=page.aliases,
            )
        )

    async def remove(self, url: str) -> None:
        await self.store.remove(url)


class Node:
    """One Rhizome node's parts, as the routes see them. Built by the app's cleanup
    contexts (``api/app.py``), which start and stop each part; this holds no lifecycle."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        store: IndexStore,
        crawler: Crawler,
        network: Network | None,
        blocklist: Blocklist | None = None,
    ) -> None:
        self.config = config
        # What no result may show.
        self.blocklist = blocklist if blocklist is not None else crawler.blocklist
        self.started_at = time.time()
        self.store = store
        self.crawler = crawler
        self.network = network

    async def is_idle(self) -> bool:
        if self.network is not None and self.network.started and not self.network.idle:
            return False
        return self.store.pending == 0 and await self.crawler.is_idle()

    async def status(self) -> dict[str, Any]:
        stats = await self.crawler.stats()
        return {
            "idle": await self.is_idle(),
            "documents": self.store.num_docs,
            "crawl": asdict(stats),
            "index": {
                "documents": self.store.num_docs,
                "pending": self.store.pending,
                "last_commit_at": self.store.last_commit_at or None,
                "last_error": self.store.last_error,
            },
            "storage": self.storage_status(),
            "network": await self._network_status(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "version": VERSION,
        }

    async def _network_status(self) -> dict[str, Any] | None:
        if self.network is None or not self.network.started:
            return None
        try:
            return await self.network.status()
        except DhtNotRunning:
            return None  # between start_network() and the DHT listening: just restarted

    def storage_status(self) -> dict[str, Any]:
        """Whether the data directory takes writes: ``disk_full`` is the field to watch.

        While it is true the node keeps serving what is committed, holds new pages in
        memory (bounded; the crawler slows down) and retries on its own.
        """
        frontier = self.crawler.frontier
        free: int | None = None
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(self.config.data_dir).free  # one statvfs: no real I/O
        return {
            "disk_full": self.store.disk_full or frontier.disk_full,
            "ok": self.store.last_error is None and frontier.storage_error is None,
            "index_error": self.store.last_error,
            "index_failing_since": self.store.failing_since,
            "frontier_error": frontier.storage_error,
            "free_bytes": free,
        }

    async def search_local(self, q: str, *, limit: int, offset: int) -> SearchPage:
        return await self.store.search(q, limit=limit, offset=offset)
