"""An owner's side of a federated query: its own search, weights and named snippets.

The same code answers a peer's ``PATH_SEARCH`` request (api/peer_routes.py) and this
node's own part in the queries it runs (``LocalOwner``), so the querier treats its own
pages exactly like anyone else's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rhizome.index import IndexStore, PageWeights, PreparedQuery, SearchPage, Snippet

from .wire import MAX_SNIPPET_URLS, PeerAnswer, SnippetFields, page_rows, snippet_fields

MAX_OWNER_RESULTS = 100  # results an owner returns to one query, however deep it asks


async def answer_locally(
    store: IndexStore,
    q: str | PreparedQuery,
    limit: int,
    offset: int,
    named: Sequence[str],
    snippet_hits: int | None = None,
    meaning: np.ndarray | None = None,
) -> tuple[SearchPage, PageWeights, dict[str, Snippet]]:
    """An owner's answer to a federated query: its search, the hits' term weights, and
    snippets of the ``named`` pages its search does not return (pages the querying node
    expects on its first page from shards; they would show as bare titles). Only its
    first ``snippet_hits`` hits get snippets (all when None): the querier says how many
    of its pages may reach the first page, and asks again for any other that does.
    ``meaning``: the query's vector as the querier sent it (embedded here when None)."""
    query = store.prepare(q)
    page, weights = await store.search_with_weights(
        query, limit=limit, offset=offset, snippets=snippet_hits, meaning=meaning
    )
    snipped = page.hits if snippet_hits is None else page.hits[:snippet_hits]
    returned = {hit.url for hit in snipped}
    others = [u for u in named[:MAX_SNIPPET_URLS] if u not in returned]
    return page, weights, await store.snippets(query, others)


class LocalOwner:
    """This node as an owner of the pages it indexed, for the queries it runs itself."""

    def __init__(self, store: IndexStore, node_id: str) -> None:
        self.store = store
        self.node_id = node_id

    async def answer(
        self,
        query: PreparedQuery,
        depth: int,
        named: Sequence[str],
        snippet_hits: int | None = None,
        meaning: np.ndarray | None = None,
    ) -> PeerAnswer:
        page, weights, snippets = await answer_locally(
            self.store, query, min(depth, MAX_OWNER_RESULTS), 0, named, snippet_hits, meaning
        )
        return PeerAnswer(
            self.node_id, page_rows(page, self.node_id), weights, snippet_fields(snippets)
        )

    async def query_vector(self, query: PreparedQuery) -> tuple[np.ndarray, str] | None:
        """The query's vector for every owner asked (this node too), and its wire form."""
        return await self.store.query_vector(query)

    async def snippets(self, query: PreparedQuery, urls: Sequence[str]) -> dict[str, SnippetFields]:
        return snippet_fields(await self.store.snippets(query, urls))
