"""Where the blocklist applies: a federated query's shards and owners' answers (in-process
peers, ``federation.LocalPeers``), URLs other nodes forward, seeds, the crawl, the index
("block and delete") and the CLI, on real ``rhizome node`` subprocesses crawling fixture
sites on loopback. The blocked site is reached as ``localhost``, the kept one as
``127.0.0.1``: two hosts a rule can tell apart, both on this machine."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rhizome.crawler import Blocklist, parse_rule
from rhizome.crawler.blocklist import OWN
from rhizome.crawler.budgets import Budgets
from rhizome.crawler.frontier import Frontier
from rhizome.federation import DEFAULT_SETTINGS, FederatedSearch, LocalPeers
from rhizome.federation.answer import LocalOwner
from rhizome.federation.peers import QueryTally
from rhizome.federation.search import without_blocked
from rhizome.index import IndexDoc, IndexStore
from tests.conftest import SITE_INDEXABLE, FixtureSite, NodeFactory, NodeHandle, serve_site
from tests.test_federated_ranking import committed_store
from tests.test_operator import run_cli

pytestmark = pytest.mark.timeout(120)

ME, ALICE, BOB = "aa" * 20, "bb" * 20, "cc" * 20
QUIET = 1.5  # seconds a blocked URL would have had to reach its site


def _page(host: str, slug: str, title: str, body: str) -> IndexDoc:
    return IndexDoc(url=f"http://{host}/{slug}.html", title=title, body=body)


@pytest.fixture
async def stores() -> AsyncIterator[dict[str, IndexStore]]:
    pages = {
        ME: [_page("me.example", "soil", "Soil", "soil compost " * 3)],
        ALICE: [_page("spam.test", "comets", "Comets and their tails", "comet tail " * 20)],
        BOB: [
            _page("bob.example", "hunting", "Comet hunting at night", "comet telescope " * 5),
            _page("ads.spam.test", "comet-deals", "Comet deals", "comet comet buy " * 10),
        ],
    }
    made = {node: await committed_store(docs) for node, docs in pages.items()}
    yield made
    for store in made.values():
        await store.stop()


def _search(stores: dict[str, IndexStore], blocklist: Blocklist) -> FederatedSearch:
    me = stores[ME]
    return FederatedSearch(
        local=LocalOwner(me, ME),
        peers=LocalPeers(stores, me=ME),
        settings=DEFAULT_SETTINGS,
        analyze=me.analyzer.analyze,
        published=lambda: True,
        blocklist=blocklist,
    )


async def test_shard_postings_and_owner_results_of_a_blocked_host_are_dropped(
    stores: dict[str, IndexStore],
) -> None:
    blocklist = Blocklist()
    search = _search(stores, blocklist)
    plan = search.plan(stores[ME].prepare("comet"), limit=10, offset=0)
    before = {r.url for r in (await search.search(plan)).rows}
    assert "http://spam.test/comets.html" in before  # the best page, until blocked
    assert "http://ads.spam.test/comet-deals.html" in before

    blocklist.set_rules(OWN, "this node", [parse_rule("spam.test")])
    merged = without_blocked(await search.peers.shards(plan.terms, QueryTally()), blocklist)
    posted = {p.url for shards in merged.values() for s in shards.values() for p in s.postings}
    assert posted == {"http://bob.example/hunting.html"}
    page = await search.search(plan)
    assert [r.url for r in page.rows] == ["http://bob.example/hunting.html"]


async def test_forgetting_a_blocked_host_gives_its_domain_budget_back(tmp_path: Path) -> None:
    frontier = Frontier(
        tmp_path / "f.sqlite3",
        max_urls_per_host=100,
        max_depth=5,
        budgets=Budgets(per_host=100, per_domain=6),
    )
    await frontier.open()
    try:
        await frontier.add([(f"http://bad.spam.example/{i}", 1) for i in range(4)], now=1.0)
        await frontier.add([(f"http://ok.spam.example/{i}", 1) for i in range(2)], now=1.0)
        assert frontier.budgets.waiting == 6
        bl = Blocklist()
        bl.set_rules(OWN, "this node", [parse_rule("=bad.spam.example")])
        assert await frontier.forget_hosts(lambda h: bl.match_host(h) is not None) == [
            "bad.spam.example"
        ]
        assert frontier.budgets.waiting == 2
        assert (await frontier.counts()).queued == 2
        # The 4 forgotten URLs no longer count against spam.example's budget of 6.
        more = [(f"http://new.spam.example/{i}", 1) for i in range(6)]
        await frontier.add(more, now=1.0)
        assert frontier.budgets.dropped["domain_budget"] == 2
        assert (await frontier.counts()).queued == 6
    finally:
        await frontier.close()


# --- real nodes -------------------------------------------------------------------------


@pytest.fixture
def two_sites() -> Iterator[tuple[FixtureSite, FixtureSite]]:
    """The fixture site twice: ``kept`` at 127.0.0.1, ``blocked`` reached as localhost."""
    with serve_site() as kept, serve_site() as blocked:
        yield kept, blocked


def as_localhost(site: FixtureSite) -> str:
    return site.url.replace("127.0.0.1", "localhost")


def block(node: NodeHandle, *rules: str, expect: int = 200) -> dict[str, object]:
    data: dict[str, object] = node.post_json(
        "/api/blocklist/add", {"rules": list(rules)}, expect=expect
    )
    return data


def operator_get(node: NodeHandle, path: str) -> dict[str, object]:
    resp = node.request("GET", path, headers=node.operator_headers())
    assert resp.status == 200, resp.text
    data: dict[str, object] = resp.json()
    return data


def result_hosts(node: NodeHandle, q: str) -> set[str]:
    return {r["url"].split("/", 3)[2].split(":")[0] for r in node.search(q, limit=50)["results"]}


def test_forwarded_urls_of_a_blocked_host_are_dropped(
    node_factory: NodeFactory, two_sites: tuple[FixtureSite, FixtureSite]
) -> None:
    kept, blocked = two_sites
    node = node_factory.start("--dht", "127.0.0.1:0", "--max-depth", "0")
    block(node, "localhost")
    # As a peer that takes us for these hosts' owner would send them (host slices).
    body = {"urls": [[f"{as_localhost(blocked)}/comets.html", 0], [f"{kept}/moons.html", 0]]}
    resp = node.request(
        "POST",
        "/api/peer/urls",
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 200 and resp.json() == {"accepted": 1}, resp.text
    node.wait_idle(30, min_documents=1)
    time.sleep(QUIET)
    assert kept.hits("/moons.html") == 1
    assert blocked.requests == {}, f"a blocked host was fetched: {dict(blocked.requests)}"
    queued = {h["host"] for h in operator_get(node, "/api/queue")["hosts"]}  # type: ignore[attr-defined]
    assert not any(h.startswith("localhost") for h in queued), queued


def test_block_and_delete_empties_results_and_queue_and_survives_a_restart(
    node_factory: NodeFactory, two_sites: tuple[FixtureSite, FixtureSite]
) -> None:
    kept, blocked = two_sites
    seeds = [f"{kept}/index.html", f"{as_localhost(blocked)}/index.html"]
    node = node_factory.start(seeds=seeds)
    node.wait_idle(60, min_documents=2 * len(SITE_INDEXABLE))
    assert result_hosts(node, "telescope") == {"127.0.0.1", "localhost"}

    done = block(node, "localhost", "com", "two words")
    assert done["added"] == ["localhost"]
    assert done["pages_deleted"] == len(SITE_INDEXABLE) and done["hosts_forgotten"] == 1
    assert set(done["refused"]) == {"com", "two words"}  # type: ignore[arg-type]
    assert result_hosts(node, "telescope") == {"127.0.0.1"}  # at once: results are filtered
    deadline = time.monotonic() + 10
    while node.status()["documents"] > len(SITE_INDEXABLE) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert node.status()["documents"] == len(SITE_INDEXABLE)  # and the pages deleted

    hits = blocked.requests
    again = node.seed(f"{as_localhost(blocked)}/comets.html")
    assert again["accepted"] == [] and "blocked by this node" in again["blocked"][0]["by"]
    node.stop()

    restarted = node_factory.start(data_dir=node.data_dir)
    rules = operator_get(restarted, "/api/blocklist")["rules"]
    assert rules == [{"rule": "localhost", "added_at": rules[0]["added_at"]}]  # type: ignore[index]
    restarted.post_json("/api/recrawl", {"host": kept.url.split("/", 3)[2]}, expect=200)
    refused = restarted.seed(f"{as_localhost(blocked)}/planets.html")
    assert refused["accepted"] == [] and refused["blocked"]
    restarted.wait_idle(60)
    time.sleep(QUIET)
    assert blocked.requests == hits, "a blocked host was fetched after the block"
    assert result_hosts(restarted, "telescope") == {"127.0.0.1"}


def test_cli_blocks_checks_unblocks_and_pins(
    node_factory: NodeFactory, fixture_site: FixtureSite
) -> None:
    node = node_factory.start()
    flags = ("--data-dir", str(node.data_dir), "--node", node.url)
    added = run_cli("block", "add", "www.tracker.example.co.uk", "--domain", *flags)
    assert added.returncode == 0 and "blocked example.co.uk" in added.stdout, added
    refused = run_cli("block", "add", "co.uk", *flags)
    assert refused.returncode == 1 and "public suffix" in refused.stderr, refused
    check = run_cli("block", "check", "https://a.b.example.co.uk/x", *flags)
    assert check.returncode == 0, check
    assert check.stdout.strip() == (
        "https://a.b.example.co.uk/x is blocked by this node (rule example.co.uk)"
    )
    listed = run_cli("block", "list", *flags)
    assert "  example.co.uk" in listed.stdout.splitlines(), listed
    removed = run_cli("block", "remove", "example.co.uk", *flags)
    assert removed.returncode == 0 and "unblocked example.co.uk" in removed.stdout, removed
    assert run_cli("block", "check", "example.co.uk", *flags).returncode == 1

    host = fixture_site.url.split("/", 3)[2]
    pinned = run_cli("pin", "add", host, *flags)
    assert pinned.returncode == 0 and f"pinned {host}" in pinned.stdout, pinned
    assert run_cli("pin", "list", *flags).stdout.split() == [host]
    assert json.loads((node.data_dir / "operator.json").read_text())["pins"] == [host]
    assert run_cli("pin", "remove", host, *flags).returncode == 0
    assert run_cli("pin", "list", *flags).stdout.strip() == ""
