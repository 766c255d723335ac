"""Rhizome's local index: tantivy storage, BM25 search, snippets."""

from .errors import IndexUnavailable, QuerySyntaxError
from .schema import build_analyzer
from .shards import PageWeights, Posting, TermShard, bm25_idf
from .snippets import Snippet
from .store import Commit, Hit, IndexDoc, IndexStore, SearchPage

__all__ = [
    "Commit",
    "Hit",
    "IndexDoc",
    "IndexStore",
    "IndexUnavailable",
    "PageWeights",
    "Posting",
    "QuerySyntaxError",
    "SearchPage",
    "Snippet",
    "TermShard",
    "bm25_idf",
    "build_analyzer",
]
