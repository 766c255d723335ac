"""Signatures checked once: records remembered by the digest of their bytes.

A querier reads each term from two holders, which serve the same publisher's record byte
for byte, and the same common words come back query after query until their publisher
re-sends them. The Ed25519 check is most of a record's cost (~70 us of ~120 us with its
shard parsed); a record whose exact bytes verified before is only decoded and its
validity window checked again. The digest is BLAKE2b-256 over every byte, signature
included, so a record differing in any byte is checked in full. Records signed alone
(``records``) and in groups (``record_groups``) are told apart by their magic.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from .errors import RecordTooLarge
from .record_groups import decode_proven, is_proven, verify_proven
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
        check = verify_proven if grouped else verify_record
        record = check(data, now=now, max_size=max_size)
        with self._lock:
            self.checked += 1
            self._seen[digest] = None
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
        return record
