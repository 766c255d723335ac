"""How the DHT scales: N real UDP ``DhtNode``s on 127.0.0.1 in one uvloop process.

For each network size N (default 50, 100, 200, 400) a fresh network is built, every new
node bootstrapping from a few random running nodes, and then measured:

1. lookup latency of ``closest_nodes(key, 3)`` for random keys from random nodes (p50/p95);
2. per lookup: crawl rounds (iterative "hops"), the round at which the true closest node
   first entered the shortlist, find_node RPCs the querying node sent, and whether the
   returned top 3 equals the brute-force XOR-closest 3 over every node id;
3. placement balance of terms over nodes (3 XOR-closest ids per term, as
   ``federation.membership.Membership.holders_of`` assigns them): mean, max, max/mean, CV and Gini;
4. UDP bytes per lookup, counted by a wrapper around every node's transport ``sendto``
   (the querying node's requests, and everything every node sent, replies and the hellos
   the lookup triggered included).

One JSON object per size is printed, then a table against log2(N).

    python3 bench/dht_scale.py --sizes 50,100,200,400
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import heapq
import json
import logging
import math
import random
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import umsgpack  # type: ignore[import-untyped]
import uvloop
from kademlia.crawling import SpiderCrawl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rhizome.dht import DhtNode, DhtSettings
from rhizome.dht.protocol import HEADER_BYTES, REQUEST

REPLICAS = 3  # holders per term, as FederationSettings.replicas
BOOTSTRAP_CONTACTS = 3  # random running nodes each newcomer is given
SETTLE_LIMIT = 15.0  # seconds to wait for background hellos to finish after joining
# ksize=20, alpha=3: the defaults. Every node here sends from 127.0.0.1, which the
# per-source limit would see as one host sending the whole network's traffic.
SETTINGS = DhtSettings(rpc_timeout=0.5, source_rate=1e9, source_burst=1e9)


# --- instrumentation -----------------------------------------------------------------
_rpc_names: dict[bytes, str] = {}  # msg id -> rpc name, so replies can be attributed


@dataclass
class Traffic:
    """Datagrams and bytes one node sent, by RPC name and direction."""

    datagrams: Counter[str] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)

    def reset(self) -> None:
        self.datagrams.clear()
        self.bytes.clear()


class CountingTransport:
    """Forwards to the real UDP transport, counting what ``sendto`` sends."""

    def __init__(self, inner: Any, traffic: Traffic) -> None:
        self._inner = inner
        self._traffic = traffic

    def sendto(self, data: bytes, addr: Any = None) -> None:
        msg_id = bytes(data[1:HEADER_BYTES])
        if data[0] == REQUEST:
            try:
                name = str(umsgpack.unpackb(data[HEADER_BYTES:])[0])
            except Exception:
                name = "?"
            _rpc_names[msg_id] = name
            kind = f"{name}_req"
        else:
            kind = f"{_rpc_names.pop(msg_id, '?')}_rep"
        self._traffic.datagrams[kind] += 1
        self._traffic.bytes[kind] += len(data)
        self._inner.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@dataclass
class Probe:
    """What one lookup's crawl did, filled in by the patched ``SpiderCrawl._find``."""

    protocol: Any
    want: bytes  # the true closest node id
    rounds: int = 0
    found_at: int | None = None  # rounds done before ``want`` entered the shortlist


_probe: Probe | None = None
_original_find = SpiderCrawl._find


async def _counting_find(self: SpiderCrawl, rpcmethod: Any) -> Any:
    probe = _probe
    if probe is not None and self.protocol is probe.protocol:
        if probe.found_at is None and probe.want in self.nearest.get_ids():
            probe.found_at = probe.rounds
        probe.rounds += 1
    return await _original_find(self, rpcmethod)


SpiderCrawl._find = _counting_find


# --- statistics ----------------------------------------------------------------------
def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    data = sorted(values)
    if not data:
        return math.nan
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def gini(values: list[int]) -> float:
    data = sorted(values)
    n, total = len(data), sum(data)
    if n == 0 or total == 0:
        return 0.0
    weighted = sum((i + 1) * x for i, x in enumerate(data))
    return 2 * weighted / (n * total) - (n + 1) / n


def xor_top(ids: list[int], key: int, count: int) -> list[int]:
    return heapq.nsmallest(count, ids, key=lambda i: i ^ key)


def r(x: float, nd: int = 2) -> float:
    return round(x, nd)


# --- one network size ----------------------------------------------------------------
async def settle(nodes: list[DhtNode], limit: float) -> float:
    """Wait until no node has background RPCs (hellos, pings) left; seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        if not any(node.protocol._tasks for node in nodes):
            break
        await asyncio.sleep(0.02)
    return time.perf_counter() - start


async def build(size: int, root: Path, rng: random.Random) -> tuple[list[DhtNode], list[Traffic]]:
    nodes: list[DhtNode] = []
    traffic: list[Traffic] = []
    try:
        for i in range(size):
            node = DhtNode(root / f"n{i}", settings=SETTINGS)
            seeds = rng.sample(nodes, min(BOOTSTRAP_CONTACTS, len(nodes)))
            await node.start("127.0.0.1", 0, [("127.0.0.1", s.port) for s in seeds])
            nodes.append(node)
            counts = Traffic()
            node.protocol.transport = CountingTransport(node.protocol.transport, counts)
            traffic.append(counts)
    except BaseException:
        for node in nodes:
            await node.stop()
        raise
    return nodes, traffic


async def measure(size: int, lookups: int, terms: int, rng: random.Random) -> dict[str, Any]:
    global _probe
    with tempfile.TemporaryDirectory(prefix=f"dht-scale-{size}-") as tmp:
        t0 = time.perf_counter()
        nodes, traffic = await build(size, Path(tmp), rng)
        join_s = time.perf_counter() - t0
        try:
            settle_s = await settle(nodes, SETTLE_LIMIT)
            table = [len(node.protocol.router.contacts()) for node in nodes]
            ids = [int.from_bytes(node.node_id, "big") for node in nodes]
            assert len(set(ids)) == size

            latency_ms: list[float] = []
            rounds: list[int] = []
            found_at: list[int] = []
            rpcs: list[int] = []
            timeouts: list[int] = []
            query_bytes: list[int] = []
            find_bytes: list[int] = []
            all_bytes: list[int] = []
            correct = top1 = 0
            for _ in range(lookups):
                key = rng.randbytes(20)
                want = xor_top(ids, int.from_bytes(key, "big"), REPLICAS)
                querier = rng.randrange(size)
                node = nodes[querier]
                for counts in traffic:
                    counts.reset()
                _rpc_names.clear()
                _probe = probe = Probe(node.protocol, want[0].to_bytes(20, "big"))
                start = time.perf_counter()
                got = await node.closest_nodes(key, REPLICAS)
                latency_ms.append((time.perf_counter() - start) * 1000)
                _probe = None
                await settle(nodes, 2.0)  # let the hellos this lookup started land

                got_ids = [int.from_bytes(p.node_id, "big") for p in got]
                correct += got_ids == want
                top1 += bool(got_ids) and got_ids[0] == want[0]
                if probe.found_at is None and got_ids[:1] == want[:1]:
                    probe.found_at = probe.rounds
                rounds.append(probe.rounds)
                found_at.append(probe.found_at if probe.found_at is not None else probe.rounds)
                mine = traffic[querier]
                sent = mine.datagrams["find_node_req"]
                rpcs.append(sent)
                timeouts.append(sent - sum(t.datagrams["find_node_rep"] for t in traffic))
                query_bytes.append(sum(mine.bytes.values()))
                find_bytes.append(
                    sum(t.bytes["find_node_req"] + t.bytes["find_node_rep"] for t in traffic)
                )
                all_bytes.append(sum(sum(t.bytes.values()) for t in traffic))
        finally:
            _probe = None
            for node in nodes:
                await node.stop()

    t1 = time.perf_counter()
    load = Counter[int]()
    for i in range(terms):
        term = int.from_bytes(hashlib.sha1(f"term-{i}".encode()).digest(), "big")
        load.update(xor_top(ids, term, REPLICAS))
    loads = [load[i] for i in ids]
    mean_load = statistics.fmean(loads)
    balance_s = time.perf_counter() - t1

    return {
        "n": size,
        "log2_n": r(math.log2(size)),
        "join_s": r(join_s),
        "settle_s": r(settle_s),
        "routing_table": {"mean": r(statistics.fmean(table), 1), "min": min(table)},
        "lookups": lookups,
        "latency_ms": {
            "p50": r(pct(latency_ms, 50)),
            "p95": r(pct(latency_ms, 95)),
            "mean": r(statistics.fmean(latency_ms)),
            "max": r(max(latency_ms)),
        },
        "rounds": {"mean": r(statistics.fmean(rounds)), "p95": r(pct(rounds, 95))},
        "rounds_to_closest": {
            "mean": r(statistics.fmean(found_at)),
            "p95": r(pct(found_at, 95)),
            "max": max(found_at),
        },
        "find_node_rpcs": {
            "mean": r(statistics.fmean(rpcs)),
            "p95": r(pct(rpcs, 95)),
            "max": max(rpcs),
            "timeouts": sum(timeouts),
        },
        "correct_top3": r(correct / lookups, 3),
        "correct_top1": r(top1 / lookups, 3),
        "bytes_per_lookup": {
            "querier_sent_mean": round(statistics.fmean(query_bytes)),
            "find_node_req_rep_mean": round(statistics.fmean(find_bytes)),
            "find_node_req_rep_p95": round(pct(find_bytes, 95)),
            "all_nodes_all_rpcs_mean": round(statistics.fmean(all_bytes)),
        },
        "placement": {
            "terms": terms,
            "replicas": REPLICAS,
            "mean": r(mean_load, 1),
            "min": min(loads),
            "max": max(loads),
            "max_over_mean": r(max(loads) / mean_load),
            "cv": r(statistics.pstdev(loads) / mean_load, 3),
            "gini": r(gini(loads), 3),
            "brute_force_s": r(balance_s),
        },
    }


def summary(results: list[dict[str, Any]]) -> str:
    head = (
        f"{'N':>5} {'log2N':>6} {'p50ms':>7} {'p95ms':>7} {'ms/log2N':>8} {'rounds':>6} "
        f"{'rnd/log2N':>9} {'to_top1':>7} {'rpcs':>6} {'rpc p95':>7} {'rpc/log2N':>9} "
        f"{'top3ok':>6} {'B/lookup':>8} {'max/mean':>8} {'gini':>5} {'cv':>5}"
    )
    lines = [head, "-" * len(head)]
    for res in results:
        lg = res["log2_n"]
        lat, rpc, rnd = res["latency_ms"], res["find_node_rpcs"], res["rounds"]
        place = res["placement"]
        lines.append(
            f"{res['n']:>5} {lg:>6.2f} {lat['p50']:>7.2f} {lat['p95']:>7.2f} "
            f"{lat['p50'] / lg:>8.2f} {rnd['mean']:>6.2f} {rnd['mean'] / lg:>9.3f} "
            f"{res['rounds_to_closest']['mean']:>7.2f} {rpc['mean']:>6.1f} {rpc['p95']:>7.1f} "
            f"{rpc['mean'] / lg:>9.2f} {res['correct_top3']:>6.3f} "
            f"{res['bytes_per_lookup']['find_node_req_rep_mean']:>8} "
            f"{place['max_over_mean']:>8.2f} {place['gini']:>5.3f} {place['cv']:>5.3f}"
        )
    return "\n".join(lines)


def raise_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


async def run(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    results = []
    start = time.perf_counter()
    for size in args.sizes:
        elapsed = time.perf_counter() - start
        if elapsed > args.budget:
            print(
                json.dumps({"n": size, "skipped": f"time budget {args.budget:.0f}s spent"}),
                flush=True,
            )
            continue
        t0 = time.perf_counter()
        res = await measure(size, args.lookups, args.terms, rng)
        res["wall_s"] = r(time.perf_counter() - t0, 1)
        results.append(res)
        print(json.dumps(res), flush=True)
    print()
    print(summary(results))
    print(
        f"\nrounds = crawl iterations of one lookup (alpha={SETTINGS.alpha}, k={SETTINGS.ksize}); "
        "to_top1 = rounds before the true closest node entered the shortlist; "
        "rpcs = find_node requests the querying node sent; B/lookup = find_node request + "
        f"reply bytes over all nodes. Total {time.perf_counter() - start:.1f}s."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="50,100,200,400", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--terms", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--budget", type=float, default=240.0, help="seconds after which larger sizes are skipped"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    raise_file_limit(max(args.sizes) * 2 + 256)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(run(args))


if __name__ == "__main__":
    main()
