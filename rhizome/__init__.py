"""Rhizome, installed under one import name.

The repository keeps one top-level folder per package (``crawler/``, ``index/``, ``dht/``,
``federation/``, ``api/``); pyproject.toml maps them to ``rhizome.crawler`` … ``rhizome.api``
so an installed node never puts modules named ``api`` or ``index`` into site-packages.
"""

from __future__ import annotations

from rhizome.api.version import VERSION as __version__

__all__ = ["__version__"]
