"""Where a federated query's time goes: the phases of ``Server-Timing`` on a real 5-node
small-corpus network, asked at node 0 with the operator's credential (only the operator
sees the header), twice over the same held-out queries (cold, then with cached terms).

    python3 bench/phase_timing.py [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import operator_headers  # noqa: E402
from bench.quality_bench import (  # noqa: E402
    Node,
    load_queries,
    serve,
    sites_and_seeds,
    start_one_site_each,
    wait_idle,
)


def timed(node: Node, q: str) -> tuple[float, dict[str, float]]:
    params = urllib.parse.urlencode({"q": q, "scope": "network", "limit": 10})
    req = urllib.request.Request(
        f"{node.url}/api/search?{params}", headers=operator_headers(node.data_dir)
    )
    started = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as resp:
        json.load(resp)
        header = resp.headers.get("Server-Timing", "")
    phases = {}
    for part in header.split(","):
        if ";dur=" in part:
            name, ms = part.strip().split(";dur=")
            phases[name] = float(ms)
    return (time.perf_counter() - started) * 1000, phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    serve("small")
    _sites, seeds = sites_and_seeds("small")
    queries = load_queries("small", "heldout", args.queries)
    work = Path(tempfile.mkdtemp(prefix="phases-"))
    nodes: list[Node] = []
    try:
        start_one_site_each(ROOT, work, seeds, nodes)
        wait_idle(nodes, 900, "network")
        for label in ("first pass", "again (cached terms)"):
            took: list[float] = []
            phases: dict[str, list[float]] = {}
            for qd in queries:
                ms, parts = timed(nodes[0], qd["q"])
                took.append(ms)
                for name, value in parts.items():
                    phases.setdefault(name, []).append(value)
            took.sort()
            medians = {k: round(statistics.median(v), 1) for k, v in phases.items()}
            p95 = took[int(0.95 * (len(took) - 1))]
            print(f"{label}: p50 {statistics.median(took):.1f} ms, p95 {p95:.1f} ms, {medians}")
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
