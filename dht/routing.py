"""The routing table, with an exact nearest-neighbour search.

kademlia's ``find_neighbors`` walks buckets outward from the target's bucket and stops at
k nodes, which is not always the k nearest by XOR; it also skips a contact whose id equals
the target, so a lookup of a node's own id could never find that node. Tables hold at most
160·k contacts, so an exact scan is cheap.
"""

from __future__ import annotations

import heapq

from kademlia.node import Node
from kademlia.routing import RoutingTable


class RhizomeRoutingTable(RoutingTable):  # type: ignore[misc]
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
