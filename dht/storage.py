"""No values: the storage kademlia's Server and protocol are given, which holds nothing.

Rhizome moves shards over HTTP (federation/) and never used kademlia's ``store`` and
``find_value``; serving them let a spoofed source get an 8 KB value back for a 78-byte
request (issue #12). With this storage the library's republish and hand-over find
nothing to send, and a write is a bug, not a silent no-op.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kademlia.storage import IStorage

NO_VALUES = "Rhizome's DHT stores no values (store/find_value are not served): use HTTP"


async def refuse_values(*args: Any) -> Any:
    """kademlia's ``Server.get``, ``set`` and ``set_digest``: refused, with the reason."""
    raise NotImplementedError(NO_VALUES)


class NoValues(IStorage):  # type: ignore[misc]
    """An always-empty ``IStorage``."""

    def __setitem__(self, key: bytes, value: Any) -> None:
        raise NotImplementedError(NO_VALUES)

    def __getitem__(self, key: bytes) -> Any:
        raise KeyError(key)

    def get(self, key: bytes, default: Any = None) -> Any:
        return default

    def iter_older_than(self, seconds_old: float) -> Iterator[tuple[bytes, Any]]:
        return iter(())

    def __iter__(self) -> Iterator[tuple[bytes, Any]]:
        return iter(())
