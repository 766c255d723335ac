"""The index's exception tree.

IndexError_
├── QuerySyntaxError     the user's query cannot be parsed (HTTP 400)
└── IndexUnavailable     the index cannot be opened or written (disk full, corrupt)
"""

from __future__ import annotations


class IndexError_(Exception):
    """Base of every error raised by the index package."""


class QuerySyntaxError(IndexError_, ValueError):
    """The query text is not valid; the message says why, for the user."""


class IndexUnavailable(IndexError_):
    """The index could not be opened, written or committed."""
