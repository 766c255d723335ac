"""A bounded map for state keyed by crawled input (hosts, origins, domains).

Every such map is an LRU of a stated size: a crawl that meets millions of hosts (a link
farm, wildcard DNS) must not grow the node's memory with them. What is dropped is state
that can be had again: a count re-read from SQLite, a robots.txt fetched again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    """``get`` and ``put`` make a key the newest; past ``capacity`` the oldest goes."""

    __slots__ = ("_items", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._items.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def values(self) -> Iterator[V]:
        """The values, oldest first, without making any of them newer."""
        return iter(self._items.values())
