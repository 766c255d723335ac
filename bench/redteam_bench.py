"""Red team: hostile peers against a real 5-node small-corpus network (issue #12).

    python3 bench/redteam_bench.py [--queries 300] [--keep DIR]

Five ``rhizome node`` subprocesses, one site of the small corpus each, then, in turn:

1. **Honest network**: MRR@10 of the held-out judged queries asked at node 0.
2. **A forging holder** joins (``tests/liar_peer.py --holder forge``): it becomes a
   replica of about half of all terms once the shards are re-placed, and answers every
   lookup with copies forged under node 1's key, unsigned pairs and garbage. Same queries:
   MRR@10 / the honest one, and how many forged URLs were shown.
3. **A withholding holder** (``--holder omit``) in its place: MRR@10 ratio, and the share
   of answers that named it in ``replicas_disagree``.
4. **Reflection**: the worst UDP reply/request byte ratio of every procedure to an
   unproven source at node 0 (``bench/reflector_probe.py``).
5. **Seeds without the credential**: ``POST /api/seeds`` from several loopback source
   addresses, JSON and cross-site content types, with and without a foreign Origin: how
   many were refused, and whether any URL was queued.
6. **A disk and memory flood**: keys from many source addresses push shard batches at
   node 0 until refused; its shard database size and RSS before and after.

Not part of the pass/fail suite: it prints a table and writes JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.quality_bench import (  # noqa: E402
    Node,
    load_queries,
    log,
    rank_of,
    serve,
    sites_and_seeds,
    start_one_site_each,
    wait_idle,
)
from bench.reflector_probe import measure  # noqa: E402
from rhizome.dht import Identity  # noqa: E402
from rhizome.federation.wire import sign_push  # noqa: E402
from rhizome.index import SHARD_FIELDS, Posting, TermShard  # noqa: E402
from tests.liar_peer import start_liar  # noqa: E402

FORGED_SITE = "http://forged.example"  # the lie pages the hostile holder invents
FLOOD_KEYS = 24  # publishers the flood pushes for (3 per source address)
FLOOD_SOURCES = 8
FLOOD_TERMS = 2_000  # terms a batch


def ask(node: Node, queries: list[dict[str, Any]], liar_id: str = "") -> dict[str, Any]:
    rr = 0.0
    forged = named = 0
    for qd in queries:
        params = urllib.parse.urlencode({"q": qd["q"], "scope": "network", "limit": 10})
        body = node.get(f"/api/search?{params}", timeout=30)
        urls = [r["url"] for r in body.get("results", [])]
        rank = rank_of(urls, qd["url"])
        rr += 1.0 / rank if rank else 0.0
        forged += sum(1 for u in urls if u.startswith(FORGED_SITE))
        if liar_id and any(d["holder"] == liar_id for d in body.get("replicas_disagree", [])):
            named += 1
    n = max(1, len(queries))
    return {"mrr@10": round(rr / n, 4), "forged_urls_shown": forged, "named_share": named / n}


def seeds_refused(node: Node) -> dict[str, Any]:
    """POST /api/seeds with no credential from several source addresses and content types."""
    host, port = node.url.split("//", 1)[1].split(":")
    body = json.dumps({"urls": ["http://127.0.0.99:8080/stolen.html"]}).encode()
    tried = refused = 0
    for source in ("127.0.0.1", "127.0.0.2", "127.0.3.4", "127.9.9.9"):
        for ctype in ("application/json", "text/plain", "application/x-www-form-urlencoded"):
            for origin in ("", "http://evil.example"):
                conn = http.client.HTTPConnection(host, int(port), source_address=(source, 0))
                headers = {"Content-Type": ctype, **({"Origin": origin} if origin else {})}
                conn.request("POST", "/api/seeds", body=body, headers=headers)
                status = conn.getresponse().status
                conn.close()
                tried += 1
                refused += status in (401, 403, 415)
    queued = node.get("/api/status")["crawl"].get("queued", 0)
    return {"tried": tried, "refused": refused, "queued_after": queued}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _db_mb(data_dir: Path) -> float:
    return sum(p.stat().st_size for p in data_dir.glob("shards.sqlite3*")) / 2**20


def flood(node: Node, seconds: float) -> dict[str, Any]:
    """Many keys from many addresses push big batches at node 0 for ``seconds``."""
    host, port = node.url.split("//", 1)[1].split(":")
    fields = len(SHARD_FIELDS)
    before = {"db_mb": _db_mb(node.data_dir), "rss_mb": _rss_mb(node.proc.pid)}
    statuses: dict[int, int] = {}
    terms = {"stored": 0, "refused": 0}
    deadline = time.monotonic() + seconds
    batch_no = 0
    keys = [Identity.generate() for _ in range(FLOOD_KEYS)]
    while time.monotonic() < deadline:
        key = keys[batch_no % FLOOD_KEYS]
        source = f"127.0.{50 + batch_no % FLOOD_SOURCES}.1"
        shards = (
            TermShard(
                f"flood{batch_no}x{i}",
                1,
                10,
                (1,) * fields,
                tuple(
                    Posting(f"http://f.example/{i}/{j}", "t" * 40, (1.0,) * fields)
                    for j in range(50)
                ),
            )
            for i in range(FLOOD_TERMS)
        )
        body = sign_push(key, ((s.term, s.to_json()) for s in shards), time.time() + 3600)
        conn = http.client.HTTPConnection(host, int(port), timeout=60, source_address=(source, 0))
        try:
            conn.request(
                "POST",
                "/api/peer/shards",
                body=body,
                headers={"Content-Type": "application/octet-stream"},
            )
            resp = conn.getresponse()
            status = resp.status
            answer = json.loads(resp.read() or b"{}")
            for k in terms:
                terms[k] += int(answer.get(k, 0)) if isinstance(answer, dict) else 0
        except (OSError, ValueError):
            status = 0
        finally:
            conn.close()
        statuses[status] = statuses.get(status, 0) + 1
        batch_no += 1
    after = {"db_mb": _db_mb(node.data_dir), "rss_mb": _rss_mb(node.proc.pid)}
    return {
        "batches": batch_no,
        "terms_pushed": batch_no * FLOOD_TERMS,
        "terms": terms,
        "statuses": statuses,
        "before": before,
        "after": after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=300, help="held-out queries asked")
    parser.add_argument("--flood-seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", type=Path, help="keep the nodes' data here")
    args = parser.parse_args()
    serve("small")
    _sites, seeds = sites_and_seeds("small")
    queries = load_queries("small", "heldout", args.queries)
    work = args.keep or Path(tempfile.mkdtemp(prefix="redteam-"))
    nodes: list[Node] = []
    liar = None
    report: dict[str, Any] = {"queries": len(queries)}
    try:
        start_one_site_each(ROOT, work, seeds, nodes)
        wait_idle(nodes, 900, "honest network")
        report["honest"] = ask(nodes[0], queries)
        log(f"honest: {report['honest']}")
        victim = Identity.load_or_create(work / "n1").public_key.hex()
        for mode in ("forge", "omit"):
            liar, _url, liar_id = start_liar(
                work / f"liar-{mode}",
                nodes[0].dht_address(),
                FORGED_SITE,
                holder=mode,
                victim_key=victim,
            )
            time.sleep(5)  # the DHT meets it, publishers re-place onto it
            wait_idle(nodes, 300, f"with a {mode} holder")
            found = ask(nodes[0], queries, liar_id)
            found["mrr_ratio"] = round(found["mrr@10"] / max(1e-9, report["honest"]["mrr@10"]), 4)
            report[mode] = found
            log(f"{mode}: {found}")
            liar.kill()
            liar.wait()
            liar = None
        host, port = nodes[0].dht_address().rsplit(":", 1)
        worst = asyncio.run(measure((host, int(port)), 3))
        report["udp_worst_ratio"] = round(max(ex.ratio for ex in worst.values()), 3)
        report["udp"] = {name: round(ex.ratio, 3) for name, ex in worst.items()}
        report["seeds"] = seeds_refused(nodes[0])
        report["flood"] = flood(nodes[0], args.flood_seconds)
        report["flood"]["alive"] = nodes[0].alive()
    finally:
        if liar is not None:
            liar.kill()
        for n in nodes:
            n.stop()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
