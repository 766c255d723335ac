"""Snippets of long pages: the fragment shows the query's words wherever in the page they
stand, marked, also when only a window of the page is handed to tantivy."""

from __future__ import annotations

from test_federated_ranking import committed_store

from rhizome.federation.answer import answer_locally
from rhizome.index import IndexDoc
from rhizome.index.snippets import LONG_BODY_CHARS

FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit " * 400  # ~22k chars


async def test_long_pages_are_snippeted_where_the_words_are() -> None:
    deep = FILLER + " the reindexing of a clustered table happens nightly " + FILLER
    # "Happiness" analyses to "happi", which is no prefix of what the page says: the
    # window finder misses it and the whole page is searched instead.
    stem_unlike = FILLER + " their happiness was measured " + FILLER
    split = FILLER + " a clustered storage " + FILLER[:3_000] + " reindexing of tables " + FILLER
    assert min(len(deep), len(stem_unlike), len(split)) > LONG_BODY_CHARS
    store = await committed_store(
        [
            IndexDoc(url="http://a.example/deep", title="Deep", body=deep),
            IndexDoc(url="http://a.example/happy", title="Happy", body=stem_unlike),
            IndexDoc(url="http://a.example/split", title="Split", body=split),
        ]
    )
    try:
        page = await store.search("reindexing clustered", limit=5)
        snippets = {hit.url: hit.snippet for hit in page.hits}
        deep_snip = snippets["http://a.example/deep"]
        marked = [deep_snip.text[s:e].lower() for s, e in deep_snip.highlights]
        assert "reindexing" in marked and "clustered" in marked, deep_snip
        assert "nightly" in deep_snip.text
        # Words far apart: the snippet still shows one of them, marked.
        split_snip = snippets["http://a.example/split"]
        assert split_snip.highlights, split_snip

        happy = (await store.search("happiness", limit=1)).hits[0].snippet
        assert [happy.text[s:e] for s, e in happy.highlights] == ["happiness"], happy
        assert "<mark>happiness</mark>" in happy.to_html()
    finally:
        await store.stop()


async def test_an_owner_makes_snippets_for_pages_the_querier_names() -> None:
    """A querying node names the pages the shards put on its first page; an owner whose
    own search ranks one of them below its answer's depth still sends its snippet, so the
    page does not show it as a bare title. Pages it does not hold are ignored."""
    pages = [
        IndexDoc(url=f"http://a.example/{i}", title=f"Lakes {i}", body="lakes " * (20 - i))
        for i in range(8)
    ]
    store = await committed_store(pages)
    try:
        named = ["http://a.example/7", "http://a.example/0", "http://elsewhere.example/x"]
        page, weights, snippets = await answer_locally(store, "lakes", 2, 0, named)
        assert [h.url for h in page.hits] == ["http://a.example/0", "http://a.example/1"]
        assert set(weights.weights) == {"http://a.example/0", "http://a.example/1"}
        assert set(snippets) == {"http://a.example/7"}  # returned pages carry their own
        assert "<mark>lakes</mark>" in snippets["http://a.example/7"].to_html()
    finally:
        await store.stop()


async def test_snippets_of_pages_with_non_ascii_text_keep_their_words_marked() -> None:
    """Long pages are searched for the query's words as UTF-8 bytes: characters before the
    words (accents, dashes, the pilcrows of generated docs) must not shift the marks."""
    body = ("¶ café — naïve résumé " * 300) + " the Reindexing of clustered tables " + FILLER
    store = await committed_store([IndexDoc(url="http://a.example/u", title="U", body=body)])
    try:
        snip = (await store.search("reindexing clustered", limit=1)).hits[0].snippet
        marked = [snip.text[s:e].lower() for s, e in snip.highlights]
        assert "reindexing" in marked and "clustered" in marked, snip
    finally:
        await store.stop()
