"""Snippets of long pages: the fragment shows the query's words wherever in the page they
stand, marked, also when only a window of the page is handed to tantivy."""

from __future__ import annotations

from test_federated_ranking import committed_store

from index import IndexDoc
from index.snippets import LONG_BODY_CHARS

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
