"""Publishing at scale: N publishers' term shards on N holders, and what a query fetches.

    python3 bench/publish_scale.py [--sizes 50,100,200,400] [--pages 12000] [--queries 300]
        [--pages-per-node 1000] [--quality]

The large corpus's pages (its files, parsed once by ``crawler.parse.parse_html``: every
answer page of ``--queries`` held-out judged queries, the rest sampled at random up to
``--pages``) are dealt to N nodes by a hash of their URL, so a common word has up to N
publishers. For each N, in one process:

1. each node indexes its slice into its own tantivy index (``IndexStore``), builds a shard
   of every term it has and signs them (``wire.sign_groups``, per holder set), as a full
   publish does;
2. each term's records go to its 3 XOR-closest node ids (sha1 of the term, as
   ``Membership.holders_of`` places them; bench/dht_scale.py shows the iterative lookup
   finds exactly these), each holder a real ``ShardStore`` (SQLite) with the per-term
   bound ``PUBLISHERS_PER_TERM``; the wire bytes are the signed, compressed batches
   (``wire.sign_batch``) a publisher would POST, counted for every replica;
3. each query's terms (``PreparedQuery.focus``) are looked up at 2 of their 3 holders
   (``ShardStore.get_json``, the lookup answer's bytes): bytes a query fetches, copies a
   term, and whether the answer page is among the fetched postings (candidate recall) or
   its publisher among the fetched copies' publishers (owner recall: it can be asked);
   the same against every publisher's copy (what an unbounded holder would serve);
4. holder load: copies held and records pushed to each holder, max and max/mean.

Not measured here: HTTP and the DHT's own UDP (bench/dht_scale.py), owners' answers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.quality_bench import CORPORA, load_queries, norm_url, sites_and_seeds  # noqa: E402
from rhizome.api.peer_routes import GZIP_LEVEL  # noqa: E402
from rhizome.crawler.parse import parse_html  # noqa: E402
from rhizome.dht import Identity  # noqa: E402
from rhizome.federation import DEFAULT_SETTINGS, FederatedSearch, LocalPeers  # noqa: E402
from rhizome.federation.answer import LocalOwner  # noqa: E402
from rhizome.federation.shard_store import ShardStore  # noqa: E402
from rhizome.federation.wire import (  # noqa: E402
    GROUP_TERMS,
    PUBLISHERS_PER_TERM,
    SUMMARIES_PER_TERM,
    ShardGroup,
    encode_lookup,
    sign_batch,
    sign_groups,
    verify_copies,
    verify_shard,
)
from rhizome.index import IndexStore, TermShard  # noqa: E402
from rhizome.index.store import IndexDoc  # noqa: E402

REPLICAS = 3  # FederationSettings.replicas
REPLICAS_READ = 2  # FederationSettings.replicas_read
BATCH_TERMS = 5_000  # FederationSettings.publish_batch_terms
TTL = 3600.0


def file_url(corpus: str, sites: list[str], path: Path) -> str:
    """The URL the corpus server answers ``path`` at (quality_bench.url_to_file's inverse)."""
    c = CORPORA[corpus]
    site_dir = Path(c["dir"]) / "sites"
    rel = path.relative_to(site_dir)
    i = sites.index(rel.parts[0])
    return f"http://{c['net']}.{c['first'] + i}:8080/" + "/".join(rel.parts[1:])


def parse_file(item: tuple[str, str]) -> IndexDoc | None:
    url, path = item
    page = parse_html(url, Path(path).read_bytes(), content_type="text/html")
    if page.noindex or not page.text:
        return None
    return IndexDoc(
        url=page.url,
        title=page.title,
        description=page.description,
        body=page.text,
        anchors=page.inbound_anchors,
        language=page.language,
        fetched=time.time(),
        canonical=page.canonical,
        aliases=page.aliases,
    )


def pick_pages(corpus: str, wanted: int, queries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    sites, _seeds = sites_and_seeds(corpus)
    files = sorted((Path(CORPORA[corpus]["dir"]) / "sites").rglob("*.html"))
    by_url = {
        norm_url(file_url(corpus, sites, f)): (file_url(corpus, sites, f), str(f)) for f in files
    }
    answers = sorted({norm_url(q["url"]) for q in queries if norm_url(q["url"]) in by_url})
    rest = sorted(set(by_url) - set(answers))
    random.Random(7).shuffle(rest)
    # The answers first: a run that deals fewer pages (``--pages-per-node``) keeps them.
    return [by_url[u] for u in answers + rest[: max(0, wanted - len(answers))]]


@dataclass
class Publisher:
    identity: Identity
    pages: int = 0
    shards: list[TermShard] = field(default_factory=list)
    build_cpu: float = 0.0
    sign_cpu: float = 0.0


async def build(
    identity: Identity, docs: list[IndexDoc], expires_at: float, keep: list[IndexStore] | None
) -> Publisher:
    """One node's full publish: index its slice, a shard of every term, each signed. The
    index stays open in ``keep`` (for the quality runs) if given."""
    out = Publisher(identity, len(docs))
    store = IndexStore(None, commit_docs=len(docs) + 1, commit_interval=0.05, writer_heap=16 << 20)
    await store.start()
    try:
        for doc in docs:
            await store.submit(doc)
        while store.pending:  # noqa: ASYNC110 (the store has no event for "all committed")
            await asyncio.sleep(0.01)
        terms = await store.indexed_terms()
        shards = await store.term_shards(terms)
        out.build_cpu = store.shard_cpu
        out.shards = shards  # signed once placed: a group is the terms of one holder set
    finally:
        if keep is None:
            await store.stop()
        else:
            keep.append(store)
    return out


def served(found: dict[str, list[bytes]]) -> int:
    """A lookup answer's bytes as a holder sends them (``encode_lookup``, gzipped as
    api/peer_routes does for peers), for any number of copies."""
    body = json.dumps({t: [base64.b64encode(r).decode() for r in rs] for t, rs in found.items()})
    return len(gzip.compress(body.encode(), compresslevel=GZIP_LEVEL))


def served_with(found: dict[str, list[bytes]], cut: dict[str, dict[str, bytes]]) -> int:
    """A lookup answer's bytes as sent, summaries included (``ShardStore.get_json``)."""
    return len(gzip.compress(encode_lookup(found, cut), compresslevel=GZIP_LEVEL))


def closest(key: bytes, ids: list[tuple[int, int]], count: int) -> list[int]:
    """Indexes of the ``count`` node ids XOR-closest to ``key``."""
    k = int.from_bytes(key, "big")
    return [i for _d, i in sorted((nid ^ k, i) for nid, i in ids)[:count]]


def spread(values: list[float]) -> dict[str, float]:
    mean = statistics.fmean(values) if values else 0.0
    top = max(values) if values else 0.0
    return {
        "mean": round(mean, 1),
        "max": round(top, 1),
        "max_over_mean": round(top / mean, 2) if mean else 0.0,
    }


async def run_size(
    n: int,
    docs: list[IndexDoc],
    queries: list[dict[str, Any]],
    work: Path,
    prepare: IndexStore,
    quality: bool,
    bound: int,
) -> dict[str, Any]:
    identities = [Identity.generate() for _ in range(n)]
    ids = [(int.from_bytes(ident.node_id, "big"), i) for i, ident in enumerate(identities)]
    slices: list[list[IndexDoc]] = [[] for _ in range(n)]
    owner_of: dict[str, int] = {}
    for doc in docs:
        i = int.from_bytes(hashlib.sha1(doc.url.encode()).digest()[:8], "big") % n
        slices[i].append(doc)
        owner_of[norm_url(doc.url)] = i
    expires_at = time.time() + TTL
    started = time.monotonic()
    kept: list[IndexStore] | None = [] if quality else None
    publishers = [await build(identities[i], slices[i], expires_at, kept) for i in range(n)]
    build_s = time.monotonic() - started
    stores = [
        ShardStore(
            work / f"h{n}-{i}.sqlite3", own=identities[i].node_id.hex(), publishers_per_term=bound
        )
        for i in range(n)
    ]
    for s in stores:
        await s.open()
    pushed_to = [0] * n
    wire = [0] * n
    envelope_cpu = 0.0
    every_copy: dict[str, list[bytes]] = defaultdict(list)  # what an unbounded holder keeps
    try:
        for i, pub in enumerate(publishers):
            by_set: dict[tuple[int, ...], list[TermShard]] = defaultdict(list)
            for shard in pub.shards:
                key = hashlib.sha1(shard.term.encode()).digest()
                by_set[tuple(sorted(closest(key, ids, REPLICAS)))].append(shard)
            by_holder: dict[int, list[ShardGroup]] = defaultdict(list)
            for holders, shards in by_set.items():
                t0 = time.thread_time()
                groups = sign_groups(pub.identity, shards, expires_at)
                pub.sign_cpu += time.thread_time() - t0
                for h in holders:
                    by_holder[h].extend(groups)
                for g in groups:  # each term is in one holder set's groups
                    for rec in g.held(expires_at):
                        every_copy[rec.term].append(rec.record)
            for h, groups in by_holder.items():
                recs = [r for g in groups for r in g.held(expires_at)]
                pushed_to[h] += len(recs)
                if h != i:  # the publisher's own copy does not cross the wire
                    for first in range(0, len(groups), BATCH_TERMS // GROUP_TERMS):
                        t0 = time.thread_time()
                        part = groups[first : first + BATCH_TERMS // GROUP_TERMS]
                        body = sign_batch(pub.identity, part, expires_at)
                        envelope_cpu += time.thread_time() - t0
                        wire[i] += len(body)
                await stores[h].put(pub.identity.node_id.hex(), recs)
            pub.shards = []
        held = [await s.count() for s in stores]
        fetched: list[int] = []
        unbounded_bytes: list[int] = []
        copies_per_term: list[int] = []
        hits = {"bounded_candidate": 0, "bounded_owner": 0, "all_candidate": 0, "all_owner": 0}
        now = time.time()
        every_seen: dict[str, tuple[set[str], set[str]]] = {}  # term -> publishers, urls
        for q in queries:
            terms = prepare.prepare(q["q"]).focus[:32]
            answer = norm_url(q["url"])
            answer_pub = identities[owner_of[answer]].node_id.hex() if answer in owner_of else ""
            asked: dict[int, list[str]] = defaultdict(list)
            for t in terms:
                for h in closest(hashlib.sha1(t.encode()).digest(), ids, REPLICAS)[:REPLICAS_READ]:
                    asked[h].append(t)
            size = all_size = 0
            seen_urls: set[str] = set()
            seen_pubs: set[str] = set()
            all_urls: set[str] = set()
            all_pubs: set[str] = set()
            for h, ts in asked.items():
                found, cut = await stores[h].lookup(ts)
                size += served_with(found, cut)
                seen_pubs.update(p for by_pub in cut.values() for p in by_pub)
                # An unbounded holder would serve every publisher's copy.
                all_size += served({t: every_copy.get(t, []) for t in ts})
                for t, recs in found.items():
                    copies = verify_copies(t, recs, now)
                    copies_per_term.append(len(copies))
                    for c in copies:
                        seen_pubs.add(c.publisher)
                        seen_urls.update(norm_url(p.url) for p in c.shard.postings)
            for t in terms:
                if t not in every_seen:
                    every = [verify_shard(t, r, now) for r in every_copy.get(t, [])]
                    every_seen[t] = (
                        {c.publisher for c in every},
                        {norm_url(p.url) for c in every for p in c.shard.postings},
                    )
                all_pubs |= every_seen[t][0]
                all_urls |= every_seen[t][1]
            fetched.append(size)
            unbounded_bytes.append(all_size)
            hits["bounded_candidate"] += answer in seen_urls
            hits["bounded_owner"] += answer_pub in seen_pubs
            hits["all_candidate"] += answer in all_urls
            hits["all_owner"] += answer_pub in all_pubs
        pages = max(1, sum(p.pages for p in publishers))
        publishers_per_term = [len(v) for v in every_copy.values()]
        return {
            "nodes": n,
            "pages": pages,
            "pages_per_node": round(pages / n, 1),
            "terms_published": sum(publishers_per_term),
            "distinct_terms": len(every_copy),
            "max_publishers_of_a_term": max(publishers_per_term),
            "build_s": round(build_s, 1),
            "publish_cpu_ms_per_page": round(
                1000 * (sum(p.build_cpu + p.sign_cpu for p in publishers) + envelope_cpu) / pages, 3
            ),
            "wire_bytes_per_page": round(sum(wire) / pages),
            "query_bytes_p50": int(statistics.median(fetched)),
            "query_bytes_mean": int(statistics.fmean(fetched)),
            "query_bytes_max": max(fetched),
            "unbounded_query_bytes_mean": int(statistics.fmean(unbounded_bytes)),
            "copies_per_term_mean": round(statistics.fmean(copies_per_term), 2),
            "copies_per_term_max": max(copies_per_term),
            "holder_copies": spread([float(x) for x in held]),
            "holder_records_pushed": spread([float(x) for x in pushed_to]),
            "recall": {k: round(v / len(queries), 4) for k, v in hits.items()},
            "bound": bound,
            "quality": await network_quality(kept, queries, bound) if kept else None,
        }
    finally:
        for s in stores:
            await s.close()
        for store in kept or []:
            await store.stop()


QUALITY_AT = 0  # the node the quality runs ask


async def network_quality(
    kept: list[IndexStore], queries: list[dict[str, Any]], bound: int
) -> dict[str, Any]:
    """MRR@10 of the real federated query (``FederatedSearch`` over ``LocalPeers``, owners
    answering from their indexes) as holders would serve the shards: every publisher whole;
    the bound alone; the bound with summaries (what holders do)."""
    ids = [f"{i:040x}" for i in range(len(kept))]
    stores = dict(zip(ids, kept, strict=True))
    out: dict[str, Any] = {}
    for name, whole, summaries in (
        ("unbounded", None, 0),
        ("bound_only", bound, 0),
        ("bound_and_summaries", bound, SUMMARIES_PER_TERM),
    ):
        me = ids[QUALITY_AT]
        peers = LocalPeers(stores, me=me, publishers_per_term=whole, summaries_per_term=summaries)
        search = FederatedSearch(
            local=LocalOwner(kept[QUALITY_AT], me),
            peers=peers,
            settings=DEFAULT_SETTINGS,
            analyze=kept[QUALITY_AT].analyzer.analyze,
            published=lambda: True,
        )
        rr = hits = 0.0
        started = time.monotonic()
        for q in queries:
            plan = search.plan(kept[QUALITY_AT].prepare(q["q"]), limit=10, offset=0)
            page = await search.search(plan)
            answer = norm_url(q["url"])
            for rank, row in enumerate(page.rows[:10], start=1):
                if norm_url(row.url) == answer:
                    rr += 1.0 / rank
                    hits += 1
                    break
        n = max(1, len(queries))
        out[name] = {
            "mrr@10": round(rr / n, 4),
            "hit@10": round(hits / n, 4),
            "s": round(time.monotonic() - started, 1),
        }
        print(f"  N={len(kept)} {name}: {out[name]}", flush=True)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="50,100,200,400")
    parser.add_argument("--pages", type=int, default=12_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--corpus", default="large")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quality", action="store_true", help="also MRR@10, in-process")
    parser.add_argument(
        "--bound", type=int, default=PUBLISHERS_PER_TERM, help="whole copies a term"
    )
    parser.add_argument(
        "--pages-per-node", type=int, default=0, help="N x this many pages, not --pages for all"
    )
    args = parser.parse_args()
    queries = load_queries(args.corpus, "heldout", None)
    random.Random(3).shuffle(queries)
    queries = queries[: args.queries]
    sizes = [int(x) for x in args.sizes.split(",")]
    per_node = args.pages_per_node
    items = pick_pages(args.corpus, max(sizes) * per_node if per_node else args.pages, queries)
    t0 = time.monotonic()
    with ProcessPoolExecutor(2) as pool:
        docs = [d for d in pool.map(parse_file, items, chunksize=64) if d is not None]
    urls = {norm_url(d.url) for d in docs}
    queries = [q for q in queries if norm_url(q["url"]) in urls]
    print(
        f"{len(docs)} pages parsed in {time.monotonic() - t0:.0f} s; {len(queries)} queries",
        flush=True,
    )
    prepare = IndexStore(None)  # its analyzer, for the query terms
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            dealt = docs[: n * per_node] if per_node else docs
            report = await run_size(n, dealt, queries, Path(tmp), prepare, args.quality, args.bound)
            print(json.dumps(report), flush=True)
            reports.append(report)
            if args.out:
                args.out.write_text(json.dumps(reports, indent=1))
    print(
        "| N | pages/node | most publishers of a term | gzip B a query (mean / max) |"
        " unbounded | copies a term (mean / max) | busiest holder's copies (x mean) |"
        " records pushed to it (x mean) | wire B/page | owner recall (bounded / all) |"
    )
    for r in reports:
        cells = [
            r["nodes"],
            r["pages_per_node"],
            r["max_publishers_of_a_term"],
            f"{r['query_bytes_mean']:,} / {r['query_bytes_max']:,}",
            f"{r['unbounded_query_bytes_mean']:,}",
            f"{r['copies_per_term_mean']} / {r['copies_per_term_max']}",
            f"{r['holder_copies']['max']:,.0f} ({r['holder_copies']['max_over_mean']})",
            f"{r['holder_records_pushed']['max']:,.0f}"
            f" ({r['holder_records_pushed']['max_over_mean']})",
            f"{r['wire_bytes_per_page']:,}",
            f"{r['recall']['bounded_owner']} / {r['recall']['all_owner']}",
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    asyncio.run(main())
