"""Rhizome's network layer: Kademlia identity and routing, term shards, host slices."""
