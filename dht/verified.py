"""Signatures checked once: records remembered by the digest of their bytes.

A querier reads each term from two holders, which serve the same publisher's record byte
for byte, and the same common words come back query after query until their publisher
re-sends them. The Ed25519 check is most of a record's cost (~70 us of ~120 us with its
shard parsed); a record whose exact bytes verified before is only decoded and its
validity window checked again. The digest is BLAKE2b-256 over every byte, signature
included, so a record differing in any byte is checked in full. Records signed alone
(``records``) and in groups (``record_groups``) are told apart by their magic.

A grouped record's signature is over its group's root, which up to 256 of its publisher's
records share: a root (with its key and signature) that verified once is remembered too,
so a record of the group not seen before costs its path's hashes, not an Ed25519 check.
The remembered key is a digest of the public key, the signature and the signed message
itself, so it stands only for that exact signature having verified.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from .errors import InvalidRecord, RecordTooLarge
from .identity import verify
from .record_groups import decode_proven, group_message, is_proven
from .records import Record, check_window, decode_record, verify_record

# Digests remembered: ~150 B each, so ~2.5 MB at most. A query reads ~10 terms x a few
# publishers x 2 holders; 16k records are the last few hundred queries' distinct terms.
MAX_REMEMBERED = 16_384
DIGEST_BYTES = 32


class VerifiedRecords:
    """``verify_record`` with a bounded memory of records already verified. Safe to use
    from several threads at once (queries verify off the event loop)."""

    def __init__(self, capacity: int = MAX_REMEMBERED) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._roots: OrderedDict[bytes, None] = OrderedDict()  # of groups, verified
        self._lock = threading.Lock()
        self.checked = 0  # signatures verified
        self.remembered = 0  # records whose signature was known

    def verify(self, data: bytes, *, now: float, max_size: int) -> Record:
        """As ``verify_record`` (or ``verify_proven``, for a grouped record): raises
        RecordTooLarge, RecordExpired or InvalidRecord."""
        if len(data) > max_size:
            raise RecordTooLarge(f"record of {len(data)} bytes exceeds {max_size}")
        digest = hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()
        with self._lock:
            known = digest in self._seen
            if known:
                self._seen.move_to_end(digest)
                self.remembered += 1
        grouped = is_proven(data)
        if known:
            record = decode_proven(data) if grouped else decode_record(data)
            check_window(record, now)
            return record
        if grouped:
            record = self._grouped(data, max_size)
            check_window(record, now)
        else:
            record = verify_record(data, now=now, max_size=max_size)
        with self._lock:
            self.checked += 0 if grouped else 1
            self._seen[digest] = None
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
        return record

    def _grouped(self, data: bytes, max_size: int) -> Record:
        """A grouped record whose path leads to a root its publisher signed (its window
        is the caller's to check)."""
        record, message = group_message(data, max_size=max_size)
        root = hashlib.blake2b(
            record.publisher + record.signature + message, digest_size=DIGEST_BYTES
        ).digest()
        with self._lock:
            known = root in self._roots
            if known:
                self._roots.move_to_end(root)
                self.remembered += 1
        if known:
            return record
        if not verify(record.publisher, message, record.signature):
            raise InvalidRecord("bad record signature")
        with self._lock:
            self.checked += 1
            self._roots[root] = None
            while len(self._roots) > self.capacity:
                self._roots.popitem(last=False)
        return record
