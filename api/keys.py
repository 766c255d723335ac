"""Typed application state."""

from __future__ import annotations

from aiohttp import web

from rhizome.crawler import Blocklist
from rhizome.federation import Network
from rhizome.federation.blocklists import OwnList
from rhizome.index import IndexStore

from .config import NodeConfig
from .node import Node
from .operator_actions import OperatorActions
from .operator_store import OperatorState

CONFIG = web.AppKey("config", NodeConfig)
HTTP_URL = web.AppKey("http_url", str)
STORE = web.AppKey("store", IndexStore)
NETWORK: web.AppKey[Network | None] = web.AppKey("network")
NODE = web.AppKey("node", Node)
OPERATOR_TOKEN = web.AppKey("operator_token", str)  # api/operator.py
BLOCKLIST = web.AppKey("blocklist", Blocklist)
OPERATOR_STATE = web.AppKey("operator_state", OperatorState)  # api/operator_store.py
OPERATOR_ACTIONS = web.AppKey("operator_actions", OperatorActions)
OWN_LIST: web.AppKey[OwnList | None] = web.AppKey("own_list")  # None: not published
