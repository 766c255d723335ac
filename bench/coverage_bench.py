"""Does one node take a large site whole, at what rate and in how much memory? Same run.

    python3 bench/coverage_bench.py [--corpus small,large] [--code DIR] [--flags "..."]
        [--checkpoints 10000,30000] [--queries 100] [--out FILE.json]

For each corpus in turn (small first: the rates are compared within one run, as the
machine's speed moves between runs) a fresh lone node (no DHT) of the checkout ``--code``
(default this one; cwd and PYTHONPATH are set to it) runs with ``--allow-private-networks
--crawl-delay 0 --seed-hosts-only`` plus ``--flags``; the sites' entry pages are posted to
``/api/seeds`` and ``/api/status`` is polled every 0.5 s until it says idle twice in a row.
Recorded:

* pages indexed / reachable: reachable is ``bench/corpus_reach.py``'s BFS over the corpus
  files (independent of the crawler; redirect stubs are not pages); indexed is the set of
  corpus files the URLs in the node's tantivy index name (read after the node stops; several
  URLs naming one file count once). Missing files are listed per site with a few examples,
  and the frontier's FAILED URLs grouped by error;
* rate: documents in the index when idle / seconds from the seeds to idle;
* RSS of the node and all its descendant processes (the parse workers), sampled every
  0.2 s: the peak while crawling, 4 s after idle, and settled idle (the median of 5
  samples 45-47 s after idle: parser processes stopped, freed heap given back);
* disk: the data directory (allocated blocks);
* query latency: ``--queries`` sequential local searches (one or two words from the corpus'
  pages), p50/p95 in ms, after idle; RSS again 12 s after them;
* ``--checkpoints``: when the index passes each count during the crawl, the RSS then and the
  peak so far, the data dir's size, the rate since the previous checkpoint, and 20 local
  searches' p50/p95 (while the crawl goes on: a loaded figure).

``--grown``: after each later corpus, the first is crawled again into the same node (its
pages are new there): the rate on the same pages with the frontier and index grown, which
tells growth from content (the large corpus' pages take ~1.5x the parse CPU of the small
one's: 2.02 vs 1.34 ms a page, a 2.5% sample of each).

``--code`` lets a frozen checkout be measured in the same run as this one:
``git -C /work/main worktree add --detach /tmp/rz-base main`` then ``--code /tmp/rz-base``.

Longer than 400 lines because the crawl, its RSS sampling and the coverage count share one
node's lifetime; the corpus BFS is in ``bench/corpus_reach.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import tantivy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.corpus_reach import CORPORA, reachable, url_to_file  # noqa: E402
from bench.quality_bench import Node, serve  # noqa: E402
from bench.resources import (  # noqa: E402
    CLK_TCK,
    _stat,
    descendants,
    disk_bytes,
    percentile,
    query_words,
    tree_rss_mb,
)

BASE_FLAGS = ("--allow-private-networks", "--crawl-delay", "0", "--seed-hosts-only")
POLL_S = 0.5
RSS_SAMPLE_S = 0.2
CHECKPOINT_QUERIES = 20
# Idle RSS is read once the node has settled: its parser processes stop after 30 s without
# work (crawler.config.DEFAULT_WORKER_IDLE_STOP) and it gives freed heap back within 10 s
# of going idle (api.app.IDLE_TRIM_INTERVAL).
IDLE_SETTLE_S = 45.0
AFTER_QUERIES_S = 12.0  # the queries' freed memory is given back within 10 s
MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")  # a mapping's first line in /proc/PID/smaps


def breakdown(pid: int, data: Path, *, maps: bool = True) -> dict[str, Any]:
    """Where one tree's RSS is: per process anonymous and file-backed MB, and the MB of
    the node's mappings of files in its data dir (tantivy's mmapped segments)."""
    out: dict[str, Any] = {}
    for p in [pid, *descendants(pid)]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
            smaps = Path(f"/proc/{p}/smaps").read_text() if maps else ""
        except OSError:
            continue
        kb = {
            k: int(v.split()[0])
            for k, v in re.findall(r"^(Rss\w+|VmRSS):\s+(\d+ kB)", status, re.M)
        }
        in_data = 0
        current = ""
        for line in smaps.splitlines():
            if MAPPING.match(line):
                fields = line.split()
                current = fields[5] if len(fields) >= 6 else ""
            elif line.startswith("Rss:") and current.startswith(str(data)):
                in_data += int(line.split()[1])
        out["node" if p == pid else f"worker {p}"] = {
            "rss": round(kb.get("VmRSS", 0) / 1024, 1),
            "anon": round(kb.get("RssAnon", 0) / 1024, 1),
            "file": round(kb.get("RssFile", 0) / 1024, 1),
            "data_dir_maps": round(in_data / 1024, 1),
        }
    return out


class RssSampler(threading.Thread):
    def __init__(self, pid: int, data: Path) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.data = data
        self.peak = tree_rss_mb(pid)
        self.current = self.peak
        self.at_peak: dict[str, Any] = {}  # per process, when the peak was sampled
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(RSS_SAMPLE_S):
            self.current = tree_rss_mb(self.pid)
            if self.current > self.peak:
                self.peak = self.current
                self.at_peak = breakdown(self.pid, self.data, maps=False)

    def stop(self) -> None:
        self.done.set()
        self.join()


def corpus_queries(sites: dict[str, dict[str, Any]], corpus: str, n: int) -> list[str]:
    files = [
        Path(CORPORA[corpus]["dir"]) / "sites" / site / f
        for site, info in sites.items()
        for f in info["files"]
    ]
    return query_words(n, files=files)


def cpu_split(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of the node's own threads, and of its live workers."""
    node = sum(int(x) for x in _stat(pid)[11:13]) / CLK_TCK
    workers = 0.0
    for child in descendants(pid):
        try:
            workers += sum(int(x) for x in _stat(child)[11:13]) / CLK_TCK
        except (OSError, IndexError):
            pass
    return node, workers


def crawl_again(node: Node, corpus: str) -> dict[str, Any]:
    """Crawl ``corpus`` into a node that already holds another: the same pages as on a
    fresh node, so a slower rate here is the grown frontier and index, not the pages."""
    serve(corpus)
    seeds = [info["entry"] for info in reachable(corpus).values()]
    before = int(node.get("/api/status")["documents"])
    started = time.perf_counter()
    node.post("/api/seeds", {"urls": seeds})
    streak = 0
    docs = before
    while streak < 2:
        time.sleep(POLL_S)
        status = node.get("/api/status")
        docs = int(status["documents"])
        streak = streak + 1 if status["idle"] and docs > before else 0
    elapsed = time.perf_counter() - started
    return {
        "corpus": corpus,
        "pages": docs - before,
        "seconds": round(elapsed, 1),
        "pages_per_s": round((docs - before) / elapsed, 1),
    }


def time_queries(node: Node, queries: list[str]) -> tuple[float, float]:
    latencies = []
    for q in queries:
        t0 = time.perf_counter()
        node.get("/api/search?" + urllib.parse.urlencode({"q": q, "scope": "local"}))
        latencies.append((time.perf_counter() - t0) * 1000)
    return round(percentile(latencies, 0.5), 1), round(percentile(latencies, 0.95), 1)


def indexed_urls(index_dir: Path) -> list[str]:
    """Every URL in a (closed) node's tantivy index."""
    searcher = tantivy.Index.open(str(index_dir)).searcher()
    if not searcher.num_docs:
        return []
    hits = searcher.search(tantivy.Query.all_query(), limit=searcher.num_docs).hits
    return [str(searcher.doc(address).get_first("url")) for _score, address in hits]


def coverage(data: Path, corpus: str, sites: dict[str, dict[str, Any]]) -> dict[str, Any]:
    db = sqlite3.connect(f"file:{data / 'frontier.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT url, state, last_error FROM urls").fetchall()
    finally:
        db.close()
    indexed: dict[str, set[str]] = {s: set() for s in sites}
    urls_per_file: Counter[tuple[str, str]] = Counter()
    errors: Counter[str] = Counter()
    in_index = indexed_urls(data / "index")
    for url in in_index:
        hit = url_to_file(sites, corpus, url)
        if hit:
            indexed[hit[0]].add(hit[1])
            urls_per_file[hit] += 1
    for _url, state, error in rows:
        if state == 3:
            errors[re.sub(r"\d{3,}", "N", (error or "")[:70])] += 1
    per_site = {}
    for site, info in sites.items():
        reach = set(info["files"])
        missing = sorted(reach - indexed[site])
        per_site[site] = {
            "reachable": len(reach),
            "indexed": len(reach & indexed[site]),
            "missing": len(missing),
            "missing_examples": [info["files"][f] for f in missing[:5]],
            "indexed_unreachable": len(indexed[site] - reach),
        }
    total = sum(s["reachable"] for s in per_site.values())
    got = sum(s["indexed"] for s in per_site.values())
    return {
        "reachable": total,
        "indexed_reachable": got,
        "share": round(got / max(total, 1), 4),
        "done_urls": sum(1 for _u, s, _e in rows if s == 2),
        "index_urls": len(in_index),
        "index_urls_outside_corpus": len(in_index) - sum(urls_per_file.values()),
        "files_with_several_urls": sum(1 for n in urls_per_file.values() if n > 1),
        "failed_urls": sum(errors.values()),
        "failures": errors.most_common(8),
        "sites": per_site,
    }


def run(
    corpus: str,
    only: list[str],
    code: Path,
    flags: list[str],
    checkpoints: list[int],
    n_queries: int,
    timeout: float,
    then: str = "",
) -> dict[str, Any]:
    serve(corpus)
    sites = {s: info for s, info in reachable(corpus).items() if not only or s in only}
    seeds = [info["entry"] for info in sites.values()]
    queries = corpus_queries(sites, corpus, n_queries)
    with tempfile.TemporaryDirectory(prefix=f"rhizome-cov-{corpus}-") as tmp:
        data = Path(tmp) / "node"
        node = Node(code, data, *BASE_FLAGS, *flags)
        pid = node.proc.pid
        try:
            time.sleep(1.0)  # workers up
            workers = len(descendants(pid))
            start_rss = tree_rss_mb(pid)
            sampler = RssSampler(pid, data)
            sampler.start()
            load0 = os.getloadavg()[0]
            cpu0 = cpu_split(pid)
            started = time.perf_counter()
            node.post("/api/seeds", {"urls": seeds})
            todo = sorted(checkpoints)
            points: list[dict[str, Any]] = []
            last_t, last_docs = 0.0, 0
            streak = 0
            status: dict[str, Any] = {}
            while time.perf_counter() - started < timeout:
                time.sleep(POLL_S)
                status = node.get("/api/status")
                docs = int(status["documents"])
                now = time.perf_counter() - started
                while todo and docs >= todo[0]:
                    p50, p95 = time_queries(node, queries[:CHECKPOINT_QUERIES])
                    points.append(
                        {
                            "at_pages": todo.pop(0),
                            "pages": docs,
                            "s": round(now, 1),
                            "pages_per_s_since_last": round((docs - last_docs) / (now - last_t), 1),
                            "rss_mb": round(sampler.current, 1),
                            "rss_peak_so_far_mb": round(sampler.peak, 1),
                            "data_dir_mb": round(disk_bytes(data) / 2**20, 1),
                            "rss_breakdown": breakdown(pid, data),
                            "query_p50_ms_while_crawling": p50,
                            "query_p95_ms_while_crawling": p95,
                        }
                    )
                    last_t, last_docs = time.perf_counter() - started, docs
                streak = streak + 1 if status["idle"] else 0
                if streak >= 2:
                    break
            elapsed = time.perf_counter() - started
            node_cpu, workers_cpu = cpu_split(pid)
            node_cpu -= cpu0[0]
            workers_cpu -= cpu0[1]
            peak = sampler.peak
            load1 = os.getloadavg()[0]
            pages = int(status["documents"])
            time.sleep(4.0)
            just_idle = tree_rss_mb(pid)
            time.sleep(IDLE_SETTLE_S - 4.0)
            idle_samples = []
            for _ in range(5):
                idle_samples.append(tree_rss_mb(pid))
                time.sleep(0.5)
            sampler.stop()
            idle_breakdown = breakdown(pid, data)
            disk = disk_bytes(data)
            p50, p95 = time_queries(node, queries)
            time.sleep(AFTER_QUERIES_S)
            idle_after_queries = tree_rss_mb(pid)
            idle_after_queries_breakdown = breakdown(pid, data)
            grown = crawl_again(node, then) if then else None
        finally:
            node.stop()
        cov = coverage(data, corpus, sites)
    return {
        "corpus": corpus,
        "code": str(code),
        "flags": " ".join(flags),
        "worker_processes": workers,
        "idle_reached": bool(status.get("idle")),
        "pages_indexed": pages,
        "reachable": cov["reachable"],
        "indexed_of_reachable": cov["indexed_reachable"],
        "share": cov["share"],
        "seconds": round(elapsed, 1),
        "node_cpu_ms_per_page": round(node_cpu * 1000 / max(pages, 1), 2),
        "workers_cpu_ms_per_page": round(workers_cpu * 1000 / max(pages, 1), 2),
        "pages_per_s": round(pages / elapsed, 1),
        "loadavg_1m_before_after": [round(load0, 1), round(load1, 1)],
        "rss_start_mb": round(start_rss, 1),
        "rss_peak_crawling_mb": round(peak, 1),
        "rss_4s_after_idle_mb": round(just_idle, 1),
        "rss_idle_mb": round(statistics.median(idle_samples), 1),
        "rss_idle_after_queries_mb": round(idle_after_queries, 1),
        "rss_at_peak": sampler.at_peak,
        "rss_idle_breakdown": idle_breakdown,
        "rss_idle_after_queries_breakdown": idle_after_queries_breakdown,
        "then": grown,
        "data_dir_mb": round(disk / 2**20, 1),
        "data_kb_per_page": round(disk / 1024 / max(pages, 1), 2),
        "query_p50_ms": p50,
        "query_p95_ms": p95,
        "checkpoints": points,
        "coverage": cov,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="small,large")
    parser.add_argument("--code", type=Path, default=ROOT)
    parser.add_argument("--sites", default="", help="only these sites, e.g. rust,java")
    parser.add_argument("--flags", default="", help="extra node flags, one string")
    parser.add_argument("--checkpoints", default="", help="page counts, e.g. 10000,30000")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument(
        "--grown",
        action="store_true",
        help="after each later corpus, crawl the first one again into the same node",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    corpora = args.corpus.split(",")
    checkpoints = [int(c) for c in args.checkpoints.split(",") if c]
    results = []
    for i, corpus in enumerate(corpora):
        only = [s for s in args.sites.split(",") if s]
        result = run(
            corpus,
            only,
            args.code.resolve(),
            args.flags.split(),
            checkpoints,
            args.queries,
            args.timeout,
            then=corpora[0] if args.grown and i > 0 else "",
        )
        results.append(result)
        brief = {k: v for k, v in result.items() if k != "coverage"}
        print(json.dumps(brief), flush=True)
        for site, s in result["coverage"]["sites"].items():
            if s["missing"]:
                print(f"  {site}: {s['missing']} missing, e.g. {s['missing_examples'][:3]}")
        print(f"  failures: {result['coverage']['failures']}", flush=True)
    if len(results) > 1:
        base = results[0]["pages_per_s"]
        for r in results[1:]:
            print(f"rate {r['corpus']} / {results[0]['corpus']}: {r['pages_per_s'] / base:.2f}")
            if r["then"]:
                again = r["then"]["pages_per_s"]
                print(
                    f"rate {results[0]['corpus']} into the grown node / fresh: {again / base:.2f}"
                )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
