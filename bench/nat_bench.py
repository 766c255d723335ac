"""Volunteers behind NAT, measured on real NATs (issue #14): same run, three networks.

    sudo python3 bench/nat_bench.py [--limit-queries 150] [--punch-trials 100] [--out FILE]

Builds ``tests/netns.py``'s namespaces (7 public, 2 homes behind nftables masquerades with
no port forwarded) and serves the small corpus (``bench.common.ensure_corpus``: 5 sites on
127.0.0.11-15:8080) to them through a TCP forwarder on the internet bridge (one port a
site: loopback addresses do not route between namespaces). Then, one after the other:

- ``all-public``: 5 nodes in public namespaces, one site each (``--pin-host``);
- ``2-natted-relayed``: 3 public nodes and 2 behind the NATs (the NATed two crawl sites 4
  and 5), every node ``--no-direct``: each NATed owner's answers come through its relay;
- ``2-natted-direct``: the same with direct paths: a public querier's by connection
  reversal, a NATed querier's by hole punch (``federation/direct.py``).

Each crawls to idle; the judged queries of ``bench/judged/small.jsonl`` (their URLs moved
to the forwarder's) are asked ``scope=network`` at the first public node (all networks)
and at a NATed node. Figures: MRR@10, p50/p95 ms, bytes relayed per query (the relays'
``relaying.bytes_this_hour``, before and after), per NATed node per hour (the run's relayed
bytes over its length: a busy hour, every query reaching the NATed owners), seconds from a
NATed node's start to relayed (reachability found, relay attached, URL announced) and to
its shards published, and the queriers' direct-path counts. Semantic re-ranking is off
(CPU; the comparison is the same).

Before the networks, ``--punch-trials`` hole punches between the two homes with the
nodes' own code (``bench/punch_probe.py``), the two dials 0-1 s apart at random (as relay
latencies differ), through the masquerades as built (source port kept when free) and with
``masquerade random`` (a new port each connection, as endpoint-dependent NATs do, where
a punch to the predicted port cannot meet): success rate and connect time of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
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


def start(
    topo: Topology, work: Path, natted: int, extra: tuple[str, ...] = ()
) -> tuple[list[NsNode], list[NsNode]]:
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
            *extra,
        )
        public.append(node)
        boot = boot or ("--bootstrap", node.dht())
    for j in range(natted):
        i = SITES - natted + j
        seed = (*("--seed", site(i) + "/index.html"), "--pin-host", site(i).split("/")[2])
        flags = ("--http", "0.0.0.0:0", "--dht", "0.0.0.0:0", *boot, *seed, *extra)
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


def run(
    topo: Topology, natted: int, queries: list[dict[str, Any]], *, direct: bool = True
) -> dict[str, Any]:
    label = f"{natted}-natted-{'direct' if direct else 'relayed'}" if natted else "all-public"
    with tempfile.TemporaryDirectory(prefix="nat-bench-") as tmp:
        public, homes = start(topo, Path(tmp), natted, () if direct else ("--no-direct",))
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
            if homes:  # how the queriers reached the NATed owners
                report["direct_at_public"] = public[0].status()["network"]["direct"]
                report["direct_at_natted"] = homes[0].status()["network"]["direct"]
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


class Probe:
    """``bench/punch_probe.py`` in a home namespace."""

    def __init__(self, ns: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "bench.punch_probe"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def answer(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def punch_trials(topo: Topology, trials: int) -> dict[str, Any]:
    """Hole punches between the two homes (see the module docstring): ``trials`` through the
    masquerades as built, a fifth as many with random ports."""
    report: dict[str, Any] = {}
    # A punch to a random port fails every time, after its full 3 s: fewer of those.
    kinds = (("port_kept", "masquerade", trials), ("port_random", "masquerade random", trials // 5))
    for label, masquerade, trials in kinds:
        _masquerade(topo, masquerade)
        probes = [Probe(topo.homes[0]), Probe(topo.homes[1])]
        ok = 0
        meet_ms: list[float] = []
        try:
            for _ in range(trials):
                ports = []
                for probe in probes:
                    probe.ask("bind")
                    ports.append(int(probe.answer()))
                skew = random.uniform(0.0, 1.0)
                late = random.randrange(2)
                for k, probe in enumerate(probes):
                    delay = skew if k == late else 0.0
                    probe.ask(f"dial {topo.router_ip(1 - k)} {ports[1 - k]} {delay:.3f}")
                answers = [probe.answer() for probe in probes]
                if all(a.startswith("ok") for a in answers):
                    ok += 1
                    meet_ms.append(float(answers[late].split()[1]))  # from the later dial
        finally:
            for probe in probes:
                probe.stop()
        meet_ms.sort()
        report[label] = {
            "trials": trials,
            "succeeded": ok,
            "success_rate": round(ok / trials, 3) if trials else None,
            "later_dial_to_connected_ms_p50": meet_ms[len(meet_ms) // 2] if meet_ms else None,
            "later_dial_to_connected_ms_p95": meet_ms[int(len(meet_ms) * 0.95)]
            if meet_ms
            else None,
        }
        log(f"punch trials, {label}: {report[label]}")
    _masquerade(topo, "masquerade")  # as tests/netns.py built it
    return report


def _masquerade(topo: Topology, rule: str) -> None:
    """Every home router's NAT rule replaced by ``rule``."""
    for router in topo.routers:
        subprocess.run(
            ["ip", "netns", "exec", router, "nft", "-f", "-"],
            input=f"flush chain ip nat postrouting\nadd rule ip nat postrouting oifname wan {rule}",
            text=True,
            check=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit-queries", type=int, default=150, help="per split")
    parser.add_argument("--punch-trials", type=int, default=100, help="per NAT kind")
    parser.add_argument("--skip-networks", action="store_true", help="punch trials only")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if (why := usable()) is not None:
        sys.exit(f"nat_bench: {why}")
    ensure_corpus()
    topo = Topology.build(public=SITES, natted=2)
    try:
        forward_corpus(topo.internet_host)
        queries = moved(load_queries("small", "both", args.limit_queries), topo)
        report: dict[str, Any] = {"punch_trials": punch_trials(topo, args.punch_trials)}
        if not args.skip_networks:
            report["queries"] = len(queries)
            report["all_public"] = run(topo, 0, queries)
            report["two_natted_relayed"] = run(topo, 2, queries, direct=False)
            report["two_natted_direct"] = run(topo, 2, queries, direct=True)
    finally:
        topo.destroy()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
