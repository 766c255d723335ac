"""Metrics, health and readiness of a real node: what Prometheus, Grafana, Docker and
systemd see.

* /metrics passes ``promtool check metrics`` (Debian's ``prometheus`` package; CI installs
  it in .ci/run, and a machine without it fails rather than skips) and the conventions
  promtool does not check: help on every family, ``_total`` on every counter, base units.
* Every metric the Grafana dashboard (deploy/grafana-dashboard.json) queries is exported.
* /healthz answers at once while the frontier's thread is stuck behind a lock.
* With NOTIFY_SOCKET set, the node says READY=1 once it serves, pings the watchdog and
  says STOPPING=1 on the way out, over a real unix datagram socket.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import SITE_INDEXABLE, NodeFactory, NodeHandle, serve_site
from prometheus_client.parser import text_string_to_metric_families

from rhizome.api.version import VERSION

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
PROMTOOL = "promtool"
HISTORY_STEP = "0.2"  # seconds: the sampler counts the frontier at this pace here
# Name parts that are not base units (Prometheus: seconds, bytes; no prefixes).
NOT_BASE_UNITS = re.compile(
    r"_(ms|us|ns|milliseconds|microseconds|minutes|hours|days|kb|mb|gb|kib|mib|gib|bits)(_|$)"
)


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of a Prometheus text exposition."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(text: str, name: str, **labels: str) -> float:
    for got, v in samples(text).get(name, []):
        if all(got.get(k) == want for k, want in labels.items()):
            return v
    raise AssertionError(f"{name} {labels} is not exported")


def scrape_when(node: NodeHandle, ready: Callable[[str], bool], timeout: float = 20.0) -> str:
    """/metrics once ``ready(text)`` holds (the sampler counts every HISTORY_STEP)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = node.get("/metrics")
        assert resp.status == 200, resp.text[:300]
        try:
            if ready(resp.text):
                return resp.text
        except AssertionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics never got ready:\n{resp.text}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def network_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHandle]:
    """A node in a (one-node) network that crawled the fixture site and searched."""
    factory = NodeFactory(tmp_path_factory.mktemp("observed"))
    with serve_site() as site:
        try:
            node = factory.start(
                "--dht", "127.0.0.1:0", "--history-step", HISTORY_STEP, seeds=[f"{site}/index.html"]
            )
            node.wait_idle(60, min_documents=len(SITE_INDEXABLE))
            node.search("telescope")
            node.get("/", q="comet")  # the web page's searches count too
            yield node
        finally:
            factory.close()


def test_metrics_pass_promtool_and_the_naming_conventions(network_node: NodeHandle) -> None:
    if shutil.which(PROMTOOL) is None:
        pytest.fail(
            "promtool is missing: `apt-get install -y prometheus` (CI does this in .ci/run)",
            pytrace=False,
        )
    text = scrape_when(
        network_node,
        lambda t: value(t, "rhizome_frontier_urls", state="done") >= len(SITE_INDEXABLE),
    )
    lint = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert lint.returncode == 0, f"promtool: {lint.stdout}{lint.stderr}"

    families = list(text_string_to_metric_families(text))
    assert len(families) > 40, [f.name for f in families]
    for family in families:
        assert family.documentation.strip(), f"{family.name} has no help text"
        assert not NOT_BASE_UNITS.search(family.name), f"{family.name}: not a base unit"
        assert family.name.startswith(("rhizome_", "process_", "python_")), family.name
        for sample in family.samples:
            if family.type == "counter" and not sample.name.endswith("_created"):
                assert sample.name.endswith("_total"), f"counter {sample.name} lacks _total"
            if family.type != "counter":
                assert not sample.name.endswith("_total"), f"{family.type} {sample.name}"
            for unit in ("bytes", "seconds"):
                if unit in sample.name.split("_"):
                    assert re.search(
                        rf"_{unit}(_total|_bucket|_count|_sum|_created)?$", sample.name
                    ), f"{sample.name}: the unit goes last"
    # The standard collectors and the build info.
    assert value(text, "rhizome_build_info", version=VERSION) == 1
    assert value(text, "process_resident_memory_bytes") > 10_000_000
    assert value(text, "python_gc_collections_total", generation="0") >= 0
    assert value(text, "python_info") == 1
    # What the node counted is what is shown.
    assert value(text, "rhizome_index_documents") == len(SITE_INDEXABLE)
    assert value(text, "rhizome_crawl_fetched_pages_total") >= len(SITE_INDEXABLE)
    assert value(text, "rhizome_search_duration_seconds_count", scope="local") == 1
    assert value(text, "rhizome_search_duration_seconds_count", scope="network") == 1
    assert value(text, "rhizome_frontier_urls", state="leased") == 0
    assert value(text, "rhizome_publish_runs_total") >= 1
    assert value(text, "rhizome_storage_ok") == 1
    # Label values that have not happened yet are there at 0, so rate() works from the start.
    assert value(text, "rhizome_dht_dropped_datagrams_total", reason="garbage") == 0
    assert (
        value(text, "rhizome_peer_traffic_bytes_total", direction="in", kind="push_received") == 0
    )


def _promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers left once strings, label
    matchers, ranges and ``by (...)`` clauses are gone, that are not functions, keywords
    or aggregations (those are followed by a parenthesis)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", expr):
        if not re.fullmatch(r"(e|inf|nan|offset|bool|and|or|unless)", m.group(0), re.I):
            names.add(m.group(0))
    return names


def test_every_metric_the_grafana_dashboard_queries_is_exported(network_node: NodeHandle) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert all(p.get("targets") for p in dashboard["panels"]), "a panel without a query"
    assert len(exprs) >= 20
    wanted = set().union(*(_promql_metric_names(e) for e in exprs))
    assert {"rhizome_crawl_fetched_pages_total", "rhizome_dht_peers"} <= wanted, wanted
    text = scrape_when(network_node, lambda t: "rhizome_dht_peers" in t)
    exported = set(samples(text))
    assert not wanted - exported, f"the dashboard queries what /metrics lacks: {wanted - exported}"


def test_healthz_answers_at_once_while_the_frontier_is_locked(node_factory: NodeFactory) -> None:
    node = node_factory.start()
    health = node.get_json("/healthz")
    assert health["status"] == "ok" and health["storage_ok"] is True, health
    # Another writer holds the frontier's lock: the node's next frontier write waits on
    # it (up to its 5 s busy timeout) on the frontier's one thread, and every frontier
    # read queues behind that write — /api/status among them, /healthz not.
    lock = sqlite3.connect(node.data_dir / "frontier.sqlite3", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    lock.execute("INSERT INTO hosts (host) VALUES ('lock.invalid')")
    seeding = threading.Thread(target=node.seed, args=("http://127.0.0.1:9/x",), daemon=True)
    seeding.start()
    time.sleep(0.3)
    status_done = threading.Event()
    threading.Thread(
        target=lambda: (node.get("/api/status"), status_done.set()), daemon=True
    ).start()
    try:
        for _ in range(5):
            started = time.monotonic()
            resp = node.get("/healthz")
            took = time.monotonic() - started
            assert resp.status == 200 and resp.json()["status"] == "ok", resp.text
            assert took < 0.5, f"/healthz took {took:.2f} s"
            assert resp.headers["cache-control"] == "no-store"
        assert not status_done.wait(1.0), "/api/status answered: the frontier was not held"
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert status_done.wait(10), "/api/status never answered after the lock went"
    seeding.join(10)


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A unix datagram socket standing in for systemd's (a short path: the limit is 108)."""
    directory = tempfile.mkdtemp(prefix="rz-notify-", dir="/tmp")
    path = str(Path(directory) / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    try:
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


def _received(sock: socket.socket, until: Callable[[list[str]], bool], timeout: float) -> list[str]:
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(messages):
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return messages


def test_systemd_hears_ready_once_the_node_serves_then_watchdog_and_stopping(
    node_factory: NodeFactory,
    notify_socket: tuple[socket.socket, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "300000")  # ping every 0.15 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    node = node_factory.start()
    got = _received(sock, lambda m: any(x.startswith("READY=1") for x in m), 20)
    ready = [m for m in got if m.startswith("READY=1")]
    assert ready, f"no READY=1 from the node: {got}\n{node.output()}"
    assert f"STATUS=serving on {node.url}" in ready[0]
    assert node.get_json("/healthz")["status"] == "ok"  # ready means serving
    pings = _received(sock, lambda m: m.count("WATCHDOG=1") >= 3, 5)
    assert pings.count("WATCHDOG=1") >= 3, pings
    assert node.stop() == 0
    after = _received(sock, lambda m: "STOPPING=1" in m, 5)
    assert "STOPPING=1" in after, after
    assert not any(m.startswith("READY=1") for m in after)


def test_a_notify_socket_nobody_listens_on_costs_a_warning_not_the_node(
    node_factory: NodeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    node = node_factory.start()
    assert node.get_json("/healthz")["status"] == "ok"
    assert node.stop() == 0
    assert "could not tell systemd 'READY=1'" in node.output(), node.output()
