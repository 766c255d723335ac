"""Snippets: a fragment of the body with the query's terms marked, as plain text + ranges.

The HTML form is built here with every piece escaped, so no page text reaches a browser raw.
"""

from __future__ import annotations

import html
import re
from bisect import bisect_left
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import tantivy

if TYPE_CHECKING:
    from .query import ParsedQuery

FALLBACK_CHARS = 240


@dataclass(slots=True, frozen=True)
class Snippet:
    text: str
    highlights: tuple[tuple[int, int], ...]  # character ranges within text

    def to_html(self, tag: str = "mark") -> str:
        out: list[str] = []
        pos = 0
        for start, end in self.highlights:
            if start < pos or end > len(self.text):
                continue
            out.append(html.escape(self.text[pos:start]))
            out.append(f"<{tag}>{html.escape(self.text[start:end])}</{tag}>")
            pos = end
        out.append(html.escape(self.text[pos:]))
        return "".join(out)


# The space text extraction leaves before punctuation after inline markup.
_SPACE_BEFORE_PUNCTUATION = re.compile(r" (?=[,.;:!?)\]}»])")


def _tidy(
    text: str, ranges: tuple[tuple[int, int], ...]
) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Drop the space text extraction puts before punctuation after inline markup
    ("the planets , then"), moving the highlight ranges with the text."""
    dropped = [m.start() for m in _SPACE_BEFORE_PUNCTUATION.finditer(text)]
    if not dropped:
        return text, ranges
    # A position moves left by the number of dropped spaces before it.
    return _SPACE_BEFORE_PUNCTUATION.sub("", text), tuple(
        (s - bisect_left(dropped, s), e - bisect_left(dropped, e)) for s, e in ranges
    )


def _byte_to_char_ranges(text: str, ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    # tantivy reports byte offsets into the UTF-8 fragment.
    data = text.encode("utf-8")
    out = []
    for start, end in ranges:
        s = len(data[:start].decode("utf-8", "ignore"))
        e = len(data[:end].decode("utf-8", "ignore"))
        if e > s:
            out.append((s, e))
    return tuple(sorted(out))


# tantivy's snippet generator tokenises the whole body (up to 100k chars, ~5 ms): a result
# page of long pages cost more than the search. Long bodies are cut to a window around the
# densest cluster of query words first; the full body is the fallback when that misses.
LONG_BODY_CHARS = 1_000
# The window and the cluster are measured in UTF-8 bytes (characters, for ASCII text).
WINDOW_CHARS = 600
CLUSTER_CHARS = 300  # about one fragment's span
MAX_POSITIONS = 16  # occurrences per word looked at
HEAD_CHARS = 8_000  # of a long page whose words the window missed, what the generator reads


# Words shorter than this (stems of "a", "is", "of") occur inside nearly every word: their
# first occurrences say where the page starts, not where the query's words are, and their
# searches were most of a window's cost. Looked for only when the query has nothing longer.
MIN_WINDOW_WORD = 3


def _window(body: str, words: list[str]) -> str | None:
    """The part of a long ``body`` where most of ``words`` (analysed, so lowercase stems,
    mostly prefixes of what the text says) stand close together; None if none occurs.
    An ASCII body is searched as it is, any other as UTF-8 bytes: lowering a text with
    any non-ASCII character in it costs ten times more than lowering its bytes (which
    leaves non-ASCII letters alone, as the ASCII-folded words would not match them)."""
    lead = WINDOW_CHARS // 4  # of the window, before the cluster
    if body.isascii():
        low = body.lower()
        best = _densest(low, [w for w in words if len(w) >= MIN_WINDOW_WORD] or words)
        if best is None:
            return None
        begin = max(0, low.rfind(" ", 0, max(0, best - lead)))
        return body[begin : begin + WINDOW_CHARS]
    raw = body.encode("utf-8")
    low_bytes = raw.lower()
    needles = [w.encode("utf-8") for w in words]
    best = _densest(low_bytes, [w for w in needles if len(w) >= MIN_WINDOW_WORD] or needles)
    if best is None:
        return None
    begin = max(0, low_bytes.rfind(b" ", 0, max(0, best - lead)))
    # A cut through a multi-byte character loses that character only.
    return raw[begin : begin + WINDOW_CHARS].decode("utf-8", "ignore")


def _densest(low: Any, needles: list[Any]) -> int | None:
    """Where the span of ``CLUSTER_CHARS`` holding the most distinct needles (their first
    ``MAX_POSITIONS`` occurrences each) starts in ``low``; None if none occurs."""
    hits: list[tuple[int, int]] = []  # (position, needle index)
    for i, needle in enumerate(needles):
        pos = low.find(needle)
        found = 0
        while pos >= 0 and found < MAX_POSITIONS:
            hits.append((pos, i))
            found += 1
            pos = low.find(needle, pos + len(needle))
    if not hits:
        return None
    hits.sort()
    best, best_count = hits[0][0], 0
    inside: dict[int, int] = {}  # needle -> occurrences in the sliding span
    end = 0
    for start, first in hits:
        while end < len(hits) and hits[end][0] < start + CLUSTER_CHARS:
            inside[hits[end][1]] = inside.get(hits[end][1], 0) + 1
            end += 1
        if len(inside) > best_count:
            best, best_count = start, len(inside)
        inside[first] -= 1
        if not inside[first]:
            del inside[first]
    return best


def make_snippet(
    generator: Any, doc: Any, parsed: ParsedQuery, words: list[str] | None = None
) -> Snippet:
    if generator is not None:
        source = doc
        body = doc.get_first("body")
        if isinstance(body, str) and len(body) > LONG_BODY_CHARS:
            window = _window(body, words) if words else None
            if window is not None:
                found = _generated(generator, _body_only(window), need_highlights=True)
                if found is not None:
                    return found
            if len(body) > HEAD_CHARS:
                # The words stand far apart or only in other fields: the generator over the
                # whole of a long page would cost milliseconds for what its head tells.
                source = _body_only(body[:HEAD_CHARS])
        found = _generated(generator, source, need_highlights=False)
        if found is not None:
            return found
    return _fallback(doc)


def _body_only(text: str) -> Any:
    part = tantivy.Document()
    part.add_text("body", text)
    return part


def _generated(generator: Any, doc: Any, *, need_highlights: bool) -> Snippet | None:
    snip = generator.snippet_from_doc(doc)
    fragment = snip.fragment()
    ranges = [(r.start, r.end) for r in snip.highlighted()]
    if not fragment or (need_highlights and not ranges):
        return None
    return Snippet(*_tidy(fragment, _byte_to_char_ranges(fragment, ranges)))


NO_SNIPPET = Snippet("", ())  # a hit whose snippet was not asked for


def _fallback(doc: Any) -> Snippet:
    for name in ("description", "body"):
        values = doc.get_all(name)
        if values and values[0]:
            text = str(values[0])
            if len(text) > FALLBACK_CHARS:
                cut = text.rfind(" ", 0, FALLBACK_CHARS)
                text = text[: cut if cut > 0 else FALLBACK_CHARS] + " …"
            return Snippet(*_tidy(text, ()))
    return Snippet("", ())
