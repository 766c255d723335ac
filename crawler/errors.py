"""The crawler's exception tree.

CrawlerError
├── FetchError                 a URL could not be fetched; the frontier records the reason
│   ├── BlockedAddress         SSRF guard: the connected address is private/loopback/...
│   ├── UnsupportedScheme      only http and https are crawled
│   ├── TooLarge               body or decoded body over its cap
│   ├── TooManyRedirects
│   ├── RobotsDisallowed       a redirect hop led somewhere robots.txt forbids
│   └── HTTPStatusError        a non-2xx final status (kept for retry decisions)
├── FrontierError              the SQLite frontier is unusable (e.g. disk full)
└── BadRule                    a blocklist rule that cannot be used (the message says why)
"""

from __future__ import annotations


class CrawlerError(Exception):
    """Base of every error raised by the crawler package."""


class FetchError(CrawlerError):
    """A URL could not be fetched. ``retryable`` tells the frontier whether to try again."""

    retryable = True


class BlockedAddress(FetchError):
    retryable = False


class UnsupportedScheme(FetchError):
    retryable = False


class TooLarge(FetchError):
    retryable = False


class TooManyRedirects(FetchError):
    retryable = False


class RobotsDisallowed(FetchError):
    retryable = False


class HTTPStatusError(FetchError):
    def __init__(self, status: int, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after
        # 429 and 5xx are the server asking us to come back later; other 4xx are final.
        self.retryable = status == 429 or status >= 500


class FrontierError(CrawlerError):
    """The frontier database failed (for example the disk is full)."""


class BadRule(CrawlerError, ValueError):
    """A blocklist rule (``crawler.blocklist.parse_rule``) that cannot be used."""
