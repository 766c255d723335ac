"""Crawl benchmark: Scrapy (the anchor) and one Rhizome node over the shared corpus, same run.

    python3 bench/run_crawl_bench.py [--rounds N]

Each tool runs in its own process, one after the other, on the same hosts; the ratio of
pages per second is printed with Rhizome's peak RSS (node plus parser processes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from bench.common import ensure_corpus  # noqa: E402


def _run(script: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(HERE / script)], check=True, capture_output=True, text=True
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ensure_corpus()
    scrapy = [_run("crawl_scrapy.py") for _ in range(max(1, args.rounds // 2))]
    rhizome = [_run("crawl_rhizome.py") for _ in range(args.rounds)]
    s_pps = statistics.median(r["pages_per_s"] for r in scrapy)
    r_pps = statistics.median(r["pages_per_s"] for r in rhizome)
    print(json.dumps({"scrapy": scrapy, "rhizome": rhizome}, indent=1))
    print(
        f"scrapy {s_pps:.1f} pages/s ({scrapy[0]['pages']} pages) | rhizome {r_pps:.1f} pages/s "
        f"({rhizome[0]['pages']} pages, peak RSS {max(r['peak_rss_mb'] for r in rhizome):.0f} MB)"
        f" | ratio {r_pps / s_pps:.1f}x"
    )


if __name__ == "__main__":
    main()
