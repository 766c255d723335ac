"""Typed application state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .config import NodeConfig

if TYPE_CHECKING:
    from .node import Node

CONFIG = web.AppKey("config", NodeConfig)
NODE: web.AppKey[Node] = web.AppKey("node")
