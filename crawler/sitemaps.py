"""Sitemaps (sitemaps.org): <loc> entries of a urlset or a sitemap index.

A regular expression over capped bytes, not an XML parser: sitemaps are hostile input and
entity expansion is a trap an XML parser can fall into; <loc> needs no more than this.
"""

from __future__ import annotations

import html
import re

MAX_SITEMAP_URLS = 50_000  # the protocol's own per-file limit
MAX_NESTED_SITEMAPS = 20

_LOC = re.compile(rb"<loc>\s*([^<\s]{1,2048})\s*</loc>", re.I)
_INDEX = re.compile(rb"<sitemapindex[\s>]", re.I)


def parse_sitemap(body: bytes) -> tuple[list[str], list[str]]:
    """Returns (page URLs, nested sitemap URLs)."""
    locs = [
        html.unescape(m.group(1).decode("utf-8", "replace"))
        for m in _LOC.finditer(body, 0, len(body))
    ]
    if _INDEX.search(body[:4096]):
        return [], locs[:MAX_NESTED_SITEMAPS]
    return locs[:MAX_SITEMAP_URLS], []
