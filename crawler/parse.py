"""HTML → ParsedPage with selectolax: metadata, robots directives, visible text and links.

Pure functions on bytes (decoded by crawler/charsets.py), so they can run in a worker
process (``selectolax`` parsers are not thread-safe and hold the GIL; a separate process
keeps the event loop's core free).
"""

from __future__ import annotations

import codecs
import html
import re
from dataclasses import dataclass, field

from selectolax.lexbor import LexborHTMLParser
from yarl import URL

from .charsets import BINARY_SNIFF_BYTES, decode_html, sniff_utf16
from .config import DEFAULT_USER_AGENT_NAME
from .urls import LinkResolver, canonicalize

MAX_TEXT_CHARS = 200_000
MAX_TITLE_CHARS = 300
MAX_DESCRIPTION_CHARS = 1_000
MAX_ANCHOR_CHARS = 200
# Documentation indexes are long: the largest page of the 12-site large corpus that is a
# page's only way in (rustdoc's core/all.html) has 17,940 distinct links, libstdc++'s
# files.html 1,472 and rustdoc's x86_64 intrinsics 5,024; a cap of 1,000 left 11,836 of
# that corpus' 63,877 reachable pages uncrawled. A link farm's extra links cost a row
# each in the frontier, which max_urls_per_host bounds per host.
MAX_LINKS_PER_PAGE = 20_000
# <meta http-equiv="refresh" content="N; url=...">: a delay below this is a redirect (the
# browser replaces the page before anyone reads it), so the page itself is not indexed
# and its target is, as with an HTTP redirect. A longer delay is only a link.
REFRESH_REDIRECT_DELAY = 1.0
# Lexbor's tree costs ~15-20 bytes of memory a byte of HTML: parsing one 4 MiB GHC page
# took a parser process +60 MB at its peak (measured), and with two processes each on a
# large rustdoc page the crawl's peak RSS rose by ~190 MB. Past this many characters the
# page is not built into a tree: the links of the rest are read by a scan of its <a>
# tags, and the text has what the index keeps (100,000 characters) long before.
MAX_TREE_CHARS = 1_000_000
MAX_SCANNED_ANCHOR_CHARS = 2_000  # of an <a> element's content, in the scanned rest
# Text with NULs in it (a broken title, a stray byte) is still text; executables and
# archives are mostly NULs.
BINARY_NUL_SHARE = 8  # more than one NUL in this many bytes of the head: binary
ROBOTS_AGENTS = frozenset({"rhizome", DEFAULT_USER_AGENT_NAME.lower()})
ROBOTS_META_NAMES = ROBOTS_AGENTS | {"robots"}
# X-Robots-Tag directives that carry a value after a colon (not a robot's name).
VALUED_DIRECTIVES = frozenset(
    {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}
)

# Boilerplate that is not the page's own content.
BOILERPLATE_SELECTOR = (
    "script, style, noscript, template, svg, iframe, nav, header, footer, aside, form, "
    "[role=navigation], [role=banner], [role=contentinfo], [aria-hidden=true]"
)
BOILERPLATE_TAGS = BOILERPLATE_SELECTOR.split(", ")
MAIN_SELECTORS = ("main", "article", "[role=main]")

# HTML's "shared declarative refresh steps": a delay, then ";" or ",", then the URL,
# optionally as url=..., optionally quoted.
_REFRESH = re.compile(
    r"""^\s*(\d*(?:\.\d*)?)\s*(?:[;,]\s*)?(?:url\s*=\s*)?(["']?)(.*?)\2?\s*$""",
    re.I | re.S,
)
# The scan of a page's rest: <a ...>content</a>, its href and rel.
_A_ELEMENT = re.compile(rf"<a\s([^>]*)>(.{{0,{MAX_SCANNED_ANCHOR_CHARS}}}?)</a\s*>", re.I | re.S)
_HREF = re.compile(r"""\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.I)
_NOFOLLOW_REL = re.compile(r"""\brel\s*=\s*(?:"[^"]*|'[^']*|[^\s>]*)nofollow""", re.I)
_TAG = re.compile(r"<[^>]*>")
_BINARY_CONTROLS = bytes([*range(0x01, 0x09), *range(0x0E, 0x1B), *range(0x1C, 0x20)])


@dataclass(slots=True)
class Link:
    url: str
    anchor: str


@dataclass(slots=True)
class ParsedPage:
    """What the crawler hands to its sink for one fetched HTML page."""

    url: str
    canonical: str | None = None
    title: str = ""
    description: str = ""
    text: str = ""
    language: str = ""
    noindex: bool = False
    nofollow: bool = False
    # The target of a meta refresh (canonical), and whether it redirects (no delay).
    refresh: str | None = None
    refresh_redirects: bool = False
    links: list[Link] = field(default_factory=list)
    fetched_at: float = 0.0
    status: int = 200
    # Filled in by the crawler: other URLs that led here (redirects), and the anchor texts
    # other pages use for this one.
    aliases: list[str] = field(default_factory=list)
    inbound_anchors: list[str] = field(default_factory=list)


def _norm(text: str, limit: int) -> str:
    # split/join is ~3x faster than a \s+ regex, and this runs over every page's text.
    folded = " ".join(text[: limit * 2].split())
    if len(folded) < limit and len(text) > limit * 2:
        # Mostly whitespace (deep indentation): the cut may have dropped the real text.
        folded = " ".join(text.split())
    return folded[:limit]


def looks_binary(body: bytes) -> bool:
    if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False  # UTF-16 text is half NULs; detect_charset decodes it
    head = body[:BINARY_SNIFF_BYTES]
    if sniff_utf16(head):
        return False
    nuls = head.count(b"\x00")
    if nuls > 2 and nuls * BINARY_NUL_SHARE > len(head):
        return True
    # Random-looking data (images, archives) often has no NULs in its first KiB, but about
    # one byte in ten is a C0 control; text has next to none (ESC is ISO-2022's, kept out).
    controls = len(head) - len(head.translate(None, _BINARY_CONTROLS))
    return controls > max(8, len(head) // 20)


def _header_directives(header: str) -> list[str]:
    """X-Robots-Tag: one line per header (the fetcher joins them with newlines). A robot's
    name before a colon ("otherbot: noindex, nofollow") scopes what follows on its line."""
    tokens: list[str] = []
    for line in header.lower().splitlines():
        ours = True
        for part in line.replace(";", ",").split(","):
            name, colon, rest = part.partition(":")
            name = name.strip()
            if colon and name not in VALUED_DIRECTIVES:
                ours = name in ROBOTS_AGENTS
                part = rest
            if ours:
                tokens.append(part.strip())
    return tokens


def _robots_directives(tree: LexborHTMLParser, header: str | None) -> tuple[bool, bool]:
    tokens = set(_header_directives(header or ""))
    for meta in tree.css("meta[name]"):
        name = (meta.attributes.get("name") or "").strip().lower()
        if name in ROBOTS_META_NAMES:
            content = (meta.attributes.get("content") or "").lower()
            tokens.update(t.strip() for t in content.replace(";", ",").split(","))
    return ("noindex" in tokens or "none" in tokens), ("nofollow" in tokens or "none" in tokens)


def refresh_target(content: str) -> tuple[float, str] | None:
    """(delay in seconds, raw URL) of a meta refresh's ``content``; None without a URL."""
    m = _REFRESH.match(content)
    if m is None or not m.group(3).strip():
        return None
    delay = m.group(1)
    return (float(delay) if delay not in ("", ".") else 0.0), m.group(3).strip()


def _meta_refresh(tree: LexborHTMLParser, base: URL) -> tuple[str, bool] | None:
    """The first meta refresh naming a URL: (canonical target, is it a redirect)."""
    for meta in tree.css("meta[http-equiv]"):
        if (meta.attributes.get("http-equiv") or "").strip().lower() != "refresh":
            continue
        found = refresh_target(meta.attributes.get("content") or "")
        if found is None:
            continue
        target = canonicalize(found[1], base)
        if target is not None:
            return target, found[0] < REFRESH_REDIRECT_DELAY
    return None


def _scan_links(rest: str, resolve: LinkResolver, seen: set[str], links: list[Link]) -> None:
    """The links of the part of a page past MAX_TREE_CHARS, without building its tree."""
    for m in _A_ELEMENT.finditer(rest):
        if len(links) >= MAX_LINKS_PER_PAGE:
            return
        attributes = m.group(1)
        href = _HREF.search(attributes)
        if href is None or _NOFOLLOW_REL.search(attributes):
            continue
        target = resolve(html.unescape(next(g for g in href.groups() if g is not None)))
        if target is None or target in seen:
            continue
        seen.add(target)
        anchor = html.unescape(_TAG.sub(" ", m.group(2)))
        links.append(Link(target, _norm(anchor, MAX_ANCHOR_CHARS)))


def parse_html(
    url: str,
    body: bytes,
    *,
    content_type: str | None = None,
    x_robots_tag: str | None = None,
    fetched_at: float = 0.0,
    status: int = 200,
) -> ParsedPage:
    """Parse one HTML document fetched from ``url`` (its final, canonical URL)."""
    page = ParsedPage(url=url, fetched_at=fetched_at, status=status)
    if looks_binary(body):
        page.noindex = page.nofollow = True
        return page
    text = decode_html(body, content_type)
    rest = ""
    if len(text) > MAX_TREE_CHARS:
        # Cut before a tag, so the scan of the rest starts with whole elements.
        cut = text.rfind("<", MAX_TREE_CHARS // 2, MAX_TREE_CHARS)
        cut = cut if cut > 0 else MAX_TREE_CHARS
        text, rest = text[:cut], text[cut:]
    tree = LexborHTMLParser(text)
    del text
    page.noindex, page.nofollow = _robots_directives(tree, x_robots_tag)

    base = URL(url)
    base_el = tree.css_first("base[href]")
    if base_el is not None:
        joined = canonicalize(base_el.attributes.get("href") or "", base)
        if joined:
            base = URL(joined)

    title_el = tree.css_first("title")
    if title_el is not None:
        page.title = _norm(title_el.text(), MAX_TITLE_CHARS)
    for meta in tree.css("meta[name=description], meta[property='og:description']"):
        content = meta.attributes.get("content")
        if content:
            page.description = _norm(content, MAX_DESCRIPTION_CHARS)
            break
    canon_el = tree.css_first("link[rel=canonical][href]")
    if canon_el is not None:
        page.canonical = canonicalize(canon_el.attributes.get("href") or "", base)
    html_el = tree.css_first("html")
    if html_el is not None:
        lang = html_el.attributes.get("lang") or html_el.attributes.get("xml:lang") or ""
        page.language = lang.split("-")[0].strip().lower()[:8]

    refresh = _meta_refresh(tree, base)
    if refresh is not None and refresh[0] != url:
        page.refresh, page.refresh_redirects = refresh
        # A redirect in HTML: the target is the page, so this one is not indexed and
        # the target is followed even under nofollow, as an HTTP redirect is. First in
        # the links, so the cap never drops it.
        page.noindex = page.noindex or page.refresh_redirects
        if page.refresh_redirects or not page.nofollow:
            page.links.append(Link(page.refresh, ""))

    if not page.nofollow:
        resolve = LinkResolver(base)
        seen: set[str] = {link.url for link in page.links}
        for a in tree.css("a[href]"):
            rel = (a.attributes.get("rel") or "").lower()
            if "nofollow" in rel:
                continue
            target = resolve(a.attributes.get("href") or "")
            if target is None or target in seen:
                continue
            seen.add(target)
            page.links.append(Link(target, _norm(a.text(), MAX_ANCHOR_CHARS)))
            if len(page.links) >= MAX_LINKS_PER_PAGE:
                break
        if rest:
            _scan_links(rest, resolve, seen, page.links)

    if not page.noindex:
        root = None
        for selector in MAIN_SELECTORS:
            root = tree.css_first(selector)
            if root is not None:
                break
        if root is None:
            root = tree.body
        if root is not None:
            # Strip boilerplate inside the content root only: a page that marks its main
            # content leaves the rest out anyway, and the smaller subtree is cheaper.
            root.strip_tags(BOILERPLATE_TAGS)
            page.text = _norm(root.text(separator=" "), MAX_TEXT_CHARS)
        if not page.title and page.text:
            page.title = page.text[:80]
    return page
