"""Prometheus metrics at /metrics, by the conventions: base units in names (``_seconds``,
``_bytes``), ``_total`` on counters, the process and Python collectors, ``rhizome_build_info``.

One registry per app (not the library's global one), so several nodes in one process
(tests, the demo) never share counters. What the node's parts count is read at scrape time
(``api/node_metrics.py``); what costs a table scan comes from the history sampler's last
count (``api/history.py``), so a scrape never scans the frontier.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.registry import CollectorRegistry

from .history import HISTORY
from .node_metrics import NodeCollector
from .search import SCOPES

# Search latency buckets, seconds: a local search takes 2-5 ms, a network one 20-50 ms on
# a small network, and one waits at most the 2 s deadline for peers.
SEARCH_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    def __init__(self, app: web.Application) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.search_seconds = Histogram(
            "rhizome_search_duration_seconds",
            "Time to answer a search (JSON API and web page), by scope",
            ["scope"],
            buckets=SEARCH_BUCKETS,
            registry=self.registry,
        )
        for scope in SCOPES:  # every series from the start, at 0
            self.search_seconds.labels(scope=scope)
        self.registry.register(NodeCollector(app))


METRICS = web.AppKey("metrics", Metrics)


def observe_search(app: web.Application, scope: str, seconds: float) -> None:
    """A search answered: into the histogram and the status page's graphs."""
    app[METRICS].search_seconds.labels(scope=scope).observe(seconds)
    app[HISTORY].searched(seconds)


async def metrics_handler(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application) -> None:
    app[METRICS] = Metrics(app)
    app.router.add_get("/metrics", metrics_handler)
