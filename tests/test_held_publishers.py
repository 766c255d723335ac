"""A holder's work for a popular term stays bounded as its publishers grow (issue #13).

A word every node publishes reaches its holders from every publisher; the holder keeps the
``PUBLISHERS_PER_TERM`` strongest (most pages with the word, as each record claims) and a
lookup serves those, strongest first. Real SQLite stores, real signed records, and one
real node subprocess pushed to over HTTP from many loopback addresses.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from rhizome.dht import Identity
from rhizome.federation import DEFAULT_SETTINGS, FederatedSearch, LocalPeers
from rhizome.federation.answer import LocalOwner
from rhizome.federation.held_rows import row_bytes
from rhizome.federation.peers import QueryTally, _take_summaries
from rhizome.federation.shard_store import OUTRANKED, ShardStore
from rhizome.federation.wire import (
    PUBLISHERS_PER_TERM,
    SUMMARIES_PER_TERM,
    HeldRecord,
    claimed_df,
    decode_summaries,
    encode_lookup,
    sign_held,
    sign_push,
    verify_copies,
)
from rhizome.index import SHARD_FIELDS, IndexDoc, IndexStore, TermShard
from rhizome.index.shard_codec import Posting
from tests.conftest import NodeFactory, NodeHandle
from tests.test_federated_ranking import committed_store
from tests.test_network import dht_address

BOUND = 4  # the store-level tests use a small bound, so they run in milliseconds


def shard(term: str, df: int) -> TermShard:
    fields = len(SHARD_FIELDS)
    return TermShard(
        term=term,
        df=df,
        n_docs=1000,
        field_df=(df,) * fields,
        postings=(Posting(f"https://p{df}.test/{term}", "t", (1.0,) * fields),),
    )


def held(key: Identity, *shards: TermShard, ttl: float = 3600) -> list[HeldRecord]:
    return sign_held(key, shards, time.time() + ttl)


async def open_store(path: Path, bound: int = BOUND, summaries: int = 0) -> ShardStore:
    store = ShardStore(path, publishers_per_term=bound, summaries_per_term=summaries)
    await store.open()
    return store


def publishers_of(copies: list[Any]) -> set[str]:
    return {c.publisher for c in copies}


async def test_a_popular_term_keeps_its_strongest_whole_and_the_next_as_summaries(
    tmp_path: Path,
) -> None:
    """Ten publishers push the same word with df 1..10: the holder keeps the four with the
    most pages whole, the next three as summaries (their df and N, no postings), and not
    the rest; the weak publishers' other words are untouched. Catches a holder whose
    copies of a common word grow with the network, or one that forgets who else has it."""
    store = await open_store(tmp_path / "s.sqlite3", summaries=3)
    try:
        keys = [Identity.generate() for _ in range(10)]
        for df, key in enumerate(keys, start=1):
            pushed = held(key, shard("python", df), shard(f"own{df}", 1))
            assert (await store.put(key.node_id.hex(), pushed)).stored == 2
        raw, summaries = await store.lookup(["python"])
        copies = verify_copies("python", raw["python"], time.time())
        assert [c.shard.df for c in copies] == [10, 9, 8, 7]
        cut = decode_summaries(json.loads(encode_lookup(raw, summaries)), ["python"])["python"]
        assert {p: s.df for p, s in cut.items()} == {
            keys[df - 1].node_id.hex(): df for df in (6, 5, 4)
        }
        assert all(not s.postings and s.n_docs == 1000 for s in cut.values())
        assert await store.count() == BOUND + 3 + 10  # every publisher's rare word is held
        assert store.over_quota == 0
        assert store.outranked == 3  # df 1, 2, 3: dropped as stronger ones came
    finally:
        await store.close()


async def test_a_weaker_newcomer_is_told_why_and_a_stronger_one_takes_the_weakest_place(
    tmp_path: Path,
) -> None:
    """At the bound, a push with fewer pages is refused as outranked (not a quota, so the
    publisher does not count it as a miss); one with more evicts the weakest, whose bytes
    go back to the holder's budget. Catches eviction that leaks budget or refuses the wrong
    copy."""
    path = tmp_path / "s.sqlite3"
    store = await open_store(path)
    try:
        keys = [Identity.generate() for _ in range(BOUND)]
        for df, key in enumerate(keys, start=5):
            await store.put(key.node_id.hex(), held(key, shard("rust", df)))
        weak = Identity.generate()
        done = await store.put(weak.node_id.hex(), held(weak, shard("rust", 2)))
        assert done.stored == 0 and done.refused == {OUTRANKED: 1}
        strong = Identity.generate()
        record = held(strong, shard("rust", 50))
        assert (await store.put(strong.node_id.hex(), record)).stored == 1
        kept = publishers_of((await store.get(["rust"]))["rust"])
        assert strong.node_id.hex() in kept and keys[0].node_id.hex() not in kept
        assert len(kept) == BOUND
        counted = store.held_bytes
        assert counted == sum(row_bytes("rust", r) for r in (await store.records(["rust"]))["rust"])
    finally:
        await store.close()
    # The running totals are what the file holds (read afresh from SQL at open).
    again = await open_store(path)
    try:
        assert again.held_bytes == counted
    finally:
        await again.close()


async def test_a_held_publisher_refreshes_and_an_expired_copy_makes_room(tmp_path: Path) -> None:
    """At the bound, a publisher holding a slot refreshes it (a full term is no reason to
    refuse its own copy); a copy past its expiry counts for nothing, so the next publisher
    gets its place. Catches a bound that locks publishers out of their own slot or counts
    dead copies."""
    store = await open_store(tmp_path / "s.sqlite3")
    try:
        keys = [Identity.generate() for _ in range(BOUND)]
        for i, key in enumerate(keys):
            ttl = 0.2 if i == 0 else 3600
            await store.put(key.node_id.hex(), held(key, shard("sql", 10 + i), ttl=ttl))
        refresh = await store.put(keys[1].node_id.hex(), held(keys[1], shard("sql", 20)))
        assert refresh.stored == 1
        late = Identity.generate()
        assert (await store.put(late.node_id.hex(), held(late, shard("sql", 3)))).stored == 0
        await asyncio.sleep(0.3)
        assert (await store.put(late.node_id.hex(), held(late, shard("sql", 3)))).stored == 1
        kept = publishers_of((await store.get(["sql"]))["sql"])
        assert kept == {k.node_id.hex() for k in keys[1:]} | {late.node_id.hex()}
    finally:
        await store.close()


def test_claimed_df_reads_the_shard_payload_without_parsing_it() -> None:
    """The strength a holder ranks by is the df the record's payload starts with; anything
    else is the weakest. Catches a reader that trusts a malformed payload's digits."""
    assert claimed_df(b"[37,1000,[1,2,3,4,5],[],[1,1,1,1,1]]") == 37
    assert claimed_df(b'{"df": 99}') == 0
    assert claimed_df(b"[-5,1]") == 0
    assert claimed_df(b"[" + b"9" * 40 + b",1]") == 0


# --- over HTTP, one real node ------------------------------------------------------------


@pytest.fixture(scope="module")
def holder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHandle]:
    factory = NodeFactory(tmp_path_factory.mktemp("held"))
    try:
        node = factory.start("--dht", "127.0.0.1:0", "--max-depth", "0")
        dht_address(node)
        yield node
    finally:
        factory.close()


def request(
    node: NodeHandle, method: str, path: str, source: str, body: bytes | None = None
) -> tuple[int, Any]:
    host, port = node.url.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def test_a_node_serves_a_words_strongest_publishers_and_summaries_of_the_rest(
    holder: NodeHandle,
) -> None:
    """Twenty publishers, each from its own address, push the same word to a real node: a
    lookup brings back PUBLISHERS_PER_TERM signed copies, the strongest, and summaries of
    the other publishers (df, no postings), a late weak one among them. Catches a lookup
    that grows with the network or one that loses the publishers it cut."""
    publishers = PUBLISHERS_PER_TERM + 4
    keys = [Identity.generate() for _ in range(publishers)]
    for df, key in enumerate(keys, start=1):
        body = sign_push(key, [("popular", shard("popular", df).to_json())], time.time() + 600)
        status, answer = request(holder, "POST", "/api/peer/shards", f"127.0.4.{df}", body)
        assert status == 200 and answer == {"stored": 1}, answer
    weak = Identity.generate()
    body = sign_push(weak, [("popular", shard("popular", 1).to_json())], time.time() + 600)
    status, answer = request(holder, "POST", "/api/peer/shards", "127.0.4.200", body)
    assert status == 200 and answer == {"stored": 1}, answer
    status, found = request(holder, "GET", "/api/peer/shards?terms=popular", "127.0.4.201")
    assert status == 200
    copies = verify_copies("popular", [base64.b64decode(r) for r in found["popular"]], time.time())
    assert len(copies) == PUBLISHERS_PER_TERM
    strongest = {k.node_id.hex() for k in keys[-PUBLISHERS_PER_TERM:]}
    assert publishers_of(copies) == strongest
    cut = decode_summaries(found, ["popular"])["popular"]
    assert set(cut) == {k.node_id.hex() for k in (*keys[:4], weak)}


# --- the querier's side ------------------------------------------------------------------


def test_a_summary_counts_only_where_the_holders_that_answered_agree() -> None:
    """Summaries are the holder's cut, unsigned: one that only one of two answering holders
    serves is dropped (a liar cannot add a publisher to the owner choice), one both serve
    is taken with the smaller df, a lone answering holder's is taken, and a whole copy or
    a distrusted publisher is never replaced. Catches a querier that believes one holder."""
    whole = shard("ice", 9)
    merged: dict[str, dict[str, TermShard]] = {"ice": {"f" * 40: whole}, "rock": {}}
    a, b, c, bad = "a" * 40, "b" * 40, "c" * 40, "d" * 40
    summaries = {
        "ice": {
            "h1": {a: shard("ice", 5), b: shard("ice", 4), "f" * 40: shard("ice", 1)},
            "h2": {a: shard("ice", 3), c: shard("ice", 2), bad: shard("ice", 2)},
        },
        "rock": {"h1": {c: shard("rock", 7)}},
    }
    h2_also = {bad: shard("ice", 2)}
    summaries["ice"]["h1"] |= h2_also
    served: dict[str, dict[str, object]] = {
        "ice": {"h1": set(), "h2": set()},
        "rock": {"h1": set()},
    }
    _take_summaries(merged, summaries, served, {bad})
    assert merged["ice"]["f" * 40] is whole
    assert set(merged["ice"]) == {"f" * 40, a}
    assert merged["ice"][a].df == 3
    assert set(merged["rock"]) == {c}


def _doc(publisher: str, i: int, body: str) -> IndexDoc:
    return IndexDoc(url=f"http://{publisher}.example/{i}.html", title=f"note {i}", body=body)


@pytest.fixture
async def glacier_network() -> AsyncIterator[dict[str, IndexStore]]:
    """Three big publishers, each with many pages on two of the words; one small one whose
    single page has all three, and which tops no word's list."""
    words = ("glacier", "moraine", "erosion")
    pages: dict[str, list[IndexDoc]] = {"0" * 40: [_doc("me", 0, "compost and soil")]}
    for n, (first, second) in enumerate(zip(words, (*words[1:], words[0]), strict=True)):
        pages[str(n + 1) * 40] = [
            _doc(f"big{n}", i, f"{first} {first} {second} valley river {i}") for i in range(6)
        ]
    pages["9" * 40] = [_doc("small", 0, "how a glacier leaves a moraine behind by erosion")]
    made = {node: await committed_store(docs) for node, docs in pages.items()}
    yield made
    for store in made.values():
        await store.stop()


@pytest.mark.parametrize("summaries", [0, SUMMARIES_PER_TERM])
async def test_a_publisher_known_only_by_summaries_is_asked_and_its_page_found(
    glacier_network: dict[str, IndexStore], summaries: int
) -> None:
    """Holders keep two publishers whole a term: the small publisher is cut from every
    word. With its summaries the query's owner choice still sees that it has all three
    words, asks it, and its page is among the first results; without them (the contrast)
    it is never found."""
    me = "0" * 40
    peers = LocalPeers(glacier_network, me=me, publishers_per_term=2, summaries_per_term=summaries)
    store = glacier_network[me]
    search = FederatedSearch(
        local=LocalOwner(store, me),
        peers=peers,
        settings=DEFAULT_SETTINGS,
        analyze=store.analyzer.analyze,
        published=lambda: True,
    )
    merged = await peers.shards(["glacier", "moraine", "erosion"], QueryTally())
    assert all(not t["9" * 40].postings for t in merged.values() if "9" * 40 in t)
    page = await search.search(
        search.plan(store.prepare("glacier moraine erosion"), limit=10, offset=0)
    )
    urls = [r.url for r in page.rows]
    found = "http://small.example/0.html" in urls[:3]
    assert found is (summaries > 0), urls
