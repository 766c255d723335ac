"""Identity keys, signed records and bounded zstd: what the DHT accepts and what it refuses."""

from __future__ import annotations

import hashlib
import io
import os
import random
import stat
import time
import tracemalloc
from pathlib import Path

import pytest
import zstandard

from rhizome.dht import (
    Identity,
    IdentityError,
    InvalidContact,
    InvalidRecord,
    RecordExpired,
    RecordTooLarge,
    VerifiedRecords,
    compress,
    decompress,
    node_id_for,
    sign_record,
    verify,
    verify_record,
)
from rhizome.dht.contacts import make_contact_record, verify_contact
from rhizome.dht.records import MAX_CLOCK_SKEW

MiB = 1024 * 1024
NOW = 1_700_000_000.0


def make(identity: Identity, **overrides: object) -> bytes:
    fields: dict[str, object] = {
        "kind": "shard",
        "key": hashlib.sha1(b"term").digest(),
        "payload": b"postings" * 10,
        "issued_at": NOW,
        "expires_at": NOW + 3600,
    }
    fields.update(overrides)
    return sign_record(identity, **fields)  # type: ignore[arg-type]


# --- identity --------------------------------------------------------------------------


def test_key_is_created_0600_and_reloaded(tmp_path: Path) -> None:
    first = Identity.load_or_create(tmp_path)
    key_file = tmp_path / "node.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = Identity.load_or_create(tmp_path)
    assert again.node_id == first.node_id and again.public_key == first.public_key
    assert first.node_id == hashlib.sha1(first.public_key).digest() == node_id_for(first.public_key)
    assert len(first.node_id) == 20
    assert Identity.load_or_create(tmp_path / "other").node_id != first.node_id


def test_damaged_key_file_is_refused_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "node.key").write_bytes(b"short")
    with pytest.raises(IdentityError):
        Identity.load_or_create(tmp_path)
    assert (tmp_path / "node.key").read_bytes() == b"short"


def test_sign_and_verify() -> None:
    me, other = Identity.generate(), Identity.generate()
    sig = me.sign(b"hello")
    assert verify(me.public_key, b"hello", sig)
    assert not verify(me.public_key, b"hellO", sig)
    assert not verify(other.public_key, b"hello", sig)
    assert not verify(me.public_key, b"hello", sig[:-1])
    assert not verify(b"\x00" * 5, b"hello", sig)


# --- records ---------------------------------------------------------------------------


def test_record_round_trip() -> None:
    me = Identity.generate()
    data = make(me)
    record = verify_record(data, now=NOW + 1, max_size=4096)
    assert record.kind == "shard"
    assert record.key == hashlib.sha1(b"term").digest()
    assert record.publisher == me.public_key and record.publisher_id == me.node_id
    assert (record.issued_at, record.expires_at) == (NOW, NOW + 3600)
    assert record.payload == b"postings" * 10


def test_every_tampered_byte_is_refused() -> None:
    data = make(Identity.generate())
    for i in range(len(data)):
        tampered = bytearray(data)
        tampered[i] ^= 0x01
        with pytest.raises(InvalidRecord):
            verify_record(bytes(tampered), now=NOW + 1, max_size=4096)


def test_record_under_another_key_is_refused() -> None:
    me, other = Identity.generate(), Identity.generate()
    data = make(me)
    # Swap in the other publisher key: the signature no longer matches it.
    forged = data.replace(me.public_key, other.public_key)
    with pytest.raises(InvalidRecord, match="signature"):
        verify_record(forged, now=NOW + 1, max_size=4096)


def test_oversized_record_is_refused() -> None:
    data = make(Identity.generate(), payload=b"x" * 5000)
    with pytest.raises(RecordTooLarge):
        verify_record(data, now=NOW + 1, max_size=4096)
    verify_record(data, now=NOW + 1, max_size=len(data))


def test_expired_and_future_records_are_refused() -> None:
    data = make(Identity.generate())
    with pytest.raises(RecordExpired):
        verify_record(data, now=NOW + 3600, max_size=4096)
    with pytest.raises(RecordExpired):
        verify_record(data, now=NOW - MAX_CLOCK_SKEW - 1, max_size=4096)
    verify_record(data, now=NOW - MAX_CLOCK_SKEW + 1, max_size=4096)  # within clock skew


def test_a_remembered_record_skips_only_its_signature_check() -> None:
    records = VerifiedRecords()
    data = make(Identity.generate())
    first = records.verify(data, now=NOW + 1, max_size=4096)
    again = records.verify(data, now=NOW + 2, max_size=4096)
    assert again == first and (records.checked, records.remembered) == (1, 1)
    # Any other byte is another digest: checked in full, and refused.
    for i in range(len(data)):
        tampered = bytearray(data)
        tampered[i] ^= 0x01
        with pytest.raises(InvalidRecord):
            records.verify(bytes(tampered), now=NOW + 1, max_size=4096)
    # Its validity window still holds, and its size limit.
    with pytest.raises(RecordExpired):
        records.verify(data, now=NOW + 3600, max_size=4096)
    with pytest.raises(RecordTooLarge):
        records.verify(data, now=NOW + 1, max_size=len(data) - 1)


def test_remembered_records_are_bounded() -> None:
    records = VerifiedRecords(capacity=3)
    me = Identity.generate()
    batch = [make(me, payload=bytes([i]) * 8) for i in range(5)]
    for data in batch:
        records.verify(data, now=NOW + 1, max_size=4096)
    records.verify(batch[0], now=NOW + 1, max_size=4096)  # forgotten: checked again
    records.verify(batch[4], now=NOW + 1, max_size=4096)  # still remembered
    assert (records.checked, records.remembered) == (6, 1)


def test_truncated_and_garbage_bytes_are_refused() -> None:
    data = make(Identity.generate())
    for n in range(len(data)):
        with pytest.raises(InvalidRecord):
            verify_record(data[:n], now=NOW + 1, max_size=4096)
    with pytest.raises(InvalidRecord):
        verify_record(data + b"\x00", now=NOW + 1, max_size=4096)
    rng = random.Random(7)
    for size in (0, 1, 50, 200, 1000):
        garbage = bytes(rng.getrandbits(8) for _ in range(size))
        with pytest.raises(InvalidRecord):
            verify_record(garbage, now=NOW + 1, max_size=4096)
        with pytest.raises(InvalidRecord):
            verify_record(b"RZR1" + garbage, now=NOW + 1, max_size=4096)


def test_nonsense_fields_cannot_be_signed() -> None:
    me = Identity.generate()
    with pytest.raises(InvalidRecord):
        make(me, expires_at=NOW - 1)
    with pytest.raises(InvalidRecord):
        make(me, kind="")
    with pytest.raises(InvalidRecord):
        make(me, issued_at=float("nan"))


# --- contact records -------------------------------------------------------------------


def test_contact_record_proves_the_node_id() -> None:
    me, other = Identity.generate(), Identity.generate()
    now = time.time()
    record = make_contact_record(me, "http://127.0.0.1:8080", now=now)
    contact = verify_contact(me.node_id, record, now=now)
    assert contact.http_url == "http://127.0.0.1:8080"
    assert contact.public_key == me.public_key
    with pytest.raises(InvalidContact):
        verify_contact(other.node_id, record, now=now)  # claims someone else's id
    with pytest.raises(InvalidContact):
        verify_contact(me.node_id, record[:-1] + bytes([record[-1] ^ 1]), now=now)
    shard = make(me, key=me.node_id, issued_at=now, expires_at=now + 60)
    with pytest.raises(InvalidContact, match="kind"):
        verify_contact(me.node_id, shard, now=now)
    with pytest.raises(InvalidContact):
        make_contact_record(me, "javascript:alert(1)", now=now)


# --- zstd ------------------------------------------------------------------------------


def test_compress_round_trip() -> None:
    data = os.urandom(1000) + b"a" * 100_000
    frame = compress(data)
    assert len(frame) < 5000
    assert decompress(frame, max_size=len(data)) == data
    with pytest.raises(RecordTooLarge):
        decompress(frame, max_size=len(data) - 1)


def _bomb(size: int, *, declare: bool) -> bytes:
    """A frame of ``size`` zero bytes, written in chunks so the test never holds it all."""
    sink = io.BytesIO()
    cctx = zstandard.ZstdCompressor(level=3, write_content_size=declare)
    with cctx.stream_writer(sink, size=size if declare else -1, closefd=False) as writer:
        chunk = bytes(MiB)
        for _ in range(size // MiB):
            writer.write(chunk)
    return bytes(sink.getvalue())


def test_zstd_bomb_declaring_200_mib_is_refused_without_allocating() -> None:
    bomb = _bomb(200 * MiB, declare=True)
    assert len(bomb) < 16 * 1024
    assert zstandard.get_frame_parameters(bomb).content_size == 200 * MiB
    tracemalloc.start()
    try:
        with pytest.raises(RecordTooLarge, match="declares"):
            decompress(bomb, max_size=1 * MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 * MiB


def test_zstd_bomb_without_declared_size_stops_at_the_cap() -> None:
    bomb = _bomb(64 * MiB, declare=False)
    tracemalloc.start()
    try:
        with pytest.raises(RecordTooLarge):
            decompress(bomb, max_size=1 * MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB


def test_zstd_garbage_is_refused() -> None:
    frame = compress(b"x" * 1000)
    for junk in (b"", b"\x00" * 10, b"not zstd", frame[:-3], frame[:-1], frame + b"\x00"):
        with pytest.raises(InvalidRecord):
            decompress(junk, max_size=MiB)
