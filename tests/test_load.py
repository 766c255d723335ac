"""Search load from a second process while the node crawls (issue #5, "Load").

A node crawls a generated site slowly enough that the crawl lasts the whole run, while
``tests/load_client.py`` (its own process) keeps 8 searches in flight. Would catch search
or snippet work on the event loop (status and crawl stall), searches serialised behind the
index writer or the crawl, errors under concurrency, and memory that grows with load.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import MACHINE_SEARCH_RATE, NodeFactory, serve_site
from crash_site import generated_pages

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
LOAD_SECONDS = 6.0
CONCURRENCY = 8
P99_LIMIT_MS = 750.0  # ~10x what an idle 2-core machine measures
MIN_SEARCHES_PER_SECOND = 20.0
STATUS_LIMIT_S = 1.0
RSS_LIMIT_BYTES = 400 * MB


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def test_searches_from_another_process_stay_fast_while_crawling(
    node_factory: NodeFactory,
) -> None:
    with serve_site(generated_pages(3_000)) as site:
        node = node_factory.start(
            "--host-concurrency",
            "2",
            "--search-rate",
            str(MACHINE_SEARCH_RATE),
            seeds=[site + "/index.html"],
            crawl_delay=0.01,
        )
        deadline = time.monotonic() + 30
        while node.status()["documents"] < 50:  # something to search for
            assert time.monotonic() < deadline, "the crawl did not start"
            time.sleep(0.2)
        fetched_before = node.status()["crawl"]["fetched"]

        peak_rss = 0
        status_worst = 0.0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak_rss, status_worst
            while not stop.is_set():
                peak_rss = max(peak_rss, _rss([node.proc.pid, *node.live_workers()]))
                started = time.monotonic()
                node.status()
                status_worst = max(status_worst, time.monotonic() - started)
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            client = subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "tests" / "load_client.py"),
                    node.url,
                    str(LOAD_SECONDS),
                    str(CONCURRENCY),
                ],
                capture_output=True,
                text=True,
                timeout=LOAD_SECONDS + 30,
                check=True,
            )
        finally:
            stop.set()
            sampler.join(10)
        load = json.loads(client.stdout.strip().splitlines()[-1])
        status = node.status()
        node.assert_alive()
    print(
        f"\nload: {load['requests']} searches, {load['per_second']:.0f}/s, "
        f"p50 {load['p50_ms']:.0f} ms, p99 {load['p99_ms']:.0f} ms, "
        f"max {load['max_ms']:.0f} ms, errors {load['errors']}; "
        f"crawl +{status['crawl']['fetched'] - fetched_before} pages meanwhile; "
        f"status worst {status_worst * 1000:.0f} ms; peak RSS {peak_rss / MB:.0f} MB"
    )
    assert load["errors"] == 0, load
    assert load["per_second"] >= MIN_SEARCHES_PER_SECOND, load
    assert load["p99_ms"] <= P99_LIMIT_MS, load
    # The crawl kept going under the load, and is still going (the load overlapped it).
    assert status["crawl"]["fetched"] - fetched_before >= 50, status
    assert not status["idle"], "the crawl ended before the load did: the test measured nothing"
    assert status_worst <= STATUS_LIMIT_S, status_worst
    assert 0 < peak_rss <= RSS_LIMIT_BYTES, peak_rss
