"""Kademlia value storage with a bound on how many values a node keeps."""

from __future__ import annotations

from typing import Any

from kademlia.storage import ForgetfulStorage

MAX_STORED_VALUES = 10_000  # peers can push values at us; this bounds the memory they cost
VALUE_TTL = 7 * 24 * 3600  # kademlia's default: a week


class BoundedStorage(ForgetfulStorage):  # type: ignore[misc]
    """ForgetfulStorage that drops its oldest values beyond ``max_values``."""

    def __init__(self, ttl: int = VALUE_TTL, max_values: int = MAX_STORED_VALUES) -> None:
        super().__init__(ttl)
        self.max_values = max_values

    def __setitem__(self, key: bytes, value: Any) -> None:
        super().__setitem__(key, value)
        while len(self.data) > self.max_values:
            self.data.popitem(last=False)
