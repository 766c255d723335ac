"""URL canonicalisation and crawler-trap heuristics (crawler.urls)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from rhizome.crawler.urls import (
    MAX_PATH_SEGMENTS,
    MAX_REPEATED_SEGMENT,
    MAX_URL_LENGTH,
    canonicalize,
    host_of,
    looks_like_trap,
)

BASE = URL("http://example.com/a/b/page.html?x=1")


# --- canonicalize: absolute URLs -------------------------------------------------------


def test_scheme_and_host_are_lower_cased_but_path_is_not() -> None:
    assert canonicalize("HTTP://Example.COM/Path/To") == "http://example.com/Path/To"


def test_trailing_dot_of_host_is_dropped() -> None:
    assert canonicalize("http://example.com./x") == "http://example.com/x"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com:80/", "http://example.com/"),
        ("https://example.com:443/p", "https://example.com/p"),
        ("http://example.com:8080/", "http://example.com:8080/"),
        ("https://example.com:80/", "https://example.com:80/"),
    ],
)
def test_default_port_removed_other_ports_kept(url: str, expected: str) -> None:
    assert canonicalize(url) == expected


def test_fragment_removed() -> None:
    assert canonicalize("http://example.com/doc#section-2") == "http://example.com/doc"


def test_dot_segments_resolved() -> None:
    assert canonicalize("http://example.com/a/./b/../c") == "http://example.com/a/c"


def test_tracking_parameters_dropped_and_query_sorted() -> None:
    got = canonicalize(
        "http://example.com/list?utm_source=news&page=2&fbclid=abc&Sort=asc&gclid=1&UTM_MEDIUM=x"
    )
    assert got == "http://example.com/list?Sort=asc&page=2"


def test_query_that_only_had_tracking_params_disappears() -> None:
    assert canonicalize("http://example.com/p?utm_campaign=spring") == "http://example.com/p"


def test_two_spellings_of_one_page_are_equal() -> None:
    a = canonicalize("HTTP://WWW.Example.com:80/a/../b?y=2&x=1&utm_term=q#top")
    b = canonicalize("http://www.example.com/b?x=1&y=2")
    assert a == b == "http://www.example.com/b?x=1&y=2"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/file",
        "mailto:someone@example.com",
        "javascript:alert(1)",
        "tel:+123456",
        "data:text/html,<p>hi</p>",
        "file:///etc/passwd",
        "gopher://example.com/",
        "",
        "   ",
        "#only-a-fragment",
    ],
)
def test_non_http_and_empty_urls_rejected(url: str) -> None:
    assert canonicalize(url) is None
    assert canonicalize(url, BASE) is None


def test_user_info_rejected() -> None:
    assert canonicalize("http://user:pw@example.com/") is None


@pytest.mark.parametrize("url", ["http://\x0c/", "http://a b/", "http://./"])
def test_hosts_with_whitespace_or_control_characters_rejected(url: str) -> None:
    # Found by the property test below: "http://\x0c?#" came out as "http://\x0c".
    assert canonicalize(url) is None


def test_overlong_url_rejected() -> None:
    assert canonicalize("http://example.com/" + "a" * MAX_URL_LENGTH) is None


def test_relative_without_base_rejected() -> None:
    assert canonicalize("/just/a/path") is None
    assert canonicalize("page.html") is None


# --- canonicalize: relative resolution -------------------------------------------------


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("?q", "http://example.com/a/b/page.html?q"),
        ("?b=2&a=1", "http://example.com/a/b/page.html?a=1&b=2"),
        ("//other.org/p", "http://other.org/p"),
        ("//Other.ORG:80/p#x", "http://other.org/p"),
        ("/root", "http://example.com/root"),
        ("sub/x", "http://example.com/a/b/sub/x"),
        ("../up", "http://example.com/a/up"),
        ("../../../../too-far", "http://example.com/too-far"),
        ("./same", "http://example.com/a/b/same"),
        ("https://secure.example.com/", "https://secure.example.com/"),
    ],
)
def test_relative_links_resolve_against_base(href: str, expected: str) -> None:
    assert canonicalize(href, BASE) == expected


def test_protocol_relative_link_keeps_base_scheme() -> None:
    assert canonicalize("//cdn.example.org/x", URL("https://example.com/")) == (
        "https://cdn.example.org/x"
    )


def test_root_relative_cache_does_not_leak_between_hosts() -> None:
    # The cache is keyed on the origin: the same href on two hosts must stay distinct.
    a = canonicalize("/shared", URL("http://one.example/x"))
    b = canonicalize("/shared", URL("https://two.example/y"))
    assert a == "http://one.example/shared"
    assert b == "https://two.example/shared"


def test_path_relative_cache_does_not_leak_between_directories() -> None:
    a = canonicalize("item", URL("http://example.com/d1/index.html"))
    b = canonicalize("item", URL("http://example.com/d2/index.html"))
    assert a == "http://example.com/d1/item"
    assert b == "http://example.com/d2/item"


# --- host_of ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://example.com/a/b", "example.com"),
        ("http://example.com", "example.com"),
        ("https://example.com:8443/x?y", "example.com:8443"),
        ("http://127.0.0.1:5000/", "127.0.0.1:5000"),
        ("not a url", ""),
    ],
)
def test_host_of(url: str, host: str) -> None:
    assert host_of(url) == host


def test_host_of_canonical_urls_agrees_across_spellings() -> None:
    a = canonicalize("HTTP://Example.com:80/x")
    b = canonicalize("http://example.com/y")
    assert a is not None and b is not None
    assert host_of(a) == host_of(b) == "example.com"


# --- looks_like_trap -------------------------------------------------------------------


def test_ordinary_urls_are_not_traps() -> None:
    assert not looks_like_trap("http://example.com/")
    assert not looks_like_trap("http://example.com/blog/2024/05/post.html")
    assert not looks_like_trap("http://example.com/a/b/a/b")  # repeats, but not too often
    assert not looks_like_trap("http://example.com/docs/v1.2/")


def test_repeated_segments_are_a_trap() -> None:
    trap = "http://example.com" + "/a/b" * (MAX_REPEATED_SEGMENT + 1)
    assert looks_like_trap(trap)
    at_limit = "http://example.com" + "/a/b" * MAX_REPEATED_SEGMENT
    assert not looks_like_trap(at_limit)


def test_too_deep_is_a_trap() -> None:
    deep = "http://example.com/" + "/".join(f"s{i}" for i in range(MAX_PATH_SEGMENTS + 1))
    ok = "http://example.com/" + "/".join(f"s{i}" for i in range(MAX_PATH_SEGMENTS))
    assert looks_like_trap(deep)
    assert not looks_like_trap(ok)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/img/logo.PNG",
        "http://example.com/a.pdf",
        "http://example.com/dl/setup.exe?v=2",
        "http://example.com/static/app.js",
        "http://example.com/archive.tar.gz",
    ],
)
def test_binary_extensions_are_skipped(url: str) -> None:
    assert looks_like_trap(url)


def test_extension_only_counts_on_last_segment() -> None:
    assert not looks_like_trap("http://example.com/files.zip/index.html")
    assert not looks_like_trap("http://example.com/page?download=file.zip")


# --- property --------------------------------------------------------------------------

url_like = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda scheme, host, path, q, frag: f"{scheme}://{host}{path}{q}{frag}",
        st.sampled_from(["http", "https", "HTTP", "ftp", "hTtPs"]),
        st.text(max_size=30),
        st.text(max_size=60),
        st.text(max_size=40).map(lambda s: "?" + s),
        st.text(max_size=10).map(lambda s: "#" + s),
    ),
)


@settings(max_examples=400, deadline=None)
@given(url_like, st.sampled_from([None, BASE, URL("https://h.example:8443/d/")]))
def test_canonicalize_never_raises_and_is_idempotent(text: str, base: URL | None) -> None:
    once = canonicalize(text, base)
    if once is None:
        return
    assert once.startswith(("http://", "https://"))
    assert canonicalize(once) == once
    # Resolving an absolute canonical URL against any base changes nothing either.
    assert canonicalize(once, BASE) == once
