"""Snippets: a fragment of the body with the query's terms marked, as plain text + ranges.

The HTML form is built here with every piece escaped, so no page text reaches a browser raw.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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


def make_snippet(generator: Any, doc: Any, parsed: ParsedQuery) -> Snippet:
    if generator is not None:
        snip = generator.snippet_from_doc(doc)
        fragment = snip.fragment()
        if fragment:
            ranges = [(r.start, r.end) for r in snip.highlighted()]
            return Snippet(*_tidy(fragment, _byte_to_char_ranges(fragment, ranges)))
    for name in ("description", "body"):
        values = doc.get_all(name)
        if values and values[0]:
            text = str(values[0])
            if len(text) > FALLBACK_CHARS:
                cut = text.rfind(" ", 0, FALLBACK_CHARS)
                text = text[: cut if cut > 0 else FALLBACK_CHARS] + " …"
            return Snippet(*_tidy(text, ()))
    return Snippet("", ())
