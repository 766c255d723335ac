"""Search quality on judged description-style queries: central tantivy vs Rhizome, same run.

    python3 bench/quality_bench.py --corpus small|large [--nodes 5] [--split heldout|tune|both]
        [--code DIR] [--systems central,local,network] [--limit-queries N] [--ask-at 0,3]
        [--kill 2] [--no-lone-dht] [--central-only] [--out FILE]

Queries: ``bench/judged/<corpus>.jsonl`` (made by ``bench/judged/build_queries.py``; see its
docstring): known-item queries written as a page's own one-line description (from the docs'
index pages, or a section's first sentence) with the item's name removed; near-exact titles
are filtered out. Each query has one answer page. ``split`` is ``sha1(q + url)`` parity:
``tune`` is for tuning, ``heldout`` must never be looked at while tuning and is reported
separately. ``--limit-queries N`` keeps the first N of each split in sha1 order (deterministic).

Systems (all in one run, over the same pages):

- ``central`` — one tantivy index built by this bench (fields title, body, url; ``en_stem``
  analyzer, the same analysis as Rhizome's index) over exactly the pages the lone node indexed
  (its frontier's DONE URLs, read from the corpus files that serve.sh serves, or fetched over
  HTTP when a URL has no file). ``central-bm25``: the query's words, OR, BM25 over title+body.
  ``central-phrase``: the same plus the sloppy phrase ``"words"~3^2``. Query text is reduced
  to its words, so tantivy's parser never fails (failures would be counted).
- ``local`` — a lone Rhizome node that crawls every site, asked with ``scope=local``; and
  ``lone-network`` — the same node with ``scope=network`` (it runs its own one-node DHT unless
  ``--no-lone-dht``; the default on the large corpus, where publishing 50k pages takes long).
- ``network`` — ``--nodes`` nodes on one loopback DHT (small: 5, one site seeded each; large: 8,
  sites dealt out round-robin; each node pins its seed hosts with ``--pin-host`` so that it
  crawls them itself, unless ``--no-pin``: without it the host-slice hash decides, and on the
  small corpus two of five nodes got all five sites), asked ``scope=network`` at each node of
  ``--ask-at`` (default the first and the fourth/sixth node: ``network@0``, ``network@3``).
  With ``--kill K`` the last K nodes are SIGKILLed afterwards and the survivors in
  ``--ask-at`` (or node 0) are asked again (``network-killK@i``; "kept" = its MRR@10 over
  the full network's at the same node).

Figures, per split: MRR@10 (1/rank of the answer within the top 10, else 0, averaged over all
queries — an HTTP error counts as a miss), hit@10 (share of queries with the answer in the top
10), n (queries), 4xx and 5xx (HTTP errors by class; 4xx on query text is a known bug), err
(timeouts, connection errors), p50/p95 (query latency in ms as the bench sees it, network and
local alike), and for the central index ``parse_fail`` (tantivy parser errors). ``unindexed``
counts queries whose answer the lone node never indexed (their MRR is 0 for every system;
the central index does not have those pages either).

URLs are compared normalised: no fragment, percent-decoding undone, a trailing ``index.html``
dropped (``dir/`` and ``dir/index.html`` are one page), host lower-cased.

``--code DIR`` is the checkout whose ``rhizome`` the node subprocesses run (through its
import tree; default: this repository), so a frozen checkout can be measured while the tree
is mid-refactor: ``git -C /work/main worktree add --detach /tmp/rz-base HEAD`` then
``--code /tmp/rz-base``.

``--central-only`` starts no node: the central index is built from every HTML file of the
corpus on disk (a bit more than a crawler reaches), in a minute; for ranking work.

Corpus: small is served on 127.0.0.11–15:8080 (``bench.common.ensure_corpus``), large with
``CORPUS_NET=127.0.1 /work/shared/corpus/serve.sh /tmp/rhizome-large start`` (done here if
nothing answers). Only loopback is used. Timeouts are generous: a lone node crawls the large
corpus in 6+ minutes, 8 nodes in ~20.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import (  # noqa: E402
    NodeProcess,
    ensure_corpus,
    host_loop_s,
    import_tree,
    tree_rss_mb,
)

SERVE = Path("/work/shared/corpus/serve.sh")
if not SERVE.exists():
    SERVE = ROOT.parent / "shared" / "corpus" / "serve.sh"
CORPORA: dict[str, dict[str, Any]] = {
    "small": {"dir": "/tmp/rhizome-corpus", "net": "127.0.0", "first": 11, "nodes": 5},
    "large": {"dir": "/tmp/rhizome-large", "net": "127.0.1", "first": 1, "nodes": 8},
}
CRAWL = (
    "--allow-private-networks",
    "--allow-private-peers",
    "--crawl-delay",
    "0",
    "--seed-hosts-only",
    "--parse-workers",
    "1",
)
SETTLE_SECONDS = 45.0  # parse workers stopped (30 s idle), term caches expired (30 s), trimmed
DHT_LINE = re.compile(r"dht on udp://([\d.]+):(\d+)/")
WORDS = re.compile(r"\w+", re.UNICODE)


# ---------------------------------------------------------------------------------------------
# Nodes


def _imports_of(code: Path) -> Path:
    """The PYTHONPATH under which ``python -m rhizome`` is checkout ``code`` (one per code)."""
    tree = (
        Path(tempfile.gettempdir()) / f"rhizome-code-{hashlib.sha1(bytes(code)).hexdigest()[:12]}"
    )
    return import_tree(code, tree)


class Node(NodeProcess):
    """A ``rhizome node`` subprocess of the checkout ``code`` on a free loopback port."""

    def __init__(self, code: Path, data_dir: Path, *extra: str) -> None:
        tree = _imports_of(code)
        # Not cwd=code: ``python -m`` puts the cwd first on sys.path, and a checkout's
        # ``rhizome/`` holds no subpackages, so an editable install's finder supplied them
        # from the installed checkout: every ``--code`` A/B ran the same code.
        super().__init__(
            data_dir, *extra, env={"PYTHONPATH": str(tree)}, cwd=tree, start_within=90.0
        )

    def dht_address(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for line in list(self.log):
                m = DHT_LINE.search(line)
                if m:
                    return f"{m.group(1)}:{m.group(2)}"
            time.sleep(0.05)
        raise RuntimeError(f"node {self.name} printed no DHT address")


def start_one_site_each(code: Path, work: Path, seeds: list[str], nodes: list[Node]) -> None:
    """A DHT network of one node per seed, each pinning its seed's host, joined through
    the first; appended to ``nodes`` as they start, so the caller stops what did start."""
    for i, seed in enumerate(seeds):
        host = urllib.parse.urlsplit(seed).netloc
        extra = ["--dht", "127.0.0.1:0", "--seed", seed, "--pin-host", host]
        if nodes:
            extra += ["--bootstrap", nodes[0].dht_address()]
        nodes.append(Node(code, work / f"n{i}", *CRAWL, *extra))


def wait_idle(nodes: list[Node], timeout: float, label: str) -> float:
    """Wait until every node reports idle (crawl done, index committed, shards placed)."""
    started = time.monotonic()
    last_print = 0.0
    while time.monotonic() - started < timeout:
        states = []
        for n in nodes:
            try:
                states.append(n.get("/api/status", timeout=30))
            except (OSError, ValueError):
                states.append(None)
        if all(s is not None and s.get("idle") for s in states):
            took = time.monotonic() - started
            log(f"{label}: idle after {took:.0f} s")
            return took
        if time.monotonic() - last_print > 30:
            last_print = time.monotonic()
            docs = [s["documents"] if s else "?" for s in states]
            queued = [s["crawl"]["queued"] if s else "?" for s in states]
            log(
                f"{label}: waiting ({time.monotonic() - started:.0f} s) docs {docs} queued {queued}"
            )
        time.sleep(1.0)
    raise RuntimeError(f"{label}: not idle after {timeout:.0f} s")


def done_urls(node: Node) -> list[str]:
    db = sqlite3.connect(f"file:{node.data_dir / 'frontier.sqlite3'}?mode=ro", uri=True)
    try:
        return [u for (u,) in db.execute("SELECT url FROM urls WHERE state=2 ORDER BY url")]
    finally:
        db.close()


# ---------------------------------------------------------------------------------------------
# Corpus


def serve(corpus: str) -> None:
    c = CORPORA[corpus]
    if corpus == "small":
        os.environ.setdefault("RHIZOME_CORPUS", c["dir"])
        ensure_corpus()
        return
    probe = f"http://{c['net']}.{c['first']}:8080/"
    try:
        urllib.request.urlopen(probe, timeout=3).close()
    except urllib.error.HTTPError:
        return  # something answers
    except OSError:
        subprocess.run(
            [str(SERVE), c["dir"], "start"], check=True, env={**os.environ, "CORPUS_NET": c["net"]}
        )
        time.sleep(0.5)


def sites_and_seeds(corpus: str) -> tuple[list[str], list[str]]:
    c = CORPORA[corpus]
    base = Path(c["dir"])
    sites = sorted(p.name for p in (base / "sites").iterdir() if p.is_dir())
    entries = {s: "/index.html" for s in sites}
    if (base / "entries.txt").is_file():
        for line in (base / "entries.txt").read_text().splitlines():
            if line.strip():
                name, path = line.split()
                entries[name] = path
    seeds = [f"http://{c['net']}.{c['first'] + i}:8080{entries[s]}" for i, s in enumerate(sites)]
    return sites, seeds


def url_to_file(corpus: str, sites: list[str], url: str) -> Path | None:
    c = CORPORA[corpus]
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if not host.startswith(c["net"] + "."):
        return None
    i = int(host.rsplit(".", 1)[1]) - c["first"]
    if not 0 <= i < len(sites):
        return None
    path = urllib.parse.unquote(parts.path).lstrip("/")
    if path == "" or path.endswith("/"):
        path += "index.html"
    f = Path(c["dir"]) / "sites" / sites[i] / path
    if f.is_dir():
        f = f / "index.html"
    return f if f.is_file() else None


def norm_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    path = urllib.parse.unquote(parts.path)
    if path.endswith("/index.html"):
        path = path[: -len("index.html")]
    if not path:
        path = "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{(parts.netloc or '').lower()}{path}{query}"


# ---------------------------------------------------------------------------------------------
# Central index


def page_fields(data: bytes) -> tuple[str, str]:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(data)
    title_node = tree.css_first("title")
    title = " ".join(title_node.text().split()) if title_node is not None else ""
    for tag in ("script", "style", "noscript", "template"):
        for n in tree.css(tag):
            n.decompose()
    body = tree.body
    text = body.text(deep=True, separator=" ") if body is not None else ""
    return title, " ".join(text.split())


class Central:
    """One tantivy index of title + body over the given pages."""

    def __init__(self) -> None:
        import tantivy

        self.tantivy = tantivy
        sb = tantivy.SchemaBuilder()
        sb.add_text_field("title", stored=True, tokenizer_name="en_stem")
        sb.add_text_field("body", stored=False, tokenizer_name="en_stem")
        sb.add_text_field("url", stored=True, tokenizer_name="raw")
        self.schema = sb.build()
        self.index = tantivy.Index(self.schema)
        self.docs = 0
        self.parse_failures = 0

    def build(self, pages: list[tuple[str, bytes | None]], fetch: bool = True) -> None:
        writer = self.index.writer(heap_size=200_000_000, num_threads=1)
        for url, data in pages:
            if data is None and fetch:
                try:
                    with urllib.request.urlopen(url, timeout=30) as resp:
                        data = resp.read()
                except OSError:
                    data = None
            if data is None:
                continue
            title, body = page_fields(data)
            writer.add_document(
                self.tantivy.Document.from_dict(
                    {"title": title, "body": body, "url": url}, self.schema
                )
            )
            self.docs += 1
        writer.commit()
        writer.wait_merging_threads()
        self.index.reload()
        self.searcher = self.index.searcher()

    def search(self, q: str, phrase: bool) -> tuple[list[str], float]:
        words = [w.lower() for w in WORDS.findall(q)]
        started = time.perf_counter()
        if not words:
            return [], 0.0
        text = " ".join(words)
        if phrase and len(words) > 1:
            text = f'{text} "{" ".join(words)}"~3^2'
        try:
            query = self.index.parse_query(text, ["title", "body"])
        except ValueError:
            self.parse_failures += 1
            return [], (time.perf_counter() - started) * 1000
        hits = self.searcher.search(query, 10).hits
        urls = [self.searcher.doc(addr)["url"][0] for _, addr in hits]
        return urls, (time.perf_counter() - started) * 1000


# ---------------------------------------------------------------------------------------------
# Measuring


class Result:
    def __init__(self, system: str) -> None:
        self.system = system
        self.rr: dict[str, list[float]] = {}
        self.lat: dict[str, list[float]] = {}
        self.errors: dict[str, dict[str, int]] = {}
        self.ranks: dict[str, int] = {}
        self.silent: dict[str, int] = {}  # peer -> queries that named it unresponsive
        self.answered: list[int] = []  # peers that answered, per network query

    def add(self, split: str, key: str, rank: int, ms: float, error: str | None = None) -> None:
        self.rr.setdefault(split, []).append(1.0 / rank if rank else 0.0)
        self.lat.setdefault(split, []).append(ms)
        errs = self.errors.setdefault(split, {"4xx": 0, "5xx": 0, "err": 0})
        if error:
            errs[error] += 1
        self.ranks[key] = rank

    def row(self, split: str) -> dict[str, Any]:
        rr = self.rr.get(split, [])
        lat = self.lat.get(split, [])
        n = max(1, len(rr))
        return {
            "mrr10": round(sum(rr) / n, 4),
            "hit10": round(sum(1 for r in rr if r > 0) / n, 4),
            "n": len(rr),
            **self.errors.get(split, {"4xx": 0, "5xx": 0, "err": 0}),
            "p50_ms": round(statistics.median(lat), 1) if lat else None,
            "p95_ms": round(pct(lat, 0.95), 1) if lat else None,
        }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rank_of(urls: list[str], answer: str) -> int:
    target = norm_url(answer)
    for i, u in enumerate(urls[:10], start=1):
        if norm_url(u) == target:
            return i
    return 0


def ask_rhizome(node: Node, queries: list[dict], scope: str, system: str) -> Result:
    res = Result(system)
    for qd in queries:
        params = urllib.parse.urlencode({"q": qd["q"], "scope": scope, "limit": 10})
        started = time.perf_counter()
        error = None
        urls: list[str] = []
        try:
            with urllib.request.urlopen(f"{node.url}/api/search?{params}", timeout=30) as resp:
                body = json.load(resp)
            urls = [r["url"] for r in body.get("results", [])]
            for peer in body.get("unresponsive_peers", []):
                res.silent[peer[:8]] = res.silent.get(peer[:8], 0) + 1
            if scope == "network":
                res.answered.append(int(body.get("peers_answered", 0)))
        except urllib.error.HTTPError as exc:
            error = "5xx" if exc.code >= 500 else "4xx"
        except (OSError, ValueError):
            error = "err"
        ms = (time.perf_counter() - started) * 1000
        res.add(qd["split"], qd["q"] + "\t" + qd["url"], rank_of(urls, qd["url"]), ms, error)
    return res


def ask_central(central: Central, queries: list[dict], phrase: bool) -> Result:
    res = Result("central-phrase" if phrase else "central-bm25")
    for qd in queries:
        urls, ms = central.search(qd["q"], phrase)
        res.add(qd["split"], qd["q"] + "\t" + qd["url"], rank_of(urls, qd["url"]), ms)
    return res


def load_queries(corpus: str, split: str, limit: int | None) -> list[dict]:
    path = ROOT / "bench" / "judged" / f"{corpus}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = []
    for s in ("tune", "heldout"):
        if split not in ("both", s):
            continue
        part = sorted(
            (r for r in rows if r["split"] == s),
            key=lambda r: hashlib.sha1((r["q"] + r["url"]).encode()).hexdigest(),
        )
        out.extend(part[:limit] if limit else part)
    return out


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def print_table(report: dict[str, Any]) -> None:
    cols = ["mrr10", "hit10", "n", "4xx", "5xx", "err", "p50_ms", "p95_ms"]
    for split, rows in report["results"].items():
        print(f"\n{report['corpus']} corpus, split={split}")
        print(f"{'system':24s} " + " ".join(f"{c:>7s}" for c in cols))
        for system, row in rows.items():
            cells = " ".join(f"{'' if row.get(c) is None else row.get(c):>7}" for c in cols)
            print(f"{system:24s} {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="small")
    parser.add_argument("--nodes", type=int, default=None)
    parser.add_argument("--split", choices=["heldout", "tune", "both"], default="both")
    parser.add_argument("--code", default=str(ROOT), help="checkout the nodes run (cwd)")
    parser.add_argument("--systems", default="central,local,network")
    parser.add_argument("--limit-queries", type=int, default=None, help="per split")
    parser.add_argument("--ask-at", default=None, help="network node indexes, e.g. 0,3")
    parser.add_argument("--kill", type=int, default=0, help="SIGKILL K network nodes, re-ask")
    parser.add_argument("--no-lone-dht", action="store_true")
    parser.add_argument(
        "--no-pin", action="store_true", help="let host slices decide who crawls a site"
    )
    parser.add_argument("--central-only", action="store_true")
    parser.add_argument("--timeout", type=float, default=None, help="crawl idle timeout, s")
    parser.add_argument("--out", default=None)
    parser.add_argument("--keep-ranks", action="store_true", help="per-query ranks in --out")
    parser.add_argument(
        "--keep", type=Path, help="keep the nodes' data dirs here (for bench/rank_tune.py)"
    )
    args = parser.parse_args()

    corpus = args.corpus
    cfg = CORPORA[corpus]
    n_nodes = args.nodes or cfg["nodes"]
    systems = {s.strip() for s in args.systems.split(",") if s.strip()}
    if args.central_only:
        systems = {"central"}
    ask_at = [int(x) for x in (args.ask_at or ("0,3" if n_nodes > 3 else "0,1")).split(",")]
    if corpus == "large" and args.ask_at is None and n_nodes > 5:
        ask_at = [0, 5]
    ask_at = [i for i in ask_at if i < n_nodes]
    lone_dht = not args.no_lone_dht and corpus == "small"
    timeout = args.timeout or (900 if corpus == "small" else 3600)
    code = Path(args.code).resolve()
    queries = load_queries(corpus, args.split, args.limit_queries)
    sites, seeds = sites_and_seeds(corpus)
    log(f"{len(queries)} queries, code {code}, systems {sorted(systems)}")
    serve(corpus)

    report: dict[str, Any] = {
        "corpus": corpus,
        "code": str(code),
        "code_commit": subprocess.run(
            ["git", "-C", str(code), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "queries": len(queries),
        "systems": sorted(systems),
        # Before the nodes start and after they stop: only figures beside it compare.
        "host_loop_s": {"before": host_loop_s()},
    }
    results: list[Result] = []
    central = Central() if "central" in systems else None

    if args.central_only:
        assert central is not None
        pages: list[tuple[str, bytes | None]] = []
        c = cfg
        for i, site in enumerate(sites):
            root = Path(c["dir"]) / "sites" / site
            for f in sorted(root.rglob("*.htm*")):
                if f.suffix in (".html", ".htm") and f.is_file():
                    rel = urllib.parse.quote(str(f.relative_to(root)))
                    pages.append((f"http://{c['net']}.{c['first'] + i}:8080/{rel}", f.read_bytes()))
        started = time.perf_counter()
        central.build(pages, fetch=False)
        report["central_docs"] = central.docs
        report["central_build_s"] = round(time.perf_counter() - started, 1)
        results += [ask_central(central, queries, False), ask_central(central, queries, True)]
        report["central_parse_failures"] = central.parse_failures
        finish(report, results, queries, set(), args)
        return

    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=False)
            root = args.keep
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rz-quality-")))
        lone: Node | None = None
        nodes: list[Node] = []
        try:
            need_lone = bool(systems & {"central", "local"})
            if need_lone:
                extra = ("--dht", "127.0.0.1:0") if lone_dht else ()
                lone = Node(code, root / "lone", *CRAWL, *extra)
                lone.post("/api/seeds", {"urls": seeds})
                log(f"lone node {lone.url} crawling {len(seeds)} sites")
            if "network" in systems:

                def pins(i: int) -> list[str]:
                    if args.no_pin:
                        return []
                    hosts = [s.split("/", 3)[2] for s in seeds[i::n_nodes]]
                    return [x for h in hosts for x in ("--pin-host", h)]

                first = Node(code, root / "n0", *CRAWL, *pins(0), "--dht", "127.0.0.1:0")
                nodes.append(first)
                boot = first.dht_address()
                for i in range(1, n_nodes):
                    nodes.append(
                        Node(
                            code,
                            root / f"n{i}",
                            *CRAWL,
                            *pins(i),
                            "--dht",
                            "127.0.0.1:0",
                            "--bootstrap",
                            boot,
                        )
                    )
                for n in nodes:
                    n.dht_address()
                time.sleep(2.0)  # let the routing tables fill before anything is published
                for i, n in enumerate(nodes):
                    mine = seeds[i::n_nodes]
                    if mine:
                        n.post("/api/seeds", {"urls": mine})
                log(f"{n_nodes} network nodes crawling")
            if lone is not None:
                report["lone_idle_s"] = round(wait_idle([lone], timeout, "lone"), 1)
                report["lone_documents"] = lone.get("/api/status")["documents"]
            if nodes:
                report["network_idle_s"] = round(wait_idle(nodes, timeout, "network"), 1)
                report["network_documents"] = [n.get("/api/status")["documents"] for n in nodes]
                # Node and parse workers (#13: <= 300 MB a node idle): as idle is reached,
                # and settled (parse workers stop after 30 s idle, freed heap is given
                # back every 10 s).
                report["network_rss_idle_mb"] = [round(tree_rss_mb(n.proc.pid)) for n in nodes]
                time.sleep(SETTLE_SECONDS)
                report["network_rss_settled_mb"] = [round(tree_rss_mb(n.proc.pid)) for n in nodes]

            indexed: set[str] = set()
            if lone is not None:
                urls = done_urls(lone)
                indexed = {norm_url(u) for u in urls}
                report["lone_done_urls"] = len(urls)
                if central is not None:
                    started = time.perf_counter()
                    pages = []
                    missing = 0
                    for u in urls:
                        f = url_to_file(corpus, sites, u)
                        if f is None:
                            missing += 1
                        pages.append((u, f.read_bytes() if f is not None else None))
                    central.build(pages)
                    report["central_docs"] = central.docs
                    report["central_pages_fetched_over_http"] = missing
                    report["central_build_s"] = round(time.perf_counter() - started, 1)
                    results += [
                        ask_central(central, queries, False),
                        ask_central(central, queries, True),
                    ]
                    report["central_parse_failures"] = central.parse_failures
                    log("central done")
                if "local" in systems:
                    results.append(ask_rhizome(lone, queries, "local", "lone-local"))
                    log("lone local done")
                    if lone_dht:
                        results.append(ask_rhizome(lone, queries, "network", "lone-network"))
                        log("lone network done")
                lone.stop()
            full: dict[int, Result] = {}
            for i in ask_at:
                r = ask_rhizome(nodes[i], queries, "network", f"network@{i}")
                full[i] = r
                results.append(r)
                reach = [n.get("/api/status").get("reachability", "?") for n in nodes]
                log(f"network at node {i} done; reachability {reach}")
            if nodes:
                report["network_rss_after_mb"] = [round(tree_rss_mb(n.proc.pid)) for n in nodes]
                time.sleep(SETTLE_SECONDS)  # the queriers' term caches expire (30 s)
                report["network_rss_after_settled_mb"] = [
                    round(tree_rss_mb(n.proc.pid)) for n in nodes
                ]
            if nodes and args.kill:
                victims = nodes[-args.kill :]
                for v in victims:
                    os.kill(v.proc.pid, signal.SIGKILL)
                    v.proc.wait()
                survivors = [i for i in ask_at if i < n_nodes - args.kill] or [0]
                time.sleep(1.0)
                kept = {}
                for i in survivors:
                    r = ask_rhizome(nodes[i], queries, "network", f"network-kill{args.kill}@{i}")
                    results.append(r)
                    if i in full:
                        kept[f"@{i}"] = {
                            s: round(r.row(s)["mrr10"] / max(full[i].row(s)["mrr10"], 1e-9), 3)
                            for s in r.rr
                        }
                report["kill_kept_fraction"] = kept
                log("churn done")
        finally:
            for n in [*([lone] if lone else []), *nodes]:
                n.stop()
    finish(report, results, queries, indexed, args)


def finish(
    report: dict[str, Any],
    results: list[Result],
    queries: list[dict],
    indexed: set[str],
    args: argparse.Namespace,
) -> None:
    report["host_loop_s"]["after"] = host_loop_s()
    # Which peers network queries named unresponsive, and how many answered: a network
    # figure that falls between two askings is first looked for here.
    report["peers"] = {
        r.system: {
            "answered_mean": round(statistics.mean(r.answered), 2),
            "unresponsive": dict(sorted(r.silent.items())),
        }
        for r in results
        if r.answered
    }
    splits = [s for s in ("tune", "heldout") if any(q["split"] == s for q in queries)]
    if len(splits) > 1:
        splits.append("all")
    if indexed:
        report["unindexed_answers"] = {
            s: sum(
                1
                for q in queries
                if (s == "all" or q["split"] == s) and norm_url(q["url"]) not in indexed
            )
            for s in splits
        }
    table: dict[str, dict[str, Any]] = {}
    for s in splits:
        table[s] = {}
        for r in results:
            if s == "all":
                merged = Result(r.system)
                for part in ("tune", "heldout"):
                    merged.rr.setdefault("all", []).extend(r.rr.get(part, []))
                    merged.lat.setdefault("all", []).extend(r.lat.get(part, []))
                    e = merged.errors.setdefault("all", {"4xx": 0, "5xx": 0, "err": 0})
                    for k, v in r.errors.get(part, {}).items():
                        e[k] += v
                table[s][r.system] = merged.row("all")
            else:
                table[s][r.system] = r.row(s)
    report["results"] = table
    if args.keep_ranks:
        report["ranks"] = {r.system: r.ranks for r in results}
    print_table(report)
    extra = {k: v for k, v in report.items() if k not in ("results", "ranks")}
    print("\n" + json.dumps(extra, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
