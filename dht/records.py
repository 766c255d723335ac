"""Signed records: a fixed binary layout, an Ed25519 signature, a validity window.

Layout (big-endian; the signature covers every byte before it)::

    magic "RZR1" | kind_len u8 | key_len u16 | kind (UTF-8) | key
    | publisher public key (32) | issued_at f64 | expires_at f64 | payload_len u32 | payload
    | signature (64)

The magic doubles as domain separation: a signature made for a record can never be
replayed as some other signed message of ours (contact hellos, shards). Everything before
the signature is the record's *body*; ``record_groups`` signs many bodies at once.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from .errors import InvalidRecord, RecordExpired, RecordTooLarge
from .identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Identity, node_id_for, verify

MAGIC = b"RZR1"
MAX_KIND_BYTES = 64
MAX_KEY_BYTES = 1024
MAX_CLOCK_SKEW = 300.0  # seconds a record may claim to be issued ahead of our clock

_HEAD = struct.Struct(">4sBH")  # magic, kind_len, key_len
_BODY = struct.Struct(f">{PUBLIC_KEY_BYTES}sddI")  # publisher, issued_at, expires_at, len
MIN_RECORD_BYTES = _HEAD.size + 1 + _BODY.size + SIGNATURE_BYTES


@dataclass(frozen=True, slots=True)
class Record:
    kind: str
    key: bytes
    publisher: bytes  # Ed25519 public key
    issued_at: float  # unix time
    expires_at: float
    payload: bytes
    signature: bytes

    @property
    def publisher_id(self) -> bytes:
        """The node id of the publisher (sha1 of its public key)."""
        return node_id_for(self.publisher)


def _check_fields(kind: bytes, key: bytes, issued_at: float, expires_at: float) -> None:
    if not 0 < len(kind) <= MAX_KIND_BYTES:
        raise InvalidRecord(f"kind must be 1..{MAX_KIND_BYTES} bytes, got {len(kind)}")
    if len(key) > MAX_KEY_BYTES:
        raise InvalidRecord(f"key must be at most {MAX_KEY_BYTES} bytes, got {len(key)}")
    if not (math.isfinite(issued_at) and math.isfinite(expires_at)):
        raise InvalidRecord("timestamps must be finite")
    if expires_at <= issued_at:
        raise InvalidRecord("record expires before it is issued")


def record_body(
    *, kind: str, key: bytes, publisher: bytes, issued_at: float, expires_at: float, payload: bytes
) -> bytes:
    """A record's body: the layout above up to its signature (what a signature covers)."""
    kind_bytes = kind.encode("utf-8")
    _check_fields(kind_bytes, key, issued_at, expires_at)
    return b"".join(
        (
            _HEAD.pack(MAGIC, len(kind_bytes), len(key)),
            kind_bytes,
            key,
            _BODY.pack(publisher, issued_at, expires_at, len(payload)),
            payload,
        )
    )


def sign_record(
    identity: Identity,
    *,
    kind: str,
    key: bytes,
    payload: bytes,
    issued_at: float,
    expires_at: float,
) -> bytes:
    """Encode and sign a record as ``identity``; the result is what goes on the wire."""
    signed = record_body(
        kind=kind,
        key=key,
        publisher=identity.public_key,
        issued_at=issued_at,
        expires_at=expires_at,
        payload=payload,
    )
    return signed + identity.sign(signed)


def decode_record(data: bytes) -> Record:
    """Parse the layout only (no signature or time check); InvalidRecord if it does not fit."""
    if len(data) < MIN_RECORD_BYTES:
        raise InvalidRecord(f"truncated record ({len(data)} bytes)")
    end = len(data) - SIGNATURE_BYTES
    return decode_body(data[:end], bytes(data[end:]))


def decode_body(body: bytes, signature: bytes) -> Record:
    """A record's body parsed (no signature or time check), with the ``signature`` that
    proves it (its own, or its group's); InvalidRecord if the body does not fit."""
    if len(body) < MIN_RECORD_BYTES - SIGNATURE_BYTES:
        raise InvalidRecord(f"truncated record ({len(body)} bytes)")
    magic, kind_len, key_len = _HEAD.unpack_from(body, 0)
    if magic != MAGIC:
        raise InvalidRecord("not a record (bad magic)")
    offset = _HEAD.size
    if offset + kind_len + key_len + _BODY.size > len(body):
        raise InvalidRecord("truncated record (header lengths exceed the data)")
    kind_bytes = body[offset : offset + kind_len]
    offset += kind_len
    key = bytes(body[offset : offset + key_len])
    offset += key_len
    publisher, issued_at, expires_at, payload_len = _BODY.unpack_from(body, offset)
    offset += _BODY.size
    if offset + payload_len != len(body):
        raise InvalidRecord("record length does not match its payload length")
    payload = bytes(body[offset:])
    try:
        kind = kind_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRecord("record kind is not UTF-8") from exc
    _check_fields(kind_bytes, key, issued_at, expires_at)
    return Record(kind, key, bytes(publisher), issued_at, expires_at, payload, signature)


def verify_record(data: bytes, *, now: float, max_size: int) -> Record:
    """Decode ``data`` and check size, signature and validity window at time ``now``.

    Raises RecordTooLarge, RecordExpired or InvalidRecord (forged, truncated, garbage).
    """
    # The size check comes first so an oversized blob costs nothing to refuse.
    if len(data) > max_size:
        raise RecordTooLarge(f"record of {len(data)} bytes exceeds {max_size}")
    record = decode_record(data)
    signed_len = len(data) - SIGNATURE_BYTES
    if not verify(record.publisher, bytes(data[:signed_len]), record.signature):
        raise InvalidRecord("bad record signature")
    check_window(record, now)
    return record


def check_window(record: Record, now: float) -> None:
    """RecordExpired unless ``record`` is valid at time ``now`` (clock skew allowed)."""
    if record.issued_at > now + MAX_CLOCK_SKEW:
        raise RecordExpired(f"record issued {record.issued_at - now:.0f} s in the future")
    if record.expires_at <= now:
        raise RecordExpired(f"record expired {now - record.expires_at:.0f} s ago")
