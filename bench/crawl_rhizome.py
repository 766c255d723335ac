"""Crawl the shared corpus with one Rhizome node; print pages/s and peak RSS as JSON."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import CORPUS_SEEDS, NodeProcess, ensure_corpus


def run(timeout: float = 300.0) -> dict[str, float]:
    ensure_corpus()
    with tempfile.TemporaryDirectory() as tmp:
        node = NodeProcess(
            Path(tmp), "--allow-private-networks", "--crawl-delay", "0", "--seed-hosts-only"
        )
        try:
            peak = node.rss_mb()
            started = time.perf_counter()
            node.post("/api/seeds", {"urls": CORPUS_SEEDS})
            status = node.get("/api/status")
            while time.perf_counter() - started < timeout:
                time.sleep(0.25)
                peak = max(peak, node.rss_mb())
                status = node.get("/api/status")
                if status["idle"]:
                    break
            elapsed = time.perf_counter() - started
            docs = status["documents"]
            return {
                "pages": docs,
                "seconds": round(elapsed, 2),
                "pages_per_s": round(docs / elapsed, 1),
                "peak_rss_mb": round(peak, 1),
                "fetched": status["crawl"]["fetched"],
                "failed": status["crawl"]["failed"],
                "idle": status["idle"],
            }
        finally:
            node.stop()


if __name__ == "__main__":
    print(json.dumps(run()))
