"""Rhizome's crawler: frontier, politeness, robots, safe fetching and HTML parsing.

Imports nothing from the other Rhizome packages; the node wires it to the index through
the ``PageSink`` protocol and to the DHT through ``HostRouter``.
"""

from .blocklist import Block, Blocklist, parse_rule
from .config import CrawlerConfig
from .engine import Crawler, CrawlStats, HostRouter, PageSink
from .errors import BadRule, BlockedAddress, CrawlerError, FetchError, FrontierError
from .frontier import FrontierCounts
from .parse import Link, ParsedPage, parse_html
from .urls import canonicalize, host_of

__all__ = [
    "BadRule",
    "Block",
    "BlockedAddress",
    "Blocklist",
    "CrawlStats",
    "Crawler",
    "CrawlerConfig",
    "CrawlerError",
    "FetchError",
    "FrontierCounts",
    "FrontierError",
    "HostRouter",
    "Link",
    "PageSink",
    "ParsedPage",
    "canonicalize",
    "host_of",
    "parse_html",
    "parse_rule",
]
