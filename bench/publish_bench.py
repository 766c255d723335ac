"""What publishing term shards costs, per page indexed: CPU, bytes on the wire, terms sent.

    PYTHONPATH=. python3 bench/publish_bench.py [--corpus small,large] [--nodes 3]
        [--code DIR ...] [--control] [--out FILE]

For each checkout ``--code`` (default: this one; give the old one first for a before/after
in one run) and each corpus, ``--nodes`` real node subprocesses on one loopback DHT
(``--dht 127.0.0.1:0``, the others ``--bootstrap`` the first), the corpus's sites dealt out
round-robin, each node pinning its sites' hosts. Measured per node, from outside:

- CPU seconds of the node process (``/proc/<pid>/stat`` utime + stime; its parse workers
  separately): at seeding, at crawl end (every frontier empty, nothing pending) and at idle
  (every shard placed), so ``cpu_after_crawl`` is publishing's tail alone;
- bytes pushed (``traffic_bytes.push_sent``: every batch to every replica);
- terms sent by each publish (the node's "published shards" log lines);
- the publisher's own CPU count (``publish_totals.cpu_seconds``: shard building, content
  keys, signing, envelopes) where the checkout has it.

``--control`` runs the same crawl once more without ``--dht`` (same checkout, the first
given): node CPU per page with DHT minus without is publishing + holding, for checkouts
that do not count their own. Corpora: small on 127.0.0.11-15:8080, large on
127.0.1.1-12:8080 (``bench/quality_bench.serve`` starts them). On 2 cores, one parse
worker a node (``quality_bench.CRAWL``).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.quality_bench import CRAWL, Node, serve, sites_and_seeds  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PUBLISHED = re.compile(r"published shards: (\{.*\})")
POLL = 0.5  # seconds between status polls (each costs the nodes a little CPU)
CRAWL_TIMEOUT = 3600.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def worker_cpu(pid: int) -> float:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    total = 0.0
    for child in children:
        try:
            total += cpu_seconds(int(child))
        except OSError:
            pass
    return total


def status(node: Node) -> dict[str, Any]:
    data: dict[str, Any] = node.get("/api/status", timeout=60)
    return data


def crawl_done(states: list[dict[str, Any]]) -> bool:
    return all(
        s["crawl"]["queued"] == 0 and s["crawl"]["in_flight"] == 0 and s["index"]["pending"] == 0
        for s in states
    )


def publishes(node: Node) -> list[dict[str, Any]]:
    found = []
    for line in list(node.log):
        m = PUBLISHED.search(line)
        if m:
            try:
                found.append(ast.literal_eval(m.group(1)))
            except (ValueError, SyntaxError):
                pass
    return found


def run(code: Path, corpus: str, nodes_wanted: int, dht: bool, work: Path) -> dict[str, Any]:
    _sites, seeds = sites_and_seeds(corpus)
    groups = [seeds[i::nodes_wanted] for i in range(nodes_wanted)]
    nodes: list[Node] = []
    try:
        for i, group in enumerate(groups):
            pins: list[str] = []
            for seed in group:
                pins += ["--pin-host", urllib.parse.urlsplit(seed).netloc]
            extra = [*pins]
            if dht:
                extra += ["--dht", "127.0.0.1:0"]
                if nodes:
                    extra += ["--bootstrap", nodes[0].dht_address()]
            nodes.append(Node(code, work / f"n{i}", *CRAWL, *extra))
        if dht:
            for n in nodes:
                n.dht_address()
            # Membership settled before the crawl (every node knows the others and was
            # dialled back, so it is a holder): a node turning public mid-crawl makes every
            # publisher re-place everything, in every checkout, which is not what this
            # bench measures.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                states = [status(n) for n in nodes]
                if all(
                    (s["network"] or {}).get("peers", 0) >= len(nodes) - 1
                    and (s["network"] or {}).get("reachability") == "public"
                    and s["idle"]
                    for s in states
                ):
                    break
                time.sleep(POLL)
        time.sleep(2.0)
        cpu0 = [cpu_seconds(n.proc.pid) for n in nodes]
        started = time.monotonic()
        for n, group in zip(nodes, groups, strict=True):
            n.post("/api/seeds", {"urls": group})
        time.sleep(2.0)
        while time.monotonic() - started < CRAWL_TIMEOUT:
            if crawl_done([status(n) for n in nodes]):
                break
            time.sleep(POLL)
        crawl_s = time.monotonic() - started
        cpu1 = [cpu_seconds(n.proc.pid) for n in nodes]
        while time.monotonic() - started < CRAWL_TIMEOUT:
            states = [status(n) for n in nodes]
            if all(s["idle"] for s in states):
                break
            time.sleep(POLL)
        idle_s = time.monotonic() - started
        cpu2 = [cpu_seconds(n.proc.pid) for n in nodes]
        workers = [worker_cpu(n.proc.pid) for n in nodes]
        states = [status(n) for n in nodes]
        per_node = []
        for i, (n, s) in enumerate(zip(nodes, states, strict=True)):
            net = s.get("network") or {}
            per_node.append(
                {
                    "pages": s["documents"],
                    "cpu_total": round(cpu2[i] - cpu0[i], 2),
                    "cpu_after_crawl": round(cpu2[i] - cpu1[i], 2),
                    "worker_cpu": round(workers[i], 2),
                    "push_bytes": (net.get("traffic_bytes") or {}).get("push_sent", 0),
                    "publish_totals": net.get("publish_totals"),
                    "terms_sent_per_publish": [p.get("changed") for p in publishes(n)],
                    "terms_built_per_publish": [p.get("terms") for p in publishes(n)],
                }
            )
    finally:
        for n in nodes:
            n.stop()
    pages = max(1, sum(p["pages"] for p in per_node))
    cpu = sum(p["cpu_total"] for p in per_node)
    counted = [p["publish_totals"] for p in per_node if p["publish_totals"]]
    report: dict[str, Any] = {
        "code": str(code),
        "corpus": corpus,
        "dht": dht,
        "pages": pages,
        "crawl_s": round(crawl_s, 1),
        "crawl_end_to_idle_s": round(idle_s - crawl_s, 1),
        "node_cpu_ms_per_page": round(1000 * cpu / pages, 2),
        "node_cpu_after_crawl_ms_per_page": round(
            1000 * sum(p["cpu_after_crawl"] for p in per_node) / pages, 2
        ),
        "worker_cpu_ms_per_page": round(1000 * sum(p["worker_cpu"] for p in per_node) / pages, 2),
        "push_bytes_per_page": round(sum(p["push_bytes"] for p in per_node) / pages),
        "terms_sent": sum(sum(x or 0 for x in p["terms_sent_per_publish"]) for p in per_node),
        "terms_built": sum(sum(x or 0 for x in p["terms_built_per_publish"]) for p in per_node),
        "nodes": per_node,
    }
    if counted:
        report["publisher_cpu_ms_per_page"] = round(
            1000 * sum(t.get("cpu_seconds", 0.0) for t in counted) / pages, 2
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", default="small,large")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--code", action="append", type=Path)
    parser.add_argument("--control", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    codes = args.code or [ROOT]
    reports = []
    for corpus in args.corpus.split(","):
        serve(corpus)
        plans = [(code, True) for code in codes]
        if args.control:
            plans.append((codes[0], False))
        for code, dht in plans:
            with tempfile.TemporaryDirectory() as tmp:
                report = run(code.resolve(), corpus, args.nodes, dht, Path(tmp))
            summary = {k: v for k, v in report.items() if k != "nodes"}
            print(json.dumps(summary), flush=True)
            reports.append(report)
            if args.out:
                args.out.write_text(json.dumps(reports, indent=1))


if __name__ == "__main__":
    main()
