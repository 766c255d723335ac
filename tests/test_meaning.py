"""An owner's re-rank reads each page's stored vector; what it compares must be the
meaning of the page's text, and a page without a usable vector is left as it was."""

from __future__ import annotations

import pytest

from rhizome.index.semantic import Embedder, page_text


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
