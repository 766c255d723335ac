"""Measure what a node needs: RAM, CPU, disk, bandwidth and query latency, per setting.

    python3 bench/resources.py [--rounds N] [--queries N] [--out FILE.json]

For each configuration (one after the other: the machine has few cores) a fresh node crawls
the whole shared offline corpus (``ensure_corpus()``: 127.0.0.11-15:8080) and this records:

* peak RSS of the node and its worker processes (sampled every 0.2 s) and idle RSS after it;
* CPU seconds (utime + stime from /proc of the node, its live children and reaped children);
* disk: ``index/`` and ``frontier.sqlite3`` (+ -wal/-shm), allocated blocks, per 1,000 pages;
* crawl wall time from the POST /api/seeds until /api/status says idle (twice in a row);
* bandwidth: the corpus files behind every URL the frontier marks fetched (nginx serves them
  uncompressed, so this is the body bytes received) and, as a cross-check, the bytes the
  worker processes read from sockets and pipes (``rchar`` in /proc/PID/io, headers included);
* the 1-minute load average before and after the crawl (other work on the machine skews time);
* query latency: ``--queries`` sequential GET /api/search?q=... with words from the corpus,
  one new HTTP connection each, timed by the client; p50/p95/p99 in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (
    CORPUS_DIR,
    CORPUS_SEEDS,
    NodeProcess,
    descendants,
    ensure_corpus,
    proc_total,
    tree_rss_mb,
)

BASE_FLAGS = ("--allow-private-networks", "--crawl-delay", "0", "--seed-hosts-only")
CONFIGS: dict[str, tuple[str, ...]] = {
    "default": (),
    "parse-workers-1": ("--parse-workers", "1"),
    "writer-heap-16": ("--writer-heap-mb", "16"),
    "global-concurrency-8": ("--global-concurrency", "8"),
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
# serve.sh gives the sites, in `ls` order, 127.0.0.11, .12, ...
SITE_BY_HOST = {
    f"127.0.0.{11 + i}:8080": site
    for i, site in enumerate(
        sorted(os.listdir(CORPUS_DIR / "sites")) if (CORPUS_DIR / "sites").is_dir() else []
    )
}
WORD = re.compile(r"[A-Za-z]{4,12}")
TAG = re.compile(r"<[^>]*>")


# --- /proc -----------------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """utime+stime of the node, its live descendants, and the children it has reaped."""
    fields = _stat(pid)  # fields[11..14]: utime stime cutime cstime (after the comm field)
    ticks = sum(int(x) for x in fields[11:15])
    for child in descendants(pid):
        try:
            ticks += sum(int(x) for x in _stat(child)[11:13])
        except (OSError, IndexError):
            pass
    return ticks / CLK_TCK


def worker_rchar(pid: int) -> int:
    return proc_total(descendants(pid), "io", "rchar:")


def disk_bytes(path: Path) -> int:
    """Allocated bytes (st_blocks) of a file, or of every file under a directory."""
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


# --- corpus ------------------------------------------------------------------------------------


def corpus_file(url: str) -> Path | None:
    parts = urllib.parse.urlsplit(url)
    site = SITE_BY_HOST.get(parts.netloc)
    if site is None:
        return None
    path = urllib.parse.unquote(parts.path)
    if path.endswith("/"):
        path += "index.html"
    f = CORPUS_DIR / "sites" / site / path.lstrip("/")
    return f if f.is_file() else None


def query_words(n: int, seed: int = 7, files: list[Path] | None = None) -> list[str]:
    """``n`` queries of one or two words drawn from the text of corpus pages (of
    ``files``, by default every page of the small corpus)."""
    rng = random.Random(seed)
    files = sorted(files if files is not None else (CORPUS_DIR / "sites").rglob("*.html"))
    vocab: set[str] = set()
    for f in rng.sample(files, min(60, len(files))):
        text = TAG.sub(" ", f.read_text(encoding="utf-8", errors="replace"))
        vocab.update(w.lower() for w in WORD.findall(text))
    words = sorted(vocab)
    return [" ".join(rng.sample(words, rng.choice((1, 1, 2)))) for _ in range(n)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Sampler(threading.Thread):
    """Samples the process tree's RSS and the workers' rchar every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_rss = tree_rss_mb(pid)
        self.rchar = worker_rchar(pid)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak_rss = max(self.peak_rss, tree_rss_mb(self.pid))
            self.rchar = max(self.rchar, worker_rchar(self.pid))

    def stop(self) -> None:
        self.done.set()
        self.join()


# --- one run -----------------------------------------------------------------------------------


def run(name: str, flags: tuple[str, ...], queries: list[str], timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rhizome-res-") as tmp:
        data = Path(tmp)
        node = NodeProcess(data, *BASE_FLAGS, *flags)
        pid = node.proc.pid
        try:
            time.sleep(1.0)  # workers up
            start_rss = tree_rss_mb(pid)
            workers = len(descendants(pid))
            cpu0 = cpu_seconds(pid)
            rchar0 = worker_rchar(pid)
            load_start = os.getloadavg()[0]
            sampler = Sampler(pid)
            sampler.start()
            started = time.perf_counter()
            node.post("/api/seeds", {"urls": CORPUS_SEEDS})
            streak = 0
            status: dict[str, Any] = {}
            while time.perf_counter() - started < timeout:
                time.sleep(0.1)
                status = node.get("/api/status")
                streak = streak + 1 if status["idle"] else 0
                if streak >= 2:
                    break
            sampler.stop()
            peak, rchar = sampler.peak_rss, sampler.rchar
            crawl_s = time.perf_counter() - started
            load_end = os.getloadavg()[0]
            crawl_cpu = cpu_seconds(pid) - cpu0
            pages = int(status["documents"])
            index_b = disk_bytes(data / "index")
            frontier_b = sum(disk_bytes(p) for p in data.glob("frontier.sqlite3*") if p.is_file())
            time.sleep(3.0)
            idle_rss = tree_rss_mb(pid)

            latencies: list[float] = []
            hits = 0
            cpu_q0 = cpu_seconds(pid)
            for q in queries:
                t0 = time.perf_counter()
                body = node.get("/api/search?" + urllib.parse.urlencode({"q": q}))
                latencies.append((time.perf_counter() - t0) * 1000)
                hits += bool(body["results"])
            query_cpu = cpu_seconds(pid) - cpu_q0
            time.sleep(3.0)
            idle_rss_after_queries = tree_rss_mb(pid)
        finally:
            node.stop()

        db = sqlite3.connect(f"file:{data / 'frontier.sqlite3'}?mode=ro", uri=True)
        rows = db.execute("SELECT url, state FROM urls").fetchall()
        errors = db.execute(
            "SELECT substr(last_error, 1, 60) AS e, count(*) FROM urls WHERE state = 3"
            " GROUP BY e ORDER BY 2 DESC LIMIT 3"
        ).fetchall()
        db.close()
        body_bytes = 0
        fetched_urls = 0
        for url, state in rows:
            if state == 2:  # DONE
                fetched_urls += 1
                f = corpus_file(url)
                body_bytes += f.stat().st_size if f else 0

    per_k = 1000 / max(pages, 1)
    return {
        "config": name,
        "flags": " ".join(flags) or "(defaults)",
        "worker_processes": workers,
        "pages_indexed": pages,
        "urls_fetched": fetched_urls,
        "failed": status.get("crawl", {}).get("failed"),
        "top_failures": errors,
        "idle_reached": bool(status.get("idle")),
        "crawl_s": round(crawl_s, 1),
        "loadavg_1m_before_after_crawl": [round(load_start, 2), round(load_end, 2)],
        "pages_per_s": round(pages / crawl_s, 1),
        "rss_start_mb": round(start_rss, 1),
        "rss_peak_mb": round(peak, 1),
        "rss_idle_after_crawl_mb": round(idle_rss, 1),
        "rss_idle_after_queries_mb": round(idle_rss_after_queries, 1),
        "cpu_s_crawl": round(crawl_cpu, 1),
        "cpu_ms_per_page": round(crawl_cpu * 1000 / max(pages, 1), 2),
        "index_mb": round(index_b / 2**20, 2),
        "frontier_mb": round(frontier_b / 2**20, 2),
        "index_mb_per_1k_pages": round(index_b / 2**20 * per_k, 2),
        "frontier_mb_per_1k_pages": round(frontier_b / 2**20 * per_k, 2),
        "body_kb_per_fetched_url": round(body_bytes / 1024 / max(fetched_urls, 1), 1),
        "body_mb_total": round(body_bytes / 2**20, 1),
        "worker_read_kb_per_fetched_url": round((rchar - rchar0) / 1024 / max(fetched_urls, 1), 1),
        "queries": len(latencies),
        "queries_with_results": hits,
        "query_p50_ms": round(percentile(latencies, 0.50), 2),
        "query_p95_ms": round(percentile(latencies, 0.95), 2),
        "query_p99_ms": round(percentile(latencies, 0.99), 2),
        "query_mean_ms": round(statistics.fmean(latencies), 2),
        "query_cpu_ms_each": round(query_cpu * 1000 / max(len(latencies), 1), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="runs per configuration")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per crawl")
    parser.add_argument("--only", action="append", choices=sorted(CONFIGS), default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    ensure_corpus()
    queries = query_words(args.queries)
    results = []
    for name in args.only or list(CONFIGS):
        for _ in range(args.rounds):
            result = run(name, CONFIGS[name], queries, args.timeout)
            print(json.dumps(result), flush=True)
            results.append(result)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
