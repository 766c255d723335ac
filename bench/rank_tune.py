"""Local ranking on judged queries, against an index a node already built: the fast loop
for tuning the query side (field boosts, proximity, conjunctive boost) without crawling.

    python3 bench/rank_tune.py --index /tmp/tune-small/index [--corpus small] [--split tune]
    python3 bench/rank_tune.py --federated DIR,DIR,... [--at 0,3]   # in-process network

``--federated`` scores the way a network does, in one process: each index (one node's
``index/`` folder) is a peer of ``federation.LocalPeers``, and a query asked at node i runs
``federation.FederatedSearch`` with that node's index as its own (``--at``).

Crawl once with a lone node (``rhizome node --data-dir DIR ...``; stop it, so the index
is free), then run this as often as needed. Tune on ``--split tune`` only; the held-out
half is for the figure reported once the tuning is done (bench/quality_bench.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from rhizome.federation import DEFAULT_SETTINGS, FederatedSearch, FederationSettings, LocalPeers
from rhizome.federation.answer import LocalOwner
from rhizome.index import IndexStore
from rhizome.index.semantic import Embedder

JUDGED = Path(__file__).resolve().parent / "judged"


def load(corpus: str, split: str, *, sample: int = 0, hosts: str = "") -> list[tuple[str, str]]:
    """The judged queries of one split; ``sample`` keeps every k-th (at most that many),
    ``hosts`` (comma-separated host:port) only those answered on these hosts."""
    rows = [json.loads(line) for line in (JUDGED / f"{corpus}.jsonl").read_text().splitlines()]
    wanted = set(filter(None, hosts.split(",")))
    found = [
        (r["q"], r["url"])
        for r in rows
        if (split == "both" or r["split"] == split)
        and (not wanted or r["url"].split("/")[2] in wanted)
    ]
    if sample and len(found) > sample:
        step = len(found) / sample
        found = [found[int(i * step)] for i in range(sample)]
    return found


async def evaluate(store: IndexStore, queries: list[tuple[str, str]]) -> dict[str, float]:
    rr = hits = 0.0
    started = time.perf_counter()
    for q, answer in queries:
        page = await store.search(q, limit=10)
        for rank, hit in enumerate(page.hits, start=1):
            if answer in (hit.url, hit.canonical):
                rr += 1.0 / rank
                hits += 1
                break
    n = max(1, len(queries))
    return {
        "queries": len(queries),
        "mrr@10": round(rr / n, 4),
        "hit@10": round(hits / n, 4),
        "ms_per_query": round((time.perf_counter() - started) * 1000 / n, 2),
    }


async def evaluate_network(
    stores: list[IndexStore],
    at: int,
    queries: list[tuple[str, str]],
    settings: FederationSettings = DEFAULT_SETTINGS,
    down: list[int] | None = None,
) -> dict[str, float]:
    ids = [f"{i:040x}" for i in range(len(stores))]
    me = ids[at]
    peers = LocalPeers(dict(zip(ids, stores, strict=True)), me=me)
    peers.down.update(ids[i] for i in down or ())
    search = FederatedSearch(
        local=LocalOwner(stores[at], me),
        peers=peers,
        settings=settings,
        analyze=stores[at].analyzer.analyze,
        published=lambda: True,
    )
    rr = hits = 0.0
    asked = 0
    started = time.perf_counter()
    for q, answer in queries:
        page = await search.search(search.plan(stores[at].prepare(q), limit=10, offset=0))
        asked += len(page.tally.asked)
        for rank, row in enumerate(page.rows[:10], start=1):
            if row.url == answer:
                rr += 1.0 / rank
                hits += 1
                break
    n = max(1, len(queries))
    return {
        "at": at,
        "queries": len(queries),
        "mrr@10": round(rr / n, 4),
        "hit@10": round(hits / n, 4),
        "ms_per_query": round((time.perf_counter() - started) * 1000 / n, 2),
        "remote_peers_asked": round(asked / n, 2),  # as owners or for snippets
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", type=Path)
    parser.add_argument("--federated", default="", help="comma-separated node data dirs")
    parser.add_argument("--at", default="0", help="comma-separated node numbers to ask")
    parser.add_argument("--settings", default="{}", help="FederationSettings fields, JSON")
    parser.add_argument("--sample", type=int, default=0, help="at most this many queries")
    parser.add_argument("--hosts", default="", help="only queries answered on these hosts")
    parser.add_argument("--semantic", default="on", choices=("on", "off"))
    parser.add_argument("--down", default="", help="comma-separated nodes that never answer")
    parser.add_argument("--corpus", default="small")
    parser.add_argument("--split", default="tune", choices=("tune", "heldout", "both"))
    args = parser.parse_args()
    queries = load(args.corpus, args.split, sample=args.sample, hosts=args.hosts)
    embedder = Embedder.load() if args.semantic == "on" else None
    if args.federated:
        stores = [
            IndexStore(Path(d) / "index", embedder=embedder) for d in args.federated.split(",")
        ]
        for s in stores:
            await s.start()
        try:
            for at in (int(a) for a in args.at.split(",")):
                settings = FederationSettings(**json.loads(args.settings))
                down = [int(d) for d in args.down.split(",") if d]
                found = await evaluate_network(stores, at, queries, settings, down)
                print(json.dumps(found), flush=True)
        finally:
            for s in stores:
                await s.stop()
        return
    store = IndexStore(args.index, embedder=embedder)
    await store.start()
    try:
        print(json.dumps({"docs": store.num_docs, **await evaluate(store, queries)}))
    finally:
        await store.stop()


if __name__ == "__main__":
    asyncio.run(main())
