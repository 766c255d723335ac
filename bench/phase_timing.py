"""Where a federated query's time goes: the phases of ``Server-Timing`` on a real 5-node
small-corpus network, asked at node 0 with the operator's credential (only the operator
sees the header), twice over the same queries (cold, then with cached terms), and the CPU
each node process spent a query (``/proc/<pid>/stat``, node 0 the querier).

    python3 bench/phase_timing.py [--queries 200] [--split tune] [--profile DIR]
        [--profile-pass first|again] [--gil]

``--profile DIR``: py-spy samples every node during one pass (``DIR/n<i>.txt``, collapsed
stacks; py-spy's own CPU is not in the figures, it runs outside the nodes), the first
unless ``--profile-pass again`` (where the terms are cached: what is left to cut).
``--gil``: only the thread holding the GIL is sampled, so the stacks are where the
Python CPU goes rather than where threads wait.
Profile on the tune half, as anything learned from it is tuning.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import host_loop_s, operator_headers  # noqa: E402
from bench.publish_bench import cpu_seconds  # noqa: E402
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


SPY = ["py-spy", "record", "--format", "raw", "--rate", "200", "--nonblocking"]


def profile(nodes: list[Node], into: Path, gil: bool) -> list[subprocess.Popen[bytes]]:
    into.mkdir(parents=True, exist_ok=True)
    spies = [
        subprocess.Popen(
            [
                *SPY,
                *(["--gil"] if gil else []),
                "--pid",
                str(n.proc.pid),
                "--output",
                str(into / f"n{i}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i, n in enumerate(nodes)
    ]
    time.sleep(1.0)  # attached
    return spies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--split", default="heldout", choices=("tune", "heldout"))
    parser.add_argument("--profile", type=Path, help="py-spy collapsed stacks into this folder")
    parser.add_argument("--profile-pass", default="first", choices=("first", "again"))
    parser.add_argument("--gil", action="store_true", help="sample the GIL holder only")
    args = parser.parse_args()
    serve("small")
    _sites, seeds = sites_and_seeds("small")
    queries = load_queries("small", args.split, args.queries)
    print(f"host loop (bench/common.host_loop_s) before: {host_loop_s()} s")
    work = Path(tempfile.mkdtemp(prefix="phases-"))
    nodes: list[Node] = []
    try:
        start_one_site_each(ROOT, work, seeds, nodes)
        wait_idle(nodes, 900, "network")
        for label in ("first pass", "again (cached terms)"):
            took: list[float] = []
            phases: dict[str, list[float]] = {}
            profiled = label.startswith(args.profile_pass)
            spies = profile(nodes, args.profile, args.gil) if args.profile and profiled else []
            cpu0 = [cpu_seconds(n.proc.pid) for n in nodes]
            for qd in queries:
                ms, parts = timed(nodes[0], qd["q"])
                took.append(ms)
                for name, value in parts.items():
                    phases.setdefault(name, []).append(value)
            cpu = [
                round((cpu_seconds(n.proc.pid) - c) * 1000 / len(queries), 1)
                for n, c in zip(nodes, cpu0, strict=True)
            ]
            for spy in spies:
                spy.send_signal(2)  # py-spy writes its file on SIGINT
                spy.wait(timeout=60)
            took.sort()
            medians = {k: round(statistics.median(v), 1) for k, v in phases.items()}
            p95 = took[int(0.95 * (len(took) - 1))]
            print(f"{label}: p50 {statistics.median(took):.1f} ms, p95 {p95:.1f} ms, {medians}")
            print(f"  CPU ms a query, node 0 (querier) first: {cpu}, all {sum(cpu):.1f}")
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"host loop after: {host_loop_s()} s")


if __name__ == "__main__":
    main()
