"""Incremental publishing (issue #13): a commit re-sends only the shards it could change,
and while commits keep coming, placed terms wait for a pause. Real parts in one process:
a tantivy index in RAM, a lone public DHT node on loopback that is its own holder, its
real shard store, and the publisher under test."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import rhizome.federation.publisher
from rhizome.dht import DhtNode
from rhizome.federation.client import PeerClient
from rhizome.federation.membership import Membership
from rhizome.federation.publisher import Publisher
from rhizome.federation.settings import FederationSettings
from rhizome.federation.shard_store import ShardStore
from rhizome.index import IndexDoc, IndexStore, build_analyzer
from rhizome.index.schema import url_words

SITE = "http://pages.test"
COMMIT_WAIT = 10.0  # seconds: a commit of a few pages takes milliseconds
POLL = 0.02


async def until(predicate: Callable[[], bool]) -> None:
    # Polling: the store and the publisher signal nothing when they are done.
    for _ in range(int(COMMIT_WAIT / POLL)):
        if predicate():
            return
        await asyncio.sleep(POLL)
    raise AssertionError(f"not reached in {COMMIT_WAIT} s")


@dataclasses.dataclass
class Parts:
    store: IndexStore
    shards: ShardStore
    publisher: Publisher

    async def commit(self, *docs: IndexDoc) -> None:
        before = self.store.generation
        for doc in docs:
            await self.store.submit(doc)
        await until(lambda: self.store.generation != before and not self.store.pending)

    async def held(self, term: str) -> list[str]:
        """The pages of this publisher's copy of ``term`` at its holder (itself)."""
        copies = (await self.shards.get([term]))[term]
        return [p.url for c in copies for p in c.shard.postings]

    async def held_df(self, term: str) -> int:
        return (await self.shards.get([term]))[term][0].shard.df


def page_terms(doc: IndexDoc) -> set[str]:
    analyzer = build_analyzer()
    texts = (doc.title, doc.description, doc.body, *doc.anchors, url_words(doc.url))
    return {t for text in texts for t in analyzer.analyze(text)}


def page(name: str, body: str, title: str = "") -> IndexDoc:
    return IndexDoc(url=f"{SITE}/{name}.html", title=title or name, body=body)


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    settings = FederationSettings(publish_quiet=0.05, publish_every=3600.0)
    store = IndexStore(None, commit_interval=0.05)
    dht = DhtNode(tmp_path / "dht", http_url="http://127.0.0.1:9/")
    shards = ShardStore(tmp_path / "shards.sqlite3", own=dht.node_id.hex())
    client = PeerClient(settings, allow_private=True, distrusted=lambda: ())
    await store.start()
    await dht.start("127.0.0.1", 0, [])
    await shards.open()
    await client.open()
    publisher = Publisher(
        store=store,
        identity=dht.identity,
        membership=Membership(dht, settings),
        client=client,
        shards=shards,
        settings=settings,
    )
    try:
        yield Parts(store, shards, publisher)
    finally:
        await client.close()
        await shards.close()
        await dht.stop()
        await store.stop()


async def test_a_commit_of_one_page_rebuilds_and_resends_only_that_pages_terms(
    parts: Parts,
) -> None:
    await parts.commit(
        page("mars", "the red planet aardvark"), page("venus", "the hot planet bonobo")
    )
    await parts.publisher.publish()
    assert parts.publisher.last_publish["full"]  # the first publish places everything
    assert await parts.held("aardvark") == [f"{SITE}/mars.html"]

    jupiter = page("jupiter", "the giant planet zanzibar")
    await parts.commit(jupiter)
    await parts.publisher.publish()
    last = parts.publisher.last_publish
    assert not last["full"]
    assert last["terms"] == len(page_terms(jupiter))  # rebuilt: jupiter's terms alone
    assert last["changed"] == last["terms"]  # each gained a page (df moved)
    assert await parts.held("zanzibar") == [f"{SITE}/jupiter.html"]
    assert sorted(await parts.held("planet")) == sorted(
        f"{SITE}/{n}.html" for n in ("jupiter", "mars", "venus")
    )
    assert parts.publisher.totals["terms_sent"] == parts.publisher.totals["terms_built"]


async def test_a_replaced_page_takes_its_old_words_shards_with_it(parts: Parts) -> None:
    await parts.commit(
        page("mars", "quokka on the red planet"), page("venus", "quokka on the hot planet")
    )
    await parts.publisher.publish()
    assert len(await parts.held("quokka")) == 2
    await parts.commit(page("mars", "nothing but rocks"))  # its stored version had the word
    await parts.publisher.publish()
    assert await parts.held("quokka") == [f"{SITE}/venus.html"]


async def test_while_commits_keep_coming_placed_terms_wait_for_a_pause(parts: Parts) -> None:
    await parts.commit(page("mars", "the red planet"), page("venus", "the hot planet"))
    await parts.publisher.publish()
    generation = parts.publisher.published_generation = parts.store.generation
    await parts.commit(page("jupiter", "the giant planet kumquat"))
    # Mid-crawl: the new word goes at once, the placed common one waits.
    await parts.publisher.publish(flush=False)
    assert await parts.held("kumquat") == [f"{SITE}/jupiter.html"]
    assert await parts.held_df("planet") == 2
    assert "planet" in parts.publisher._pending
    assert not parts.publisher.idle and parts.publisher.published_generation == generation
    # At the pause every touched term is placed.
    await parts.publisher.publish(flush=True)
    assert await parts.held_df("planet") == 3
    assert not parts.publisher._pending


async def test_the_publish_loop_places_every_term_by_idle_and_republishes_in_time(
    parts: Parts,
) -> None:
    publisher = parts.publisher
    publisher.settings = dataclasses.replace(publisher.settings, republish_every=1.0)
    task = asyncio.create_task(publisher.run())
    try:
        await parts.commit(page("mars", "the red planet"))
        await parts.commit(page("venus", "the hot planet"))
        await until(lambda: publisher.idle)
        assert await parts.held_df("planet") == 2
        # Copies expire at their holders: every term is placed again in time.
        await until(lambda: publisher.totals["full_rebuilds"] >= 2)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_full_publish_in_parts_places_every_term_once(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full publish builds, signs and pushes a few thousand terms at a time (so its
    memory stays bounded); every term is placed all the same, and only once."""
    monkeypatch.setattr(rhizome.federation.publisher, "BUILD_CHUNK_TERMS", 7)
    docs = [page(f"p{i}", f"word{i} shared common{i % 3}") for i in range(12)]
    await parts.commit(*docs)
    everything = set().union(*(page_terms(d) for d in docs))
    assert len(everything) > 3 * 7  # several parts
    await parts.publisher.publish()
    last = parts.publisher.last_publish
    assert last["full"] and last["terms"] == last["changed"] == len(everything)
    assert last["failed_holders"] == 0 and last["holders"] == 1
    for term in everything:
        assert await parts.held(term), term
    [shared] = build_analyzer().analyze("shared")
    assert sorted(await parts.held(shared)) == sorted(d.url for d in docs)
    await parts.publisher.publish()  # nothing changed since: nothing is sent again
    assert parts.publisher.last_publish["changed"] == 0
