"""The federated query's phases over in-process peers (``federation.LocalPeers``): which
owners are asked, who makes which snippets, how answers merge, and what a silent peer
costs, without subprocess nodes. Real tantivy indexes, the real wire codecs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest

from rhizome.federation import DEFAULT_SETTINGS, FederatedSearch, LocalPeers
from rhizome.federation.answer import LocalOwner
from rhizome.federation.peers import QueryTally
from rhizome.federation.ranking import STAT_SHARE_CAP
from rhizome.federation.search import choose, rank
from rhizome.federation.wire import speaks_for
from rhizome.index import SHARD_FIELDS, IndexDoc, IndexStore, Posting, TermShard, bm25_idf
from rhizome.index.query import unit_key
from rhizome.index.semantic import Embedder
from tests.test_federated_ranking import committed_store

ME, ALICE, BOB = "aa" * 20, "bb" * 20, "cc" * 20


def _page(host: str, slug: str, title: str, body: str) -> IndexDoc:
    return IndexDoc(url=f"http://{host}/{slug}.html", title=title, body=body)


@pytest.fixture
async def stores() -> AsyncIterator[dict[str, IndexStore]]:
    pages = {
        ME: [
            _page("me.example", f"m{i}", f"gardening note {i}", "soil compost " * 3)
            for i in range(5)
        ],
        ALICE: [
            _page(
                "alice.example", "comets", "Comets and their tails", "comet tail ice dust sun " * 20
            ),
            _page("alice.example", "moons", "Moons of Saturn", "titan enceladus rings " * 20),
        ],
        BOB: [
            _page("bob.example", "comet-hunting", "Comet hunting at night", "comet telescope " * 5),
            _page("bob.example", "bread", "Sourdough bread", "flour water salt " * 10),
        ],
    }
    made = {node: await committed_store(docs) for node, docs in pages.items()}
    yield made
    for store in made.values():
        await store.stop()


def _search(stores: dict[str, IndexStore], peers: LocalPeers) -> FederatedSearch:
    me = stores[ME]
    return FederatedSearch(
        local=LocalOwner(me, ME),
        peers=peers,
        settings=DEFAULT_SETTINGS,
        analyze=me.analyzer.analyze,
        published=lambda: True,
    )


async def test_the_owner_of_the_best_page_is_asked_and_its_answer_carries_snippets(
    stores: dict[str, IndexStore],
) -> None:
    peers = LocalPeers(stores, me=ME)
    search = _search(stores, peers)
    plan = search.plan(stores[ME].prepare("comet tail"), limit=10, offset=0)
    page = await search.search(plan)
    urls = [r.url for r in page.rows]
    assert urls[0] == "http://alice.example/comets.html"
    assert "http://bob.example/comet-hunting.html" in urls[:3]
    assert ALICE in page.tally.answered and not page.tally.silent
    best = page.rows[0]
    assert best.peers == [ALICE] and "<mark>" in best.content_html.lower()
    assert all(r.content for r in page.rows if r.url.startswith("http://bob.example/"))


async def test_peers_chosen_are_the_owners_of_the_best_candidates(
    stores: dict[str, IndexStore],
) -> None:
    peers = LocalPeers(stores, me=ME)
    search = _search(stores, peers)
    plan = search.plan(stores[ME].prepare("comet"), limit=10, offset=0)

    ranking = rank(plan, await peers.shards(plan.terms, QueryTally()), DEFAULT_SETTINGS)
    choice = choose(plan, ranking, DEFAULT_SETTINGS)
    assert set(choice.owners) <= {ALICE, BOB} and choice.owners
    assert ME not in choice.shown  # this node has no page about comets
    assert sum(len(v) for v in choice.shown.values()) == len(ranking.ranked[:10])


async def test_a_silent_peer_is_named_and_the_others_still_answer(
    stores: dict[str, IndexStore],
) -> None:
    peers = LocalPeers(stores, me=ME)
    search = _search(stores, peers)
    plan = search.plan(stores[ME].prepare("comet tail"), limit=10, offset=0)
    first = await search.search(plan)  # shards collected while ALICE still answers
    assert first.rows[0].peers == [ALICE]
    peers.down.add(ALICE)
    page = await search.search(plan)
    assert ALICE in page.tally.silent
    bob = next(r for r in page.rows if r.url == "http://bob.example/comet-hunting.html")
    assert bob.content  # BOB answered as an owner, with its snippet
    # ALICE's pages are still known from the shards other holders keep: shown, unsnipped.
    alice = [r for r in page.rows if ALICE in r.peers]
    assert alice and all(not r.content for r in alice)


async def test_a_dead_owners_best_page_keeps_its_place_among_answered_pages() -> None:
    """Owners' exact scores carry proximity and meaning, which shards cannot: a silent
    owner's pages, scored from shards alone, sank below every answering owner's results
    (after SIGKILL of 2 of 5 nodes the survivors kept 55% of MRR@10). They are put on the
    answering owners' scale instead."""
    tails = "the comet tail points away from the sun "
    pages = {
        ME: [_page("me.example", "soil", "Soil", "soil compost " * 3)],
        ALICE: [_page("alice.example", "tails", "Comet tails", tails * 12)],
        BOB: [
            _page("bob.example", "log", "Observing log", tails * 2 + "telescope night sky " * 5),
            _page("bob.example", "bread", "Sourdough bread", "flour water salt " * 10),
        ],
    }
    stores = {node: await committed_store(docs) for node, docs in pages.items()}
    try:
        peers = LocalPeers(stores, me=ME)
        search = _search(stores, peers)
        plan = search.plan(stores[ME].prepare("comet tail points away"), limit=10, offset=0)
        alive = await search.search(plan)
        assert [r.url for r in alive.rows[:2]] == [
            "http://alice.example/tails.html",
            "http://bob.example/log.html",
        ]
        peers.down.add(ALICE)
        page = await search.search(plan)
        assert ALICE in page.tally.silent
        assert page.rows[0].url == "http://alice.example/tails.html", page.rows
    finally:
        for store in stores.values():
            await store.stop()


async def test_one_publisher_claiming_every_page_has_a_word_cannot_erase_it(
    stores: dict[str, IndexStore],
) -> None:
    """A liar's shard says "comet" is on all of its 10^8 pages: counted in full, the word's
    IDF fell to ~0 for the whole network and comet pages ranked like any other. Now no
    publisher counts for more than STAT_SHARE_CAP times the others together."""
    peers = LocalPeers(stores, me=ME)
    search = _search(stores, peers)
    plan = search.plan(stores[ME].prepare("comet"), limit=10, offset=0)
    merged = await peers.shards(plan.terms, QueryTally())
    honest = rank(plan, merged, DEFAULT_SETTINGS).scorer.idfs[unit_key(("comet",))]
    fields = len(SHARD_FIELDS)
    liar = TermShard("comet", 10**8, 10**8, (10**8,) * fields, ())
    lied = rank(plan, {"comet": {**merged["comet"], "dd" * 20: liar}}, DEFAULT_SETTINGS)
    idf = lied.scorer.idfs[unit_key(("comet",))]
    n = sum(c.n_docs for c in merged["comet"].values())
    # The most a node with STAT_SHARE_CAP times the network's pages, all with the word,
    # could honestly do to each field's IDF:
    for i, lowered in enumerate(idf):
        if honest[i]:
            df = sum(c.field_df[i] for c in merged["comet"].values())
            bound = bm25_idf(df + STAT_SHARE_CAP * n, (1 + STAT_SHARE_CAP) * n)
            assert lowered >= bound - 1e-9, (idf, honest)
    assert max(idf) > 0.1 and max(honest) > max(idf)


async def test_a_stranger_naming_someone_elses_page_cannot_retitle_it(
    stores: dict[str, IndexStore],
) -> None:
    """A liar's shard names ALICE's page with a title of its own and comes first: the
    first publisher to name a page used to supply its title. Now the one nearer the page's
    host key (the host's crawler) speaks for it."""
    url = "http://alice.example/comets.html"
    liar = next(f"{i:040x}" for i in range(1, 10_000) if speaks_for(ALICE, f"{i:040x}", url))
    peers = LocalPeers(stores, me=ME)
    plan = _search(stores, peers).plan(stores[ME].prepare("comet"), limit=10, offset=0)
    merged = await peers.shards(plan.terms, QueryTally())
    fields = len(SHARD_FIELDS)
    lie = TermShard("comet", 1, 5, (1,) * fields, (Posting(url, "Cheap pills", (9.0,) * fields),))
    ranking = rank(plan, {"comet": {liar: lie, **merged["comet"]}}, DEFAULT_SETTINGS)
    assert ranking.scorer.titles[url] == "Comets and their tails"
    assert ranking.scorer.owner[url] == ALICE


async def test_the_publisher_holding_every_word_is_asked_though_it_tops_no_terms_list(
    stores: dict[str, IndexStore],
) -> None:
    """A description's words are each some specialist page's strongest term, and the page
    that says all of them moderately is in no term's top list: asking only the owners of
    the best candidates missed its owner on 9% of the large corpus's queries. The
    publishers whose summaries say they hold every word broadly are asked too."""
    plan = _search(stores, LocalPeers(stores, me=ME)).plan(
        stores[ME].prepare("orbit thrust burn delta"), limit=10, offset=0
    )
    fields = len(SHARD_FIELDS)
    specialists = [f"{i:040x}" for i in range(1, 2 * len(plan.terms) + 1)]  # two a word
    carol = "dd" * 20
    merged: dict[str, dict[str, TermShard]] = {}
    for n, term in enumerate(plan.terms):
        weak = [
            Posting(f"http://carol.example/{term}{i}.html", f"note {i}", (0.1,) * fields)
            for i in range(50)
        ]
        merged[term] = {carol: TermShard(term, 400, 1000, (400,) * fields, tuple(weak))}
        for specialist in specialists[2 * n : 2 * n + 2]:
            url = f"http://{specialist[-1]}.example/{term}.html"
            strong = Posting(url, term, (5.0,) * fields)
            merged[term][specialist] = TermShard(term, 3, 1000, (3,) * fields, (strong,))
    assert len(specialists) > DEFAULT_SETTINGS.owners_asked
    ranking = rank(plan, merged, DEFAULT_SETTINGS)
    assert {ranking.scorer.owner[u] for u in ranking.ranked[:8]} == set(specialists)
    choice = choose(plan, ranking, DEFAULT_SETTINGS)
    assert carol in choice.owners
    every_slot = replace(DEFAULT_SETTINGS, owner_belief_share=0.0)
    assert len(choose(plan, ranking, every_slot).owners) == DEFAULT_SETTINGS.owners_asked
    by_candidates_only = replace(DEFAULT_SETTINGS, owners_by_candidates=6)
    assert carol not in choose(plan, ranking, by_candidates_only).owners


async def test_a_publisher_whose_summaries_barely_match_the_query_is_not_asked(
    stores: dict[str, IndexStore],
) -> None:
    """Each owner asked is a search on someone's home server; on the 5-node small network
    every query asked all five, though a publisher with one of the words on one page in a
    thousand (CORI belief just above its floor) holds the answer only by accident. It is
    asked only if its belief is within ``owner_belief_share`` of the best publisher's."""
    plan = _search(stores, LocalPeers(stores, me=ME)).plan(
        stores[ME].prepare("orbit thrust burn delta"), limit=10, offset=0
    )
    fields = len(SHARD_FIELDS)
    specialist, carol, faint = "aa" * 20, "dd" * 20, "ee" * 20
    merged: dict[str, dict[str, TermShard]] = {}
    for n, term in enumerate(plan.terms):
        weak = Posting(f"http://carol.example/{term}.html", term, (0.1,) * fields)
        merged[term] = {carol: TermShard(term, 400, 1000, (400,) * fields, (weak,))}
        if n == 0:
            strong = Posting(f"http://a.example/{term}.html", term, (5.0,) * fields)
            merged[term][specialist] = TermShard(term, 3, 1000, (3,) * fields, (strong,))
            rare = Posting(f"http://e.example/{term}.html", term, (0.01,) * fields)
            merged[term][faint] = TermShard(term, 1, 1000, (1,) * fields, (rare,))
    ranking = rank(plan, merged, DEFAULT_SETTINGS)
    everyone = choose(plan, ranking, replace(DEFAULT_SETTINGS, owner_belief_share=0.0))
    assert set(everyone.owners) == {specialist, carol, faint}
    likely = choose(plan, ranking, replace(DEFAULT_SETTINGS, owner_belief_share=0.7))
    assert specialist in likely.owners and carol in likely.owners
    assert faint not in likely.owners


async def test_a_dead_publishers_page_whose_title_says_what_is_asked_ranks_first() -> None:
    """Most of what an answering owner adds to a shard estimate is its semantic re-rank;
    a silent publisher's pages get their shard titles' meaning instead, so of two pages
    with nearly the same words the one whose title is about the query comes first."""
    words = "the comet tail points away from the sun "
    pages = {
        ME: [_page("me.example", "soil", "Soil", "soil compost " * 3)],
        ALICE: [
            _page("alice.example", "wind", "Why solar wind blows icy debris outward", words * 4),
            _page("alice.example", "bread", "Sourdough bread and flour", words * 4 + "comet"),
        ],
        BOB: [_page("bob.example", "log", "Observing log", words + "telescope night " * 5)],
    }
    stores = {node: await committed_store(docs) for node, docs in pages.items()}
    embedder = Embedder.load()
    try:
        peers = LocalPeers(stores, me=ME)
        peers.down.add(ALICE)
        plain = _search(stores, peers)
        plan = plain.plan(stores[ME].prepare("comet tail points away"), limit=10, offset=0)
        blind = [r.url for r in (await plain.search(plan)).rows]
        assert blind.index("http://alice.example/bread.html") < blind.index(
            "http://alice.example/wind.html"
        )  # by their words alone
        seeing = replace_meaning(plain, embedder.similarities)
        urls = [r.url for r in (await seeing.search(plan)).rows]
        assert urls.index("http://alice.example/wind.html") < urls.index(
            "http://alice.example/bread.html"
        )
    finally:
        for store in stores.values():
            await store.stop()


def replace_meaning(
    search: FederatedSearch, meaning: Callable[[str, Sequence[str]], list[float]]
) -> FederatedSearch:
    return FederatedSearch(
        local=search.local,
        peers=search.peers,
        settings=search.settings,
        analyze=search.analyze,
        published=lambda: True,
        meaning=meaning,
    )


async def test_owners_snippet_only_what_may_be_shown_and_every_shown_row_has_one(
    stores: dict[str, IndexStore],
) -> None:
    """Snippets were half an owner's work, for ten hits of which few are shown: an owner
    makes them for the hits the shards put on the first page plus ``snippet_margin``, and
    a row that reaches the page without one is asked for afterwards."""
    peers = LocalPeers(stores, me=ME)
    answers = []
    ask = peers.search

    async def recorded(*args: Any, **kwargs: Any) -> Any:
        answer = await ask(*args, **kwargs)
        answers.append(answer)
        return answer

    peers.search = recorded  # type: ignore[method-assign]
    search = _search(stores, peers)
    # No snippets asked of anyone up front: every shown row must come from the second ask.
    search.settings = replace(DEFAULT_SETTINGS, snippet_margin=0, snippet_pages=0)
    plan = search.plan(stores[ME].prepare("comet"), limit=3, offset=0)
    page = await search.search(plan)
    returned = [r for a in answers if a is not None for r in a.results]
    assert len(returned) >= 2 and not any(r.content for r in returned)
    assert len(page.rows) >= 2 and all(r.content for r in page.rows[:3]), page.rows[:3]
