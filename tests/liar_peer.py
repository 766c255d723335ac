"""A hostile peer for tests: a real DHT member with its own identity that lies about pages.

Run as ``python -m tests.liar_peer --data-dir D --bootstrap HOST:PORT --site URL
--push http://node/ ...``. It joins the DHT with a signed hello carrying its HTTP URL,
pushes correctly signed shard batches claiming top weights for popular terms on pages of
the fixture site that do not contain them (with invented titles) and on pages that do not
exist, and answers ``/api/peer/search`` with the same lies for any query. With
``--stall S`` it accepts every peer request and answers it only after S seconds (a peer
that is slow or never answers). With ``--bomb`` it answers searches with a 256 MiB gzip
bomb; with ``--inflate`` its shards claim each term is on all of 10^8 pages.
With ``--garbage`` it answers searches with JSON that is
not an answer: a list when the query says "list", else results that are not objects.
With ``--holder forge --victim-key HEX`` it answers shard lookups (as a holder of the
terms) with copies forged under the victim's key: old-style unsigned pairs naming the
victim's id, records signed by the liar with the victim's public key put in, and garbage
(base64 that is no record, not base64, not a string); with ``--holder omit`` it serves
only a weak copy of its own, withholding every other publisher's. It answers whoami proofs
(``federation.proof``) as a member must; with ``--hello-url URL`` its hello advertises
that URL (someone else's server) instead of its own. It prints
``liar: http=URL id=HEX`` when ready;
``GET /stats`` counts the requests it received.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import aiohttp
from aiohttp import web

from rhizome.api.config import split_host_port
from rhizome.dht import DhtNode, Identity, node_id_for
from rhizome.federation.proof import answer_whoami
from rhizome.federation.wire import sign_push, sign_shard
from rhizome.index import SHARD_FIELDS, Posting, TermShard, build_analyzer
from rhizome.index.bm25 import MAX_FIELD_WEIGHT
from rhizome.index.shard_codec import MAX_DOCS_PER_PUBLISHER

# Terms the honest nodes' pages are searched for, claimed on pages without them.
POPULAR = "titan methane lakes perseid meteor shower nebula star clusters"
# Pages that exist on the fixture site and contain none of POPULAR, and one that does not.
EXISTING_LIES = ("/eclipses.html", "/telescopes.html")
MISSING_LIE = "/best-titan-lakes-guide.html"
TOP = [MAX_FIELD_WEIGHT * 0.99] * len(SHARD_FIELDS)


def lie_urls(site: str) -> list[str]:
    return [site + p for p in EXISTING_LIES] + [site + MISSING_LIE]


def lie_title(query: str) -> str:
    return f"{query.title()} - The Definitive Guide"


def signed_batch(
    identity: Identity, site: str, terms: list[str], *, inflate: bool = False
) -> bytes:
    """The lies as a push; ``inflate`` claims every term is on all of 10^8 pages."""
    df, n = (MAX_DOCS_PER_PUBLISHER,) * 2 if inflate else (len(lie_urls(site)), 1_000)
    shards = [
        TermShard(
            term=term,
            df=df,
            n_docs=n,
            field_df=tuple([df] * len(SHARD_FIELDS)),
            postings=tuple(Posting(u, lie_title(term), tuple(TOP)) for u in lie_urls(site)),
        )
        for term in terms
    ]
    return sign_push(identity, ((s.term, s.to_json()) for s in shards), time.time() + 3600)


ROOT = Path(__file__).resolve().parent.parent


# --- for the tests and benches that run it ------------------------------------------------


def start_liar(
    tmp: Path,
    bootstrap: str,
    site: str,
    *push: str,
    stall: float = 0.0,
    garbage: bool = False,
    holder: str = "",
    victim_key: str = "",
    bomb: bool = False,
    hello_url: str = "",
    inflate: bool = False,
) -> tuple[subprocess.Popen[str], str, str]:
    cmd = [
        sys.executable,
        "-m",
        "tests.liar_peer",
        "--data-dir",
        str(tmp),
        "--bootstrap",
        bootstrap,
        "--site",
        site,
    ]
    for target in push:
        cmd += ["--push", target]
    if stall:
        cmd += ["--stall", str(stall)]
    if garbage:
        cmd += ["--garbage"]
    if holder:
        cmd += ["--holder", holder, "--victim-key", victim_key]
    if bomb:
        cmd += ["--bomb"]
    if inflate:
        cmd += ["--inflate"]
    if hello_url:
        cmd += ["--hello-url", hello_url]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    found: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            found.append(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in found:
            m = re.match(r"liar: http=(\S+) id=([0-9a-f]{40})", line)
            if m:
                return proc, m.group(1), m.group(2)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("liar did not start:\n" + "".join(found))


def liar_stats(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url.rstrip("/") + "/stats", timeout=5) as resp:
        data: dict[str, int] = json.loads(resp.read())
    return data


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--site", required=True)
    parser.add_argument("--push", action="append", default=[])
    parser.add_argument("--stall", type=float, default=0.0)
    parser.add_argument("--garbage", action="store_true")
    parser.add_argument("--bomb", action="store_true", help="answer searches with a gzip bomb")
    parser.add_argument("--inflate", action="store_true", help="claim df = N = 10^8")
    parser.add_argument("--holder", choices=("forge", "omit"), default="")
    parser.add_argument("--victim-key", default="", help="hex Ed25519 public key")
    parser.add_argument("--hello-url", default="", help="advertise this URL, not our own")
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    identity = Identity.load_or_create(args.data_dir)
    analyzer = build_analyzer()
    hits: Counter[str] = Counter()
    # 256 MiB of JSON-looking text in ~250 KB: what a reader that decodes whole would hold.
    bomb = (
        gzip.compress(b'{"results": [' + b" " * (256 << 20), compresslevel=9) if args.bomb else b""
    )

    async def search(request: web.Request) -> web.Response:
        hits["search"] += 1
        await asyncio.sleep(args.stall)
        q = request.query.get("q", "")
        if args.bomb:
            return web.Response(
                body=bomb, content_type="application/json", headers={"Content-Encoding": "gzip"}
            )
        if args.garbage:
            junk = [1, "x", None] if "list" in q else {"results": [1, "x", None], "weights": []}
            return web.json_response(junk)
        terms = list(dict.fromkeys(analyzer.analyze(q)))
        results = [
            {"url": u, "title": lie_title(q), "content": q, "content_html": q, "host": ""}
            for u in lie_urls(args.site)
        ]
        weights = {u: {t: TOP for t in terms} for u in lie_urls(args.site)}
        return web.json_response({"results": results, "weights": weights})

    async def get_shards(request: web.Request) -> web.Response:
        hits["get_shards"] += 1
        await asyncio.sleep(args.stall)
        terms = [t for t in request.query.get("terms", "").split(",") if t]
        if args.holder == "forge":
            return web.json_response({t: forged_copies(t) for t in terms})
        if args.holder == "omit":
            return web.json_response({t: own_copies(t) for t in terms})
        return web.json_response({})

    def lie(term: str, weight: float = TOP[0]) -> TermShard:
        weights = (weight,) * len(SHARD_FIELDS)
        postings = tuple(Posting(u, lie_title(term), weights) for u in lie_urls(args.site))
        return TermShard(term, 3, 1_000, (3,) * len(SHARD_FIELDS), postings)

    def forged_copies(term: str) -> list[object]:
        victim = bytes.fromhex(args.victim_key)
        signed = sign_shard(identity, term, lie(term).to_json(), time.time(), time.time() + 600)
        # The victim's key in place of ours: the layout holds, the signature cannot.
        start = signed.index(identity.public_key)
        swapped = signed[:start] + victim + signed[start + len(victim) :]
        return [
            [node_id_for(victim).hex(), lie(term).to_json()],
            base64.b64encode(swapped).decode(),
            base64.b64encode(b"RZR1" + bytes(300)).decode(),
            "!!! not base64 !!!",
            17,
        ]

    def own_copies(term: str) -> list[object]:
        # A weak copy of its own: withholding is the attack here, not outranking.
        mine = lie(term, weight=0.01).to_json()
        signed = sign_shard(identity, term, mine, time.time(), time.time() + 600)
        return [[identity.node_id.hex(), mine], base64.b64encode(signed).decode()]

    async def accept(request: web.Request) -> web.Response:
        hits[request.path] += 1
        await request.read()
        return web.json_response({"stored": 0, "accepted": 0})

    async def whoami(request: web.Request) -> web.Response:
        hits["whoami"] += 1
        query = request.query
        return web.json_response(answer_whoami(identity, query["nonce"], query["url"]))

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(dict(hits))

    app = web.Application()
    app.router.add_get("/api/peer/search", search)
    app.router.add_get("/api/peer/shards", get_shards)
    app.router.add_post("/api/peer/shards", accept)
    app.router.add_post("/api/peer/urls", accept)
    app.router.add_get("/api/peer/whoami", whoami)
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    http_url = f"http://127.0.0.1:{port}/"
    dht = DhtNode(args.data_dir, http_url=args.hello_url or http_url, identity=identity)
    await dht.start("127.0.0.1", 0, [split_host_port(args.bootstrap, "bootstrap")])
    terms = list(dict.fromkeys(analyzer.analyze(POPULAR)))
    body = signed_batch(identity, args.site, terms, inflate=args.inflate)
    async with aiohttp.ClientSession() as session:
        for target in args.push:
            async with session.post(
                target.rstrip("/") + "/api/peer/shards",
                data=body,
                headers={"Content-Type": "application/octet-stream"},
            ) as resp:
                resp.raise_for_status()
    print(f"liar: http={http_url} id={identity.node_id.hex()}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await dht.stop()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
