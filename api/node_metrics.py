"""What the node's parts already count, as Prometheus metric families, read at scrape time.

No second bookkeeping to keep in sync: counters are the parts' own attributes, read as
they are. What costs a table scan (the frontier's rows by state, the shard copies held) is
the history sampler's last count (``api/history.py``), taken once a ``history_step``;
``rhizome_counts_timestamp_seconds`` says when.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rhizome.dht.protocol import DROP_REASONS
from rhizome.federation import Network
from rhizome.federation.direct import DIRECT_EVENTS, WAYS
from rhizome.federation.direct_serve import SERVED_EVENTS
from rhizome.federation.reachability import Reachability
from rhizome.federation.relay import RELAY_EVENTS
from rhizome.federation.spot_check import Verdict

from .client_quotas import SEARCH_QUOTA
from .direct_routes import DIRECT_QUOTA
from .history import HISTORY, is_incoming
from .keys import NODE
from .node import Node
from .peer_routes import PEER_QUOTAS
from .relay_routes import ATTACH_QUOTA, CONTACT_QUOTA, DIALBACK_QUOTA, RELAYED_QUOTA
from .version import VERSION

PREFIX = "rhizome_"
# Kinds of peer traffic (``PeerClient.traffic``: federation/client.py, publisher.py and
# api/peer_routes.py count them), shown at 0 until they happen; others are shown as well.
TRAFFIC_KINDS = (
    "lookup_received",
    "search_received",
    "push_received",
    "other_in",
    "push_sent",
    "lookup_served",
    "search_served",
)


def with_zeros(counts: Mapping[str, int], known: Iterable[str]) -> list[tuple[str, float]]:
    """Every known label value (0 if not counted yet) and whatever else was counted: a
    series that appears only once its first event happens breaks rate() and alerts."""
    return sorted({**dict.fromkeys(known, 0), **counts}.items())


def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    # The library appends ``_total`` to a counter's samples: ``name`` is without it.
    return CounterMetricFamily(PREFIX + name, doc, value=value)


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def labelled(
    family: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    doc: str,
    label: str,
    values: Iterable[tuple[str, float]],
) -> Metric:
    metric = family(PREFIX + name, doc, labels=[label])
    for key, value in values:
        metric.add_metric([key], value)
    return metric


class NodeCollector(Collector):
    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(PREFIX + "build_info", "Rhizome's version", labels=["version"])
        info.add_metric([VERSION], 1)
        yield info
        node = self.app.get(NODE)
        if node is None:  # starting: the parts are not built yet
            return
        yield from self._crawl(node)
        yield from self._index(node)
        yield from self._counts()
        yield from self._quotas()
        if node.network is not None and node.network.started:
            yield from self._network(node.network)

    def _crawl(self, node: Node) -> Iterator[Metric]:
        crawler = node.crawler
        yield counter("crawl_fetched_pages", "Pages fetched and parsed", crawler.fetched)
        yield counter("crawl_failed_fetches", "Fetches that failed", crawler.failed)
        yield counter(
            "crawl_forwarded_urls",
            "URLs handed to the nodes that own their hosts (host slices)",
            crawler.forwarded,
        )
        yield counter(
            "crawl_blocked_urls",
            "URLs left out because the blocklist names their host",
            crawler.blocked,
        )
        yield gauge("crawl_in_flight_urls", "URLs leased and not yet committed", crawler.in_flight)
        storage = node.storage_status()
        yield gauge("storage_ok", "1 while the index and frontier take writes", storage["ok"])
        yield gauge(
            "storage_disk_full", "1 while the data directory's disk is full", storage["disk_full"]
        )

    def _index(self, node: Node) -> Iterator[Metric]:
        store = node.store
        yield gauge("index_documents", "Documents in the local index", store.num_docs)
        yield gauge(
            "index_pending_changes", "Pages and removals waiting for a commit", store.pending
        )
        yield counter("index_commits", "Index commits since start", store.generation)
        yield gauge(
            "index_last_commit_timestamp_seconds",
            "Unix time of the last index commit (0: none since start)",
            store.last_commit_at,
        )
        yield counter(
            "index_shard_build_cpu_seconds",
            "CPU time spent reading term shards out of the index (publishing's cost)",
            store.shard_cpu,
        )

    def _counts(self) -> Iterator[Metric]:
        counts = self.app[HISTORY].counts
        if counts is None:  # before the sampler's first tick
            return
        yield gauge(
            "counts_timestamp_seconds",
            "Unix time the frontier and held shards were last counted",
            counts.at,
        )
        if counts.frontier is not None:
            f = counts.frontier
            yield labelled(
                GaugeMetricFamily,
                "frontier_urls",
                "URLs in the frontier by state",
                "state",
                [
                    ("queued", f.waiting),
                    ("leased", f.leased),
                    ("done", f.done),
                    ("failed", f.failed),
                ],
            )
            yield gauge("frontier_due_urls", "URLs due for a fetch now, any state", f.queued)
            yield gauge("frontier_hosts", "Hosts the frontier knows", f.hosts)
        if counts.shards_held is not None:  # a node in a network
            yield gauge("dht_peers", "Contacts in the DHT routing table", counts.peers)
            yield gauge(
                "shards_held_records",
                "Term shard records held (others' and our own)",
                counts.shards_held,
            )

    def _quotas(self) -> Iterator[Metric]:
        search = self.app.get(SEARCH_QUOTA)
        if search is not None:
            yield counter(
                "search_refused_requests",
                "Searches refused (429) for being over a client's rate",
                search.limiter.refused,
            )
        peer = self.app.get(PEER_QUOTAS)
        if peer is not None:
            yield counter(
                "peer_refused_requests",
                "Peer requests refused (429) for being over an address's rate",
                peer.refused,
            )
            yield gauge(
                "peer_pushes_in_flight",
                "Shard pushes being read or stored",
                peer.pushes_in_flight(),
            )
        relay_quotas = [
            ("dialback", DIALBACK_QUOTA),
            ("attach", ATTACH_QUOTA),
            ("relayed", RELAYED_QUOTA),
            ("contact", CONTACT_QUOTA),
            ("direct", DIRECT_QUOTA),
        ]
        yield labelled(
            CounterMetricFamily,
            "reachability_refused_requests",
            "Dial-back, relay, contact and direct-path requests refused over an address's rate",
            "endpoint",
            [(name, self.app[key].refused) for name, key in relay_quotas if key in self.app],
        )

    def _network(self, network: Network) -> Iterator[Metric]:
        dht = network.dht
        if dht.running:
            yield labelled(
                CounterMetricFamily,
                "dht_dropped_datagrams",
                "DHT datagrams and requests dropped, by reason",
                "reason",
                with_zeros(dht.dropped, DROP_REASONS),
            )
        yield counter(
            "dht_holder_lookups",
            "DHT lookups for the holders of terms",
            network.membership.placement.lookups,
        )
        yield from _traffic(network.client.traffic)
        yield gauge(
            "peers_backed_off",
            "Peers not asked for a while after failing",
            len(network.client.backed_off()),
        )
        shards = network.shards
        yield gauge(
            "shards_held_bytes",
            "Bytes of others' shard copies held, as budgeted",
            shards.held_bytes,
        )
        yield counter(
            "shards_refused_records", "Pushed shard records refused (quota)", shards.over_quota
        )
        yield counter(
            "shards_outranked_records",
            "Shard copies refused or evicted: their term had stronger publishers",
            shards.outranked,
        )
        yield counter("shards_expired_records", "Held shard copies expired", shards.expired)
        yield from _publishing(network)
        yield from _spot_checks(network)
        yield from _reachability(network)
        yield from _direct(network)


def _traffic(traffic: Mapping[str, int]) -> Iterator[Metric]:
    metric = CounterMetricFamily(
        PREFIX + "peer_traffic_bytes",
        "Peer HTTP body bytes, by direction and kind of request",
        labels=["direction", "kind"],
    )
    for kind, value in with_zeros(traffic, TRAFFIC_KINDS):
        metric.add_metric(["in" if is_incoming(kind) else "out", kind], value)
    yield metric


def _publishing(network: Network) -> Iterator[Metric]:
    publisher = network.publisher
    totals = publisher.totals
    yield counter("publish_runs", "Shard publications run", totals["publishes"])
    yield counter(
        "publish_full_rebuilds", "Publications that rebuilt every term", totals["full_rebuilds"]
    )
    yield counter("publish_built_terms", "Term shards built for publishing", totals["terms_built"])
    yield counter("publish_sent_terms", "Term shards sent to their holders", totals["terms_sent"])
    yield counter(
        "publish_record_bytes", "Bytes of signed shard records made", totals["record_bytes"]
    )
    yield counter("publish_cpu_seconds", "CPU time of publishing", totals["cpu_seconds"])
    yield gauge(
        "publish_generation", "Index generation last published", publisher.published_generation
    )
    yield gauge(
        "publish_dropped_holders", "Holders taken for gone (missed batches)", len(publisher.dropped)
    )


def _spot_checks(network: Network) -> Iterator[Metric]:
    checker = network.spot_checker
    yield labelled(
        CounterMetricFamily,
        "spot_checks",
        "Spot checks of peers' claimed results, by verdict",
        "verdict",
        [(v.value, checker.counts[v.value]) for v in Verdict],
    )
    yield counter(
        "spot_check_offered_claims", "Claims offered for a spot check", checker.counts["offered"]
    )
    yield counter(
        "spot_check_dropped_claims",
        "Claims not checked (queue full, publisher's budget)",
        checker.counts["dropped"],
    )
    yield gauge(
        "distrusted_peers", "Publishers ignored after failed spot checks", len(checker.distrusted)
    )


def _reachability(network: Network) -> Iterator[Metric]:
    yield labelled(
        GaugeMetricFamily,
        "reachability",
        "1 for whether peers can dial this node: public, private or unknown",
        "state",
        [(r.value, float(network.reachability is r)) for r in Reachability],
    )
    yield counter("reachability_checks", "Dial-back checks asked of peers", network.probe.checks)
    link = network.relay_link
    yield gauge(
        "relay_attached", "1 while this node is reached through a relay", link.relay is not None
    )
    yield counter("relay_link_attaches", "Attachments to a relay (behind NAT)", link.attaches)
    yield counter(
        "relay_link_served_requests", "Requests answered through our relay", link.served.requests
    )
    yield counter("relay_link_served_bytes", "Bytes answered through our relay", link.served.bytes)
    hub = network.relay_hub
    yield labelled(
        CounterMetricFamily,
        "relay_events",
        "Relaying for nodes behind NAT: attached, relayed, refused_*, timed_out",
        "event",
        with_zeros(hub.counts, RELAY_EVENTS),
    )
    relaying = hub.stats()["relaying_for"]
    yield gauge(
        "relay_sessions",
        "Nodes behind NAT relayed for now",
        len(relaying) if isinstance(relaying, list) else 0,
    )
    yield counter(
        "relay_answer_bytes", "Bytes of answers relayed for nodes behind NAT", hub.relayed_bytes
    )


def _direct(network: Network) -> Iterator[Metric]:
    status = network.direct.status()
    yield labelled(
        CounterMetricFamily,
        "direct_events",
        "Direct paths to nodes behind NAT: reversal_*, punch_*, direct and relayed requests",
        "event",
        with_zeros(status["counts"], DIRECT_EVENTS),
    )
    yield labelled(
        GaugeMetricFamily,
        "direct_peers",
        "Nodes behind NAT by how they were reached when last asked: reversal, punch, relay",
        "way",
        [(way, status["peers_by_way"][way]) for way in WAYS],
    )
    yield gauge("direct_links", "Direct links to nodes behind NAT held now", status["links"])
    yield counter(
        "direct_answer_bytes",
        "Bytes of answers that came over direct links",
        status["answer_bytes"],
    )
    served = network.direct_server
    yield labelled(
        CounterMetricFamily,
        "direct_served_events",
        "Behind NAT: queriers dialled back (reversed), punched to, failed, refused",
        "event",
        with_zeros(served.counts, SERVED_EVENTS),
    )
    yield gauge(
        "direct_served_links", "Behind NAT: direct links served now", served.status()["links"]
    )
    yield counter(
        "direct_served_requests",
        "Behind NAT: requests answered over direct links",
        served.served.requests,
    )
    yield counter(
        "direct_served_bytes", "Behind NAT: bytes answered over direct links", served.served.bytes
    )
