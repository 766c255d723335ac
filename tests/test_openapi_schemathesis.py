"""Property-based checks of the JSON API against its own OpenAPI document (schemathesis).

The schema is read from a real node over loopback HTTP (the session's ``crawled_node``), and
every operation in it gets generated requests: no response may be a 5xx, every status code
must be documented, and every body must match its documented schema.

POST /api/seeds is left out of the generated run: a generated URL that happened to name a
real host would make the node resolve or fetch it. Its responses are checked against the same
document with hand-picked bodies on a fresh node that only knows the fixture site.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from conftest import FixtureSite, NodeFactory, NodeHandle
from hypothesis import HealthCheck, settings
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
        response = case.call_and_validate(base_url=node.url, checks=CHECKS, timeout=15)
        assert response.status_code == expected, (body, response.text)
    out = node.output()
    assert "unhandled error" not in out and "Traceback" not in out, out
