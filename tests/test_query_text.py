"""A search box that never refuses text (issue #11): whatever a person types is searched.

Odd text (apostrophes, spaced hyphens, ``C++``, ``a<b``, unbalanced quotes, ``AND`` as a
word, emoji, NUL, 500+ characters, punctuation only) parses, builds and runs; the query
language (``"phrase"``, ``site:``, ``-site:``, ``-word``, ``+word``, ``title:``) still
works. Unit tests run on a real tantivy index in RAM; the HTTP tests on the session's
crawled node (a real ``rhizome node`` on loopback).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import tantivy
from conftest import SITE_INDEXABLE, NodeHandle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rhizome.index import IndexDoc, IndexStore
from rhizome.index.query import (
    MAX_QUERY_CHARS,
    PROXIMITY_BOOST,
    PROXIMITY_SLOP,
    parse_user_query,
    query_units,
)
from rhizome.index.schema import FIELD_BOOSTS, TEXT_FIELDS
from tests.test_federated_ranking import committed_store

pytestmark = pytest.mark.timeout(300)

DOCS = [
    IndexDoc(
        url="http://a.example/moon",
        title="Moon phases",
        body="the moon and the sun rise over the hills",
    ),
    IndexDoc(
        url="http://a.example/cpp",
        title="C++ guide",
        body="std::vector in C++ and Python's configuration information",
    ),
    IndexDoc(url="http://b.example/sun", title="Sun", body="solar flares and the sun"),
    IndexDoc(
        url="http://docs.b.example/installer",
        title="Build a dumb installer",
        body="a simple archive of files",
    ),
    IndexDoc(
        url="http://c.example/logic",
        title="Logic gates",
        body="AND OR NOT gates: x=1 when a<b",
    ),
]

LONG_TEXT = "telescope " * 60 + "supercalifragilistic" * 30  # 600 + 600 characters

# Every class of text the issue names; each must search, none may raise.
ODD_QUERIES = [
    "Python's configuration information",
    "Build a dumb installer - a simple archive of files",
    "C++",
    "a<b",
    "x=1",
    "std::vector",
    '"unbalanced quote',
    'ring "of fire',
    "(moon",
    "moon)",
    "[moon",
    "{moon} ^2 ~3",
    "a:b:c(",
    "nosuchfield:moon",
    "title:*",
    "title:",
    "moon AND sun",
    "AND",
    "OR NOT",
    "and or not",
    "NOT moon",
    "moon OR",
    "&& || !",
    "🌙 moon 🌞",
    "moon\x00light",
    "\x00",
    "\ud83d",  # a lone surrogate (it cannot reach HTTP, but may reach the index API)
    "tab\tnew\nline\r\x1b[31m",
    LONG_TEXT,
    "x" * 600,
    "!!!",
    "---",
    "-",
    "+",
    '""',
    "   ",
    "",
    "site:a site:b site:c site:d site:e site:f site:g site:h site:i moon",
    "site:",
    "-site:",
    'site:"a.example" moon',
    "\\ / \\moon\\",
    "-moon",
    "--moon ++sun",
    "<script>alert(1)</script>",
]
NO_WORDS = ["!!!", "---", "-", "+", '""', "   ", "", "\x00", "&& || !", "title:*"]


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def store(loop: asyncio.AbstractEventLoop) -> Iterator[IndexStore]:
    store = loop.run_until_complete(committed_store(DOCS))
    yield store
    loop.run_until_complete(store.stop())


def urls(loop: asyncio.AbstractEventLoop, store: IndexStore, q: str) -> list[str]:
    page = loop.run_until_complete(store.search(q, limit=20))
    return [hit.url.removeprefix("http://") for hit in page.hits]


# --- odd text never raises -------------------------------------------------------------------


@pytest.mark.parametrize("q", ODD_QUERIES, ids=lambda q: repr(q)[:40])
def test_odd_text_is_searched(loop: asyncio.AbstractEventLoop, store: IndexStore, q: str) -> None:
    page = loop.run_until_complete(store.search(q, limit=10))
    assert page.total >= len(page.hits)
    snippets = loop.run_until_complete(store.snippets(q, [d.url for d in DOCS]))
    assert set(snippets) == {d.url for d in DOCS}
    assert isinstance(store.query_units(q), list)
    assert len(parse_user_query(q).text) <= MAX_QUERY_CHARS


@pytest.mark.parametrize("q", NO_WORDS, ids=repr)
def test_text_without_words_finds_nothing(
    loop: asyncio.AbstractEventLoop, store: IndexStore, q: str
) -> None:
    page = loop.run_until_complete(store.search(q))
    assert (page.total, page.hits) == (0, [])
    assert store.query_units(q) == []


@pytest.mark.parametrize(
    ("q", "first"),
    [
        ("Python's configuration information", "a.example/cpp"),
        ("Build a dumb installer - a simple archive of files", "docs.b.example/installer"),
        ("C++ guide", "a.example/cpp"),
        ("std::vector", "a.example/cpp"),
        ("x=1", "c.example/logic"),
        ("a<b", "c.example/logic"),
        ('"unbalanced moon', "a.example/moon"),
        ("(moon", "a.example/moon"),
        ("🌙 moon", "a.example/moon"),
        ("moon\x00phases", "a.example/moon"),
        ("nosuchfield:gates", "c.example/logic"),
        ("gates NOT", "c.example/logic"),
        (LONG_TEXT, None),
    ],
)
def test_odd_text_finds_what_its_words_say(
    loop: asyncio.AbstractEventLoop, store: IndexStore, q: str, first: str | None
) -> None:
    found = urls(loop, store, q)
    assert (found[0] if found else None) == first, found


def test_operators_are_words(loop: asyncio.AbstractEventLoop, store: IndexStore) -> None:
    # "and" is in four pages: as an operator, "moon AND sun" would want both words.
    assert set(urls(loop, store, "AND")) == {
        "a.example/moon",
        "a.example/cpp",
        "b.example/sun",
        "c.example/logic",
    }
    assert urls(loop, store, "NOT")[0] == "c.example/logic"
    assert ("or",) in store.query_units("this OR that")
    assert "c.example/logic" in urls(loop, store, "moon OR gates")


def test_long_text_is_cut_at_a_word_boundary() -> None:
    parsed = parse_user_query(LONG_TEXT)
    assert len(parsed.text) <= MAX_QUERY_CHARS
    assert parsed.text.split() == ["telescope"] * 51  # 51 whole words fit, none cut
    one_word = parse_user_query("x" * 600)
    assert one_word.text == "x" * MAX_QUERY_CHARS  # no boundary to cut at: cut the word


def test_lone_quote_is_dropped_and_balanced_ones_kept() -> None:
    parsed = parse_user_query('"the moon" and "sun')
    assert [c.text for c in parsed.clauses] == ["the moon", "and", "sun"]


def test_many_site_filters_keep_the_first_ones() -> None:
    parsed = parse_user_query(" ".join(f"site:h{i}.example" for i in range(12)) + " moon")
    assert parsed.sites == tuple(f"h{i}.example" for i in range(8))
    assert [c.text for c in parsed.clauses] == ["moon"]


# --- the query language keeps working --------------------------------------------------------


def test_phrases(loop: asyncio.AbstractEventLoop, store: IndexStore) -> None:
    assert set(urls(loop, store, '"the sun"')) == {"a.example/moon", "b.example/sun"}
    assert urls(loop, store, '"sun the"') == []
    assert urls(loop, store, '"simple archive"') == ["docs.b.example/installer"]


def test_site_filters(loop: asyncio.AbstractEventLoop, store: IndexStore) -> None:
    assert set(urls(loop, store, "site:b.example")) == {
        "b.example/sun",
        "docs.b.example/installer",
    }
    assert urls(loop, store, "sun site:b.example") == ["b.example/sun"]
    assert urls(loop, store, "sun site:http://B.example/path") == ["b.example/sun"]
    assert urls(loop, store, "sun -site:b.example") == ["a.example/moon"]
    assert set(urls(loop, store, "-site:a.example")) == {
        "b.example/sun",
        "docs.b.example/installer",
        "c.example/logic",
    }
    assert urls(loop, store, "site:b.example !!!") != []  # no words: the filter alone


def test_excluded_and_required_words(loop: asyncio.AbstractEventLoop, store: IndexStore) -> None:
    assert set(urls(loop, store, "sun")) == {"a.example/moon", "b.example/sun"}
    assert urls(loop, store, "sun -moon") == ["b.example/sun"]
    assert urls(loop, store, 'sun -"moon and"') == ["b.example/sun"]
    assert urls(loop, store, "+solar moon") == ["b.example/sun"]
    assert urls(loop, store, "moon -sun") == []
    assert set(urls(loop, store, "-moon")) == {d.url.removeprefix("http://") for d in DOCS[1:]}
    # A spaced hyphen excludes nothing.
    assert "a.example/moon" in urls(loop, store, "sun - moon")
    assert ("moon",) not in store.query_units("sun -moon")


def test_title_field(loop: asyncio.AbstractEventLoop, store: IndexStore) -> None:
    assert set(urls(loop, store, "sun")) == {"a.example/moon", "b.example/sun"}
    assert urls(loop, store, "title:sun") == ["b.example/sun"]
    assert urls(loop, store, 'title:"moon phases"') == ["a.example/moon"]
    assert urls(loop, store, "sun -title:sun") == ["a.example/moon"]
    assert store.query_units("title:sun") == [("sun",)]


def test_plain_words_score_as_tantivys_parser_would(
    loop: asyncio.AbstractEventLoop, store: IndexStore
) -> None:
    """The federated ranker assumes the local query is tantivy's own reading of the words
    (OR of the words, boosted ×1.5 when all occur, plus the words as a boosted sloppy
    phrase): quoting each clause changes no score."""
    index, searcher = store.index, store.index.searcher()
    for q in ("the sun", "moon sun hills", "simple archive files", "and"):

        def parse(conj: bool, q: str = q) -> tantivy.Query:
            return index.parse_query(
                q, list(TEXT_FIELDS), field_boosts=FIELD_BOOSTS, conjunction_by_default=conj
            )

        parts = [
            (tantivy.Occur.Must, parse(False)),
            (tantivy.Occur.Should, tantivy.Query.boost_query(parse(True), 1.5)),
        ]
        if len(q.split()) > 1:
            near = parse(False, f'"{q}"~{PROXIMITY_SLOP}')
            parts.append((tantivy.Occur.Should, tantivy.Query.boost_query(near, PROXIMITY_BOOST)))
        reference = tantivy.Query.boolean_query(parts)
        query, _ = parse_user_query(q).build(index, store.schema)
        want = [(round(s, 5), a.doc) for s, a in searcher.search(reference, 10).hits]
        got = [(round(s, 5), a.doc) for s, a in searcher.search(query, 10).hits]
        assert got == want and got, q


# --- query_units agrees with what build() searches for ---------------------------------------

_TERM = re.compile(r'Term\(field=(\d+), type=Str, "([^"\\]*)"\)')


def searched_tokens(store: IndexStore, q: str) -> set[str]:
    """The tokens of the text query build() makes, as tantivy prints them (escaped when
    not ASCII, so only ASCII tokens compare)."""
    _query, text_query = parse_user_query(q).build(store.index, store.schema)
    if text_query is None:
        return set()
    return {m.group(2) for m in _TERM.finditer(str(text_query))}


def unit_tokens(store: IndexStore, q: str) -> set[str]:
    return {t for unit in store.query_units(q) for t in unit}


@pytest.mark.parametrize("q", ODD_QUERIES, ids=lambda q: repr(q)[:40])
def test_units_are_the_searched_words(store: IndexStore, q: str) -> None:
    assert searched_tokens(store, q) == unit_tokens(store, q)


# --- arbitrary text ---------------------------------------------------------------------------

SYNTAX = [
    '"',
    "+",
    "-",
    "site:",
    "-site:",
    "title:",
    "body:",
    "AND",
    " OR ",
    "NOT ",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "^",
    "~",
    "*",
    "\\",
    ":",
    " ",
    "moon",
    "sun",
    "\x00",
    " TO ",
]
# Unicode text (hypothesis leaves surrogates out by default; control characters are in),
# mixed with pieces of tantivy's grammar and ours so the parser's corners are reached.
ANY_TEXT = st.lists(st.one_of(st.text(), st.sampled_from(SYNTAX)), max_size=16).map("".join)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(q=ANY_TEXT)
def test_any_text_parses_builds_and_searches(
    loop: asyncio.AbstractEventLoop, store: IndexStore, q: str
) -> None:
    parsed = parse_user_query(q)
    query, _snippet_query = parsed.build(store.index, store.schema)
    store.index.searcher().search(query, 10, count=True)
    page = loop.run_until_complete(store.search(q, limit=5))
    assert page.total >= len(page.hits)
    assert len(parsed.text) <= MAX_QUERY_CHARS
    units = query_units(parsed.free_text, store.analyzer.analyze)
    tokens = {t for unit in units for t in unit}
    if all(t.isascii() for t in tokens):  # tantivy prints other tokens escaped
        assert searched_tokens(store, q) == tokens


# --- over HTTP, on a real node ----------------------------------------------------------------


def assert_searched(node: NodeHandle, q: str) -> None:
    for scope in ("local", "network"):
        resp = node.get("/api/search", q=q, scope=scope)
        assert resp.status == 200, (q, scope, resp.text[:300])
        assert resp.content_type == "application/json"
        body = resp.json()
        assert isinstance(body["results"], list) and body["scope"] == scope
    page = node.get("/", q=q)
    assert page.status == 200, (q, page.text[:300])
    assert page.content_type == "text/html"
    assert page.text.startswith("<!doctype html>")


@pytest.mark.parametrize(
    "q", [q for q in ODD_QUERIES if "\ud83d" not in q], ids=lambda q: repr(q)[:40]
)
def test_odd_text_over_http(crawled_node: NodeHandle, q: str) -> None:
    assert_searched(crawled_node, q)


def test_query_language_over_http(crawled_node: NodeHandle) -> None:
    every = len(SITE_INDEXABLE)
    assert crawled_node.search("backyard")["number_of_results"] == every
    assert crawled_node.search("backyard AND")["number_of_results"] == every
    assert crawled_node.search("backyard site:127.0.0.1")["number_of_results"] == every
    assert crawled_node.search("backyard -site:127.0.0.1")["number_of_results"] == 0
    assert crawled_node.search("!!!")["number_of_results"] == 0
    title = crawled_node.search("title:telescope")["results"]
    assert title and all("telescope" in r["title"].lower() for r in title)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(q=ANY_TEXT)
def test_any_text_over_http(crawled_node: NodeHandle, q: str) -> None:
    # Empty and whitespace-only text too: only a missing q is a 400.
    assert_searched(crawled_node, q)


class RefusingIndex:
    """A tantivy index whose parser refuses some syntax: the paths build() takes when
    tantivy's grammar rejects what the plan hands it (not seen with quoted clauses)."""

    def __init__(self, index: tantivy.Index, refuse: Callable[[str], bool]) -> None:
        self.index, self.refuse = index, refuse

    def parse_query(self, syntax: str, *args: Any, **kwargs: Any) -> tantivy.Query:
        if self.refuse(syntax):
            raise ValueError(f"refused: {syntax}")
        return self.index.parse_query(syntax, *args, **kwargs)


@pytest.mark.parametrize(
    ("q", "refuse", "expected"),
    [
        # The whole refused: assembled clause by clause, the same pages.
        ("sun hills", lambda s: " " in s, {"a.example/moon", "b.example/sun"}),
        ("+solar moon", lambda s: " " in s, {"b.example/sun"}),
        # A field refused: its words searched in every field instead.
        ("title:moon", lambda s: s.startswith("title:"), {"a.example/moon"}),
        ("sun -title:sun", lambda s: "title:" in s, set()),
        # Everything refused: nothing matches, nothing raises.
        ("moon", lambda s: True, set()),
    ],
)
def test_a_refused_parse_falls_back_to_the_words(
    store: IndexStore, q: str, refuse: Callable[[str], bool], expected: set[str]
) -> None:
    refusing = cast(tantivy.Index, RefusingIndex(store.index, refuse))
    query, _ = parse_user_query(q).build(refusing, store.schema)
    searcher = store.index.searcher()
    found = {
        str(searcher.doc(a).get_first("url")).removeprefix("http://")
        for _, a in searcher.search(query, 10).hits
    }
    assert found == expected


def test_control_characters_before_long_text_do_not_empty_it() -> None:
    assert parse_user_query("\x00" + "x" * 600).text == "x" * MAX_QUERY_CHARS
    assert parse_user_query("\x00\x1b moon\x7f").text == "moon"
