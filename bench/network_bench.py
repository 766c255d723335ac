"""Five-node network on the shared corpus vs one centralized index, same run.

    python3 bench/network_bench.py [--queries 200]

Each of five nodes (UDP Kademlia on loopback) crawls one corpus site; a sixth, lone node
crawls all five (the centralized baseline, queried with scope=local). Judged queries are
known-item queries: a reachable page's title without its site-wide suffix, answered by that
page. Network queries go to the five nodes in turn (a query may start anywhere). Prints
MRR@10 of both, network query latency p50/p95, the time from crawl end to all shards
placed, and MRR@10 after two of the five nodes are SIGKILLed (asked of the survivors).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import CORPUS_DIR, CORPUS_SEEDS, NodeProcess, ensure_corpus
from rhizome.crawler.parse import parse_html

CRAWL = (
    "--allow-private-networks",
    "--allow-private-peers",
    "--crawl-delay",
    "0",
    "--seed-hosts-only",
)
DHT_LINE = re.compile(r"dht on udp://([\d.]+):(\d+)/")
SUFFIX = re.compile(r"\s+[—|–-]\s+[^—|–]+$")
QUERY_SYNTAX = re.compile(r"[\"():+\-^*~!\\\[\]{}/<>]")


def dht_address(node: NodeProcess) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in list(node.log):
            m = DHT_LINE.search(line)
            if m:
                return f"{m.group(1)}:{m.group(2)}"
        time.sleep(0.05)
    raise RuntimeError("node printed no DHT address")


def wait_idle(nodes: list[NodeProcess], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(n.get("/api/status")["idle"] for n in nodes):
            return
        time.sleep(0.2)
    raise RuntimeError("nodes did not become idle")


def judged_queries(central_dir: Path, count: int) -> list[tuple[str, str]]:
    """(query, expected URL) pairs: titles of pages the central node indexed, read from the
    corpus files themselves (serve.sh maps the sites, sorted, to 127.0.0.11-15)."""
    sites = sorted(p.name for p in (CORPUS_DIR / "sites").iterdir())
    db = sqlite3.connect(central_dir / "frontier.sqlite3")
    urls = [u for (u,) in db.execute("SELECT url FROM urls WHERE state=2 ORDER BY url")]
    db.close()
    titles: dict[str, str] = {}
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        site = sites[int((parts.hostname or "0.0.0.0").rsplit(".", 1)[1]) - 11]
        path = CORPUS_DIR / "sites" / site / urllib.parse.unquote(parts.path.lstrip("/"))
        if path.is_file():
            titles[url] = parse_html(url, path.read_bytes()).title
    counts = Counter(_clean(t).lower() for t in titles.values())
    pairs = [
        (_clean(t), u)
        for u, t in titles.items()
        if len(_clean(t)) >= 4 and counts[_clean(t).lower()] == 1
    ]
    random.Random(20261125).shuffle(pairs)
    return pairs[:count]


def _clean(title: str) -> str:
    """The title without its site-wide suffix and without query-syntax characters."""
    return " ".join(QUERY_SYNTAX.sub(" ", SUFFIX.sub("", title)).split())


MISSES: dict[str, dict[str, int]] = {}


def mrr(
    nodes: list[NodeProcess], pairs: list[tuple[str, str]], scope: str, label: str = ""
) -> tuple[float, list[float]]:
    """MRR@10 and latencies of ``pairs``, asked of ``nodes`` in turn: a query may start
    at any node, and which node owns which site (random ids) changes a lone node's view."""
    total = 0.0
    latencies = []
    ranks = MISSES.setdefault(label or scope, {})
    for i, (query, url) in enumerate(pairs):
        node = nodes[i % len(nodes)]
        started = time.perf_counter()
        res = node.get(
            "/api/search?" + urllib.parse.urlencode({"q": query, "scope": scope, "limit": 10})
        )
        latencies.append((time.perf_counter() - started) * 1000)
        for rank, r in enumerate(res["results"], start=1):
            if r["url"] == url:
                total += 1.0 / rank
                ranks[query] = rank
                break
        else:
            ranks[query] = 0
    return total / max(1, len(pairs)), latencies


def traffic(node: NodeProcess) -> dict[str, int]:
    """The node's peer traffic counters (bytes of HTTP bodies by kind)."""
    return dict((node.get("/api/status")["network"] or {}).get("traffic_bytes", {}))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--show-misses", action="store_true")
    args = parser.parse_args()
    ensure_corpus()
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        central = NodeProcess(root / "central", *CRAWL)
        nodes: list[NodeProcess] = []
        try:
            central.post("/api/seeds", {"urls": CORPUS_SEEDS})
            first = NodeProcess(root / "n0", *CRAWL, "--dht", "127.0.0.1:0")
            nodes.append(first)
            boot = dht_address(first)
            for i in range(1, 5):
                nodes.append(
                    NodeProcess(root / f"n{i}", *CRAWL, "--dht", "127.0.0.1:0", "--bootstrap", boot)
                )
            for n in nodes:
                dht_address(n)
            time.sleep(1.0)  # let the routing tables fill before anything is published
            for node, seed in zip(nodes, CORPUS_SEEDS, strict=True):
                node.post("/api/seeds", {"urls": [seed]})
            # Crawl end = every node's frontier empty; placed = every node idle (published).
            while True:
                stats = [n.get("/api/status") for n in nodes]
                if all(
                    s["crawl"]["queued"] == 0
                    and s["crawl"]["in_flight"] == 0
                    and s["index"]["pending"] == 0
                    for s in stats
                ):
                    break
                time.sleep(0.1)
            crawl_end = time.perf_counter()
            wait_idle(nodes)
            report["crawl_end_to_shards_placed_s"] = round(time.perf_counter() - crawl_end, 2)
            wait_idle([central])
            report["documents_network"] = sum(n.get("/api/status")["documents"] for n in nodes)
            report["documents_central"] = central.get("/api/status")["documents"]
            pairs = judged_queries(root / "central", args.queries)
            report["judged_queries"] = len(pairs)
            central_mrr, _ = mrr([central], pairs, "local")
            before = [traffic(n) for n in nodes]
            network_mrr, latencies = mrr(nodes, pairs, "network")
            after = [traffic(n) for n in nodes]
            queries = max(1, len(pairs))
            spent = [
                {k: a.get(k, 0) - b.get(k, 0) for k in a}
                for a, b in zip(after, before, strict=True)
            ]
            report["bytes_per_query_received_by_querier"] = round(
                sum(x.get("lookup_received", 0) + x.get("search_received", 0) for x in spent)
                / queries
            )
            report["bytes_per_query_served_by_all_peers"] = round(
                sum(s.get("lookup_served", 0) + s.get("search_served", 0) for s in spent) / queries
            )
            report["publish_bytes_sent_per_page"] = round(
                sum(b.get("push_sent", 0) for b in before) / max(1, report["documents_network"])
            )
            report["mrr10_central"] = round(central_mrr, 4)
            report["mrr10_network"] = round(network_mrr, 4)
            report["network_query_ms_p50"] = round(statistics.median(latencies), 1)
            report["network_query_ms_p95"] = round(pct(latencies, 0.95), 1)
            for victim in nodes[3:]:
                victim.proc.kill()
                victim.proc.wait()
            churn_mrr, churn_lat = mrr(nodes[:3], pairs, "network", "churn")
            report["mrr10_after_killing_2_of_5"] = round(churn_mrr, 4)
            report["churn_keeps_fraction"] = round(churn_mrr / max(network_mrr, 1e-9), 3)
            report["churn_query_ms_p50"] = round(statistics.median(churn_lat), 1)
            report["churn_query_ms_p95"] = round(pct(churn_lat, 0.95), 1)
            report["shards_held_per_node"] = [
                (n.get("/api/status")["network"] or {}).get("shards_held") for n in nodes[:3]
            ]
        finally:
            for n in [central, *nodes]:
                if n.proc.poll() is None:
                    n.stop()
    if args.show_misses:
        local, network = MISSES.get("local", {}), MISSES.get("network", {})
        for q, rank in local.items():
            if network.get(q) != rank:
                print(f"central rank {rank}, network rank {network.get(q)}: {q}")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
