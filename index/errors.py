"""The index's exception tree.

IndexError_
├── QuerySyntaxError     a query the index cannot run (HTTP 400); never raised for the
│                        text of a query: parse_user_query reads any text (issue #11)
└── IndexUnavailable     the index cannot be opened or written (disk full, corrupt)
"""

from __future__ import annotations


class IndexError_(Exception):
    """Base of every error raised by the index package."""


class QuerySyntaxError(IndexError_, ValueError):
    """A query the index refuses to run; the message says why, for the user. The query
    parser never raises it: whatever the text, it searches for the words it can find."""


class IndexUnavailable(IndexError_):
    """The index could not be opened, written or committed."""
