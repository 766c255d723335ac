"""The merge phase: owners' answers and shard candidates on one scale, best first."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from rhizome.index.semantic import semantic_factor

from .phases import QueryPlan, Ranking
from .ranking import title_bonus
from .wire import PeerAnswer, ResultRow, SnippetFields, speaks_for

OWNER_VOUCHED = 0.999  # a page its owner did not return ranks just below its last one
# A shard candidate whose publisher did not answer is lifted by this quantile of the
# owners' exact/estimate factors on the query (in-process, small corpus, kill 2 of 5, 400
# tune queries: 0.5 keeps 88.2%, 0.75 88.2%, 0.9 84.9%: dead owners' answers rise as much
# as the live owners' fall).
LIFT_QUANTILE = 0.5
# The title's semantic factor stands in for the page's at this power (same runs, kept share
# of the full network's MRR@10: none 88.2%, 1 88.5%, 0.5 89.6%, 0.25 89.5%): a title says
# less than the page's own vector, and at full weight lifted dead pages over live answers.
# The full network is unchanged: 8 large-corpus nodes in-process (a real run's data), 300
# tune queries, 6 of 8 publishers asked: MRR@10 0.6699 with and without it.
TITLE_MEANING = 0.5


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def merge(
    plan: QueryPlan,
    ranking: Ranking,
    answers: Sequence[PeerAnswer],
    snippets: dict[str, SnippetFields],
    analyze: Callable[[str], list[str]],
    meaning: Mapping[str, float] | None = None,
) -> list[ResultRow]:
    """One list: owners' results scored with their exact weights on the network's scale,
    candidates no owner returned with their shard titles (and snippets where named), each
    multiplied by its title evidence; best first."""
    scorer, scores = ranking.scorer, ranking.scores
    meaning = meaning or {}
    for answer in answers:
        snippets.update(answer.snippets)
    results: dict[str, ResultRow] = {}
    lifts: list[float] = []
    for answer in answers:
        weighed = [r.url for r in answer.results if r.url in answer.weights.weights]
        exact_of = dict(zip(weighed, scorer.owner_scores(answer.weights, weighed), strict=True))
        for row in answer.results:
            url = row.url
            if url in exact_of:
                exact = exact_of[url] * semantic_factor(answer.weights.semantic.get(url, 0.0))
                if scores.get(url, 0.0) > 0:
                    lifts.append(exact / (scores[url] * meaning.get(url, 1.0)))
                scores[url] = exact
            if url in results:
                known = results[url]
                known.peers.append(answer.peer)
                if speaks_for(answer.peer, known.peers[0], url):  # its title, not a liar's
                    known.title, known.content = row.title, row.content
                    known.content_html = row.content_html
                    known.peers.insert(0, known.peers.pop())
                continue
            named = snippets.get(url, {}) if not row.content else {}
            results[url] = ResultRow(
                url=url,
                title=row.title,
                content=row.content or named.get("content", ""),
                content_html=row.content_html or named.get("content_html", ""),
                host=row.host,
                score=round(scores.get(url, 0.0), 4),
                peers=[answer.peer],
                language=row.language,
                fetched=row.fetched,
            )
    # An owner that answered ranked all its pages: those it did not return score below
    # the last it did (its ranking has proximity, which shards cannot know).
    floor: dict[str, float] = {}
    for answer in answers:
        returned = [results[r.url].score for r in answer.results if r.url in results]
        if returned:
            floor[answer.peer] = min(returned)
    # A publisher that did not answer (dead, late, or not asked) has only shard estimates,
    # which lack proximity and meaning: put them on the owners' scale by the median factor
    # the owners' exact scores had over their own estimates on this query. In-process, tune
    # half: kill 2 of 5 MRR@10 0.524 -> 0.572; the full network unchanged (0.785; 8 large
    # nodes 0.660) as unasked publishers' pages stay far behind. Most of that factor is the
    # owners' semantic re-rank (exp(3 x cosine), 1.8-2.3 on median): where the querier can
    # embed, each page's title stands in for its vector on both sides of the ratio
    # (``meaning``), so a described page keeps more of its lead when its owner is gone.
    lift = max(1.0, _quantile(lifts, LIFT_QUANTILE)) if lifts else 1.0
    for url in ranking.ranked:
        if url not in results:
            snippet = snippets.get(url, {})
            publisher = scorer.owner[url]
            score = scores[url]
            if publisher in floor:
                score = min(score, floor[publisher] * OWNER_VOUCHED)
            else:
                score *= lift * meaning.get(url, 1.0)
            results[url] = ResultRow(
                url=url,
                title=scorer.titles.get(url) or url,
                content=snippet.get("content", ""),
                content_html=snippet.get("content_html", ""),
                host=url.split("/", 3)[2] if "://" in url else "",
                score=round(score, 4),
                peers=[publisher],
            )
    tokens = plan.tokens
    for row in results.values():
        bonus = title_bonus(tokens, row.title, analyze)
        if bonus != 1.0:
            row.score = round(row.score * bonus, 4)
    return sorted(results.values(), key=lambda r: r.score, reverse=True)
