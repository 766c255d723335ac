"""HTML → ParsedPage (crawler.parse.parse_html): metadata, robots directives, text, links."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rhizome.crawler import parse as parse_module
from rhizome.crawler.parse import (
    MAX_LINKS_PER_PAGE,
    MAX_TEXT_CHARS,
    MAX_TITLE_CHARS,
    MAX_TREE_CHARS,
    decode_html,
    parse_html,
    refresh_target,
)

URL_ = "http://example.com/dir/page.html"

PAGE = b"""<!doctype html>
<html lang="en-US">
<head>
  <title>  The   Title\n of the page </title>
  <meta name="description" content="A short   description.">
  <link rel="canonical" href="/dir/canonical-page">
  <style>.hidden { color: red } STYLETEXT</style>
  <script>var SCRIPTTEXT = 1;</script>
</head>
<body>
  <header>HEADERTEXT</header>
  <nav><a href="/nav-link">NAVTEXT</a></nav>
  <main>
    <h1>Welcome</h1>
    <p>Body text about <b>gardening</b>.</p>
    <a href="other.html">Other   page</a>
    <a href="/abs#frag">Absolute</a>
    <a href="other.html">Duplicate of other</a>
    <a href="https://elsewhere.org/x?utm_source=a&b=1">Elsewhere</a>
    <a href="/sponsored" rel="sponsored nofollow">Paid</a>
    <a href="javascript:void(0)">JS</a>
    <a href="mailto:me@example.com">Mail</a>
    <noscript>NOSCRIPTTEXT</noscript>
  </main>
  <footer>FOOTERTEXT</footer>
</body>
</html>
"""


def test_metadata_extracted() -> None:
    page = parse_html(URL_, PAGE, content_type="text/html; charset=utf-8", status=200)
    assert page.url == URL_
    assert page.title == "The Title of the page"
    assert page.description == "A short description."
    assert page.canonical == "http://example.com/dir/canonical-page"
    assert page.language == "en"
    assert page.noindex is False and page.nofollow is False


def test_links_resolved_with_anchor_text_deduplicated() -> None:
    page = parse_html(URL_, PAGE)
    links = [(link.url, link.anchor) for link in page.links]
    assert links == [
        ("http://example.com/nav-link", "NAVTEXT"),
        ("http://example.com/dir/other.html", "Other page"),
        ("http://example.com/abs", "Absolute"),
        ("https://elsewhere.org/x?b=1", "Elsewhere"),
    ]


def test_rel_nofollow_links_skipped() -> None:
    page = parse_html(URL_, PAGE)
    assert all("sponsored" not in link.url for link in page.links)


def test_text_excludes_script_style_nav_and_boilerplate() -> None:
    page = parse_html(URL_, PAGE)
    assert "Welcome" in page.text
    assert "Body text about gardening ." in page.text or "gardening" in page.text
    for hidden in (
        "SCRIPTTEXT",
        "STYLETEXT",
        "NAVTEXT",
        "HEADERTEXT",
        "FOOTERTEXT",
        "NOSCRIPTTEXT",
        "color: red",
    ):
        assert hidden not in page.text, hidden


def test_text_without_main_uses_body_minus_boilerplate() -> None:
    body = b"<html><body><nav>Menu</nav><p>Plain content</p><script>x()</script></body></html>"
    page = parse_html(URL_, body)
    assert page.text == "Plain content"
    assert page.title == "Plain content"  # no <title>: falls back to the text


def test_base_href_changes_link_resolution() -> None:
    body = b'<html><head><base href="http://cdn.example.net/root/"></head><a href="x">X</a></html>'
    page = parse_html(URL_, body)
    assert [link.url for link in page.links] == ["http://cdn.example.net/root/x"]


def test_long_title_truncated() -> None:
    body = b"<title>" + b"word " * 500 + b"</title>"
    page = parse_html(URL_, body)
    assert 0 < len(page.title) <= MAX_TITLE_CHARS
    assert page.title.startswith("word word")


def test_text_after_a_long_whitespace_run_is_kept() -> None:
    # Generated pages can carry huge runs of indentation; folding must not lose the content
    # that follows (a cut before folding whitespace once dropped it).
    body = b"<html><body><div>" + b" \n" * (MAX_TEXT_CHARS * 2) + b"</div><p>Real content</p>"
    page = parse_html(URL_, body)
    assert page.text == "Real content"
    long_title = b"<title>" + b"\n" * (MAX_TITLE_CHARS * 3) + b"Late title</title>"
    assert parse_html(URL_, long_title).title == "Late title"


# --- robots directives ---------------------------------------------------------------


def test_meta_robots_noindex_nofollow() -> None:
    body = (
        b'<html><head><meta name="robots" content="noindex,nofollow"></head>'
        b'<body><p>Secret</p><a href="/a">a</a></body></html>'
    )
    page = parse_html(URL_, body)
    assert page.noindex and page.nofollow
    assert page.links == []
    assert page.text == ""


def test_meta_robots_case_and_spaces() -> None:
    body = b'<meta name="ROBOTS" content=" NoIndex ; follow"><a href="/a">a</a>'
    page = parse_html(URL_, body)
    assert page.noindex is True
    assert page.nofollow is False
    assert [link.url for link in page.links] == ["http://example.com/a"]


def test_meta_robots_none_means_both() -> None:
    page = parse_html(URL_, b'<meta name="robots" content="none"><a href="/a">a</a>')
    assert page.noindex and page.nofollow and page.links == []


def test_x_robots_tag_header() -> None:
    body = b"<p>Hello</p><a href='/a'>a</a>"
    page = parse_html(URL_, body, x_robots_tag="noindex")
    assert page.noindex is True and page.nofollow is False
    assert [link.url for link in page.links] == ["http://example.com/a"]
    page = parse_html(URL_, body, x_robots_tag="nofollow")
    assert page.noindex is False and page.nofollow is True
    assert page.links == [] and page.text == "Hello a"


def test_no_directives_means_index_and_follow() -> None:
    page = parse_html(URL_, b'<meta name="robots" content="index, follow"><p>x</p>')
    assert not page.noindex and not page.nofollow


# --- charsets and hostile bytes ------------------------------------------------------

LATIN_TEXT = "Café naïve – “quoted” €5"


def test_windows_1252_page_with_meta_charset() -> None:
    html = (
        '<html><head><meta charset="windows-1252"><title>Café</title></head>'
        f"<body><p>{LATIN_TEXT}</p></body></html>"
    )
    page = parse_html(URL_, html.encode("cp1252"))
    assert page.title == "Café"
    assert page.text == LATIN_TEXT


def test_latin1_http_equiv_meta() -> None:
    html = (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">'
        "</head><body><p>Grüße aus Köln</p></body></html>"
    )
    page = parse_html(URL_, html.encode("latin-1"))
    assert page.text == "Grüße aus Köln"


def test_header_charset_wins_over_meta() -> None:
    html = '<meta charset="utf-8"><p>Grüße</p>'
    page = parse_html(URL_, html.encode("latin-1"), content_type="text/html; charset=ISO-8859-1")
    assert page.text == "Grüße"


def test_declared_utf8_that_is_not_falls_back_without_raising() -> None:
    body = "<p>Caf\xe9 cr\xe8me</p>".encode("latin-1")
    page = parse_html(URL_, body, content_type="text/html; charset=utf-8")
    assert page.text == "Café crème"


def test_unknown_charset_and_invalid_bytes_never_raise() -> None:
    body = b'<meta charset="x-no-such-charset"><p>ok \xff\xfe\xc3\x28 still</p>'
    page = parse_html(URL_, body, content_type="text/html; charset=bogus")
    assert page.text.startswith("ok ")
    assert page.text.endswith("still")


CHINESE = "朱镕基 北京欢迎你们，中华人民共和国的首都是全国的政治中心和文化中心。"
JAPANESE = "東京は日本の首都であり、世界最大級の都市圏を形成している。今日は天気が良い。"
RUSSIAN = "Москва — столица России и крупнейший по численности населения город страны."


def _doc(text: str, head: str = "") -> str:
    return f"<html><head>{head}<title>t</title></head><body><p>{text}</p></body></html>"


def test_gbk_labelled_gb2312_is_read_as_gbk() -> None:
    """镕 is GBK, not GB2312: Python's gb2312 codec would turn it into U+FFFD."""
    body = _doc(CHINESE).encode("gbk")
    assert parse_html(URL_, body, content_type="text/html; charset=gb2312").text == CHINESE
    meta = _doc(CHINESE, '<meta charset="GB2312">').encode("gbk")
    assert parse_html(URL_, meta).text == CHINESE


def test_charset_labels_mean_what_they_mean_to_browsers() -> None:
    sjis = _doc(JAPANESE, '<meta charset="x-sjis">').encode("cp932")
    assert parse_html(URL_, sjis).text == JAPANESE
    # latin1 and iso-8859-1 are windows-1252: 0x80 is the euro sign, not a C1 control.
    for label in ("latin1", "iso-8859-1", "us-ascii"):
        body = _doc("5 \x80 caf\xe9").encode("latin-1")
        assert parse_html(URL_, body, content_type=f"text/html; charset={label}").text == (
            "5 € café"
        )


@pytest.mark.parametrize(
    ("text", "codec"), [(JAPANESE, "shift_jis"), (RUSSIAN, "cp1251"), (CHINESE, "gbk")]
)
def test_an_undeclared_legacy_charset_is_detected_not_read_as_windows_1252(
    text: str, codec: str
) -> None:
    page = parse_html(URL_, _doc(text).encode(codec), content_type="text/html")
    assert page.text == text


def test_an_undeclared_utf8_page_stays_utf8() -> None:
    text = "Grüße, naïve café — Ελλάδα, Москва, 東京"
    assert parse_html(URL_, _doc(text).encode(), content_type="text/html").text == text


def test_detection_reads_a_prefix_of_a_large_page() -> None:
    """The charset of an undeclared page is what its first 64 KiB say (as in browsers),
    so a 1.5 MB page costs no more than a small one. Detection over the whole of this
    body (75 KB of Russian, then 1.5 MB of Shift_JIS) finds no charset at all."""
    body = b"<html><body><p>%s</p><p>%s</p></body></html>" % (
        (RUSSIAN * 1_000).encode("cp1251"),
        (JAPANESE * 20_000).encode("shift_jis"),
    )
    started = time.perf_counter()
    text = decode_html(body, "text/html")
    assert RUSSIAN in text
    assert time.perf_counter() - started < 1.0  # measured 0.06 s


def test_utf8_bom_and_utf16_bom() -> None:
    html = "<html><title>Héllo</title><body><p>Wörld</p></body></html>"
    assert parse_html(URL_, b"\xef\xbb\xbf" + html.encode()).title == "Héllo"
    page16 = parse_html(URL_, html.encode("utf-16"))  # Python writes a BOM
    assert page16.noindex is False
    assert page16.title == "Héllo"
    assert page16.text == "Wörld"


def test_nul_bytes_are_dropped() -> None:
    body = b"<html><body><p>Hel\x00lo wor\x00ld</p></body></html>"
    page = parse_html(URL_, body)
    assert page.text == "Hello world"
    assert "\x00" not in decode_html(body + b"\x00" * 5000, None)


def test_many_nuls_after_the_sniffed_head_do_not_crash() -> None:
    body = b"<html><body><p>" + b"x" * 2000 + b"\x00" * 10_000 + b"</p></body></html>"
    page = parse_html(URL_, body)
    assert "\x00" not in page.text
    assert page.text.startswith("xxx")


@pytest.mark.parametrize("seed", range(8))
def test_binary_garbage_served_as_html_is_noindex(seed: int) -> None:
    body = random.Random(seed).randbytes(64 * 1024)
    page = parse_html(URL_, body, content_type="text/html")
    assert page.noindex is True
    assert page.text == "" and page.links == []


def test_png_served_as_html_is_noindex() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00" + bytes(range(256)) * 20
    assert parse_html(URL_, png, content_type="text/html").noindex is True


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096), st.sampled_from([None, "text/html; charset=utf-8", "text/html"]))
def test_parse_never_raises_on_arbitrary_bytes(body: bytes, ctype: str | None) -> None:
    page = parse_html(URL_, body, content_type=ctype)
    assert "\x00" not in page.text
    assert len(page.links) <= MAX_LINKS_PER_PAGE


# --- size limits ---------------------------------------------------------------------


def test_hundred_thousand_links_are_capped() -> None:
    anchors = "".join(f'<a href="/p{i}">link {i}</a>' for i in range(100_000))
    body = f"<html><body>{anchors}</body></html>".encode()
    started = time.monotonic()
    page = parse_html(URL_, body)
    assert time.monotonic() - started < 3.0
    assert len(page.links) == MAX_LINKS_PER_PAGE
    # The first links of the document are the ones kept, in order.
    assert page.links[0].url == "http://example.com/p0"
    assert page.links[0].anchor == "link 0"
    assert page.links[-1].url == f"http://example.com/p{MAX_LINKS_PER_PAGE - 1}"


def test_huge_text_is_capped() -> None:
    body = b"<p>" + b"lorem ipsum " * 100_000 + b"</p>"
    page = parse_html(URL_, body)
    assert len(page.text) == MAX_TEXT_CHARS


# --- meta refresh ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("0;URL=Documentation/web/index.html", (0.0, "Documentation/web/index.html")),
        ("0;URL='write/the-doc.html'", (0.0, "write/the-doc.html")),
        ('5; url="/moved"', (5.0, "/moved")),
        (" 0.5 , https://example.org/x", (0.5, "https://example.org/x")),
        ("url=next.html", (0.0, "next.html")),
        ("3", None),
        ("", None),
    ],
)
def test_refresh_content_is_read_as_browsers_read_it(
    content: str, expected: tuple[float, str] | None
) -> None:
    assert refresh_target(content) == expected


def test_instant_meta_refresh_is_a_redirect_its_target_followed_and_the_stub_not_indexed() -> None:
    body = (
        b'<META HTTP-EQUIV="refresh" content="0;URL=Documentation/web/index.html">'
        b"<html><head><title>Redirecting...</title></head>"
        b'<body>Redirecting to the documentation index...<a href="/help.html">help</a></body>'
    )
    page = parse_html("http://example.com/index.html", body)
    target = "http://example.com/Documentation/web/index.html"
    assert page.refresh == target and page.refresh_redirects
    assert page.noindex and page.text == ""
    assert [link.url for link in page.links] == [target, "http://example.com/help.html"]


def test_instant_meta_refresh_is_followed_under_nofollow_as_a_redirect_is() -> None:
    body = (
        b'<html><head><meta name="robots" content="nofollow">'
        b'<meta http-equiv="refresh" content="0; url=/new"></head><body>'
        b'<a href="/other">x</a></body></html>'
    )
    page = parse_html(URL_, body)
    assert [link.url for link in page.links] == ["http://example.com/new"]


def test_delayed_meta_refresh_is_a_link_and_the_page_is_indexed() -> None:
    body = (
        b'<html><head><title>Moved</title><meta http-equiv="refresh" content="10; url=next.html">'
        b"</head><body><p>This page has moved; you will be taken there.</p></body></html>"
    )
    page = parse_html(URL_, body)
    assert page.refresh == "http://example.com/dir/next.html"
    assert not page.refresh_redirects and not page.noindex
    assert "has moved" in page.text
    assert [link.url for link in page.links] == ["http://example.com/dir/next.html"]


def test_meta_refresh_to_itself_is_neither_a_redirect_nor_a_link() -> None:
    body = b'<html><head><meta http-equiv="refresh" content="0"></head><body>live</body></html>'
    page = parse_html(URL_, body)
    assert page.refresh is None and not page.noindex and page.links == []
    body = b'<meta http-equiv="refresh" content="30; url=page.html"><p>scores</p>'
    page = parse_html(URL_, body)
    assert page.refresh is None and not page.noindex and page.text == "scores"


def test_a_documentation_index_keeps_every_one_of_its_links() -> None:
    """rustdoc's core/all.html links 17,940 pages, some of which nothing else links: a
    cap of 1,000 lost 11,836 pages of the large corpus."""
    anchors = "".join(f'<a href="fn.item_{i}.html">item_{i}</a>' for i in range(17_940))
    page = parse_html("http://example.com/core/all.html", f"<body>{anchors}</body>".encode())
    assert len(page.links) == 17_940
    assert page.links[-1].url == "http://example.com/core/fn.item_17939.html"


# --- pages longer than the tree limit --------------------------------------------------


def _long_page() -> bytes:
    filler = "<p>" + "lorem ipsum dolor " * (MAX_TREE_CHARS // 18) + "</p>"
    tail = (
        '<a href="/late/1.html">Late <b>one</b></a>'
        "<a href='late/2.html?a=1&amp;b=2'>two &amp; more</a>"
        "<a class=x href=/late/3.html>three</a>"
        '<a rel="nofollow" href="/late/skipped.html">no</a>'
        '<a href="/early.html">again</a>'
    )
    return f'<html><body><a href="/early.html">early</a>{filler}{tail}</body></html>'.encode()


def test_links_past_the_tree_limit_are_read_as_a_whole_tree_would_read_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """rustdoc's x86_64 index (3.1 MB) links 5,024 pages; its last ones must not be lost
    because the page is too long to build a tree of."""
    body = _long_page()
    cut = parse_html(URL_, body)
    monkeypatch.setattr(parse_module, "MAX_TREE_CHARS", 10 * len(body))
    whole = parse_html(URL_, body)
    assert [(link.url, link.anchor) for link in cut.links] == [
        (link.url, link.anchor) for link in whole.links
    ]
    assert [link.url for link in cut.links] == [
        "http://example.com/early.html",
        "http://example.com/late/1.html",
        "http://example.com/dir/late/2.html?a=1&b=2",
        "http://example.com/late/3.html",
    ]
    assert cut.links[1].anchor == "Late one" and cut.links[2].anchor == "two & more"
    assert cut.text.startswith("early lorem ipsum")


TREE_MEMORY_LIMIT_MB = 40  # a whole tree of a 4 MiB page took +60 MB (measured)


def test_a_four_mib_page_is_parsed_in_bounded_memory() -> None:
    script = (
        "import sys\n"
        "from rhizome.crawler.parse import parse_html\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM'): return int(line.split()[1]) // 1024\n"
        "body = b'<html><body>' + b''.join(b'<div class=item><a href=\"/p%d.html\">item %d</a>"
        "<span>some description of the item</span></div>' % (i, i) for i in range(50000))\n"
        "body = body[: 4 * 1024 * 1024]\n"
        "before = hwm()\n"
        "page = parse_html('http://example.com/', body)\n"
        "print(hwm() - before, len(page.links))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    grew_mb, links = int(out[0]), int(out[1])
    assert links == 20_000  # MAX_LINKS_PER_PAGE: the page has more
    assert grew_mb < TREE_MEMORY_LIMIT_MB, f"+{grew_mb} MB to parse a 4 MiB page"
