"""The routing table: an exact nearest-neighbour search and address-range diversity.

kademlia's ``find_neighbors`` walks buckets outward from the target's bucket and stops at
k nodes, which is not always the k nearest by XOR; it also skips a contact whose id equals
the target, so a lookup of a node's own id could never find that node. Tables hold at most
160·k contacts, so an exact scan is cheap.

Diversity: node ids are derived from keys, but keys are free, so one machine can run many
ids. To keep one address range (an IPv4 /24 or IPv6 /64 by default) from filling a bucket,
a *full* bucket that holds more than ``range_cap`` contacts of one range gives up one of
them (its least recently seen) to a newcomer from a range still under the cap. The cap is
never applied while a bucket has room: it refuses nobody, it only decides who yields when
someone must. So small networks that all live on 127.0.0.1 (tests, the demo) behave as
plain Kademlia, and an attacker who joined first cannot keep later honest nodes out: once
enough of them arrive, the attacker's range holds at most ``range_cap`` slots per bucket.
A contact that leaves is replaced from the replacement list by the most recently seen
contact whose range is under the cap, if there is one.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from typing import Any

from kademlia.node import Node
from kademlia.routing import KBucket, RoutingTable

from .quotas import address_range
from .settings import DEFAULT_IPV4_RANGE, DEFAULT_IPV6_RANGE, DEFAULT_RANGE_CAP

RangeOf = Callable[[Node], str]


class DiverseBucket(KBucket):  # type: ignore[misc]
    def __init__(
        self, lower: int, upper: int, ksize: int, *, range_of: RangeOf, range_cap: int
    ) -> None:
        super().__init__(lower, upper, ksize)
        self.range_of = range_of
        self.range_cap = range_cap

    def split(self) -> tuple[DiverseBucket, DiverseBucket]:
        midpoint = (self.range[0] + self.range[1]) // 2
        kw: dict[str, Any] = {"range_of": self.range_of, "range_cap": self.range_cap}
        one = DiverseBucket(self.range[0], midpoint, self.ksize, **kw)
        two = DiverseBucket(midpoint + 1, self.range[1], self.ksize, **kw)
        for node in [*self.nodes.values(), *self.replacement_nodes.values()]:
            (one if node.long_id <= midpoint else two).add_node(node)
        return one, two

    def ranges(self) -> Counter[str]:
        return Counter(self.range_of(n) for n in self.nodes.values())

    def crowded_contact(self, newcomer: Node) -> Node | None:
        """The contact that yields its slot to ``newcomer`` in this full bucket, if any."""
        counts = self.ranges()
        if counts[self.range_of(newcomer)] >= self.range_cap:
            return None
        crowded, count = counts.most_common(1)[0]
        if count <= self.range_cap:
            return None
        # The least recently seen of the crowded range (the OrderedDict's oldest entry).
        return next(n for n in self.nodes.values() if self.range_of(n) == crowded)

    def remove_node(self, node: Node) -> None:
        self.replacement_nodes.pop(node.id, None)
        if self.nodes.pop(node.id, None) is None or not self.replacement_nodes:
            return
        counts = self.ranges()
        candidates = list(reversed(self.replacement_nodes.values()))
        chosen = next(
            (n for n in candidates if counts[self.range_of(n)] < self.range_cap), candidates[0]
        )
        del self.replacement_nodes[chosen.id]
        self.nodes[chosen.id] = chosen

    def displace(self, old: Node, new: Node) -> None:
        """Put ``new`` in ``old``'s slot; ``old`` waits in the replacement list."""
        del self.nodes[old.id]
        self.nodes[new.id] = new
        self.replacement_nodes.pop(new.id, None)
        self.replacement_nodes[old.id] = old
        while len(self.replacement_nodes) > self.max_replacement_nodes:
            self.replacement_nodes.popitem(last=False)


class RhizomeRoutingTable(RoutingTable):  # type: ignore[misc]
    def __init__(
        self,
        protocol: Any,
        ksize: int,
        node: Node,
        *,
        range_cap: int = DEFAULT_RANGE_CAP,
        ipv4_range: int = DEFAULT_IPV4_RANGE,
        ipv6_range: int = DEFAULT_IPV6_RANGE,
    ) -> None:
        self.range_cap = range_cap
        self.ipv4_range = ipv4_range
        self.ipv6_range = ipv6_range
        self.displaced = 0  # contacts that yielded their slot to a less crowded range
        super().__init__(protocol, ksize, node)

    def range_of(self, node: Node) -> str:
        return address_range(str(node.ip), self.ipv4_range, self.ipv6_range)

    def flush(self) -> None:
        self.buckets = [
            DiverseBucket(0, 2**160, self.ksize, range_of=self.range_of, range_cap=self.range_cap)
        ]

    def add_contact(self, node: Node) -> None:
        index = self.get_bucket_for(node)
        bucket: DiverseBucket = self.buckets[index]
        if bucket.add_node(node):
            return
        # Full. Per section 4.2 of the paper, split if the bucket has our id in its range
        # or its depth is not congruent to 0 mod 5.
        if bucket.has_in_range(self.node) or bucket.depth() % 5 != 0:
            self.split_bucket(index)
            self.add_contact(node)
            return
        crowded = bucket.crowded_contact(node)
        if crowded is not None:
            bucket.displace(crowded, node)
            self.displaced += 1
            return
        # The newcomer waits among the replacements (add_node put it there); the paper
        # asks the least recently seen contact whether it is still alive.
        self.protocol.probe(bucket.head())

    def find_neighbors(
        self, node: Node, k: int | None = None, exclude: Node | None = None
    ) -> list[Node]:
        count = k or self.ksize
        # A lookup near a bucket counts as activity there (refresh skips such buckets).
        self.buckets[self.get_bucket_for(node)].touch_last_updated()
        candidates = (
            contact
            for contact in self.contacts()
            if exclude is None or not contact.same_home_as(exclude)
        )
        return heapq.nsmallest(count, candidates, key=node.distance_to)

    def contacts(self) -> list[Node]:
        """Every node in the table's buckets (not the replacement lists)."""
        return [contact for bucket in self.buckets for contact in bucket.get_nodes()]

    def find_contact(self, node_id: bytes) -> Node | None:
        """The contact with this id, if the table has it."""
        bucket = self.buckets[self.get_bucket_for(Node(node_id))]
        found: Node | None = bucket[node_id]
        return found
