"""The network layer's exception tree.

DhtError
├── IdentityError          node.key cannot be read, created or parsed
├── InvalidRecord          bytes that are not a valid signed record or zstd frame:
│   │                      truncated, garbage, forged signature, wrong key
│   ├── RecordTooLarge     over the caller's size cap (raw bytes or decompressed output)
│   └── RecordExpired      outside its validity window (expired, or issued in the future)
├── InvalidContact         a hello whose node id, key or signature does not match
├── MalformedMessage       a datagram or RPC argument that does not parse (the protocol
│                          drops and counts these; they never escape it)
└── DhtNotRunning          the node was used before start() or after stop()
"""

from __future__ import annotations


class DhtError(Exception):
    """Base of every error raised by the dht package."""


class IdentityError(DhtError):
    """The node's key file is unreadable, malformed or cannot be created."""


class InvalidRecord(DhtError, ValueError):
    """The bytes are not a record (or frame) we accept; the message says why."""


class RecordTooLarge(InvalidRecord):
    """The record, or what a frame decompresses to, exceeds the size cap."""


class RecordExpired(InvalidRecord):
    """The record is past its expiry, or claims to be issued in the future."""


class InvalidContact(DhtError, ValueError):
    """A contact record does not prove that its sender owns the node id it claims."""


class MalformedMessage(DhtError, ValueError):
    """A datagram or one of its RPC arguments is not what the protocol expects."""


class DhtNotRunning(DhtError, RuntimeError):
    """The DHT node is not started (or already stopped)."""
