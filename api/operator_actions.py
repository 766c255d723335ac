"""What the operator can do to a running node: one implementation for the JSON routes
(``api/blocklist_routes.py``), the operator page (``api/operator_page.py``) and so the CLI.

Blocking is "block and delete": a rule that is added (here, or by a subscribed list) makes
the crawler forget the queued URLs of the hosts it names, and the pages the index holds of
them are deleted (and so leave the shards this node publishes). Results are filtered too
(``api/search.py``, ``federation/search.py``), so nothing blocked shows while a deletion
is still being committed. Unblocking deletes nothing more and brings nothing back: the
pages return when links or a seed lead the crawler to them again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import idna
import tantivy

from rhizome.crawler import BadRule, Block, Blocklist, canonicalize, parse_rule
from rhizome.crawler.blocklist import OWN, literal_suffix
from rhizome.crawler.frontier import HostQueue
from rhizome.federation.blocklists import Subscription, Subscriptions
from rhizome.federation.errors import ListRefused
from rhizome.index import IndexStore

from .node import Node
from .operator_store import OperatorState, StateError, parse_host_key

log = logging.getLogger(__name__)

OWN_LABEL = "this node"
QUEUE_HOSTS_SHOWN = 100  # hosts on the operator page's crawl queue (most due first)
MAX_ITEMS_PER_REQUEST = 1_000  # rules, hosts or URLs one request may name


class ActionError(ValueError):
    """The operator's request cannot be done; the message says why (400 / a page notice)."""


@dataclass(slots=True)
class BlockOutcome:
    added: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # what was typed -> why not
    hosts_forgotten: int = 0  # hosts whose queued URLs were dropped
    pages_deleted: int = 0


def _pages_under(store: IndexStore, suffix: str) -> list[str]:
    """URLs of the indexed pages whose host is ``suffix`` or under it (the ``site`` field,
    which holds yarl's form of a host: IDNs decoded), on a reader thread."""
    searcher = store.index.searcher()
    names = {suffix}
    try:
        names.add(idna.decode(suffix))
    except (idna.IDNAError, UnicodeError, ValueError):
        pass
    urls: list[str] = []
    for name in names:
        query = tantivy.Query.term_query(store.schema, "site", name)
        for _score, address in searcher.search(query, limit=max(1, searcher.num_docs)).hits:
            url = searcher.doc(address).get_first("url")
            if isinstance(url, str):
                urls.append(url)
    return urls


async def purge(node: Node, blocklist: Blocklist, rules: Sequence[str]) -> tuple[int, int]:
    """Forget the queued URLs and delete the indexed pages of hosts ``rules`` added to
    ``blocklist`` now block. Returns (hosts forgotten, pages deleted)."""
    hosts = await node.crawler.drop_blocked()
    deleted = 0
    for suffix in sorted({literal_suffix(rule) for rule in rules}):
        for url in await asyncio.to_thread(_pages_under, node.store, suffix):
            if blocklist.blocks_url(url):
                await node.store.remove(url)
                deleted += 1
    if hosts or deleted:
        log.info(
            "blocked: forgot the queued URLs of %d hosts, deleting %d pages", len(hosts), deleted
        )
    return len(hosts), deleted


def _bounded(items: Sequence[str]) -> list[str]:
    if len(items) > MAX_ITEMS_PER_REQUEST:
        raise ActionError(f"at most {MAX_ITEMS_PER_REQUEST} at once")
    return [str(i) for i in items if str(i).strip()]


class OperatorActions:
    def __init__(
        self,
        node: Node,
        *,
        blocklist: Blocklist,
        state: OperatorState,
        subscriptions: Subscriptions | None,
    ) -> None:
        self.node = node
        self.blocklist = blocklist
        self.state = state
        self.subscriptions = subscriptions

    async def _save(self) -> None:
        await asyncio.to_thread(self.state.save)

    # --- the blocklist -----------------------------------------------------------------
    async def block(self, texts: Sequence[str]) -> BlockOutcome:
        outcome = BlockOutcome()
        parsed: list[str] = []
        for text in _bounded(texts):
            try:
                parsed.append(parse_rule(text))
            except BadRule as exc:
                outcome.refused[text] = str(exc)
        try:
            outcome.added = self.state.add_rules(parsed)
        except StateError as exc:
            raise ActionError(str(exc)) from None
        if outcome.added:
            await self._save()
            self.blocklist.set_rules(OWN, OWN_LABEL, list(self.state.rules))
            log.info("the operator blocked %s", ", ".join(outcome.added))
            outcome.hosts_forgotten, outcome.pages_deleted = await purge(
                self.node, self.blocklist, outcome.added
            )
        return outcome

    async def unblock(self, texts: Sequence[str]) -> list[str]:
        rules: list[str] = []
        for text in _bounded(texts):
            try:
                rules.append(parse_rule(text))
            except BadRule:
                rules.append(text.strip())  # as it was stored, if it was
        removed = self.state.remove_rules(rules)
        if removed:
            await self._save()
            self.blocklist.set_rules(OWN, OWN_LABEL, list(self.state.rules))
            log.info("the operator unblocked %s", ", ".join(removed))
        return removed

    async def name_list(self, name: str) -> None:
        self.state.list_name = name.strip()[:64]
        await self._save()

    def check(self, text: str) -> Block | None:
        """Why a host or URL is blocked (None if it is not)."""
        text = text.strip()
        if "://" in text:
            return self.blocklist.match_url(canonicalize(text) or text)
        return self.blocklist.match_host(text)

    def own_rules(self) -> list[tuple[str, float]]:
        return sorted(self.state.rules.items(), key=lambda item: item[0])

    # --- subscriptions -----------------------------------------------------------------
    def _subs(self) -> Subscriptions:
        if self.subscriptions is None:
            raise ActionError("subscriptions need the network: start the node with --dht")
        return self.subscriptions

    async def subscribe(self, node_id: str, url: str) -> Subscription:
        try:
            return await self._subs().subscribe(node_id, url)
        except ListRefused as exc:
            raise ActionError(str(exc)) from None

    async def unsubscribe(self, node_id: str) -> bool:
        return await self._subs().unsubscribe(node_id.strip().lower())

    async def refresh(self, node_id: str) -> Subscription:
        subs = self._subs()
        if node_id not in {s.node_id for s in subs.all()}:
            raise ActionError(f"not subscribed to {node_id[:40]!r}")
        return await subs.refresh(node_id)

    # --- pins, recrawls, seeds ------------------------------------------------------------
    def _hosts(self, texts: Sequence[str]) -> list[str]:
        try:
            return [parse_host_key(t) for t in _bounded(texts)]
        except StateError as exc:
            raise ActionError(str(exc)) from None

    async def pin(self, texts: Sequence[str]) -> list[str]:
        hosts = self._hosts(texts)
        try:
            added = self.state.add_pins(hosts)
        except StateError as exc:
            raise ActionError(str(exc)) from None
        if added:
            await self._save()
            self._apply_pins()
        return added

    async def unpin(self, texts: Sequence[str]) -> list[str]:
        configured = set(self.node.config.pin_host)
        hosts = self._hosts(texts)
        if stuck := [h for h in hosts if h in configured]:
            raise ActionError(f"pinned by the configuration (pin_host): {', '.join(stuck)}")
        removed = self.state.remove_pins(hosts)
        if removed:
            await self._save()
            self._apply_pins()
        return removed

    def _apply_pins(self) -> None:
        network = self.node.network
        if network is None:
            return  # a lone node crawls every host itself anyway
        wanted = {*self.node.config.pin_host, *self.state.pins}
        for host in wanted - network.slices.pinned:
            network.slices.pin(host)
        for host in network.slices.pinned - wanted:
            network.slices.unpin(host)

    def pins(self) -> list[tuple[str, bool]]:
        """(host, pinned by the configuration) for every pinned host."""
        configured = set(self.node.config.pin_host)
        return [(h, True) for h in sorted(configured)] + [
            (h, False) for h in self.state.pins if h not in configured
        ]

    async def recrawl(self, text: str) -> int:
        host = self._hosts([text])[0]
        if (block := self.blocklist.match_host(host)) is not None:
            raise ActionError(f"{host} is {block.describe()}")
        return await self.node.crawler.recrawl_host(host)

    async def add_seeds(self, urls: Sequence[str]) -> dict[str, Any]:
        if len(urls) > MAX_ITEMS_PER_REQUEST:
            raise ActionError(f"at most {MAX_ITEMS_PER_REQUEST} URLs at once")
        blocked = []
        for url in urls:
            canonical = canonicalize(url)
            block = self.blocklist.match_url(canonical) if canonical else None
            if block is not None:
                blocked.append({"url": canonical, "by": block.describe()})
        accepted = await self.node.crawler.add_seeds(urls)
        return {"accepted": accepted, "rejected": len(urls) - len(accepted), "blocked": blocked}

    async def queue(self, limit: int = QUEUE_HOSTS_SHOWN) -> list[HostQueue]:
        return await self.node.crawler.queue_by_host(limit)

    # --- distrusted peers ----------------------------------------------------------------
    def distrusted(self) -> dict[str, dict[str, Any]]:
        network = self.node.network
        return {} if network is None else dict(network.spot_checker.distrusted)

    async def lift(self, peer: str) -> bool:
        network = self.node.network
        if network is None:
            raise ActionError("this node is not on a network: it distrusts no one")
        return await network.spot_checker.lift(peer.strip().lower())

    # --- one view of it all ----------------------------------------------------------------
    def blocklist_view(self) -> dict[str, Any]:
        network = self.node.network
        return {
            "name": self.state.list_name,
            "node_id": network.node_id if network is not None else None,
            "published": self.node.config.publish_blocklist and network is not None,
            "rules": [{"rule": r, "added_at": t} for r, t in self.own_rules()],
            "subscriptions": [
                {
                    "node_id": s.node_id,
                    "url": s.url,
                    "name": s.name,
                    "label": s.label,
                    "rules": list(s.rules),
                    "issued_at": s.issued_at or None,
                    "fetched_at": s.fetched_at or None,
                    "error": s.error or None,
                }
                for s in (self.subscriptions.all() if self.subscriptions else [])
            ],
            "blocked_urls": self.node.crawler.blocked,
        }
