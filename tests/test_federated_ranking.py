"""Federated scores equal the scores of one index over all pages.

Two real tantivy indexes (two publishers) with different page lengths and a third index
over the union (the centralized baseline). A federated query — shards of the query's terms
from both publishers, the owners' exact weights for their pages — must score every page as
the union index does. This fails if global IDF is not used, if each publisher's own average
field lengths (anchor text included) leak into the scores, if multi-token words ("1.3.6")
are not scored as phrases, or if a searched field (url words) is left out of the shards.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rhizome.index.query
from rhizome.federation import ranking
from rhizome.federation.ranking import GlobalScorer, title_bonus
from rhizome.index import SHARD_FIELDS, IndexDoc, IndexStore, TermShard, build_analyzer
from rhizome.index.bm25 import renormalize, renormalize_array
from rhizome.index.semantic import Embedder
from rhizome.index.shards import UNRESTRICTED_DF

WORDS = (
    "release notes django python sqlite index query cache table vacuum backup logging "
    "handler config model field form view template router signal commit branch merge"
).split()
QUERIES = (
    "release notes",
    "django 1.3.6 release notes",
    "sqlite vacuum",
    "logging handler config",
    "merge branch",
    "python 3.2",
    "table index query",
    "django.core.validators",
)
# Scores agree up to float rounding (the federated side quantises field lengths as tantivy
# does; 4% is what exact token counts gave, so this also catches a lost quantisation).
TOLERANCE = 0.002
FIELDS = len(SHARD_FIELDS)
# With the proximity phrase the BM25 arithmetic stays exact, but tantivy's own count of
# sloppy matches is not: the same page (same text) got 9 matches of "sqlite vacuum"~10 in
# one index and 10 in another (9 of 40 pages differed; 23 of 36 for a three-word phrase,
# 7 vs 4 at worst), deterministic within each index. That moved pages' scores by up to
# 13% here. Scores with the phrase are held to this, the BM25 part (phrase off) to
# TOLERANCE.
PROXIMITY_TOLERANCE = 0.2


def _pages(rng: random.Random, host: str, count: int, *, short: bool) -> list[IndexDoc]:
    pages = []
    for i in range(count):
        version = f"{rng.randint(1, 3)}.{rng.randint(1, 9)}.{rng.randint(1, 9)}"
        title_words = rng.sample(WORDS, 2 if short else 6)
        body_words = [rng.choice(WORDS) for _ in range(rng.randint(5, 20) if short else 300)]
        if rng.random() < 0.3:
            body_words.insert(rng.randrange(len(body_words)), "django.core.validators")
        pages.append(
            IndexDoc(
                url=f"http://{host}/{'/'.join(rng.sample(WORDS, 2))}/{i}.html",
                title=f"{' '.join(title_words)} {version}",
                description=" ".join(rng.sample(WORDS, 4)) if i % 3 else "",
                body=" ".join(body_words),
                anchors=[" ".join(rng.sample(WORDS, 2 if short else 5)) for _ in range(i % 4)],
            )
        )
    return pages


async def committed_store(pages: list[IndexDoc], embedder: Embedder | None = None) -> IndexStore:
    store = IndexStore(None, commit_interval=0.05, embedder=embedder)
    await store.start()
    for page in pages:
        await store.submit(page)
    for _ in range(200):
        if store.num_docs == len(pages) and not store.pending:
            return store
        await asyncio.sleep(0.05)
    raise AssertionError("pages were not committed")


@pytest.fixture
async def stores() -> AsyncIterator[tuple[IndexStore, IndexStore, IndexStore]]:
    rng = random.Random(7)
    short = _pages(rng, "short.example", 60, short=True)
    long = _pages(rng, "long.example", 40, short=False)
    a, b, union = (
        await committed_store(short),
        await committed_store(long),
        await committed_store(short + long),
    )
    yield a, b, union
    for store in (a, b, union):
        await store.stop()


async def _federated_scores(
    publishers: dict[str, IndexStore], q: str, urls: list[str]
) -> dict[str, float]:
    any_store = next(iter(publishers.values()))
    query = any_store.prepare(q)
    units, near = query.units, query.near
    terms = list(dict.fromkeys(t for unit in units for t in unit))
    merged: dict[str, dict[str, TermShard]] = {t: {} for t in terms}
    for name, store in publishers.items():
        for shard in await store.term_shards(terms):
            merged[shard.term][name] = shard
    scorer = GlobalScorer(units, merged, near)
    scores = {}
    for store in publishers.values():
        answer = await store.term_weights(urls, units, near)
        for url in urls:
            if answer.weights.get(url):
                scores[url] = scorer.score(scorer.owner_weights(answer, url))
    return scores


@pytest.mark.parametrize("proximity", [False, True], ids=["bm25", "proximity"])
@pytest.mark.parametrize("q", QUERIES)
async def test_federated_scores_match_one_index_over_all_pages(
    stores: tuple[IndexStore, IndexStore, IndexStore],
    q: str,
    proximity: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not proximity:
        monkeypatch.setattr(rhizome.index.query, "PROXIMITY_BOOST", 0.0)
    a, b, union = stores
    central = await union.search(q, limit=10)
    assert central.hits, f"the fixture should match {q!r}"
    urls = [h.url for h in central.hits]
    federated = await _federated_scores({"a": a, "b": b}, q, urls)
    tolerance = PROXIMITY_TOLERANCE if a.prepare(q).near else TOLERANCE
    assert proximity or not a.prepare(q).near
    for hit in central.hits:
        assert federated.get(hit.url) == pytest.approx(hit.score, rel=tolerance), (q, hit.url)
    ranked = sorted(urls, key=lambda u: federated[u], reverse=True)
    # The same pages in the same order, up to ties within the tolerance.
    central_scores = {h.url: h.score for h in central.hits}
    for better, worse in itertools.pairwise(ranked):
        assert central_scores[better] >= central_scores[worse] * (1 - 2 * tolerance)


@pytest.mark.parametrize("q", QUERIES)
async def test_an_owners_answer_carries_the_weights_its_pages_have_when_asked_by_url(
    stores: tuple[IndexStore, IndexStore, IndexStore], q: str
) -> None:
    """An owner's search gives its hits' weights from the pages it just loaded, rare terms
    searched in the whole index; asked later by URL, the same pages weigh the same."""
    _a, _b, union = stores
    page, weights = await union.search_with_weights(q, limit=10)
    urls = [h.url for h in page.hits]
    assert urls, q
    query = union.prepare(q)
    by_url = await union.term_weights(urls, query.units, query.near)
    assert weights.weights == by_url.weights
    assert weights.lengths == by_url.lengths and set(weights.lengths) == set(urls)
    assert any(w for units in weights.weights.values() for w in units.values())


def test_the_fixture_has_rare_and_common_field_terms(
    stores: tuple[IndexStore, IndexStore, IndexStore],
) -> None:
    """Both ways of finding a term's weights run above: a whole-index search for a term
    rare in a field, a search restricted to the candidates for a common one."""
    searcher = stores[2].index.searcher()
    dfs = [searcher.doc_freq(f, t) for f in SHARD_FIELDS for t in ("releas", "vacuum", "django")]
    assert any(0 < df <= UNRESTRICTED_DF for df in dfs)
    assert any(df > UNRESTRICTED_DF for df in dfs)


@pytest.mark.parametrize("q", QUERIES)
async def test_one_pass_candidate_scores_equal_the_per_page_ones(
    stores: tuple[IndexStore, IndexStore, IndexStore], q: str
) -> None:
    """The querying node scores every candidate in one pass; it must agree with scoring
    each page's shard weights on its own (top-3 shards: most pages live on floors)."""
    a, b, _union = stores
    units = a.query_units(q)
    terms = list(dict.fromkeys(t for unit in units for t in unit))
    merged: dict[str, dict[str, TermShard]] = {t: {} for t in terms}
    for name, store in {"a": a, "b": b}.items():
        for shard in await store.term_shards(terms, top_k=3):
            merged[shard.term][name] = shard
    scorer = GlobalScorer(units, merged)
    fast = scorer.shard_scores()
    assert fast and set(fast) == set(scorer.candidates)
    for url in scorer.candidates:
        assert fast[url] == pytest.approx(scorer.score(scorer.shard_weights(url))), url
    # The next query with these terms scores the shards' columns as the first one made them.
    assert GlobalScorer(units, merged).shard_scores() == fast


@pytest.mark.parametrize("q", QUERIES)
async def test_an_owners_pages_scored_at_once_equal_the_page_by_page_scores(
    stores: tuple[IndexStore, IndexStore, IndexStore], q: str
) -> None:
    """The merge scores an owner's whole answer in one pass; it must agree with each
    page's own score, also for a page whose lengths the owner did not send (its weights
    are taken as they are) and one it sent no weights for."""
    a, b, _union = stores
    query = a.prepare(q)
    terms = list(dict.fromkeys(t for unit in query.units for t in unit))
    merged: dict[str, dict[str, TermShard]] = {t: {} for t in terms}
    for name, store in {"a": a, "b": b}.items():
        for shard in await store.term_shards(terms):
            merged[shard.term][name] = shard
    scorer = GlobalScorer(query.units, merged, query.near)
    page = await a.search(q, limit=20)
    urls = [h.url for h in page.hits]
    answer = await a.term_weights(urls, query.units, query.near)
    assert urls and any(answer.weights.get(u) for u in urls)
    answer.lengths.pop(urls[0], None)
    urls.append("http://nowhere.example/")
    each = [scorer.score(scorer.owner_weights(answer, u)) for u in urls]
    assert scorer.owner_scores(answer, urls) == pytest.approx(each, rel=1e-12)
    assert each[-1] == 0.0 and max(each) > 0.0


async def test_a_shard_keeps_its_key_when_only_the_averages_move() -> None:
    """A commit of unrelated pages shifts every field's average length and so every
    weight; the publisher must not take that for a change of every shard (it re-sent its
    whole index after each commit). A new page with the term does change the key."""
    from rhizome.index.shard_codec import content_key

    first = [
        IndexDoc(url=f"http://a.example/{i}", title=f"vacuum page {i}", body="vacuum " * (i + 1))
        for i in range(5)
    ]
    store = await committed_store(first)
    try:
        before = {s.term: s for s in await store.term_shards(["vacuum", "page"])}
        await store.submit(IndexDoc(url="http://a.example/x", title="other", body="word " * 500))
        await store.submit(IndexDoc(url="http://a.example/y", title="page y", body="zzz"))
        for _ in range(100):
            if store.num_docs == 7 and not store.pending:
                break
            await asyncio.sleep(0.05)
        after = {s.term: s for s in await store.term_shards(["vacuum", "page"])}
    finally:
        await store.stop()
    assert before["vacuum"].avgdl != after["vacuum"].avgdl
    assert before["vacuum"].postings != after["vacuum"].postings  # the weights moved
    assert content_key(before["vacuum"]) == content_key(after["vacuum"])
    assert content_key(before["page"]) != content_key(after["page"])  # a new page has it


def test_a_peers_huge_title_gets_its_bonus_but_is_not_remembered() -> None:
    """Titles come from peers, up to an owner answer's 2 MiB: the querier remembers the
    tokens of short titles only, so its title cache stays small whatever peers send."""
    analyze = build_analyzer().analyze
    long_title = "release notes " + "x" * 3_000_000
    before = ranking._remembered_tokens.cache_info().currsize
    # The run of x is past the analyzer's longest token: the title says "release notes".
    assert title_bonus(["releas", "note"], long_title, analyze) > 1.0
    assert title_bonus(["releas", "note"], "Release notes — of this test only", analyze) > 1.0
    assert ranking._remembered_tokens.cache_info().currsize <= before + 1
    cached = ranking._remembered_tokens.cache_parameters()["maxsize"]
    assert cached is not None and cached * ranking.CACHED_TITLE_CHARS <= 10_000_000


def test_exact_titles_get_the_title_bonus_and_near_duplicates_do_not() -> None:
    from rhizome.federation.ranking import EXACT_TITLE_BONUS, title_bonus
    from rhizome.index import build_analyzer

    analyze = build_analyzer().analyze
    query = analyze("Django 1.7 release notes")
    exact = "Django 1.7 release notes — Django 3.2.25 documentation"
    assert title_bonus(query, exact, analyze) == 1.0 + EXACT_TITLE_BONUS
    assert title_bonus(analyze("release notes django 1.7"), exact, analyze) > 1.0  # any order
    assert (
        title_bonus(query, "Django 1.7.8 release notes — Django 3.2.25 documentation", analyze)
        == 1.0
    )
    assert title_bonus(query, "Django 1.7 release notes and more", analyze) == 1.0
    assert title_bonus([], exact, analyze) == 1.0


# An average field length is unknown (0) or at least one token.
AVERAGES = st.one_of(st.just(0.0), st.floats(1.0, 500.0))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.floats(0.0, 7.0), min_size=FIELDS, max_size=FIELDS),
            st.lists(st.integers(0, 3000), min_size=FIELDS, max_size=FIELDS),
            st.lists(AVERAGES, min_size=FIELDS, max_size=FIELDS),
        ),
        min_size=1,
        max_size=20,
    ),
    st.lists(AVERAGES, min_size=FIELDS, max_size=FIELDS),
)
def test_postings_rescaled_all_at_once_equal_the_one_by_one_rescaling(
    rows: list[tuple[list[float], list[int], list[float]]], avgdl_to: list[float]
) -> None:
    """The querier rescales a query's postings to the network's averages in one array
    operation; it must give what the per-posting formula gives, unknown lengths and
    weights at the ceiling included."""
    weights = np.array([w for w, _dl, _a in rows])
    lengths = np.array([dl for _w, dl, _a in rows], dtype=np.float64)
    avgdl_from = np.array([a for _w, _dl, a in rows])
    together = renormalize_array(weights, lengths, avgdl_from, avgdl_to)
    for got, (w, dl, a) in zip(together, rows, strict=True):
        assert list(got) == pytest.approx(renormalize(w, dl, a, avgdl_to), rel=1e-9, abs=1e-12)
