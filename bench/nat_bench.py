"""Volunteers behind NAT, measured on real NATs (issue #14): same run, two networks.

    sudo python3 bench/nat_bench.py [--limit-queries 150] [--out FILE]

Builds ``tests/netns.py``'s namespaces (7 public, 2 homes behind nftables masquerades with
no port forwarded) and serves the small corpus (``bench.common.ensure_corpus``: 5 sites on
127.0.0.11-15:8080) to them through a TCP forwarder on the internet bridge (one port a
site: loopback addresses do not route between namespaces). Then, one after the other:

- ``all-public``: 5 nodes in public namespaces, one site each (``--pin-host``);
- ``2-natted``: 3 public nodes and 2 behind the NATs (the NATed two crawl sites 4 and 5).

Each crawls to idle; the judged queries of ``bench/judged/small.jsonl`` (their URLs moved
to the forwarder's) are asked ``scope=network`` at the first public node (both networks)
and at a NATed node. Figures: MRR@10, p50/p95 ms, bytes relayed per query (the relays'
``relaying.bytes_this_hour``, before and after), per NATed node per hour (the run's relayed
bytes over its length: a busy hour, every query reaching the NATed owners), and seconds
from a NATed node's start to relayed (reachability found, relay attached, URL announced)
and to its shards published. Semantic re-ranking is off (CPU; the comparison is the same).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import ensure_corpus, operator_headers  # noqa: E402
from bench.quality_bench import Result, ask_rhizome, load_queries, log  # noqa: E402
from tests.netns import Topology, usable  # noqa: E402

SITES = 5
FIRST_PORT = 8081
DHT_LINE = re.compile(r"dht on udp://([\d.]+):(\d+)/")
PORT_LINE = re.compile(r"listening on http://[^:]+:(\d+)/")
COMMON = (
    *("--allow-private-networks", "--allow-private-peers", "--crawl-delay", "0"),
    *("--seed-hosts-only", "--parse-workers", "1", "--semantic", "off"),
    *("--search-rate", "100000"),
)


class NsNode:
    """A node subprocess inside a namespace, reached at ``url`` from the root namespace."""

    def __init__(self, ns: str, data_dir: Path, reach_ip: str, *extra: str) -> None:
        self.started = time.monotonic()
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [
                *("ip", "netns", "exec", ns, sys.executable, "-m", "rhizome", "node"),
                *("--data-dir", str(data_dir), *COMMON, *extra),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.log: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            if m := PORT_LINE.search(line):
                self.url = f"http://{reach_ip}:{m.group(1)}"
                break
        else:
            raise RuntimeError("".join(self.log[-20:]))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)

    def dht(self) -> str:
        for _ in range(600):
            for line in list(self.log):
                if m := DHT_LINE.search(line):
                    return f"{m.group(1)}:{m.group(2)}"
            time.sleep(0.05)
        raise RuntimeError("no DHT address")

    def status(self) -> dict[str, Any]:
        req = urllib.request.Request(
            self.url + "/api/status", headers=operator_headers(self.data_dir)
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return dict(json.load(resp))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def forward_corpus(host: str) -> None:
    """host:8081+i -> 127.0.0.(11+i):8080, in a background thread."""

    async def serve() -> None:
        for i in range(SITES):

            async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int = i) -> None:
                ur, uw = await asyncio.open_connection(f"127.0.0.{11 + i}", 8080)
                await asyncio.gather(_pipe(r, uw), _pipe(ur, w))

            await asyncio.start_server(handle, host, FIRST_PORT + i)
        await asyncio.Event().wait()

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()


def start(topo: Topology, work: Path, natted: int) -> tuple[list[NsNode], list[NsNode]]:
    public: list[NsNode] = []
    homes: list[NsNode] = []
    site = lambda i: f"http://{topo.internet_host}:{FIRST_PORT + i}"  # noqa: E731
    boot: tuple[str, ...] = ()
    for i in range(SITES - natted):
        ip = topo.public_ip(i)
        seed = (*("--seed", site(i) + "/index.html"), "--pin-host", site(i).split("/")[2])
        node = NsNode(
            topo.public[i],
            work / f"p{i}",
            ip,
            "--http",
            f"{ip}:0",
            "--dht",
            f"{ip}:0",
            *boot,
            *seed,
        )
        public.append(node)
        boot = boot or ("--bootstrap", node.dht())
    for j in range(natted):
        i = SITES - natted + j
        seed = (*("--seed", site(i) + "/index.html"), "--pin-host", site(i).split("/")[2])
        flags = ("--http", "0.0.0.0:0", "--dht", "0.0.0.0:0", *boot, *seed)
        homes.append(NsNode(topo.homes[j], work / f"h{j}", topo.console_ip(j), *flags))
    return public, homes


def wait_settled(
    nodes: list[NsNode], homes: list[NsNode], timeout: float = 900
) -> dict[str, float]:
    started = time.monotonic()
    relayed: dict[str, float] = {}
    published: dict[str, float] = {}
    while time.monotonic() - started < timeout:
        states = [n.status() for n in nodes]
        for k, (n, st) in enumerate(zip(nodes, states, strict=True)):
            net = st["network"] or {}
            if n in homes and net.get("relayed") and str(k) not in relayed:
                relayed[str(k)] = time.monotonic() - n.started
            if n in homes and net.get("published_generation") and str(k) not in published:
                published[str(k)] = time.monotonic() - n.started
        if all(s["idle"] for s in states) and len(published) == len(homes):
            break
        time.sleep(1.0)
    else:
        raise RuntimeError("not idle")
    return {
        "to_relayed_s": max(relayed.values(), default=0.0),
        "to_published_s": max(published.values(), default=0.0),
        "crawl_s": time.monotonic() - started,
    }


def relayed_bytes(nodes: list[NsNode]) -> int:
    return sum(sum(n.status()["network"]["relaying"]["bytes_this_hour"].values()) for n in nodes)


def moved(queries: list[dict[str, Any]], topo: Topology) -> list[dict[str, Any]]:
    out = []
    for q in queries:
        m = re.match(r"http://127\.0\.0\.(\d+):8080(/.*)", q["url"])
        if m:
            port = FIRST_PORT + int(m.group(1)) - 11
            out.append({**q, "url": f"http://{topo.internet_host}:{port}{m.group(2)}"})
    return out


def run(topo: Topology, natted: int, queries: list[dict[str, Any]]) -> dict[str, Any]:
    label = f"{natted}-natted" if natted else "all-public"
    with tempfile.TemporaryDirectory(prefix="nat-bench-") as tmp:
        public, homes = start(topo, Path(tmp), natted)
        nodes = [*public, *homes]
        try:
            report: dict[str, Any] = wait_settled(nodes, homes)
            log(f"{label}: settled {report}")
            t0, before = time.monotonic(), relayed_bytes(public)
            at_public = ask_rhizome(public[0], queries, "network", f"{label}@public")  # type: ignore[arg-type]
            report["at_public"] = _all(at_public)
            if homes:
                at_home = ask_rhizome(homes[0], queries, "network", f"{label}@natted")  # type: ignore[arg-type]
                report["at_natted"] = _all(at_home)
            spent = relayed_bytes(public) - before
            asked = len(queries) * (2 if homes else 1)
            report["relayed_bytes_per_query"] = round(spent / asked) if homes else 0
            hours = (time.monotonic() - t0) / 3600
            report["relayed_bytes_per_natted_node_hour"] = (
                round(spent / max(1, natted) / hours) if homes else 0
            )
            return report
        finally:
            for n in nodes:
                n.stop()


def _all(result: Result) -> dict[str, Any]:
    merged = Result("all")
    for split in result.rr:
        for rr, ms in zip(result.rr[split], result.lat[split], strict=True):
            merged.add("x", str(len(merged.ranks)), round(1 / rr) if rr else 0, ms)
    return merged.row("x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit-queries", type=int, default=150, help="per split")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if (why := usable()) is not None:
        sys.exit(f"nat_bench: {why}")
    ensure_corpus()
    topo = Topology.build(public=SITES, natted=2)
    try:
        forward_corpus(topo.internet_host)
        queries = moved(load_queries("small", "both", args.limit_queries), topo)
        report = {"queries": len(queries), "all_public": run(topo, 0, queries)}
        report["two_natted"] = run(topo, 2, queries)
    finally:
        topo.destroy()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
