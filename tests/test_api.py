"""Bad input gets a clear 4xx (JSON on /api/, HTML on the web UI), never a 5xx.

GET tests share the session's crawled node (a subprocess); POST /api/seeds tests run the app
in-process on a loopback TestServer, so each gets a fresh, empty node, and send the operator
credential (who may post seeds is tests/test_operator.py's subject).
"""

from __future__ import annotations

import html
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import SCRIPT_PAYLOAD, NodeHandle

from rhizome.api import operator
from rhizome.api.app import create_app
from rhizome.api.config import load_config
from rhizome.api.routes import MAX_SEEDS_PER_REQUEST
from rhizome.api.search import MAX_OFFSET, SearchParams
from rhizome.api.web_ui import _results_html

pytestmark = pytest.mark.timeout(60)


def assert_json_error(resp_status: int, content_type: str, body: Any, status: int) -> str:
    assert resp_status == status, body
    assert content_type == "application/json"
    assert body["status"] == status
    message = body["error"]
    assert isinstance(message, str) and message.strip()
    assert "Traceback" not in message
    return message


def assert_no_unhandled_errors(node: NodeHandle) -> None:
    out = node.output()
    assert "unhandled error" not in out and "Traceback" not in out, out


# --- GET /api/search -------------------------------------------------------------------------

LONG_QUERY = "telescope " * 60  # 600 characters


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, "missing query"),
        ({"q": "moon", "limit": "abc"}, "limit must be a whole number"),
        ({"q": "moon", "limit": "1.5"}, "limit must be a whole number"),
        ({"q": "moon", "limit": "0"}, "limit must be between"),
        ({"q": "moon", "limit": "10000"}, "limit must be between"),
        ({"q": "moon", "limit": "-3"}, "limit must be between"),
        ({"q": "moon", "offset": "-1"}, "offset must be between"),
        ({"q": "moon", "offset": "x"}, "offset must be a whole number"),
        ({"q": "moon", "offset": str(MAX_OFFSET + 1)}, "offset must be between"),
        ({"q": "moon", "scope": "bogus"}, "scope must be one of"),
    ],
    ids=lambda v: json.dumps(v)[:40] if isinstance(v, dict) else None,
)
def test_bad_search_parameters_get_400_json(
    crawled_node: NodeHandle, params: dict[str, str], expected: str
) -> None:
    resp = crawled_node.get("/api/search", **params)
    message = assert_json_error(resp.status, resp.content_type, resp.json(), 400)
    assert expected in message
    assert_no_unhandled_errors(crawled_node)


# Query text is never refused (issue #11): only parameters get a 400.
ODD_QUERY_TEXT = [
    '"unbalanced quote',
    'ring "of fire',
    "a:b:c(",
    "nosuchfield:moon",
    "(moon",
    LONG_QUERY,
    "moon\x00light",
    "site:a site:b site:c site:d site:e site:f site:g site:h site:i",
    "!!!",
    "",
    "   ",
]


@pytest.mark.parametrize("q", ODD_QUERY_TEXT, ids=lambda q: repr(q)[:40])
@pytest.mark.parametrize("scope", ["local", "network"])
def test_query_text_is_never_refused(crawled_node: NodeHandle, q: str, scope: str) -> None:
    data = crawled_node.get_json("/api/search", q=q, scope=scope)
    assert isinstance(data["results"], list)
    assert_no_unhandled_errors(crawled_node)


def test_limits_at_the_edges_are_accepted(crawled_node: NodeHandle) -> None:
    for params in ({"limit": "1"}, {"limit": "100"}, {"offset": str(MAX_OFFSET)}, {"limit": ""}):
        resp = crawled_node.get("/api/search", q="backyard", **params)
        assert resp.status == 200, (params, resp.text)
        assert resp.json()["number_of_results"] == 13
    data = crawled_node.get_json("/api/search", q="backyard", scope="network")
    assert data["scope"] == "network" and data["results"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/nope", 404),
        ("GET", "/api/", 404),
        ("GET", "/api/status/extra", 404),
        ("POST", "/api/search", 405),
        ("GET", "/api/seeds", 405),
        ("DELETE", "/api/status", 405),
    ],
)
def test_unknown_api_paths_and_methods_get_json_errors(
    crawled_node: NodeHandle, method: str, path: str, status: int
) -> None:
    resp = crawled_node.request(method, path)
    assert_json_error(resp.status, resp.content_type, resp.json(), status)


# --- POST /api/seeds (in-process app on a loopback TestServer) -------------------------------


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    config = load_config(
        env={},
        flags={"data_dir": str(tmp_path / "data"), "http": "127.0.0.1:0", "parse_workers": 1},
    )
    # Made before the node starts, which then keeps it (as on a node's second start).
    token = operator.load_or_create(config.data_dir)
    server = TestServer(create_app(config), host="127.0.0.1")
    client: TestClient[Any, Any] = TestClient(server, headers={"Authorization": f"Bearer {token}"})
    async with client:  # starts the server, and closes both at the end
        yield client


SHAPE = "body must be JSON like"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"not json", SHAPE),
        (b"", SHAPE),
        (b"\xff\xfe\x00", SHAPE),
        (b"[" * 100_000, SHAPE),  # nested deeper than the JSON decoder's recursion limit
        (b"null", SHAPE),
        (b'"https://example.org/"', SHAPE),
        (b'["https://example.org/"]', SHAPE),
        (b'{"url": ["https://example.org/"]}', SHAPE),
        (b'{"urls": "https://example.org/"}', SHAPE),
        (b'{"urls": {"a": "https://example.org/"}}', SHAPE),
        (b'{"urls": null}', SHAPE),
        (b'{"urls": [1, 2]}', SHAPE),
        (b'{"urls": [["https://example.org/"]]}', SHAPE),
        (
            json.dumps({"urls": [f"https://e{i}.example/" for i in range(1001)]}).encode(),
            f"at most {MAX_SEEDS_PER_REQUEST} URLs",
        ),
    ],
    ids=lambda v: repr(v[:24]) if isinstance(v, bytes) else None,
)
async def test_bad_seed_bodies_get_400_json(
    client: TestClient[Any, Any], body: bytes, expected: str
) -> None:
    resp = await client.post("/api/seeds", data=body, headers={"Content-Type": "application/json"})
    message = assert_json_error(resp.status, resp.content_type, await resp.json(), 400)
    assert expected in message
    status = await (await client.get("/api/status")).json()
    assert status["crawl"]["known_urls"] == 0, "a rejected request must not queue anything"


async def test_oversized_seed_body_gets_413_json(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/api/seeds", data=b" " * (2 * 1024 * 1024), headers={"Content-Type": "application/json"}
    )
    assert_json_error(resp.status, resp.content_type, await resp.json(), 413)


async def test_non_http_seed_urls_are_rejected_and_counted(client: TestClient[Any, Any]) -> None:
    urls = [
        "ftp://example.org/file",
        "javascript:alert(1)",
        "mailto:someone@example.org",
        "file:///etc/passwd",
        "not a url",
        "http://",
        "https://example.org/page#section",
    ]
    resp = await client.post("/api/seeds", json={"urls": urls})
    assert resp.status == 202
    assert await resp.json() == {
        "accepted": ["https://example.org/page"],
        "rejected": 6,
        "blocked": [],
    }
    resp = await client.post("/api/seeds", json={"urls": []})
    assert resp.status == 202
    assert await resp.json() == {"accepted": [], "rejected": 0, "blocked": []}


async def test_in_process_search_errors_are_json(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/search", params={"q": "moon", "limit": "abc"})
    assert_json_error(resp.status, resp.content_type, await resp.json(), 400)
    resp = await client.get("/api/search", params={"q": "a:b:c("})
    assert resp.status == 200  # query text is never refused
    resp = await client.get("/api/search", params={"q": "nothing indexed yet"})
    assert resp.status == 200
    data = await resp.json()
    assert data["results"] == [] and data["number_of_results"] == 0


# --- the HTML pages ----------------------------------------------------------------------------

ESCAPED_PAYLOAD = html.escape(SCRIPT_PAYLOAD)  # &lt;script&gt;alert(1)&lt;/script&gt;


def test_result_titles_and_snippets_are_escaped(crawled_node: NodeHandle) -> None:
    # The glossary page's <title> and body both carry a literal <script> payload.
    api = crawled_node.search("glossary parsec")
    assert api["results"][0]["title"] == f"Astronomy Glossary {SCRIPT_PAYLOAD}"
    resp = crawled_node.get("/", q="glossary parsec")
    assert resp.status == 200 and resp.content_type == "text/html"
    assert SCRIPT_PAYLOAD not in resp.text
    assert "<script" not in resp.text.lower()
    assert f"Astronomy Glossary {ESCAPED_PAYLOAD}" in resp.text
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    assert resp.headers["x-content-type-options"] == "nosniff"
    snippet = crawled_node.get("/", q="never paste alert")
    assert SCRIPT_PAYLOAD not in snippet.text
    assert "&lt;script&gt;<mark>alert</mark>(1)&lt;/script&gt;" in snippet.text


def test_the_query_itself_is_escaped(crawled_node: NodeHandle) -> None:
    for q in (SCRIPT_PAYLOAD, f'"><img src=x onerror=alert(1)> {SCRIPT_PAYLOAD}'):
        resp = crawled_node.get("/", q=q)
        assert resp.status in (200, 400) and resp.content_type == "text/html"
        assert SCRIPT_PAYLOAD not in resp.text
        assert "<img" not in resp.text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"q": "moon", "limit": "abc"}, "limit must be a whole number"),
        ({"q": "moon", "offset": "-1"}, "offset must be between"),
    ],
)
def test_bad_query_renders_a_readable_400_page(
    crawled_node: NodeHandle, params: dict[str, str], message: str
) -> None:
    resp = crawled_node.get("/", **params)
    assert resp.status == 400
    assert resp.content_type == "text/html"
    assert resp.text.startswith("<!doctype html>")
    assert 'role="alert">Cannot search: ' in resp.text
    assert html.escape(message) in resp.text
    assert 'name="q"' in resp.text, "the search box stays on the page to try again"


@pytest.mark.parametrize("q", ['"unbalanced', "a:b:c(", "x" * 600, "!!!"])
def test_odd_query_text_renders_a_results_page(crawled_node: NodeHandle, q: str) -> None:
    resp = crawled_node.get("/", q=q)
    assert resp.status == 200 and resp.content_type == "text/html"
    assert 'role="alert"' not in resp.text
    assert 'name="q"' in resp.text


def test_home_and_status_pages(crawled_node: NodeHandle) -> None:
    home = crawled_node.get("/")
    assert home.status == 200 and home.content_type == "text/html"
    assert 'name="q"' in home.text
    about = crawled_node.get("/status")
    assert about.status == 200 and "About this node" in about.text
    assert "<th>Documents in index</th><td>13</td>" in about.text


def test_next_link_stops_at_the_deepest_page_the_api_serves() -> None:
    def render(offset: int) -> str:
        data = {
            "number_of_results": 5000,
            "took_ms": 1.0,
            "results": [
                {"url": "https://e.example/", "title": "t", "host": "e.example", "content_html": ""}
            ]
            * 100,
        }
        return _results_html(data, SearchParams(q="a", limit=100, offset=offset))

    assert 'rel="next"' in render(MAX_OFFSET - 100)
    assert 'rel="next"' not in render(MAX_OFFSET)
    assert 'rel="prev"' in render(MAX_OFFSET)


def test_snippet_html_from_peers_keeps_only_mark_tags() -> None:
    from rhizome.api.web_ui import _snippet_html

    hostile = "a <mark>hit</mark> <script>alert(1)</script><img src=x onerror=alert(2)><mark x=1>"
    html_out = _snippet_html({"content_html": hostile})
    assert "<script" not in html_out and "<img" not in html_out
    assert html_out.count("<mark>") == html_out.count("</mark>") == 1
    assert "&lt;script&gt;" in html_out
