"""Rhizome's federation: shards published to holders, host slices, and federated search.

Data flow (each a module): ``wire`` (what peers say, bounded) ← ``client`` (HTTP to peers,
errors mapped once, URLs proven by ``proof``) ← ``membership`` (who is on the network, who
holds a term) ← ``slices`` (who crawls a host), ``publisher`` (our shards to their
holders), ``holding`` (others' shards, in ``shard_store``), ``peers`` (the ``Peers``
seam a query uses: network and in-process) ← ``search`` (the query as phases, scored by
``ranking``, claims sampled by ``spot_check``) ← ``network`` (all of it composed). Imports
crawler/, index/, dht/; never api/.
"""

from .errors import (
    FederationError,
    PeerBadAnswer,
    PeerBusy,
    PeerError,
    PeerTimeout,
    PeerUnproven,
    PeerUnreachable,
    PublishIncomplete,
    PushRefused,
)
from .local_peers import LocalPeers
from .network import Network
from .peers import NetworkPeers, Peers, QueryTally
from .phases import FederatedPage, QueryPlan
from .search import FederatedSearch
from .settings import DEFAULT_SETTINGS, FederationSettings
from .shard_store import ShardStore
from .spot_check import SpotChecker
from .wire import PeerAnswer, ResultRow

__all__ = [
    "DEFAULT_SETTINGS",
    "FederatedPage",
    "FederatedSearch",
    "FederationError",
    "FederationSettings",
    "LocalPeers",
    "Network",
    "NetworkPeers",
    "PeerAnswer",
    "PeerBadAnswer",
    "PeerBusy",
    "PeerError",
    "PeerTimeout",
    "PeerUnproven",
    "PeerUnreachable",
    "Peers",
    "PublishIncomplete",
    "PushRefused",
    "QueryPlan",
    "QueryTally",
    "ResultRow",
    "ShardStore",
    "SpotChecker",
]
