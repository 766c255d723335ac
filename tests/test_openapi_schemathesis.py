"""Property-based checks of the JSON API against its own OpenAPI document (schemathesis).

The schema is read from a real node over loopback HTTP (the session's ``crawled_node``), and
every operation in it gets generated requests: no response may be a 5xx, every status code
must be documented, and every body must match its documented schema.

POST /api/seeds is left out of the generated run: a generated URL that happened to name a
real host would make the node resolve or fetch it. Its responses are checked against the same
document with hand-picked bodies on a fresh node that only knows the fixture site, sent with
the operator credential (and once without, which the document must also describe).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from conftest import FixtureSite, NodeFactory, NodeHandle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.schemas import BaseSchema

pytestmark = pytest.mark.timeout(120)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def load_schema(node: NodeHandle) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{node.url}/api/openapi.json")


@pytest.fixture
def node_api(crawled_node: NodeHandle) -> BaseSchema:
    return load_schema(crawled_node)


schema = schemathesis.pytest.from_fixture("node_api").exclude(method="POST", path="/api/seeds")


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_api_conforms_to_openapi(case: schemathesis.Case, crawled_node: NodeHandle) -> None:
    case.call_and_validate(base_url=crawled_node.url, checks=CHECKS, timeout=15)


# Random strings seldom spell the query language; these do. Every field of the index, every
# operator tantivy's parser knows, nested, and the schema still has to hold for the answer.
WORDS = st.sampled_from(["moon", "planet", "telescope", "comet", "nebula", "a", "zz", "ß"])
FIELDS = st.sampled_from(
    "title body description anchor url url_words canonical host site language fetched x".split()
)
VALUES = st.one_of(
    WORDS,
    st.just("*"),
    WORDS.map(lambda w: w + "*"),
    WORDS.map(lambda w: f'"{w} {w}"'),
    st.sampled_from(["[a TO z]", "{0 TO 9]", ">5", "<=a", "IN [a b]", "(*)", "127.0.0.1"]),
)
ATOMS = st.one_of(
    WORDS,
    st.builds(lambda f, v: f"{f}:{v}", FIELDS, VALUES),
    st.builds(lambda w, m: w + m, WORDS, st.sampled_from(["^2", "^0", "~1", "*", "~"])),
    st.sampled_from(['"', "(", ")", ":", "*", "AND", "OR", "NOT", "\\", "-site:", "site:a:*"]),
)
TERMS = st.builds(lambda p, a: p + a, st.sampled_from(["", "", "+", "-"]), ATOMS)
QUERIES = st.recursive(
    st.lists(TERMS, min_size=1, max_size=4).map(" ".join),
    lambda inner: st.one_of(
        inner.map(lambda q: f"({q})"),
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, st.sampled_from(["AND", "OR"]), inner),
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def module_schema(crawled_node: NodeHandle) -> BaseSchema:
    return load_schema(crawled_node)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
@given(q=QUERIES)
def test_query_language_conforms(
    q: str, module_schema: BaseSchema, crawled_node: NodeHandle
) -> None:
    for path, query in (
        ("/api/search", {"q": q, "scope": "local"}),
        ("/api/search", {"q": q, "limit": "3", "offset": "2"}),
        ("/api/suggest", {"q": q}),
    ):
        case = module_schema[path]["GET"].Case(query=query)
        case.call_and_validate(base_url=crawled_node.url, checks=CHECKS, timeout=15)


@pytest.mark.parametrize("q", ["title:*", "url:*", "moon OR body:(*)", "-host:* moon", "nofield:*"])
def test_field_exists_query_is_searched_as_words(crawled_node: NodeHandle, q: str) -> None:
    """``field:*`` on a field that is not a fast field made tantivy raise at search time.
    Query text is never refused (issue #11): ``*`` is no word, the rest is searched."""
    resp = crawled_node.get("/api/search", q=q, scope="local")
    assert resp.status == 200, resp.text
    assert isinstance(resp.json()["results"], list)
    assert crawled_node.get_json("/api/suggest", q=q)[0] == q


def test_schema_covers_the_api(crawled_node: NodeHandle) -> None:
    operations = {
        (op.method.upper(), op.path)
        for op in (result.ok() for result in load_schema(crawled_node).get_all_operations())
    }
    assert operations >= {
        ("GET", "/api/search"),
        ("GET", "/api/status"),
        ("POST", "/api/seeds"),
        ("GET", "/api/suggest"),
        ("GET", "/healthz"),
    }


def _seed_bodies(site: str) -> list[tuple[Any, int]]:
    """(JSON body, expected status) pairs; no URL names a host off this machine."""
    return [
        ({"urls": [f"{site}/index.html", f"{site}/planets.html"]}, 202),
        ({"urls": []}, 202),
        ({"urls": ["", "not a url", "ftp://127.0.0.1/x", "javascript:alert(1)", "//"]}, 202),
        ({"urls": ["http://[::1", "http://127.0.0.1:99999/", "\x00", "é" * 300]}, 202),
        ({"urls": [f"{site}/moons.html"] * 3}, 202),
        ({"urls": [f"{site}/x{i}" for i in range(1001)]}, 400),
        ({"urls": "http://127.0.0.1/"}, 400),
        ({"urls": [1, 2]}, 400),
        ({"url": [f"{site}/"]}, 400),
        ([f"{site}/"], 400),
        (None, 400),
    ]


def test_seeds_conform_to_openapi(node_factory: NodeFactory, fixture_site: FixtureSite) -> None:
    node = node_factory.start("--seed-hosts-only", site=fixture_site)
    operation = load_schema(node)["/api/seeds"]["POST"]
    for body, expected in _seed_bodies(fixture_site.url):
        case = operation.Case(body=body, media_type="application/json")
        response = case.call_and_validate(
            base_url=node.url, checks=CHECKS, timeout=15, headers=node.operator_headers()
        )
        assert response.status_code == expected, (body, response.text)
    stranger = operation.Case(body={"urls": [f"{fixture_site}/"]}, media_type="application/json")
    response = stranger.call_and_validate(base_url=node.url, checks=CHECKS, timeout=15)
    assert response.status_code == 401, response.text
    out = node.output()
    assert "unhandled error" not in out and "Traceback" not in out, out
