"""Rhizome, installed under one import name.

The repository keeps one top-level folder per package (``crawler/``, ``index/``, ``dht/``,
``federation/``, ``api/``); pyproject.toml maps them to ``rhizome.crawler`` … ``rhizome.api``
so an installed node never puts modules named ``api`` or ``index`` into site-packages.

``__version__`` is read on first use: importing ``rhizome.api`` here made every parse
worker (``import rhizome.crawler.workers``) import the whole node, tantivy, numpy and the
DHT included, 0.55 s and ~68 MB before it parsed a page.
"""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from rhizome.api.version import VERSION  # lazy: see the docstring

        return VERSION
    raise AttributeError(f"module 'rhizome' has no attribute {name!r}")
