"""Snippets: a fragment of the body with the query's terms marked, as plain text + ranges.

The HTML form is built here with every piece escaped, so no page text reaches a browser raw.
"""

from __future__ import annotations

import html
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


CLOSING_PUNCTUATION = frozenset(",.;:!?)]}»")


def _tidy(
    text: str, ranges: tuple[tuple[int, int], ...]
) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Drop the space text extraction puts before punctuation after inline markup
    ("the planets , then"), moving the highlight ranges with the text."""
    keep: list[str] = []
    new_pos = [0] * (len(text) + 1)
    for i, ch in enumerate(text):
        new_pos[i] = len(keep)
        if ch == " " and i + 1 < len(text) and text[i + 1] in CLOSING_PUNCTUATION:
            continue
        keep.append(ch)
    new_pos[len(text)] = len(keep)
    return "".join(keep), tuple((new_pos[s], new_pos[e]) for s, e in ranges)


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
LONG_BODY_CHARS = 2_000
WINDOW_CHARS = 1_000
CLUSTER_CHARS = 300  # about one fragment's span
MAX_POSITIONS = 16  # occurrences per word looked at


def _window(body: str, words: list[str]) -> str | None:
    """The part of a long ``body`` where most of ``words`` (analysed, so lowercase stems,
    mostly prefixes of what the text says) stand close together; None if none occurs."""
    low = body.lower()
    hits: list[tuple[int, int]] = []  # (position, word index)
    for i, word in enumerate(words):
        pos = low.find(word)
        while pos >= 0 and len(hits) < MAX_POSITIONS * (i + 1):
            hits.append((pos, i))
            pos = low.find(word, pos + len(word))
    if not hits:
        return None
    hits.sort()
    best, best_count = hits[0][0], 0
    inside: dict[int, int] = {}  # word -> occurrences in the sliding span
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
    begin = max(0, body.rfind(" ", 0, max(0, best - WINDOW_CHARS // 4)))
    return body[begin : begin + WINDOW_CHARS]


def make_snippet(
    generator: Any, doc: Any, parsed: ParsedQuery, words: list[str] | None = None
) -> Snippet:
    if generator is not None:
        body = doc.get_first("body") if words else None
        if isinstance(body, str) and len(body) > LONG_BODY_CHARS:
            window = _window(body, words or [])
            if window is not None:
                part = tantivy.Document()
                part.add_text("body", window)
                found = _generated(generator, part, need_highlights=True)
                if found is not None:
                    return found
        found = _generated(generator, doc, need_highlights=False)
        if found is not None:
            return found
    return _fallback(doc)


def _generated(generator: Any, doc: Any, *, need_highlights: bool) -> Snippet | None:
    snip = generator.snippet_from_doc(doc)
    fragment = snip.fragment()
    ranges = [(r.start, r.end) for r in snip.highlighted()]
    if not fragment or (need_highlights and not ranges):
        return None
    return Snippet(*_tidy(fragment, _byte_to_char_ranges(fragment, ranges)))


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
