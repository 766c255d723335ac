"""Rhizome's node: the composition root, JSON API, web UI and command line."""

from .app import create_app
from .config import ConfigError, NodeConfig, load_config

__all__ = ["ConfigError", "NodeConfig", "create_app", "load_config"]
