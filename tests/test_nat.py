"""Volunteers behind home routers take full part (issue #14), on real NATs.

Three public nodes and two nodes behind two separate nftables masquerades with no port
forwarded (``tests/netns.py``), real subprocess nodes in their namespaces, real UDP
Kademlia and HTTP. The fixture site is served by this process on the "internet" bridge.
Tests run in file order: the relay kill and the budget exhaustion change the network.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from rhizome.federation.reachability import DEMOTE_AFTER, Reachability, Verdict, settle
from tests.conftest import ROOT, FixtureSite, NodeFactory, NodeHandle, serve_site
from tests.netns import Topology, usable
from tests.test_network import dht_address, network_search, network_status, wait_until

QUERY_DEADLINE = 2.0  # federation.settings.query_deadline: the re-attach must fit in it
RELAY_MB = 0.25  # each relay's budget per relayed node and hour (small: the last test spends it)
PORT_LINE = re.compile(r"rhizome: listening on http://[^:]+:(\d+)/")

# Which node crawls which pages (each pins the site's host, so it crawls exactly these).
SEEDS = {
    "pub1": ("/telescopes.html",),
    "home0": ("/moons.html", "/nebulae.html"),
    "home1": ("/comets.html", "/planets.html"),
}


ALL = ("pub0", "pub1", "pub2", "home0", "home1")  # start_network's names


@dataclass
class Net:
    topo: Topology
    site: FixtureSite
    factory: NodeFactory
    nodes: dict[str, NodeHandle]

    @property
    def homes(self) -> dict[str, NodeHandle]:
        return {k: v for k, v in self.nodes.items() if k.startswith("home")}

    @property
    def public(self) -> dict[str, NodeHandle]:
        return {k: v for k, v in self.nodes.items() if k.startswith("pub")}

    def live(self) -> dict[str, NodeHandle]:
        return {k: v for k, v in self.nodes.items() if v.proc.poll() is None}

    def name_of(self, node_id: str) -> str:
        for name, node in self.nodes.items():
            if node.proc.poll() is None and network_status(node)["node_id"] == node_id:
                return name
        raise AssertionError(f"no live node has id {node_id}")


def _port(node: NodeHandle) -> int:
    for line in node.lines:
        if m := PORT_LINE.search(line):
            return int(m.group(1))
    raise AssertionError(node.output())


def start_network(
    factory: NodeFactory,
    topo: Topology,
    site: FixtureSite,
    extra: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, NodeHandle]:
    """``extra``: more flags for some nodes, by name ("pub2", "home0", ...)."""
    extra = extra or {}
    host = site.split("/", 3)[2]
    common = (
        *("--semantic", "off", "--parse-workers", "1", "--max-depth", "0"),
        *("--search-rate", "10000", "--pin-host", host),
        *("--relay-max-nodes", "1", "--relay-mb-per-node-hour", str(RELAY_MB)),
    )
    nodes: dict[str, NodeHandle] = {}
    boot: tuple[str, ...] = ()
    for i, ns in enumerate(topo.public):
        ip = topo.public_ip(i)
        name = f"pub{i}"
        nodes[name] = factory.start(
            *common,
            *("--http", f"{ip}:0", "--dht", f"{ip}:0", *boot),
            *extra.get(name, ()),
            netns=ns,
            seeds=[site + p for p in SEEDS.get(name, ())],
        )
        if not boot:
            boot = ("--bootstrap", dht_address(nodes[name]))
    for i, ns in enumerate(topo.homes):
        name = f"home{i}"
        node = factory.start(
            *common,
            *("--http", "0.0.0.0:0", "--dht", "0.0.0.0:0", *boot),
            *extra.get(name, ()),
            netns=ns,
            seeds=[site + p for p in SEEDS.get(name, ())],
        )
        # The node says it listens on 0.0.0.0; its operator reaches it on the home's console.
        node.url = f"http://{topo.console_ip(i)}:{_port(node)}"
        nodes[name] = node
    return nodes


def settled(net: dict[str, NodeHandle]) -> bool:
    for name, node in net.items():
        status = node.status()
        network = status["network"]
        if not status["idle"] or network is None:
            return False
        if name.startswith("pub") and network["reachability"] != "public":
            return False
        if name.startswith("home") and not (network["relay"] or {}).get("relay"):
            return False
        if name in SEEDS and not network["published_generation"]:
            return False
    return True


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    if (why := usable()) is not None:
        pytest.skip(why)
    topo = Topology.build(public=3, natted=2)
    factory = NodeFactory(tmp_path_factory.mktemp("nat"))
    try:
        with serve_site(host=topo.internet_host) as site:
            # Relayed only: these tests are about the relays (direct paths past them are
            # tests/test_nat_direct.py's), e.g. that a moved node is found at its new relay.
            nodes = start_network(factory, topo, site, extra=dict.fromkeys(ALL, ("--no-direct",)))
            wait_until(lambda: settled(nodes), timeout=90, what="roles found, crawls published")
            yield Net(topo, site, factory, nodes)
    finally:
        factory.close()
        topo.destroy()


def test_nodes_know_whether_peers_can_dial_them(net: Net) -> None:
    for name, node in net.nodes.items():
        network = network_status(node)
        expected = "private" if name.startswith("home") else "public"
        assert network["reachability"] == expected, (name, network)
        assert network["reachability_check"]["dht_client"] is (expected == "private"), name
        # Anyone may read it (the public status and the status page say it too).
        assert node.get_json("/api/status")["network"]["reachability"] == expected
        page = node.get("/status").text
        assert ("behind NAT" in page) is (expected == "private"), page
    home = net.homes["home0"]
    cli = subprocess.run(
        [sys.executable, "-m", "rhizome", "status", "--node", home.url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert cli.returncode == 0, cli.stderr
    assert "reachable:  private (behind NAT), relayed" in cli.stdout, cli.stdout


def test_no_one_dials_a_node_behind_nat_nor_makes_it_a_holder(net: Net) -> None:
    """DHT client mode: the NATed nodes are in no routing table, hold no one's shards,
    and advertise a relay's URL instead of their own."""
    home_ids = {network_status(n)["node_id"] for n in net.homes.values()}
    for name, node in net.public.items():
        network = network_status(node)
        assert network["peers"] == len(net.public) - 1, (name, network)  # the public ones
        assert network["reachability_check"]["advertised_url"].startswith(node.url), name
    for name, node in net.homes.items():
        network = network_status(node)
        assert network["shards_held"] == 0, (name, network)
        relayed = network["relay"]["relayed_url"]
        assert network["reachability_check"]["advertised_url"] == relayed
        assert "/api/peer/relay/" in relayed and relayed.endswith(network["node_id"])
    relaying = [set(network_status(n)["relaying"]["relaying_for"]) for n in net.public.values()]
    assert set().union(*relaying) == home_ids
    assert all(len(r) <= 1 for r in relaying), relaying  # --relay-max-nodes 1


def test_pages_crawled_behind_nat_are_found_from_every_node_with_snippets(net: Net) -> None:
    site = net.site
    for name, node in net.nodes.items():
        for q, page in (
            ("Titan methane lakes", "/moons.html"),
            ("Perseid meteor shower", "/comets.html"),
        ):
            answer = network_search(node, q)
            assert answer["results"], (name, q, answer)
            top = answer["results"][0]
            assert top["url"] == site + page, (name, q, answer)
            assert "<mark>" in top["content_html"], (name, q, top)  # the owner's snippet
            assert answer["unresponsive_peers"] == [], (name, q, answer)


def test_a_search_at_a_node_behind_nat_returns_the_networks_results(net: Net) -> None:
    home = net.homes["home1"]
    answer = network_search(home, "telescope")  # pub1 crawled telescopes.html
    assert [r["url"] for r in answer["results"][:1]] == [net.site + "/telescopes.html"], answer
    answer = network_search(home, "Titan methane lakes")  # behind the other NAT
    assert answer["results"][0]["url"] == net.site + "/moons.html", answer
    assert home.search("Titan methane lakes")["results"] == []  # not from its own index


def test_killing_a_relay_costs_at_most_one_query_deadline(net: Net) -> None:
    home = net.homes["home0"]
    before = network_status(home)["relay"]
    relay_name = net.name_of(before["relay"])
    net.nodes[relay_name].kill()
    killed_at = time.monotonic()
    wait_until(
        lambda: (network_status(home)["relay"] or {}).get("attaches", 0) > before["attaches"],
        timeout=10,
        what="the node behind NAT to attach to another relay",
    )
    after = network_status(home)["relay"]
    assert after["relay"] != before["relay"]
    print(f"re-attached {after['last_reattach_s']} s after losing its relay")
    assert after["last_reattach_s"] <= QUERY_DEADLINE, after
    # Found again, with its snippet, through the new relay, from a node that stayed up.
    other = next(n for k, n in net.public.items() if k != relay_name)
    while True:
        answer = network_search(other, "Titan methane lakes")
        if answer["results"] and "<mark>" in answer["results"][0]["content_html"]:
            break
        assert time.monotonic() - killed_at < 10, answer
        time.sleep(0.2)
    assert answer["results"][0]["url"] == net.site + "/moons.html"


def test_relayed_bytes_stay_within_the_relays_limits(net: Net) -> None:
    """Asking a relayed node through its relay until the relay's budget for it runs out:
    refused then, and never more relayed than the budget."""
    home = net.homes["home1"]
    relay_id = network_status(home)["relay"]["relay"]
    relay = net.nodes[net.name_of(relay_id)]
    url = network_status(home)["relay"]["relayed_url"] + "/api/peer/search?q=comet+sky&limit=50"
    statuses: list[int] = []
    for _ in range(2_000):
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                resp.read()
                statuses.append(resp.status)
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)
            if exc.code in (404, 503):
                break
    assert statuses.count(200) > 5 and statuses[-1] in (404, 503), statuses[-5:]
    relaying: dict[str, Any] = network_status(relay)["relaying"]
    budget = relaying["bytes_per_hour"]
    assert budget == int(RELAY_MB * 1024 * 1024)
    used = relaying["bytes_this_hour"][network_status(home)["node_id"]]
    assert budget * 0.9 < used <= budget, relaying
    # Spent: what it asks now is refused, and nothing more is relayed.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code in (404, 503)
    after = network_status(relay)["relaying"]["bytes_this_hour"].get(
        network_status(home)["node_id"], 0
    )
    assert after <= budget


def test_the_operator_overrides_reachability_and_turns_relaying_off(
    node_factory: NodeFactory,
) -> None:
    """No NAT needed: a node told it is private is a DHT client at once, without asking;
    --no-relay (or relay_max_nodes = 0) means it relays for nobody even when public."""
    private = node_factory.start("--dht", "127.0.0.1:0", "--reachability", "private")
    network = network_status(private)
    assert network["reachability"] == "private"
    assert network["reachability_check"]["mode"] == "forced"
    assert network["reachability_check"]["dht_client"] is True
    assert network["reachability_check"]["checks"] == 0
    public = node_factory.start("--dht", "127.0.0.1:0", "--reachability", "public", "--no-relay")
    network = network_status(public)
    assert network["reachability"] == "public" and not network["reachability_check"]["dht_client"]
    assert network["relaying"]["enabled"] is False
    refused = public.get("/api/peer/relay")
    assert refused.status == 503, refused


def test_a_public_node_turns_private_only_when_rechecks_keep_failing() -> None:
    """On a loaded machine one recheck's dialers time out: turning private then took a
    public node out of every routing table and made every publisher re-place its shards.
    A NAT fails every recheck; a busy moment fails one."""
    public = Verdict(Reachability.PUBLIC, 3, 0, "http://10.0.0.1:8700", 1.0)
    failed = Verdict(Reachability.PRIVATE, 0, 3, None, 2.0)
    kept, doubts = settle(public, failed, 0)
    assert kept is public and doubts == 1
    recovered, doubts = settle(public, public, doubts)
    assert recovered is public and doubts == 0
    verdict, doubts = public, 0
    for _ in range(DEMOTE_AFTER):
        verdict, doubts = settle(verdict, failed, doubts)
    assert verdict.state is Reachability.PRIVATE and doubts == 0
    # Unknown or private nodes take the first verdict as it comes.
    unknown = Verdict(Reachability.UNKNOWN, 0, 0, None, 0.0)
    assert settle(unknown, failed, 0) == (failed, 0)
    assert settle(failed, public, 0) == (public, 0)
