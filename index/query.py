"""User query text → tantivy query. Whatever the text, a query comes out: it never raises.

The user's syntax is read once into a small plan (:class:`Clause`s plus ``site:`` filters):

* ``"a phrase"`` (when its quotes balance; a lone quotation mark is dropped),
* ``+word`` (must occur), ``-word`` (must not occur), also on phrases and fields,
* ``title:word`` (or another text field: ``anchor``, ``description``, ``body``,
  ``url_words``),
* ``site:host`` / ``-site:host`` filters (at most :data:`MAX_SITE_FILTERS`, the rest ignored).

Everything else is plain words: ``AND``/``OR``/``NOT`` are words, not operators; brackets,
``^``, ``~``, ``*``, ``:`` and the other characters tantivy's grammar treats specially are
text, which the analyzer splits words at. Each clause reaches tantivy's parser quoted, so its
grammar sees nothing but quoted text, signs and known field names; the parser forms the
terms and phrases of each clause with the index's own analyzer, which is what
:func:`query_units` does for the federated ranker too. Free-text terms are OR-ed for recall,
and pages matching every term get an extra conjunctive boost, so precise pages rank first
without losing partial matches. A clause with no letter or digit (``!!!``, a spaced
hyphen) is dropped; a query left with no clause and no filter matches nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import tantivy

from .schema import FIELD_BOOSTS, TEXT_FIELDS

# Longer text is cut at the last word boundary before this many characters (a query is a
# few words; the cap bounds the parser's and the analyzer's work per request).
MAX_QUERY_CHARS = 512
# site: filters beyond this many are ignored: each is one more term query per search.
MAX_SITE_FILTERS = 8
# Pages with every word of the query score this much more (the federated ranker scores
# the same way, and imports it).
ALL_TERMS_BOOST = 1.5
# Term proximity: the query's words near each other and in order, as a sloppy phrase
# (``"w1 w2 ... wn"~PROXIMITY_SLOP``) over the searched fields, boosted. Pages that say
# what the query describes nearly in its words rank first. Measured on the tune half of
# bench/judged (docs/BENCHMARKS.md).
PROXIMITY_SLOP = 10
PROXIMITY_BOOST = 16.0

# Characters no query needs and some layers refuse: C0/C1 controls (NUL included) and lone
# surrogates (no UTF-8 form, so Rust strings cannot hold them). Each becomes one space, so
# positions and lengths do not move.
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SPACES = re.compile(r"\s+")
_LAST_GAP = re.compile(r"\s\S*\Z")  # the last whitespace of a text
_SITE = re.compile(r"(?:^|(?<=\s))([+-]?)site:(\S+)", re.I)
# One clause: an optional prefix glued to a quoted phrase, or a bare word.
_CLAUSE = re.compile(r'(?P<prefix>[^\s"]*?)"(?P<phrase>[^"]*)"|(?P<word>[^\s"]+)')
# A sign and a field name before a phrase (``-title:"..."``), or before a word.
_PREFIX = re.compile(r"(?P<sign>[+-]?)(?:(?P<field>\w+):)?")
# ``name:rest``: a name starting with a letter, one colon, then something but a colon.
_FIELD_WORD = re.compile(r"(?P<field>[^\W\d]\w*):(?P<text>[^:].*)", re.S)
# What a clause's text must not carry inside tantivy's quotes: the quote itself and the
# escape character. The analyzer splits words at both anyway, so no term changes.
_QUOTE_UNSAFE = str.maketrans({'"': " ", "\\": " "})
_FIELD_SYNTAX = re.compile(r"(?:^|\s)[+-]?\w+:")
_SEARCHED_FIELDS = {name.lower(): name for name in TEXT_FIELDS}

Unit = tuple[str, ...]  # one analysed token (a term) or several in a row (a phrase)


class Occur(Enum):
    SHOULD = ""
    MUST = "+"
    MUST_NOT = "-"


@dataclass(slots=True, frozen=True)
class Clause:
    """One word or phrase of the query: how it must occur, in which field (None: all
    searched fields), and its text as typed (analysed later, by tantivy or the ranker)."""

    occur: Occur
    field: str | None
    text: str

    def syntax(self) -> str:
        """The clause in tantivy's grammar, quoted: safe to parse whatever its text."""
        quoted = f'"{self.text.translate(_QUOTE_UNSAFE)}"'
        return f"{self.field}:{quoted}" if self.field else quoted


@dataclass(slots=True, frozen=True)
class ParsedQuery:
    text: str  # the query as searched: cleaned and cut to MAX_QUERY_CHARS
    free_text: str  # text without its site: filters (what query_units reads)
    sites: tuple[str, ...]
    excluded_sites: tuple[str, ...]
    clauses: tuple[Clause, ...] = ()
    # (index, what build made for it): an owner's search and its snippets of other pages
    # build the same query twice an answer, ~0.4 ms each (tantivy's parser).
    _built: tuple[tantivy.Index, tuple[tantivy.Query, tantivy.Query | None]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def build(
        self, index: tantivy.Index, schema: tantivy.Schema
    ) -> tuple[tantivy.Query, tantivy.Query | None]:
        """Returns (the query to run, the query to highlight snippets with), made once per
        index. Never raises for any text: the plan only ever hands tantivy's parser quoted
        clauses."""
        built = self._built
        if built is not None and built[0] is index:
            return built[1]
        made = self._build(index, schema)
        object.__setattr__(self, "_built", (index, made))  # a cache, not a field's value
        return made

    def _build(
        self, index: tantivy.Index, schema: tantivy.Schema
    ) -> tuple[tantivy.Query, tantivy.Query | None]:
        plan = self.clauses or tuple(_clauses(self.free_text))  # made without a plan
        clauses: list[tuple[tantivy.Occur, tantivy.Query]] = []
        wanted = [c for c in plan if c.occur is not Occur.MUST_NOT]
        text_query = _text_query(index, wanted) if wanted else None
        if text_query is not None:
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
        for clause in plan:
            if clause.occur is Occur.MUST_NOT:
                excluded = _clause_query(index, clause)
                if excluded is not None:
                    clauses.append((tantivy.Occur.MustNot, excluded))
        if not clauses:
            # No word to look for and no filter (empty, or only "!!!"): nothing matches.
            return tantivy.Query.empty_query(), None
        if not any(occur == tantivy.Occur.Must for occur, _ in clauses):
            # Filters only ("-site:x", "-word"): every page they leave.
            clauses.append((tantivy.Occur.Must, tantivy.Query.all_query()))
        return tantivy.Query.boolean_query(clauses), text_query


def _parse(index: tantivy.Index, syntax: str, *, conjunction: bool) -> tantivy.Query:
    return index.parse_query(
        syntax,
        list(TEXT_FIELDS),
        field_boosts=FIELD_BOOSTS,
        conjunction_by_default=conjunction,
    )


def _clause_query(index: tantivy.Index, clause: Clause) -> tantivy.Query | None:
    """One clause on its own, without its sign; its bare words if even that fails to
    parse (not seen: quoted text always parses); None if nothing is left."""
    for syntax in (clause.syntax(), Clause(Occur.SHOULD, None, _words_only(clause.text)).syntax()):
        try:
            return _parse(index, syntax, conjunction=False)
        except ValueError:
            continue
    return None


def _text_query(index: tantivy.Index, wanted: list[Clause]) -> tantivy.Query:
    """Any of the wanted clauses (the ``+`` ones all), boosted when all of them occur."""
    syntax = " ".join(f"{c.occur.value}{c.syntax()}" for c in wanted)
    try:
        any_terms = _parse(index, syntax, conjunction=False)
        all_terms = _parse(index, syntax, conjunction=True)
    except ValueError:
        # The whole did not parse: the same query assembled clause by clause, skipping
        # any clause tantivy refuses even alone.
        parts = [(c, q) for c in wanted if (q := _clause_query(index, c)) is not None]
        if not parts:
            return tantivy.Query.empty_query()
        any_terms = tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Must if c.occur is Occur.MUST else tantivy.Occur.Should, q)
                for c, q in parts
            ]
        )
        all_terms = tantivy.Query.boolean_query([(tantivy.Occur.Must, q) for _, q in parts])
    scored = [
        (tantivy.Occur.Must, any_terms),
        (tantivy.Occur.Should, tantivy.Query.boost_query(all_terms, ALL_TERMS_BOOST)),
    ]
    near = _proximity_query(index, wanted)
    if near is not None:
        scored.append((tantivy.Occur.Should, tantivy.Query.boost_query(near, PROXIMITY_BOOST)))
    return tantivy.Query.boolean_query(scored)


def _near_text(wanted: list[Clause] | tuple[Clause, ...]) -> str:
    """The text of the proximity phrase: every wanted clause's words that are searched in
    all fields, in the order typed."""
    return " ".join(
        c.text.translate(_QUOTE_UNSAFE)
        for c in wanted
        if c.field is None and c.occur is not Occur.MUST_NOT
    )


def _proximity_query(index: tantivy.Index, wanted: list[Clause]) -> tantivy.Query | None:
    """The wanted clauses' words as one sloppy phrase, or None for a single word."""
    words = _near_text(wanted)
    if len(_words_only(words).split()) < 2 or PROXIMITY_BOOST <= 0:
        return None
    try:
        return _parse(index, f'"{words}"~{PROXIMITY_SLOP}', conjunction=False)
    except ValueError:
        return None


def _words_only(text: str) -> str:
    return " ".join("".join(ch if ch.isalnum() else " " for ch in text).split())


def _clean(text: str) -> str:
    """Unsafe characters → spaces, runs of spaces → one, cut at a word boundary."""
    text = _UNSAFE_CHARS.sub(" ", text).strip()
    if len(text) > MAX_QUERY_CHARS:
        # The character past the cap says whether the cut falls between words.
        head = text[:MAX_QUERY_CHARS]
        if not text[MAX_QUERY_CHARS].isspace():
            last_gap = _LAST_GAP.search(head)
            head = head[: last_gap.start()] if last_gap else head  # one long word: cut it
        text = head
    return _SPACES.sub(" ", text).strip()


def _site_value(raw: str) -> str:
    value = raw.lower().strip("/\"'")
    return value.split("://", 1)[-1].split("/", 1)[0]


def _has_word(text: str) -> bool:
    """Whether the analyzer can find a term in ``text``: it splits at every character
    that is neither a letter nor a digit."""
    return any(ch.isalnum() for ch in text)


def _clause(sign: str, field: str | None, text: str) -> Clause | None:
    if not _has_word(text):
        return None
    return Clause(Occur(sign), field, text)


def _clauses(free_text: str) -> list[Clause]:
    """The clauses of text without site: filters. Deterministic and total: build() and
    query_units() both read a query through it."""
    text = _UNSAFE_CHARS.sub(" ", free_text)
    if text.count('"') % 2:
        # A lone quotation mark is no phrase: drop the last one, keep the balanced ones.
        cut = text.rfind('"')
        text = text[:cut] + " " + text[cut + 1 :]
    out: list[Clause | None] = []
    for m in _CLAUSE.finditer(text):
        phrase = m.group("phrase")
        if phrase is not None:
            prefix = m.group("prefix")
            p = _PREFIX.fullmatch(prefix)
            field = _SEARCHED_FIELDS.get((p.group("field") or "").lower()) if p else None
            if p and (p.group("field") is None or field is not None):
                out.append(_clause(p.group("sign"), field, phrase))
            else:  # a word glued to a phrase (x"y z"): each is a clause of its own
                out.extend(_word_clauses(prefix))
                out.append(_clause("", None, phrase))
        else:
            out.extend(_word_clauses(m.group("word")))
    return [c for c in out if c is not None]


def _word_clauses(word: str) -> list[Clause | None]:
    """``word``, ``+word``, ``-word``, ``title:word``. A name that is no searched field
    (``nosuchfield:moon``) is a word of its own, beside the rest; other colons
    (``std::vector``, ``10:30``) are text, which the analyzer splits words at."""
    sign = word[0] if word[:1] in ("+", "-") else ""
    rest = word[len(sign) :]
    f = _FIELD_WORD.fullmatch(rest)
    if f is None:
        return [_clause(sign, None, rest)]
    field = _SEARCHED_FIELDS.get(f.group("field").lower())
    if field is not None:
        return [_clause(sign, field, f.group("text"))]
    return [_clause(sign, None, f.group("field")), _clause(sign, None, f.group("text"))]


def parse_user_query(text: str) -> ParsedQuery:
    """Read the user's text into a plan. Never raises: text that says nothing searchable
    (empty, only punctuation) gives a query that matches nothing (or only its filters)."""
    text = _clean(text or "")
    sites: list[str] = []
    excluded: list[str] = []
    for m in _SITE.finditer(text):
        value = _site_value(m.group(2))
        target = excluded if m.group(1) == "-" else sites
        if value and value not in target and len(sites) + len(excluded) < MAX_SITE_FILTERS:
            target.append(value)
    free = _SPACES.sub(" ", _SITE.sub(" ", text)).strip()
    return ParsedQuery(
        text=text,
        free_text=free,
        sites=tuple(sites),
        excluded_sites=tuple(excluded),
        clauses=tuple(_clauses(free)),
    )


def query_units(free_text: str, analyze: Callable[[str], list[str]]) -> list[Unit]:
    """The scoring units of a query, formed the way the index's query forms them.

    Every clause (a word, or a quoted phrase) is analysed on its own, from the very text
    build() hands tantivy's parser: one token is a term, several ("1.3.6", "django.core",
    "std::vector") must occur in a row, as a phrase. The federated ranker scores these
    units, so that a network answer ranks like the local index would. Excluded clauses
    (``-word``) only filter: they score nothing. Never raises.
    """
    return clause_units(_clauses(free_text), analyze)


def clause_units(
    clauses: tuple[Clause, ...] | list[Clause], analyze: Callable[[str], list[str]]
) -> list[Unit]:
    """``query_units`` of clauses already read (``ParsedQuery.clauses``)."""
    units: dict[Unit, None] = {}
    for clause in clauses:
        if clause.occur is Occur.MUST_NOT:
            continue
        tokens = tuple(analyze(clause.text.translate(_QUOTE_UNSAFE)))
        if tokens:
            units[tokens] = None
    return list(units)


def near_unit(
    clauses: tuple[Clause, ...] | list[Clause], analyze: Callable[[str], list[str]]
) -> Unit:
    """The tokens of the query's proximity phrase (what build()'s sloppy phrase holds, as
    the index's analyzer forms them), or () when it has fewer than two: no phrase then."""
    tokens = tuple(analyze(_near_text(clauses)))
    return tokens if len(tokens) >= 2 and PROXIMITY_BOOST > 0 else ()


NEAR_PREFIX = "~ "  # keys of proximity weights: no analysed token holds "~" or a space


def unit_key(unit: Unit) -> str:
    """A unit as one string (analysed tokens never contain spaces)."""
    return " ".join(unit)


def near_key(near: Unit) -> str:
    """The proximity phrase's key among an owner's per-unit weights."""
    return NEAR_PREFIX + " ".join(near)


def uses_field_syntax(text: str) -> bool:
    return bool(_FIELD_SYNTAX.search(text))
