"""Which terms a commit touched: the only terms whose shards can have changed.

A term's shard (df per field, top pages and their term frequencies) changes only when a
page containing the term is added or removed; every other term moves only in N and the
average field lengths, which a shard's content key leaves out. So the writer thread
records, per commit, the terms of the pages it added and of the stored versions it
deleted, and the publisher rebuilds just those (issue #13: rebuilding every term after
each commit cost ~12 ms of CPU per page indexed).

What this cannot see: a deleted page's anchor words (anchor text is not stored, only its
token count) and df moving when tantivy merges away deleted documents. The publisher's
periodic full republish covers both.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import tantivy

from .schema import build_analyzer, url_words
from .shard_codec import MAX_TERM_CHARS


class ChangedTerms:
    """Terms touched since the last ``take``, with the index generation they reach.

    Fed on the writer thread, taken on the loop: one lock, held for a set union.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._terms: set[str] = set()
        self._generation = 0
        # The writer thread's own analyzer: the store's is used on the loop only.
        self._analyzer = build_analyzer()

    def page_terms(self, url: str, *texts: str) -> set[str]:
        """The analysed terms of one page's fields (those a shard describes)."""
        terms: set[str] = set()
        for text in (*texts, url_words(url)):
            if text:
                terms.update(self._analyzer.analyze(text))
        return {t for t in terms if len(t) <= MAX_TERM_CHARS}

    def stored_page_terms(self, doc: tantivy.Document) -> set[str]:
        """Terms of a page as stored (a version about to be deleted)."""
        return self.page_terms(
            str(doc.get_first("url") or ""),
            str(doc.get_first("title") or ""),
            str(doc.get_first("description") or ""),
            str(doc.get_first("body") or ""),
        )

    def committed(self, terms: Iterable[str], generation: int) -> None:
        with self._lock:
            self._terms.update(terms)
            self._generation = generation

    def take(self) -> tuple[int, set[str]]:
        """The generation reached and every term touched up to it; starts afresh."""
        with self._lock:
            terms, self._terms = self._terms, set()
            return self._generation, terms
