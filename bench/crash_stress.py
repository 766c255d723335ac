"""Crash stress: SIGKILL a crawling node many times and count what each restart costs.

A generated site (one unique word per page) is served on loopback; a node crawls it with
a second node holding its shards (the crawler publishes to it). Each cycle starts the
crawler on the same data directory, waits for a moment drawn from a seeded RNG (at random,
right after a commit, around a shard publication, or after killing the holder too), and
SIGKILLs it. After each kill the files are checked with no node running; after each
restart the node must serve everything committed before. At the end the crawl runs to
completion and every page must be indexed exactly once.

    python3 bench/crash_stress.py --cycles 40            # figures on stdout
    python3 bench/crash_stress.py --cycles 40 --seed 7   # replay one sequence

Figures: cycles, pages committed, pages refetched needlessly (fetched again after a kill
that found them indexed), refetches of interrupted fetches (legitimate), restarts that
failed, invariant violations, and the time from spawning a node to its first answer
that includes a page committed before the kill.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from conftest import NodeFactory, NodeHandle, serve_site  # noqa: E402
from crash_site import (  # noqa: E402
    frontier_done,
    generated_pages,
    index_urls,
    integrity_problems,
)
from test_crash_recovery import (  # noqa: E402
    MODES,
    CrashRun,
    databases,
    generated,
    searchable,
)

PAGES_PER_CYCLE = 30  # the site is sized so the crawl is still running at the last kill
SITE_DELAY = 0.005
SERVE_TIMEOUT = 30.0


def time_to_serve(run: CrashRun, committed: set[str]) -> tuple[NodeHandle, float]:
    """Start the crawler; seconds until a search returns a page committed before."""
    spawned = time.monotonic()
    node = run.start_crawler()
    probe = sorted(generated(committed))[:1]
    deadline = spawned + SERVE_TIMEOUT
    while probe and not searchable(node, probe):
        if time.monotonic() > deadline:
            raise AssertionError(f"{probe} not served {SERVE_TIMEOUT} s after the start")
        time.sleep(0.005)
    return node, time.monotonic() - spawned


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--pages", type=int, default=0, help="default: 30 per cycle")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    pages = generated_pages(args.pages or max(240, PAGES_PER_CYCLE * args.cycles))
    violations: Counter[str] = Counter()
    moments: Counter[str] = Counter()
    serve_times: list[float] = []
    failed_restarts = 0
    window_hits = 0  # kills that left pages indexed but not yet DONE
    started = time.monotonic()
    print(f"crash stress: seed {seed}, {args.cycles} cycles, {len(pages)} pages", flush=True)
    with (
        TemporaryDirectory(prefix="crash-stress-") as tmp,
        serve_site(pages, delay=SITE_DELAY) as site,
    ):
        factory = NodeFactory(Path(tmp))
        try:
            run = CrashRun(factory, site, rng)
            committed_before: set[str] = set()
            committed_at: dict[str, Counter[str]] = {}  # url -> request counts at that kill
            for cycle in range(args.cycles):
                try:
                    node, serve = time_to_serve(run, committed_before)
                    serve_times.append(serve)
                    missing = generated(committed_before) - searchable(node, committed_before)
                    if missing:
                        violations["committed page not served after restart"] += len(missing)
                    if node.status()["documents"] < len(committed_before):
                        violations["document count went down"] += 1
                    moment = run.kill_at(node, rng.choice(MODES))
                except AssertionError as exc:
                    failed_restarts += 1
                    print(f"cycle {cycle}: restart failed: {str(exc)[:300]}", flush=True)
                    factory.close()
                    run.holder = run.start_holder()
                    continue
                moments[moment.split(",")[0]] += 1
                requests = site.requests
                try:
                    urls = index_urls(run.dir_a)
                except Exception as exc:  # the index does not open: the worst outcome
                    violations["index does not open"] += 1
                    print(f"cycle {cycle}: index does not open: {exc}", flush=True)
                    continue
                committed, done = set(urls), frontier_done(run.dir_a)
                violations["indexed twice"] += len(urls) - len(committed)
                violations["DONE but not indexed"] += len(done - committed)
                violations["committed page lost"] += len(committed_before - committed)
                problems = integrity_problems(databases(run.dir_a, run.dir_b))
                violations["integrity_check failed"] += len(problems)
                window_hits += bool(committed - done)
                for url in committed - committed_before:
                    committed_at[url] = requests
                committed_before = committed
                print(
                    f"cycle {cycle}: {moment}; {len(committed)} indexed, "
                    f"{len(committed - done)} not yet DONE; served {serve:.2f} s after spawn",
                    flush=True,
                )
            node = run.start_crawler()
            status = node.wait_idle(300, min_documents=len(pages))
            final = site.requests
            node.stop()
            urls = index_urls(run.dir_a)
            every = {site + p for p in pages}
            violations["indexed twice"] += len(urls) - len(set(urls))
            violations["page never indexed"] += len(every - set(urls))
            needless = sum(
                final[path] - counts[path]
                for url, counts in committed_at.items()
                if (path := url[len(site) :]) and final[path] > counts[path]
            )
            interrupted = sum(max(0, n - 1) for p, n in final.items() if p != "/robots.txt")
            interrupted -= needless
        finally:
            factory.close()
    spent = time.monotonic() - started
    print()
    print("| figure | value |\n| --- | --- |")
    print(f"| seed | {seed} |")
    print(f"| kill/restart cycles | {args.cycles} ({dict(moments)}) |")
    print(f"| pages committed at the end | {status['documents']} of {len(pages)} |")
    print(f"| kills that fell between commit and DONE | {window_hits} |")
    print(f"| pages refetched needlessly (indexed before a kill) | {needless} |")
    print(f"| refetches of fetches a kill interrupted | {interrupted} |")
    print(f"| restarts that failed | {failed_restarts} |")
    for name, count in sorted(violations.items()):
        print(f"| violations: {name} | {count} |")
    if serve_times:
        p50 = statistics.median(serve_times)
        print(f"| time to serve after restart p50 / max | {p50:.2f} s / {max(serve_times):.2f} s |")
    print(f"| wall time | {spent:.0f} s |")
    bad = failed_restarts + sum(violations.values()) + needless
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
