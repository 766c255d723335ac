"""Rhizome's local index: tantivy storage, BM25 search, snippets, and what it tells peers."""

from .bm25 import bm25_idf
from .errors import IndexUnavailable, QuerySyntaxError
from .schema import SHARD_FIELDS, build_analyzer
from .shard_codec import PageWeights, Posting, TermShard
from .snippets import Snippet
from .store import Commit, Hit, IndexDoc, IndexStore, PreparedQuery, SearchPage

__all__ = [
    "SHARD_FIELDS",
    "Commit",
    "Hit",
    "IndexDoc",
    "IndexStore",
    "IndexUnavailable",
    "PageWeights",
    "Posting",
    "PreparedQuery",
    "QuerySyntaxError",
    "SearchPage",
    "Snippet",
    "TermShard",
    "bm25_idf",
    "build_analyzer",
]
