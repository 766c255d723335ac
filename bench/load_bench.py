"""Search load while crawling: a second process fires searches at a crawling node.

    python3 bench/load_bench.py [--seconds 20] [--concurrency 16]

The node crawls the shared corpus with a 20 ms crawl delay (so the crawl lasts the whole
run); this process keeps `concurrency` searches in flight with words drawn from the corpus
and reports throughput, latency percentiles, errors and the node's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import CORPUS_SEEDS, NodeProcess, ensure_corpus

WORDS = (
    "table index query commit branch merge json socket thread model view form rebase "
    "vacuum trigger pragma foreign key decorator asyncio logging regex transaction"
).split()


async def load(url: str, seconds: float, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + seconds
    rng = random.Random(7)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.monotonic() < stop_at:
            q = " ".join(rng.sample(WORDS, rng.randint(1, 3)))
            started = time.perf_counter()
            try:
                async with session.get(url + "/api/search", params={"q": q}) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 1),
        "max_ms": round(ordered[-1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    ensure_corpus()
    with tempfile.TemporaryDirectory() as tmp:
        node = NodeProcess(
            Path(tmp), "--allow-private-networks", "--crawl-delay", "0.02", "--seed-hosts-only"
        )
        try:
            node.post("/api/seeds", {"urls": CORPUS_SEEDS})
            time.sleep(2.0)  # some pages indexed before the load starts
            peak = [node.rss_mb()]

            async def run() -> dict[str, float]:
                async def sample_rss() -> None:
                    while True:
                        peak[0] = max(peak[0], node.rss_mb())
                        await asyncio.sleep(0.5)

                sampler = asyncio.create_task(sample_rss())
                try:
                    return await load(node.url, args.seconds, args.concurrency)
                finally:
                    sampler.cancel()

            result = asyncio.run(run())
            status = node.get("/api/status")
            result["documents_during_load"] = status["documents"]
            result["crawled_pages_per_minute"] = status["crawl"]["pages_per_minute"]
            result["still_crawling"] = not status["idle"]
            result["peak_rss_mb"] = round(peak[0], 1)
        finally:
            node.stop()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
