"""User query text → tantivy query.

Supports the tantivy query language (phrases in quotes, +must, -not, field:term) plus
``site:host`` filters. Free-text terms are OR-ed for recall, and pages matching every term
get an extra conjunctive boost, so precise pages rank first without losing partial matches.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import tantivy

from .errors import QuerySyntaxError
from .schema import FIELD_BOOSTS, TEXT_FIELDS

MAX_QUERY_CHARS = 512
MAX_SITE_FILTERS = 8
ALL_TERMS_BOOST = 1.5

_SITE = re.compile(r"(?:^|\s)-?site:(\S+)", re.I)
_FIELD_SYNTAX = re.compile(r"(?:^|\s)[+-]?\w+:")
_WORD = re.compile(r'([+-]?)(?:"([^"]*)"|(\S+))')
_OPERATORS = frozenset({"AND", "OR", "NOT"})

Unit = tuple[str, ...]  # one analysed token (a term) or several in a row (a phrase)


@dataclass(slots=True, frozen=True)
class ParsedQuery:
    text: str
    free_text: str
    sites: tuple[str, ...]
    excluded_sites: tuple[str, ...]

    def build(
        self, index: tantivy.Index, schema: tantivy.Schema
    ) -> tuple[tantivy.Query, tantivy.Query | None]:
        """Returns (the query to run, the query to highlight snippets with)."""
        clauses: list[tuple[tantivy.Occur, tantivy.Query]] = []
        text_query: tantivy.Query | None = None
        if self.free_text:
            try:
                any_terms = index.parse_query(
                    self.free_text, list(TEXT_FIELDS), field_boosts=FIELD_BOOSTS
                )
                all_terms = index.parse_query(
                    self.free_text,
                    list(TEXT_FIELDS),
                    field_boosts=FIELD_BOOSTS,
                    conjunction_by_default=True,
                )
            except ValueError as exc:
                raise QuerySyntaxError(f"cannot parse query: {exc}") from exc
            text_query = tantivy.Query.boolean_query(
                [
                    (tantivy.Occur.Must, any_terms),
                    (
                        tantivy.Occur.Should,
                        tantivy.Query.boost_query(all_terms, ALL_TERMS_BOOST),
                    ),
                ]
            )
            clauses.append((tantivy.Occur.Must, text_query))
        if self.sites:
            site_any = tantivy.Query.boolean_query(
                [
                    (tantivy.Occur.Should, tantivy.Query.term_query(schema, "site", s))
                    for s in self.sites
                ]
            )
            clauses.append((tantivy.Occur.Must, site_any))
        for site in self.excluded_sites:
            clauses.append((tantivy.Occur.MustNot, tantivy.Query.term_query(schema, "site", site)))
        if not any(occur == tantivy.Occur.Must for occur, _ in clauses):
            clauses.append((tantivy.Occur.Must, tantivy.Query.all_query()))
        query = tantivy.Query.boolean_query(clauses)
        return query, text_query


def parse_user_query(text: str) -> ParsedQuery:
    """Validate and split the user's text; raises QuerySyntaxError with a user-facing reason."""
    text = (text or "").strip()
    if not text:
        raise QuerySyntaxError("the query is empty")
    if len(text) > MAX_QUERY_CHARS:
        raise QuerySyntaxError(f"the query is longer than {MAX_QUERY_CHARS} characters")
    if "\x00" in text:
        raise QuerySyntaxError("the query contains a NUL character")
    sites: list[str] = []
    excluded: list[str] = []
    for m in _SITE.finditer(text):
        value = m.group(1).lower().strip("/")
        value = value.split("://", 1)[-1].split("/", 1)[0]
        (excluded if m.group(0).strip().startswith("-") else sites).append(value)
    if len(sites) + len(excluded) > MAX_SITE_FILTERS:
        raise QuerySyntaxError(f"at most {MAX_SITE_FILTERS} site: filters")
    free = _SITE.sub(" ", text).strip()
    if free.count('"') % 2:
        raise QuerySyntaxError('unbalanced quotation mark (")')
    if not free and not sites:
        raise QuerySyntaxError("the query has no words to search for")
    return ParsedQuery(
        text=text, free_text=free, sites=tuple(sites), excluded_sites=tuple(excluded)
    )


def query_units(free_text: str, analyze: Callable[[str], list[str]]) -> list[Unit]:
    """The scoring units of a query, formed the way tantivy's query parser forms them.

    Every whitespace-separated word, and every quoted phrase, is analysed on its own: one
    token is a term, several ("1.3.6", "django.core") must occur in a row, as a phrase.
    The federated ranker scores these units, so that a network answer ranks like the local
    index would. Excluded words (``-word``) and operators only filter: they score nothing.
    """
    units: dict[Unit, None] = {}
    for m in _WORD.finditer(free_text):
        sign, phrase, word = m.groups()
        if sign == "-" or (word is not None and word in _OPERATORS):
            continue
        tokens = tuple(analyze(phrase if phrase is not None else word))
        if tokens:
            units[tokens] = None
    return list(units)


def unit_key(unit: Unit) -> str:
    """A unit as one string (analysed tokens never contain spaces)."""
    return " ".join(unit)


def uses_field_syntax(text: str) -> bool:
    return bool(_FIELD_SYNTAX.search(text))
