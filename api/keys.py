"""Typed application state."""

from __future__ import annotations

from aiohttp import web

from rhizome.federation import Network
from rhizome.index import IndexStore

from .config import NodeConfig
from .node import Node

CONFIG = web.AppKey("config", NodeConfig)
HTTP_URL = web.AppKey("http_url", str)
STORE = web.AppKey("store", IndexStore)
NETWORK: web.AppKey[Network | None] = web.AppKey("network")
NODE = web.AppKey("node", Node)
OPERATOR_TOKEN = web.AppKey("operator_token", str)  # api/operator.py
