"""A federated query, as named phases over typed values.

    plan      QueryPlan: the text parsed once (units, terms), limit, offset, depth
    collect   Merged: every publisher's shard of each term, from the term's holders
    rank      Ranking: global df/N/averages, every candidate scored (``ranking.py``)
    choose    PeerChoice: owners of the best candidates, and who makes which snippets
    gather    answers of the owners (this node among them) and snippet-only requests
    merge     ResultRows: owners' exact scores, shard candidates, title evidence, ordered
    fill      snippets of the first page's rows whose owner made none (``snippet_hits``)

One deadline covers the whole query; peers that miss it are named, not waited for. Peers
are reached through the ``Peers`` seam, this node's own pages through ``LocalOwner``.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace

from rhizome.crawler import Blocklist
from rhizome.index import PreparedQuery
from rhizome.index.semantic import semantic_factor

from .answer import LocalOwner
from .merging import TITLE_MEANING, merge
from .peers import Merged, Peers, QueryTally
from .phases import FederatedPage, PeerChoice, PhaseTimer, QueryPlan, Ranking
from .ranking import GlobalScorer
from .selection import likely_publishers
from .settings import FederationSettings
from .spot_check import SpotChecker
from .wire import PeerAnswer, ResultRow, SnippetFields

MIN_SHARD_WAIT = 0.1  # seconds the shard phase always gets, even past the deadline


def without_blocked(merged: Merged, blocklist: Blocklist) -> Merged:
    """The shards with the postings of blocked hosts taken out, before anything is scored:
    a blocked page is neither shown nor makes its publisher an owner to ask."""
    out: Merged = {}
    for term, shards in merged.items():
        out[term] = {}
        for publisher, shard in shards.items():
            kept = tuple(p for p in shard.postings if not blocklist.blocks_url(p.url))
            out[term][publisher] = (
                shard if len(kept) == len(shard.postings) else replace(shard, postings=kept)
            )
    return out


def rank(plan: QueryPlan, merged: Merged, settings: FederationSettings) -> Ranking:
    scorer = GlobalScorer(plan.query.units, merged, plan.query.near)
    scores = scorer.shard_scores()
    ranked = heapq.nlargest(settings.candidates, scores, key=scores.__getitem__)
    return Ranking(scorer, scores, ranked)


def choose(plan: QueryPlan, ranking: Ranking, settings: FederationSettings) -> PeerChoice:
    """Owners asked for their own ranking, and the first page as the shards see it, by
    publisher. The owners: those of the best candidates (``owners_by_candidates``, a
    second only within ``owner_score_share`` of the best score), then the publishers whose
    per-term summaries make them likeliest to hold the answer (``selection.py``), up to
    ``owners_asked``; a page that matches every word moderately tops no term's list, and
    its owner is found only the second way. An owner asked anyway makes snippets for its
    pages on the first page that its own search does not return, the other publishers
    there are asked for just those pages' snippets. Without them, one result in five
    showed a bare title."""
    owner, scores, ranked = ranking.scorer.owner, ranking.scores, ranking.ranked
    owners: list[str] = []
    for url in ranked:
        if len(owners) >= min(settings.owners_by_candidates, settings.owners_asked):
            break
        if scores[url] < settings.owner_score_share * scores[ranked[0]]:
            break
        if owner[url] not in owners:
            owners.append(owner[url])
    for publisher in likely_publishers(ranking.scorer.merged, settings.owner_belief_share):
        if len(owners) >= settings.owners_asked:
            break
        if publisher not in owners:
            owners.append(publisher)
    shown: dict[str, list[str]] = defaultdict(list)
    first_page = ranked[plan.offset : plan.offset + settings.snippet_pages * plan.limit]
    for url in first_page:
        shown[owner[url]].append(url)
    hits = {
        o: min(plan.depth, plan.offset + len(shown.get(o, ())) + settings.snippet_margin)
        for o in owners
    }
    return PeerChoice(owners, dict(shown), hits)


class FederatedSearch:
    def __init__(
        self,
        *,
        local: LocalOwner,
        peers: Peers,
        settings: FederationSettings,
        analyze: Callable[[str], list[str]],
        published: Callable[[], bool],
        spot_checker: SpotChecker | None = None,
        meaning: Callable[[str, Sequence[str]], list[float]] | None = None,
        blocklist: Blocklist | None = None,
    ) -> None:
        self.local = local
        self.meaning = meaning  # query, texts -> cosines (the embedder's); None: no re-rank
        self.blocklist = blocklist  # hosts whose pages this node never shows
        self.peers = peers
        self.settings = settings
        self.analyze = analyze
        self._published = published  # every page this node indexed is in the shards
        self.spot_checker = spot_checker

    def plan(self, query: PreparedQuery, *, limit: int, offset: int) -> QueryPlan:
        return QueryPlan(query, limit, offset, max(limit + offset, self.settings.owner_depth))

    async def search(self, plan: QueryPlan) -> FederatedPage:
        deadline = time.monotonic() + self.settings.query_deadline
        me = self.local.node_id
        tally = QueryTally()
        timings = PhaseTimer()
        # While some of this node's pages are not in the shards yet (not yet published), it
        # answers for them whatever the shards say, beside the lookups. Otherwise it answers
        # like any owner, only when it owns one of the best candidates: its search and
        # snippets would take the CPU the query's own scoring needs.
        own: asyncio.Task[PeerAnswer] | None = None
        if not self._published():
            own = asyncio.create_task(self.local.answer(plan.query, plan.depth, []))
        # The query embedded once, on a thread while the shards are fetched, for every
        # owner asked: each would embed the same text again (~0.5 ms of an answer).
        vector = asyncio.create_task(self.local.query_vector(plan.query))
        try:
            try:
                merged = await asyncio.wait_for(
                    self.peers.shards(plan.terms, tally),
                    max(MIN_SHARD_WAIT, deadline - time.monotonic()),
                )
                timings.lap("shards")
            except TimeoutError:
                merged = {}
            if self.blocklist is not None and self.blocklist.rule_count:
                merged = without_blocked(merged, self.blocklist)
            ranking = rank(plan, merged, self.settings)
            timings.lap("score")
            choice = choose(plan, ranking, self.settings)
            used, sent = await vector or (None, None)
            if own is None and (me in choice.owners or not ranking.ranked):
                named = choice.shown.get(me, [])
                hits = choice.snippet_hits.get(me)
                own = asyncio.create_task(
                    self.local.answer(plan.query, plan.depth, named, hits, used)
                )
            answers, snippets = await self._gather(plan, choice, own, deadline, tally, sent)
            timings.lap("owners")
        finally:
            vector.cancel()
            if own is not None:
                own.cancel()
        if self.blocklist is not None and self.blocklist.rule_count:
            for answer in answers:  # an owner's own results of a blocked host
                answer.results = [r for r in answer.results if not self.blocklist.blocks_url(r.url)]
        meaning = await self._title_meaning(plan, ranking, answers)
        rows = merge(plan, ranking, answers, snippets, self.analyze, meaning)
        timings.lap("merge")
        await self._fill(
            plan, rows[plan.offset : plan.offset + plan.limit], answers, deadline, tally
        )
        if self.spot_checker is not None:
            page = rows[plan.offset : plan.offset + plan.limit]
            self.spot_checker.offer_page(page, answers, plan.terms)
        timings.lap("fill")
        return FederatedPage(rows, max(len(rows), len(ranking.scores)), tally, timings.laps)

    async def _gather(
        self,
        plan: QueryPlan,
        choice: PeerChoice,
        own: asyncio.Task[PeerAnswer] | None,
        deadline: float,
        tally: QueryTally,
        meaning: str | None = None,
    ) -> tuple[list[PeerAnswer], dict[str, SnippetFields]]:
        me = self.local.node_id
        reachable = await self.peers.reachable(choice.owners, list(choice.shown))
        asked = [o for o in choice.owners if o in reachable]
        snipped = [p for p in choice.shown if p not in choice.owners and p in reachable]
        mine = [] if own is not None else choice.shown.get(me, [])
        q = plan.text

        async def owners() -> list[PeerAnswer]:
            found = await asyncio.gather(
                *(
                    self.peers.search(
                        o,
                        q,
                        plan.depth,
                        choice.shown.get(o, []),
                        deadline,
                        tally,
                        choice.snippet_hits.get(o),
                        meaning,
                    )
                    for o in asked
                )
            )
            return [a for a in found if a is not None]

        async def snippet_only() -> dict[str, SnippetFields]:
            found: dict[str, SnippetFields] = {}
            for part in await asyncio.gather(
                *(self.peers.snippets(p, q, choice.shown[p], deadline, tally) for p in snipped)
            ):
                found.update(part)
            return found

        remote, snippets, local = await asyncio.gather(
            owners(), snippet_only(), self.local.snippets(plan.query, mine)
        )
        snippets.update(local)
        answers = [*([await own] if own is not None else []), *remote]
        return answers, snippets

    async def _title_meaning(
        self, plan: QueryPlan, ranking: Ranking, answers: Sequence[PeerAnswer]
    ) -> dict[str, float]:
        """The semantic factor of each candidate's shard title, when some of the best
        candidates' publishers did not answer, for those and for the answering owners'
        pages that calibrate them (``merge``); {} otherwise."""
        answered = {a.peer for a in answers}
        owner = ranking.scorer.owner
        if self.meaning is None or all(owner[u] in answered for u in ranking.ranked):
            return {}
        urls = [u for u in ranking.ranked if owner[u] not in answered]
        urls += [r.url for a in answers for r in a.results if ranking.scores.get(r.url, 0.0) > 0]
        titles = [ranking.scorer.titles.get(u, "") for u in urls]
        cosines = await asyncio.to_thread(self.meaning, plan.text, titles)
        return {u: semantic_factor(c) ** TITLE_MEANING for u, c in zip(urls, cosines, strict=True)}

    async def _fill(
        self,
        plan: QueryPlan,
        page: Sequence[ResultRow],
        answers: Sequence[PeerAnswer],
        deadline: float,
        tally: QueryTally,
    ) -> None:
        """Snippets for the rows of ``page`` an owner returned without one (beyond the
        ``snippet_hits`` it was asked to make), from that owner, within the deadline."""
        bare = {r.url for a in answers for r in a.results if not r.content} - {
            u for a in answers for u in a.snippets
        }
        wanted: dict[str, list[ResultRow]] = defaultdict(list)
        for row in page:
            if row.url in bare and not row.content and row.peers:
                wanted[row.peers[0]].append(row)
        if not wanted or time.monotonic() >= deadline:
            return
        me = self.local.node_id

        async def ask(peer: str, rows: list[ResultRow]) -> None:
            urls = [r.url for r in rows]
            if peer == me:
                found = await self.local.snippets(plan.query, urls)
            else:
                found = await self.peers.snippets(peer, plan.text, urls, deadline, tally)
            for row in rows:
                snippet = found.get(row.url)
                if snippet:
                    row.content = snippet.get("content", "")
                    row.content_html = snippet.get("content_html", "")

        await asyncio.gather(*(ask(p, rows) for p, rows in wanted.items()))
