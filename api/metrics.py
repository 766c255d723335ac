"""Prometheus metrics at /metrics: crawl, index and query figures of this node.

One registry per app (not the library's global one), so several nodes in one process
(tests, the demo) never share counters.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .keys import NODE

QUERY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    def __init__(self, app: web.Application) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.query_seconds = Histogram(
            "rhizome_query_seconds",
            "Search request latency",
            ["scope"],
            buckets=QUERY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_NodeCollector(app))


class _NodeCollector(Collector):
    """Reads the node's counters at scrape time (no second bookkeeping to keep in sync)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        node = self.app.get(NODE)
        if node is None:
            return
        crawler = node.crawler
        yield CounterMetricFamily(
            "rhizome_crawl_fetched", "Pages fetched and parsed", value=crawler.fetched
        )
        yield CounterMetricFamily(
            "rhizome_crawl_failed", "Fetches that failed", value=crawler.failed
        )
        yield GaugeMetricFamily(
            "rhizome_crawl_in_flight", "URLs leased and not yet committed", value=crawler.in_flight
        )
        yield GaugeMetricFamily(
            "rhizome_index_documents", "Documents in the local index", value=node.store.num_docs
        )
        yield GaugeMetricFamily(
            "rhizome_index_pending", "Changes waiting for a commit", value=node.store.pending
        )
        yield GaugeMetricFamily(
            "rhizome_index_last_commit_timestamp",
            "Unix time of the last index commit",
            value=node.store.last_commit_at,
        )
        if node.network is not None:  # spot-checks of peers' claims (hostile peers, #5)
            checker = node.network.spot_checker
            checks = CounterMetricFamily(
                "rhizome_spot_checks", "Spot-checks of peers' claimed results", labels=["verdict"]
            )
            for verdict in ("passed", "failed", "inconclusive", "unattributable", "dropped"):
                checks.add_metric([verdict], checker.counts[verdict])
            yield checks
            yield GaugeMetricFamily(
                "rhizome_distrusted_peers",
                "Publishers ignored after failed spot-checks",
                value=len(checker.distrusted),
            )


METRICS = web.AppKey("metrics", Metrics)


async def metrics_handler(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application) -> None:
    app[METRICS] = Metrics(app)
    app.router.add_get("/metrics", metrics_handler)
