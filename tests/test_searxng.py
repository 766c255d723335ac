"""A SearXNG instance can use a node as an engine: the ``settings.yml`` entry documented in
docs/SEARXNG.md, read out of that file, builds its requests and reads a real node's answers
the way SearXNG's generic ``json_engine`` does.

SearXNG is not installable from the package index, so the two parts of ``json_engine`` the
entry relies on are written out here from its documentation: how ``search_url``'s
placeholders are filled, and how a query path such as ``results`` or ``url`` is looked up
(a ``/``-separated key path, found at any depth; list entries are keyed by their index).
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import SITE_INDEXABLE, NodeHandle

DOC = Path(__file__).resolve().parent.parent / "docs" / "SEARXNG.md"
# What SearXNG sends to an engine by default: a browser's Accept, not application/json.
SEARXNG_HEADERS = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-US,en;q=0.5",
}
ENGINE_PLACEHOLDERS = ("query", "pageno", "lang", "time_range", "safe_search")
# The keys SearXNG documents for any engine (admin/settings/settings_engines) and those
# json_engine reads (its module docstring); a misspelt key would be silently ignored.
KNOWN_KEYS = {
    *("name", "engine", "shortcut", "categories", "timeout", "disabled", "inactive"),
    *("weight", "display_error_messages", "about", "enable_http", "retry_on_http_error"),
    *("tokens", "language", "proxies", "using_tor_proxy", "network"),
    *("search_url", "lang_all", "method", "request_body", "cookies", "headers"),
    *("paging", "page_size", "first_page_num", "send_page_num_on_first_page"),
    *("time_range_support", "time_range_url", "time_range_map", "safesearch"),
    *("safe_search_map", "title_html_to_text", "content_html_to_text"),
    *("no_result_for_http_status", "soft_max_redirects", "results_query", "url_query"),
    *("url_prefix", "title_query", "content_query", "thumbnail_query", "thumbnail_prefix"),
    "suggestion_query",
}


def documented_entry() -> dict[str, Any]:
    """The one engine entry in the doc's fenced yaml block, as SearXNG's settings loader
    would read it from the ``engines:`` list."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1, "docs/SEARXNG.md should hold exactly one yaml block"
    engines = yaml.safe_load(blocks[0])
    assert isinstance(engines, list) and len(engines) == 1
    entry: dict[str, Any] = engines[0]
    return entry


def lookup(data: Any, path: str) -> list[Any]:
    """Every value a json_engine query path names, in document order."""
    keys = [k for k in path.split("/") if k]
    return _lookup(data, keys) if keys else []


def _lookup(data: Any, keys: list[str]) -> list[Any]:
    found: list[Any] = []
    items = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in items:
        nested = isinstance(value, dict | list)
        if str(key) == keys[0]:
            if len(keys) == 1:
                found.append(value)
            elif nested:
                found.extend(_lookup(value, keys[1:]))
        elif nested:  # the path may start deeper down
            found.extend(_lookup(value, keys))
    return found


def request_url(entry: dict[str, Any], node_url: str, query: str, pageno: int) -> str:
    """``search_url`` with its placeholders filled as json_engine fills them, pointed at
    ``node_url`` instead of the documented address."""
    page_size = int(entry.get("page_size", 1))
    first = int(entry.get("first_page_num", 1))
    filled = entry["search_url"].format(
        query=urllib.parse.urlencode({"q": query})[2:],
        pageno=(pageno - 1) * page_size + first,
        lang="en",
        time_range="",
        safe_search="",
    )
    documented = urllib.parse.urlsplit(filled)
    node = urllib.parse.urlsplit(node_url)
    return urllib.parse.urlunsplit(documented._replace(scheme=node.scheme, netloc=node.netloc))


def engine_results(entry: dict[str, Any], answer: Any) -> list[dict[str, str]]:
    """The results SearXNG makes of one answer: url and title required, content optional."""
    found = lookup(answer, entry["results_query"])
    assert found, f"results_query {entry['results_query']!r} finds nothing"
    results = []
    for item in found[0]:
        urls, titles = lookup(item, entry["url_query"]), lookup(item, entry["title_query"])
        if not urls or not titles:  # json_engine drops such a result
            continue
        contents = lookup(item, entry["content_query"])
        results.append(
            {
                "url": entry.get("url_prefix", "") + str(urls[0]),
                "title": str(titles[0]),
                "content": str(contents[0]) if contents else "",
            }
        )
    return results


def fetch(url: str) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, headers=SEARXNG_HEADERS)) as resp:
        assert resp.status == 200
        return json.load(resp)


def test_the_documented_entry_uses_only_what_json_engine_knows() -> None:
    entry = documented_entry()
    assert entry["engine"] == "json_engine"
    assert entry.keys() <= KNOWN_KEYS, entry.keys() - KNOWN_KEYS
    assert {"name", "shortcut", "categories", "search_url", "results_query"} <= entry.keys()
    assert {"url_query", "title_query", "content_query"} <= entry.keys()
    used = set(re.findall(r"{(\w+)}", entry["search_url"]))
    assert used <= set(ENGINE_PLACEHOLDERS), used
    assert {"query", "pageno"} <= used
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(entry["search_url"]).query)
    assert urllib.parse.urlsplit(entry["search_url"]).path == "/api/search"
    # One page of SearXNG is one page of the node: the offsets it asks line up.
    assert params["limit"] == [str(entry["page_size"])]
    assert entry["paging"] is True and entry["first_page_num"] == 0
    assert entry["enable_http"] is True  # the documented address is plain HTTP


def test_searxng_reads_url_title_and_content_from_a_real_nodes_answer(
    crawled_node: NodeHandle,
) -> None:
    entry = documented_entry()
    site = str(crawled_node.site)
    answer = fetch(request_url(entry, crawled_node.url, "comets tail", 1))
    results = engine_results(entry, answer)
    assert results, answer
    assert results[0]["url"] == f"{site}/comets.html"
    assert all(r["url"].startswith(site) and r["title"] for r in results)
    assert "comet" in results[0]["content"].lower()
    # Exactly the node's own answer, in its order: nothing lost or misread on the way.
    own = crawled_node.get_json("/api/search", q="comets tail")
    assert [r["url"] for r in results] == [r["url"] for r in own["results"]]
    assert [r["title"] for r in results] == [r["title"] for r in own["results"]]
    assert [r["content"] for r in results] == [r["content"] for r in own["results"]]


def test_searxng_pages_through_a_nodes_results_without_gaps_or_repeats(
    crawled_node: NodeHandle,
) -> None:
    entry = documented_entry()
    first = fetch(request_url(entry, crawled_node.url, "backyard", 1))
    second = fetch(request_url(entry, crawled_node.url, "backyard", 2))
    assert first["number_of_results"] > entry["page_size"], "the query should fill two pages"
    assert (first["offset"], second["offset"]) == (0, entry["page_size"])
    assert first["limit"] == second["limit"] == entry["page_size"]
    one, two = engine_results(entry, first), engine_results(entry, second)
    assert len(one) == entry["page_size"] and two
    urls = [r["url"] for r in one + two]
    assert len(set(urls)) == len(urls) == min(first["number_of_results"], len(SITE_INDEXABLE))


@pytest.mark.parametrize("text", ['comet "tail" & ice', "café+crème", "50% of #1 /?="])
def test_the_users_text_reaches_the_node_unchanged(crawled_node: NodeHandle, text: str) -> None:
    entry = documented_entry()
    answer = fetch(request_url(entry, crawled_node.url, text, 1))
    assert answer["query"] == text
