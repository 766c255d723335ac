"""An owner's re-rank reads each page's stored vector; what it compares must be the
meaning of the page's text, and a page without a usable vector is left as it was. The
query's vector comes from the querier when it sends one, in a wire form only a vector
passes for."""

from __future__ import annotations

import numpy as np
import pytest

from rhizome.index import IndexDoc
from rhizome.index.semantic import (
    DIMENSIONS,
    Embedder,
    page_text,
    parse_vector,
    shared_vector,
    vector_text,
)
from tests.test_federated_ranking import committed_store


def test_stored_page_vectors_compare_to_a_query_like_their_texts_do() -> None:
    embedder = Embedder.load()
    texts = [
        page_text("Comets", "a comet's tail points away from the sun"),
        page_text("Bread", "sourdough needs flour, water and time"),
    ]
    stored = embedder.page_vectors(texts)
    query = "why does the tail of a comet face away from the sun"
    found = embedder.similarities_to(
        embedder.query_vector(query), [stored[0], None, b"short", stored[1]]
    )
    direct = embedder.similarities(query, texts)
    assert found[1] is None and found[2] is None  # none stored, or not a vector
    assert found[0] == pytest.approx(direct[0], abs=2e-3)  # stored as float16
    assert found[3] == pytest.approx(direct[1], abs=2e-3)
    assert found[0] > found[3]


def test_a_query_vector_crosses_the_wire_and_nothing_else_passes_for_one() -> None:
    """What a querier sends its owners reads back as the same direction, of unit length;
    a wrong length, NaN, a zero vector or text that is not base64url is refused."""
    embedder = Embedder.load()
    vector = embedder.query_vector("why does the tail of a comet face away from the sun")
    read, text = shared_vector(vector)
    assert parse_vector(text) == pytest.approx(read)
    assert float(np.linalg.norm(read)) == pytest.approx(1.0, abs=1e-6)
    assert float(read @ vector) == pytest.approx(1.0, abs=1e-3)
    refused = [
        text[:-1],
        text + "A",
        vector_text(np.full(DIMENSIONS, np.nan, dtype=np.float32)),
        vector_text(np.zeros(DIMENSIONS, dtype=np.float32)),
        "!" * len(text),
        "",
    ]
    for bad in refused:
        with pytest.raises(ValueError, match="query vector"):
            parse_vector(bad)


async def test_an_owner_reranks_by_the_vector_its_querier_sent() -> None:
    """Given the query's own vector, an owner's answer is the one it gives alone; given
    another (a querier's choice, which steers only its own results), that one is used."""
    embedder = Embedder.load()
    pages = [
        IndexDoc(url=f"http://x.example/{slug}", title=title, body=body)
        for slug, title, body in [
            ("comet", "Comets", "a comet's tail points away from the sun, the night sky"),
            ("bread", "Bread", "sourdough needs flour, water and time; the night bakery"),
        ]
    ]
    store = await committed_store(pages, embedder)
    try:
        q = "the night"
        alone, weights = await store.search_with_weights(q, limit=10)
        shared = await store.query_vector(q)
        assert shared is not None
        same, same_weights = await store.search_with_weights(q, limit=10, meaning=shared[0])
        assert [h.url for h in same.hits] == [h.url for h in alone.hits]
        for url, similarity in weights.semantic.items():
            assert same_weights.semantic[url] == pytest.approx(similarity, abs=2e-3)
        about_bread = shared_vector(embedder.query_vector("baking sourdough loaves"))[0]
        _page, steered = await store.search_with_weights(q, limit=10, meaning=about_bread)
        assert (
            steered.semantic["http://x.example/bread"] > steered.semantic["http://x.example/comet"]
        )
        assert (
            weights.semantic["http://x.example/bread"] < steered.semantic["http://x.example/bread"]
        )
    finally:
        await store.stop()
