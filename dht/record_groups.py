"""Records signed a group at a time: one signature over a hash tree of their bodies.

A publisher's term shards went out one signed record each, and a record's 64-byte
signature is random bytes no compression shrinks: 41% of the ~152 B a term cost a replica
on the wire (bench/publish_bench.py, 8 nodes). Records bound for the same holders are
signed together instead. The signer signs the root of a binary hash tree over the bodies
(``records.record_body``) of up to ``MAX_GROUP`` records; a holder is sent the bodies and
the one signature, works out each record's path itself, and keeps and serves each record
alone, provable by anyone who has it::

    "RZP1" | index u8 | depth u8 | path (depth x 32) | signature (64) | body

The verifier hashes the body as leaf ``index``, walks the path up to the root, and checks
the signature over ``GROUP_DOMAIN | depth | root`` with the key the body names, so one
record verifies without its group. Leaves and inner nodes are hashed apart (a 0 or a 1
byte first): an inner node never passes for a record. A tree is as deep as its group
needs (a group of one has no path, its signature over its own leaf), the missing leaves
of its last level 32 zero bytes, which no body hashes to. BLAKE2b-256, as ``verified``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

from .errors import InvalidRecord, RecordTooLarge
from .identity import SIGNATURE_BYTES, Identity, verify
from .records import Record, check_window, decode_body

MAGIC = b"RZP1"
GROUP_DOMAIN = b"rhizome record group/1\x00"  # no other signed message of ours starts so
DIGEST_BYTES = 32
MAX_DEPTH = 8  # 256 records a signature: far above what a signer needs (index is a u8)
MAX_GROUP = 1 << MAX_DEPTH
_HEAD = struct.Struct(">4sBB")  # magic, index, depth
_EMPTY = bytes(DIGEST_BYTES)
PROOF_BYTES = _HEAD.size + MAX_DEPTH * DIGEST_BYTES + SIGNATURE_BYTES  # at most, a record


def _leaf(body: bytes) -> bytes:
    return hashlib.blake2b(b"\x00" + body, digest_size=DIGEST_BYTES).digest()


def _inner(left: bytes, right: bytes) -> bytes:
    return hashlib.blake2b(b"\x01" + left + right, digest_size=DIGEST_BYTES).digest()


def _levels(bodies: Sequence[bytes]) -> list[list[bytes]]:
    """The tree bottom up: the leaves (padded to a power of two), then each level above."""
    if not 0 < len(bodies) <= MAX_GROUP:
        raise ValueError(f"a group holds 1..{MAX_GROUP} records, not {len(bodies)}")
    depth = (len(bodies) - 1).bit_length()
    level = [_leaf(b) for b in bodies] + [_EMPTY] * ((1 << depth) - len(bodies))
    levels = [level]
    while len(level) > 1:
        level = [_inner(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


def _signed_message(depth: int, root: bytes) -> bytes:
    return GROUP_DOMAIN + bytes((depth,)) + root


def sign_group(identity: Identity, bodies: Sequence[bytes]) -> bytes:
    """The one signature of ``identity`` over a group of record bodies (1..MAX_GROUP)."""
    levels = _levels(bodies)
    return identity.sign(_signed_message(len(levels) - 1, levels[-1][0]))


def prove_group(bodies: Sequence[bytes], signature: bytes) -> list[bytes]:
    """Each body of a signed group as a record provable alone (the layout above), in order.
    Nothing is verified here: a wrong signature makes records that fail their readers."""
    levels = _levels(bodies)
    depth = len(levels) - 1
    proven = []
    for index, body in enumerate(bodies):
        path = b"".join(levels[d][(index >> d) ^ 1] for d in range(depth))
        proven.append(_HEAD.pack(MAGIC, index, depth) + path + signature + body)
    return proven


def is_proven(data: bytes) -> bool:
    """Whether ``data`` has this module's layout (rather than a singly signed record's)."""
    return data[: len(MAGIC)] == MAGIC


def _parts(data: bytes) -> tuple[Record, int, bytes, bytes]:
    """The record, its index, its path and its body; InvalidRecord if the layout is wrong."""
    if len(data) < _HEAD.size + SIGNATURE_BYTES:
        raise InvalidRecord(f"truncated record ({len(data)} bytes)")
    magic, index, depth = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise InvalidRecord("not a grouped record (bad magic)")
    if depth > MAX_DEPTH or index >= 1 << depth:
        raise InvalidRecord("grouped record with an impossible place in its tree")
    path_end = _HEAD.size + depth * DIGEST_BYTES
    body = bytes(data[path_end + SIGNATURE_BYTES :])
    signature = bytes(data[path_end : path_end + SIGNATURE_BYTES])
    if len(signature) != SIGNATURE_BYTES:
        raise InvalidRecord("truncated record (no room for its signature)")
    return decode_body(body, signature), index, bytes(data[_HEAD.size : path_end]), body


def decode_proven(data: bytes) -> Record:
    """Parse the layout only (no signature or time check); InvalidRecord if it does not fit.
    The record's ``signature`` is its group's."""
    return _parts(data)[0]


def group_message(data: bytes, *, max_size: int) -> tuple[Record, bytes]:
    """Decode ``data`` and walk its path: the record, and the message its signature must
    sign (its group's root), which every record of the group shares. Nothing verified;
    raises RecordTooLarge or InvalidRecord."""
    if len(data) > max_size:
        raise RecordTooLarge(f"record of {len(data)} bytes exceeds {max_size}")
    record, index, path, body = _parts(data)
    node = _leaf(body)
    for d in range(len(path) // DIGEST_BYTES):
        sibling = path[d * DIGEST_BYTES : (d + 1) * DIGEST_BYTES]
        node = _inner(sibling, node) if index >> d & 1 else _inner(node, sibling)
    return record, _signed_message(len(path) // DIGEST_BYTES, node)


def verify_proven(data: bytes, *, now: float, max_size: int) -> Record:
    """Decode ``data`` and check size, its path to a root its publisher signed, and its
    validity window at ``now``. Raises RecordTooLarge, RecordExpired or InvalidRecord."""
    record, message = group_message(data, max_size=max_size)
    if not verify(record.publisher, message, record.signature):
        raise InvalidRecord("bad record signature")
    check_window(record, now)
    return record
