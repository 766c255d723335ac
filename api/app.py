"""The composition root: ``create_app(config)`` builds the one aiohttp Application."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

from aiohttp import web
from aiohttp.typedefs import Handler

from rhizome.crawler import Blocklist, Crawler
from rhizome.crawler.blocklist import OWN
from rhizome.dht import DhtNode, Identity
from rhizome.federation import DEFAULT_SETTINGS, Network, ShardStore, SpotChecker
from rhizome.federation.blocklists import OwnList, Subscriptions
from rhizome.federation.direct import DirectLimits
from rhizome.federation.relay import RelayLimits
from rhizome.index import Commit, IndexStore
from rhizome.index.semantic import Embedder

from . import (
    blocklist_routes,
    client_quotas,
    direct_routes,
    discovery,
    health,
    history,
    memory,
    metrics,
    operator,
    operator_page,
    peer_routes,
    relay_routes,
    routes,
    systemd,
    web_ui,
)
from .config import NodeConfig, split_host_port
from .keys import (
    BLOCKLIST,
    CONFIG,
    HTTP_URL,
    NETWORK,
    NODE,
    OPERATOR_ACTIONS,
    OPERATOR_STATE,
    OPERATOR_TOKEN,
    OWN_LIST,
    STORE,
)
from .node import IndexSink, Node, committed_before_crash
from .operator_actions import OWN_LABEL, OperatorActions, purge
from .operator_store import OperatorState

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1024 * 1024  # shard pushes read their own, larger, bounded body
# How often an idle node gives freed heap back (malloc_trim: 1-3 ms measured), so what a
# crawl or a burst of searches freed does not stay resident.
IDLE_TRIM_INTERVAL = 10.0


def loopback_url(listening: str) -> str:
    """Our HTTP server as this host reaches it: relayed requests are answered through it,
    and a socket bound to every address (0.0.0.0, ::) answers on loopback."""
    return listening.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")


# One cleanup context per resource, in data-flow order; aiohttp stops them in reverse, so
# spot checks end before the crawler whose Fetcher they use, the crawler before the network
# it forwards URLs through, and everything before the index.
async def _operator_ctx(app: web.Application) -> AsyncIterator[None]:
    """The operator credential exists before the socket serves (operator routes need it)."""
    app[OPERATOR_TOKEN] = await asyncio.to_thread(operator.load_or_create, app[CONFIG].data_dir)
    yield


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    config.data_dir.mkdir(parents=True, exist_ok=True)
    embedder = await asyncio.to_thread(Embedder.load) if config.semantic == "on" else None
    store = IndexStore(
        config.data_dir / "index",
        commit_interval=config.commit_interval,
        writer_heap=config.writer_heap_bytes,
        queue_size=config.memory_profile.index_queue_docs,
        commit_docs=config.memory_profile.commit_docs,
        embedder=embedder,
    )
    await store.start()
    app[STORE] = store
    yield
    await store.stop()


async def _blocklist_ctx(app: web.Application) -> AsyncIterator[None]:
    """The operator's blocklist and pins, before anything crawls, forwards or searches."""
    state = await asyncio.to_thread(OperatorState.load, app[CONFIG].data_dir)
    blocklist = Blocklist()
    blocklist.set_rules(OWN, OWN_LABEL, list(state.rules))
    app[OPERATOR_STATE], app[BLOCKLIST] = state, blocklist
    yield


async def _network_ctx(app: web.Application) -> AsyncIterator[None]:
    """Join the DHT (when configured). The HTTP socket is already bound, so peers that
    learn our URL from the DHT can connect at once."""
    config = app[CONFIG]
    if not config.dht:
        app[NETWORK] = None
        yield
        return
    http_url = config.public_url or app[HTTP_URL]
    identity = Identity.load_or_create(config.data_dir)
    network = Network(
        store=app[STORE],
        identity=identity,
        # Unless the operator says it is public, a DHT client until peers dial it back.
        dht=DhtNode(
            config.data_dir,
            http_url=http_url,
            identity=identity,
            client_mode=config.reachability != "public",
        ),
        shard_store=ShardStore(
            config.data_dir / "shards.sqlite3",
            max_bytes=config.held_shards_mb * 1024 * 1024,
            own=identity.node_id.hex(),
        ),
        spot_checker=SpotChecker(config.data_dir, identity.node_id.hex()),
        bootstrap=[split_host_port(b, "bootstrap") for b in config.bootstrap],
        listen=split_host_port(config.dht, "dht"),
        allow_private_peers=config.allow_private_peers,
        pinned=(*config.pin_host, *app[OPERATOR_STATE].pins),
        settings=replace(DEFAULT_SETTINGS, expire_every=config.shard_expiry_interval),
        reachability=config.reachability,
        relay_limits=RelayLimits(
            max_nodes=config.relays,
            bytes_per_hour=int(config.relay_mb_per_node_hour * 1024 * 1024),
        ),
        direct_limits=DirectLimits(max_links=config.direct_links),
        local_url=loopback_url(app[HTTP_URL]),
        blocklist=app[BLOCKLIST],
    )
    await network.start()
    app[NETWORK] = network
    yield
    await network.stop()


async def _crawler_ctx(app: web.Application) -> AsyncIterator[None]:
    config, store, network = app[CONFIG], app[STORE], app[NETWORK]
    crawler = Crawler(
        config.crawler_config(),
        IndexSink(store),
        # Host slices: URLs of hosts another node owns go to that node.
        router=network.slices if network is not None else None,
        committed_before_crash=committed_before_crash(store),
        blocklist=app[BLOCKLIST],
    )

    async def committed(commit: Commit) -> None:
        await crawler.committed(commit.urls)

    store.on_commit(committed)
    await crawler.start()
    if config.seed:
        await crawler.add_seeds(config.seed, force=False)
    app[NODE] = Node(config, store=store, crawler=crawler, network=network)
    log.info("node started; data in %s", config.data_dir)
    yield
    await crawler.stop()


async def _subscriptions_ctx(app: web.Application) -> AsyncIterator[None]:
    """Lists of other nodes, applied and refreshed; this node's own list, served signed."""
    config, network, node, blocklist = app[CONFIG], app[NETWORK], app[NODE], app[BLOCKLIST]
    subscriptions = None
    task: asyncio.Task[None] | None = None
    app[OWN_LIST] = None
    if network is not None:
        subscriptions = Subscriptions(
            config.data_dir,
            blocklist,
            network.client,
            membership=network.membership,
            applied=functools.partial(purge, node, blocklist),
        )
        await asyncio.to_thread(subscriptions.load)
        task = asyncio.create_task(subscriptions.run(), name="blocklist-subscriptions")
        if config.publish_blocklist:
            app[OWN_LIST] = OwnList(network.identity)
    app[OPERATOR_ACTIONS] = OperatorActions(
        node, blocklist=blocklist, state=app[OPERATOR_STATE], subscriptions=subscriptions
    )
    yield
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _trim_when_idle(node: Node) -> None:
    while True:
        await asyncio.sleep(IDLE_TRIM_INTERVAL)
        try:
            if await node.is_idle():  # what the crawl and the searches since freed
                await asyncio.to_thread(memory.trim_heap)
        except Exception:
            log.exception("could not give freed memory back")


async def _memory_ctx(app: web.Application) -> AsyncIterator[None]:
    memory.settle_gc()  # every longer-lived part of the node exists by now
    task = asyncio.create_task(_trim_when_idle(app[NODE]), name="trim-when-idle")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _spot_check_ctx(app: web.Application) -> AsyncIterator[None]:
    """Spot checks fetch through the crawler's own Fetcher: same SSRF guard, caps, robots."""
    network, crawler = app[NETWORK], app[NODE].crawler
    if network is None:
        yield
        return
    await network.spot_checker.start(crawler.fetcher, crawler.robots, network.shards)
    yield
    await network.spot_checker.stop()


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if response.content_type == "text/html":
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        )
    return response


def create_app(config: NodeConfig, *, http_url: str = "") -> web.Application:
    """The node's application. ``http_url`` is where its HTTP socket listens (peers are
    told ``config.public_url`` or, if that is empty, this)."""
    app = web.Application(
        client_max_size=MAX_REQUEST_BYTES,
        middlewares=[routes.json_errors, _security_headers],
    )
    app[CONFIG] = config
    app[HTTP_URL] = http_url
    app.cleanup_ctx.extend(
        [
            _operator_ctx,
            _store_ctx,
            _blocklist_ctx,
            _network_ctx,
            _crawler_ctx,
            _memory_ctx,
            _spot_check_ctx,
            _subscriptions_ctx,
        ]
    )
    # Graphs and counts for the status page and /metrics; systemd's watchdog pings.
    app.cleanup_ctx.extend([history.history_ctx, systemd.watchdog_ctx])
    history.setup(app)
    health.setup(app)
    metrics.setup(app)
    client_quotas.setup(app, config)
    routes.setup(app)
    discovery.setup(app)
    peer_routes.setup(app)
    relay_routes.setup(app)
    direct_routes.setup(app)
    web_ui.setup(app)
    blocklist_routes.setup(app)
    operator_page.setup(app)
    return app
