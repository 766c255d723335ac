"""Rhizome's network layer: Kademlia identity and routing, term shards, host slices."""

from .compression import compress, decompress
from .contacts import Peer
from .errors import (
    DhtError,
    DhtNotRunning,
    IdentityError,
    InvalidContact,
    InvalidRecord,
    MalformedMessage,
    RecordExpired,
    RecordTooLarge,
)
from .identity import Identity, node_id_for, verify
from .kademlia_node import DhtNode
from .records import Record, sign_record, verify_record
from .settings import DhtSettings
from .verified import VerifiedRecords

__all__ = [
    "DhtError",
    "DhtNode",
    "DhtNotRunning",
    "DhtSettings",
    "Identity",
    "IdentityError",
    "InvalidContact",
    "InvalidRecord",
    "MalformedMessage",
    "Peer",
    "Record",
    "RecordExpired",
    "RecordTooLarge",
    "VerifiedRecords",
    "compress",
    "decompress",
    "node_id_for",
    "sign_record",
    "verify",
    "verify_record",
]
