"""Spot-checks of what peers claim about pages: a lying publisher is found and ignored.

A publisher's shards and its ``/api/peer/search`` answers are claims: "this URL exists, is
titled so, and contains these terms". Nothing in a signature makes them true. A federated
query offers a few claims of remote publishers that made the page it returned; one
background task fetches those pages through the crawler's own Fetcher (SSRF guard, size
caps, robots.txt) at a small, fixed rate and compares. A claim fails only when the page is
fetched and neither its title nor its terms are the page's. Enough failures, and the
publisher is distrusted: remembered in the data directory, its shards purged and ignored,
its answers no longer asked for.

Honest publishers must never pay for a page that merely changed: titles are compared as
analysed token runs (case, punctuation and a site-name suffix do not matter), a claim passes
on its title OR its terms, and a publisher is distrusted only when failures are a large
share of its checks. Nor for a site that frames them: a 404 or 410, like an unreachable
page, is what the site told this one address, and a site can tell each address something
else (answer 404 to the checkers only). So a page that is not fetched proves nothing; a
liar is caught by its claims on pages that exist, and its claims on pages that exist for
nobody cost a user a dead link, not anyone their trust.

Claims are attributed carefully: a holder serves other publishers' shards unsigned, so a
claim seen only in a remote holder's copy could be a holder framing an honest publisher. It
counts only if the publisher said it itself (its own answer) or this node holds the
publisher's signed copy.

Longer than 400 lines because the checker's rates, its strike history and its persistence
are one policy; each part alone would be a class of three methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rhizome.crawler import parse_html
from rhizome.crawler.errors import FetchError, HTTPStatusError
from rhizome.crawler.fetch import Fetcher
from rhizome.crawler.robots import RobotsCache
from rhizome.index import SHARD_FIELDS, build_analyzer
from rhizome.index.query import NEAR_PREFIX

from .shard_store import ShardStore
from .wire import PeerAnswer, ResultRow

log = logging.getLogger(__name__)

SAMPLES_PER_QUERY = 3  # claims one query offers at most (one per publisher)
QUEUE_SIZE = 64  # claims waiting for a check; further offers are dropped
# The whole node checks at most this many pages a minute, however many claims it sees:
# a home server's bandwidth, and no lever for peers to make it fetch their URLs fast.
CHECKS_PER_MINUTE = 6.0
CHECK_BURST = 6
# Per publisher: a newcomer is checked at once (up to the burst), then once per interval.
PUBLISHER_CHECK_INTERVAL = 60.0
PUBLISHER_BURST = 2
URL_RECHECK_SECONDS = 6 * 3600.0  # the same (publisher, URL) is not checked twice sooner
CHECK_TIMEOUT = 45.0  # one check: robots.txt plus the page, redirects included
STRIKES_TO_DISTRUST = 2
# ... and the strikes must be at least this share of the publisher's conclusive checks in
# the window, so an honest publisher with a few pages gone since its crawl is not cut off.
STRIKE_SHARE = 0.5
STRIKE_WINDOW = 24 * 3600.0
DISTRUST_SECONDS = 30 * 24 * 3600.0  # ids are free to make; a false positive heals
TITLE_MIN_SHARE = 0.5  # the shorter title's tokens, as a run in the longer, cover this share
MAX_TRACKED_PUBLISHERS = 10_000  # rate buckets and strike histories kept (LRU)
MAX_HISTORY_PER_PUBLISHER = 64  # checks remembered per publisher (within the window)
MAX_RECENT_URLS = 10_000
MAX_DISTRUSTED = 10_000
MAX_STRIKES_SHOWN = 20
DISTRUST_FILE = "distrusted.json"
# Anchor text is what other pages say about a page: a claim about it cannot be checked
# against the page itself.
_UNVERIFIABLE_FIELDS = frozenset({SHARD_FIELDS.index("anchor")})


class Verdict(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"  # unreachable, robots, not HTML, 404, 5xx: proves nothing
    UNATTRIBUTABLE = "unattributable"  # only a remote holder says the publisher claimed it


@dataclass(frozen=True, slots=True)
class Claim:
    publisher: str  # node id, hex
    url: str
    title: str
    terms: tuple[str, ...]  # analysed terms or phrases ("solar system") the claim names
    require_all: bool  # explicit per-term weights: every term; else the query: any term
    attributed: bool  # the publisher said it itself; else look for its copy in our store


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    reason: str


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second
    burst: float
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def ready(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= 1.0

    def reserve(self, now: float) -> float:
        """Take a token, going into debt if need be: the seconds to wait before using it."""
        self._refill(now)
        self.tokens -= 1.0
        return max(0.0, -self.tokens / self.rate)


def _verifiable(weights: Any) -> bool:
    """A claimed term with weight in a field the page itself shows (not only in anchors)."""
    if not isinstance(weights, list | tuple):
        return False
    for i, w in enumerate(weights):
        with contextlib.suppress(TypeError, ValueError):
            if i not in _UNVERIFIABLE_FIELDS and float(w) > 0.0:
                return True
    return False


def titles_match(claimed: Sequence[str], actual: Sequence[str]) -> bool:
    """Analysed titles agree: equal, or one is a run inside the other covering at least
    TITLE_MIN_SHARE of it (a site name added or dropped, case and punctuation aside)."""
    if not claimed or not actual:
        return not claimed and not actual
    short, long = (claimed, actual) if len(claimed) <= len(actual) else (actual, claimed)
    if len(short) < TITLE_MIN_SHARE * len(long):
        return False
    n = len(short)
    return any(tuple(long[i : i + n]) == tuple(short) for i in range(len(long) - n + 1))


class SpotChecker:
    """Offered claims → rate-limited checks → strikes → distrust (persisted)."""

    def __init__(self, data_dir: Path, own_id: str) -> None:
        self.path = data_dir / DISTRUST_FILE
        self.own_id = own_id
        self.distrusted: dict[str, dict[str, Any]] = self._load()
        self.counts: Counter[str] = Counter()
        self._queue: asyncio.Queue[Claim] = asyncio.Queue(QUEUE_SIZE)
        self._global = TokenBucket.full(CHECKS_PER_MINUTE / 60.0, CHECK_BURST, time.monotonic())
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._history: OrderedDict[str, deque[tuple[float, bool]]] = OrderedDict()
        self._recent: OrderedDict[tuple[str, str], float] = OrderedDict()
        # Used on the checker's one worker thread at a time: tantivy's analyzer, as the
        # index analyses documents and queries.
        self._analyzer = build_analyzer()
        self._fetcher: Fetcher | None = None
        self._robots: RobotsCache | None = None
        self._shards: ShardStore | None = None
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------
    async def start(self, fetcher: Fetcher, robots: RobotsCache, shards: ShardStore) -> None:
        """Check with the crawler's own (started) Fetcher and robots cache."""
        self._fetcher, self._robots, self._shards = fetcher, robots, shards
        for publisher in list(self.distrusted):  # a purge cut short by a kill is redone
            await shards.drop_publisher(publisher)
        self._task = asyncio.create_task(self._run(), name="spot-checker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # --- offers (on the query's path: never waits) ------------------------------------
    def offer_page(
        self,
        results: Sequence[ResultRow],
        answers: Iterable[PeerAnswer],
        query_terms: Sequence[str],
    ) -> int:
        """Offer up to SAMPLES_PER_QUERY claims of remote publishers behind ``results``
        (the page a federated query returns). Returns how many were queued.

        A result its publisher returned itself is claimed with that answer's weights; any
        other (a candidate known from shards) is looked up in our own store at check time.
        """
        now = time.monotonic()
        said = {a.peer: a for a in answers if a.peer != self.own_id}
        said_urls = {p: {r.url for r in a.results} for p, a in said.items()}
        seen: set[str] = set()
        queued = 0
        for r in results:
            if queued >= SAMPLES_PER_QUERY:
                break
            url, peers = r.url, r.peers
            if not peers:
                continue
            publisher = peers[0]  # whose row (title) the page shows
            if publisher == self.own_id or publisher in seen:
                continue
            if publisher in self.distrusted or not self._bucket(publisher, now).ready(now):
                seen.add(publisher)
                continue
            attributed = url in said_urls.get(publisher, ())
            raw = said[publisher].weights.weights.get(url) if attributed else None
            claimed = raw if isinstance(raw, Mapping) else {}
            # A phrase's key is its tokens joined by spaces: each token must be there. The
            # proximity phrase's key is no claim of its own (its words are claimed one by
            # one): "~" is no token, and counting it struck honest owners.
            terms = tuple(
                dict.fromkeys(
                    t
                    for k, w in claimed.items()
                    if _verifiable(w) and not k.startswith(NEAR_PREFIX)
                    for t in k.split()
                )
            )
            claim = Claim(
                publisher=publisher,
                url=url,
                title=r.title,
                terms=terms or tuple(query_terms),
                require_all=bool(terms),
                attributed=attributed,
            )
            if self.offer(claim):  # else its next result may be one not checked lately
                seen.add(publisher)
                queued += 1
        return queued

    def offer(self, claim: Claim) -> bool:
        """Queue one claim if the rates allow; never blocks."""
        now = time.monotonic()
        key = (claim.publisher, claim.url)
        if claim.publisher in self.distrusted or claim.publisher == self.own_id:
            return False
        checked_at = self._recent.get(key)
        if checked_at is not None and now - checked_at < URL_RECHECK_SECONDS:
            return False
        if self._queue.full() or not self._bucket(claim.publisher, now).take(now):
            self.counts["dropped"] += 1
            return False
        self._recent[key] = now
        self._recent.move_to_end(key)
        while len(self._recent) > MAX_RECENT_URLS:
            self._recent.popitem(last=False)
        self._queue.put_nowait(claim)
        self.counts["offered"] += 1
        return True

    def _bucket(self, publisher: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(publisher)
        if bucket is None:
            bucket = TokenBucket.full(1.0 / PUBLISHER_CHECK_INTERVAL, PUBLISHER_BURST, now)
            self._buckets[publisher] = bucket
            while len(self._buckets) > MAX_TRACKED_PUBLISHERS:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(publisher)
        return bucket

    # --- checking --------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            claim = await self._queue.get()
            if claim.publisher in self.distrusted:
                continue
            delay = self._global.reserve(time.monotonic())
            if delay:
                await asyncio.sleep(delay)
            try:
                outcome = await asyncio.wait_for(self.check(claim), CHECK_TIMEOUT)
            except TimeoutError:
                outcome = Outcome(Verdict.INCONCLUSIVE, "check timed out")
            except Exception:  # a hostile page must never stop the checker
                log.exception("spot-check of %s failed", claim.url)
                continue
            await self.record(claim, outcome)

    async def check(self, claim: Claim) -> Outcome:
        """Fetch the claimed page and compare it with the claim."""
        assert self._fetcher is not None and self._robots is not None, "start() first"
        if not claim.attributed:
            attributed = await self._from_our_copy(claim)
            if attributed is None:
                return Outcome(Verdict.UNATTRIBUTABLE, "no signed copy of this claim here")
            claim = attributed
        if not claim.url.startswith(("http://", "https://")):
            return Outcome(Verdict.INCONCLUSIVE, "not an http(s) URL")
        robots = self._robots
        try:
            if not await robots.allowed(claim.url):
                return Outcome(Verdict.INCONCLUSIVE, "robots.txt disallows the page")
            fetched = await self._fetcher.fetch(claim.url, allowed=robots.allowed)
        except HTTPStatusError as exc:
            # 404 and 410 included: one address's 404 may be the site framing the publisher.
            return Outcome(Verdict.INCONCLUSIVE, f"HTTP {exc.status} to this address")
        except (FetchError, ValueError) as exc:
            return Outcome(Verdict.INCONCLUSIVE, f"unreachable: {exc}"[:200])
        title_ok, terms_ok = await asyncio.to_thread(
            self._compare,
            claim,
            fetched.url,
            fetched.body,
            fetched.content_type,
        )
        if title_ok or terms_ok:
            return Outcome(Verdict.PASSED, "title" if title_ok else "terms")
        return Outcome(Verdict.FAILED, "neither the title nor the terms are the page's")

    def _compare(self, claim: Claim, url: str, body: bytes, content_type: str) -> tuple[bool, bool]:
        """(title matches, terms occur): parsing and analysis, on a worker thread."""
        page = parse_html(url, body, content_type=content_type)
        analyze = self._analyzer.analyze
        # An untitled page is listed under its URL.
        claimed_title = "" if claim.title.strip() in (claim.url, url) else claim.title
        title_ok = titles_match(analyze(claimed_title), analyze(page.title))
        words = set(analyze(" ".join((page.title, page.description, page.text, url))))
        present = [all(t in words for t in term.split()) for term in claim.terms]
        terms_ok = bool(present) and (all(present) if claim.require_all else any(present))
        return title_ok, terms_ok

    async def _from_our_copy(self, claim: Claim) -> Claim | None:
        """The claim as the publisher's signed copy in our own store makes it, if any."""
        if self._shards is None:
            return None
        copies = await self._shards.get([t for t in claim.terms if " " not in t])
        terms: list[str] = []
        title: str | None = None
        for term, held in copies.items():
            for copy in held:
                if copy.publisher != claim.publisher:
                    continue
                for posting in copy.shard.postings:
                    if posting.url == claim.url and _verifiable(list(posting.weights)):
                        terms.append(term)
                        title = posting.title if title is None else title
        if title is None:
            return None
        return Claim(claim.publisher, claim.url, title, tuple(terms), True, True)

    # --- strikes and distrust --------------------------------------------------------
    async def record(self, claim: Claim, outcome: Outcome) -> None:
        self.counts[outcome.verdict.value] += 1
        if outcome.verdict not in (Verdict.PASSED, Verdict.FAILED):
            log.debug("spot-check of %s: %s", claim.url, outcome.reason)
            return
        failed = outcome.verdict is Verdict.FAILED
        now = time.time()
        history = self._history.setdefault(claim.publisher, deque(maxlen=MAX_HISTORY_PER_PUBLISHER))
        self._history.move_to_end(claim.publisher)
        while len(self._history) > MAX_TRACKED_PUBLISHERS:
            self._history.popitem(last=False)
        history.append((now, failed))
        while history and history[0][0] < now - STRIKE_WINDOW:
            history.popleft()
        if not failed:
            return
        strikes = sum(1 for _t, f in history if f)
        log.warning(
            "spot-check: %s claims %s falsely (%s); strike %d",
            claim.publisher[:12],
            claim.url,
            outcome.reason,
            strikes,
        )
        if strikes >= STRIKES_TO_DISTRUST and strikes >= STRIKE_SHARE * len(history):
            await self.distrust(claim.publisher, f"{strikes} of {len(history)} checks failed")

    async def distrust(self, publisher: str, reason: str) -> None:
        if publisher in self.distrusted or len(self.distrusted) >= MAX_DISTRUSTED:
            return
        self.distrusted[publisher] = {"since": time.time(), "reason": reason}
        await asyncio.to_thread(self._save, dict(self.distrusted))
        purged = await self._shards.drop_publisher(publisher) if self._shards else 0
        log.warning(
            "distrusting publisher %s: %s; purged %d shard copies", publisher, reason, purged
        )

    async def lift(self, publisher: str) -> bool:
        """Trust ``publisher`` again (the operator's word): its strikes are forgotten, and
        its shards come back with its next publication. False if it was not distrusted."""
        if self.distrusted.pop(publisher, None) is None:
            return False
        self._history.pop(publisher, None)
        await asyncio.to_thread(self._save, dict(self.distrusted))
        log.warning("distrust of publisher %s lifted by the operator", publisher)
        return True

    def strikes(self) -> dict[str, int]:
        now = time.time()
        out = {
            p: sum(1 for t, f in h if f and t >= now - STRIKE_WINDOW)
            for p, h in self._history.items()
        }
        top = sorted((p for p, n in out.items() if n), key=lambda p: -out[p])
        return {p: out[p] for p in top[:MAX_STRIKES_SHOWN]}

    def stats(self) -> dict[str, Any]:
        return {
            **{k: self.counts[k] for k in ("offered", "dropped", *(v.value for v in Verdict))},
            "queued": self._queue.qsize(),
            "strikes": self.strikes(),
        }

    # --- persistence -----------------------------------------------------------------
    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log.warning("unreadable %s; starting with no distrusted peers", self.path)
            return {}
        peers = data.get("peers") if isinstance(data, dict) else None
        if not isinstance(peers, dict):
            return {}
        now = time.time()
        kept: dict[str, dict[str, Any]] = {}
        for publisher, entry in list(peers.items())[:MAX_DISTRUSTED]:
            with contextlib.suppress(TypeError, ValueError, AttributeError):
                if now - float(entry.get("since", 0)) < DISTRUST_SECONDS:
                    kept[str(publisher)] = dict(entry)
        return kept

    def _save(self, peers: dict[str, dict[str, Any]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"peers": peers}, indent=1))
        os.replace(tmp, self.path)
