"""A second process that keeps searches in flight against a node, for the load test.

    python tests/load_client.py URL SECONDS CONCURRENCY

Each worker sends one search after another (queries drawn from a fixed list, scope=local,
so the node under load is the only thing measured) until SECONDS have passed, then prints
one JSON object: requests, errors, searches per second and latency percentiles (ms).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp

QUERIES = [
    "page",
    "page says",
    '"page 12"',
    "common1 common7",
    "generated site",
    "front page",
    "zqaaabmarker",
    "common3 -common4",
    "title:page",
    "to start",
]


async def main(url: str, seconds: float, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def worker(n: int, session: aiohttp.ClientSession) -> None:
        nonlocal errors
        i = n
        while time.monotonic() < deadline:
            q = QUERIES[i % len(QUERIES)]
            i += concurrency
            started = time.monotonic()
            try:
                async with session.get(
                    url + "/api/search", params={"q": q, "scope": "local", "limit": "10"}
                ) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                        continue
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                continue
            latencies.append((time.monotonic() - started) * 1000)

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        began = time.monotonic()
        await asyncio.gather(*(worker(n, session) for n in range(concurrency)))
        elapsed = time.monotonic() - began
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

    return {
        "requests": len(latencies) + errors,
        "errors": errors,
        "per_second": len(latencies) / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] if latencies else 0.0,
    }


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
    print(json.dumps(result), flush=True)
