"""Rhizome's local index: tantivy storage, BM25 search, snippets."""

from .errors import IndexUnavailable, QuerySyntaxError
from .schema import build_analyzer
from .snippets import Snippet
from .store import Commit, Hit, IndexDoc, IndexStore, SearchPage

__all__ = [
    "Commit",
    "Hit",
    "IndexDoc",
    "IndexStore",
    "IndexUnavailable",
    "QuerySyntaxError",
    "SearchPage",
    "Snippet",
    "build_analyzer",
]
