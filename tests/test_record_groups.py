"""Records signed a group at a time (dht/record_groups.py) and the pushes that carry them:
each record proves itself alone, nothing in it can be changed, and a group costs one
signature on the wire."""

from __future__ import annotations

import time

import orjson
import pytest

from rhizome.dht import (
    Identity,
    InvalidRecord,
    RecordExpired,
    RecordTooLarge,
    VerifiedRecords,
    sign_record,
)
from rhizome.dht.record_groups import (
    DIGEST_BYTES,
    MAX_GROUP,
    decode_proven,
    prove_group,
    sign_group,
    verify_proven,
)
from rhizome.dht.records import record_body
from rhizome.federation.wire import (
    group_bodies,
    open_batch,
    shard_body,
    sign_batch,
    sign_push,
    verify_copies,
)
from rhizome.index import Posting, TermShard

NOW = 1_700_000_000.0
ME = Identity.generate()


def body(n: int, identity: Identity = ME, **overrides: object) -> bytes:
    fields: dict[str, object] = {
        "kind": "shard/5",
        "key": f"term{n}".encode(),
        "publisher": identity.public_key,
        "issued_at": NOW,
        "expires_at": NOW + 3600,
        "payload": f"postings of term {n}".encode() * 3,
    }
    fields.update(overrides)
    return record_body(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 16, 17])
def test_every_record_of_a_group_verifies_alone(size: int) -> None:
    bodies = [body(n) for n in range(size)]
    proven = prove_group(bodies, sign_group(ME, bodies))
    for n, data in enumerate(proven):
        record = verify_proven(data, now=NOW + 1, max_size=4096)
        assert record.key == f"term{n}".encode() and record.publisher_id == ME.node_id


def test_every_tampered_byte_of_a_grouped_record_is_refused() -> None:
    bodies = [body(n) for n in range(5)]
    data = prove_group(bodies, sign_group(ME, bodies))[2]
    for i in range(len(data)):
        tampered = bytearray(data)
        tampered[i] ^= 0x01
        with pytest.raises(InvalidRecord):
            verify_proven(bytes(tampered), now=NOW + 1, max_size=4096)


def test_a_record_cannot_borrow_another_groups_signature_or_place() -> None:
    first = [body(n) for n in range(4)]
    second = [body(n) for n in range(4, 8)]
    a = prove_group(first, sign_group(ME, first))
    b = prove_group(second, sign_group(ME, second))
    # The second group's path and signature in front of the first group's body.
    proof_len = len(b[0]) - len(second[0])
    spliced = b[0][:proof_len] + first[0]
    with pytest.raises(InvalidRecord, match="signature"):
        verify_proven(spliced, now=NOW + 1, max_size=4096)
    # A record moved to its neighbour's place in its own tree.
    moved = bytearray(a[0])
    moved[4] = 1
    with pytest.raises(InvalidRecord):
        verify_proven(bytes(moved), now=NOW + 1, max_size=4096)


def test_a_group_signed_by_one_key_proves_nothing_for_another() -> None:
    other = Identity.generate()
    bodies = [body(0, other), body(1, other)]
    forged = prove_group(bodies, sign_group(ME, bodies))  # the bodies name the other key
    with pytest.raises(InvalidRecord, match="signature"):
        verify_proven(forged[0], now=NOW + 1, max_size=4096)


def test_grouped_records_keep_size_and_time_limits() -> None:
    bodies = [body(0), body(1, payload=b"x" * 5000)]
    small, large = prove_group(bodies, sign_group(ME, bodies))
    with pytest.raises(RecordTooLarge):
        verify_proven(large, now=NOW + 1, max_size=4096)
    with pytest.raises(RecordExpired):
        verify_proven(small, now=NOW + 3600, max_size=4096)
    assert decode_proven(small).key == b"term0"  # parsing alone checks no time


def test_groups_are_bounded_and_garbage_is_refused() -> None:
    with pytest.raises(ValueError):
        sign_group(ME, [body(0)] * (MAX_GROUP + 1))
    with pytest.raises(ValueError):
        sign_group(ME, [])
    for garbage in (b"", b"RZP1", b"RZP1\x00\x09" + bytes(400), b"RZP1\x05\x01" + bytes(200)):
        with pytest.raises(InvalidRecord):
            verify_proven(garbage, now=NOW + 1, max_size=4096)


def test_two_holders_of_one_group_cost_one_signature_check() -> None:
    """The publisher signs a group once for all of a term's holders, so their copies are
    the same bytes and a querier verifies one."""
    bodies = [body(n) for n in range(3)]
    signature = sign_group(ME, bodies)
    at_first, at_second = prove_group(bodies, signature), prove_group(bodies, signature)
    assert at_first == at_second
    verifier = VerifiedRecords()
    for data in (*at_first, *at_second):
        verifier.verify(data, now=NOW + 1, max_size=4096)
    # One Ed25519 check for the group's root; its other records by their paths, and the
    # second holder's copies by their bytes.
    assert (verifier.checked, verifier.remembered) == (1, 5)


def test_a_remembered_group_root_vouches_for_nothing_but_its_own_records() -> None:
    """Once a group's root verified, a forged record must still fail: a changed body
    leads to another root, and the signature under someone else's key is not the one
    that verified."""
    bodies = [body(n) for n in range(4)]
    signature = sign_group(ME, bodies)
    proven = prove_group(bodies, signature)
    verifier = VerifiedRecords()
    verifier.verify(proven[0], now=NOW + 1, max_size=4096)
    forged_body = bytearray(proven[1])
    forged_body[-1] ^= 0x01  # the body's last byte: its leaf, and so its root, change
    with pytest.raises(InvalidRecord):
        verifier.verify(bytes(forged_body), now=NOW + 1, max_size=4096)
    other = Identity.generate()
    theirs = [body(1, other)]
    # Their record, carrying the signature that verified for my group: not theirs.
    stolen = prove_group(theirs, signature)[0]
    with pytest.raises(InvalidRecord):
        verifier.verify(stolen, now=NOW + 1, max_size=4096)
    assert verifier.verify(proven[2], now=NOW + 1, max_size=4096).key == b"term2"
    assert verifier.checked == 1  # the one signature that verified: the group's


def shard(term: str, page: int) -> TermShard:
    postings = tuple(
        Posting(
            f"http://docs.test/section/{page + i}.html",
            f"Section {page + i}",
            (0.1234 * (i + 1), 0.5678, 0.0, 0.0, 0.25),
            (3, 400 + i, 0, 0, 4),
        )
        for i in range(3)
    )
    return TermShard(term, 3, 1000, (1, 3, 0, 0, 1), postings, (4.1, 512.3, 2.0, 9.5, 5.2))


def test_a_push_carries_one_signature_a_group_not_one_a_term() -> None:
    """What a holder is sent for 64 terms: one signature a group of 16, and every record
    it keeps still proves alone."""
    now = time.time()
    items = [(f"word{n}", shard(f"word{n}", n).to_json()) for n in range(64)]
    grouped = sign_push(ME, items, now + 600)
    singly = sign_batch(
        ME,
        [
            g
            for term, value in items
            for g in group_bodies(
                ME, [term], [shard_body(ME, term, orjson.dumps(value), now, now + 600)], [3]
            )
        ],
        now + 600,
    )
    # 60 signatures fewer, 64 random bytes each (compression cannot shrink them).
    assert len(singly) - len(grouped) > 60 * 60
    batch = open_batch(grouped, max_ttl=3600)
    assert [r.term for r in batch.records] == [term for term, _ in items]
    for record in batch.records:
        (copy,) = verify_copies(record.term, [record.record], time.time())
        assert copy.publisher == ME.node_id.hex() and len(copy.shard.postings) == 3


def test_a_bad_record_in_a_group_leaves_its_neighbours_provable() -> None:
    now = time.time()
    good = shard("titan", 1).to_json()
    bodies = [
        shard_body(ME, "titan", orjson.dumps(good), now, now + 600),
        shard_body(ME, "lake", b"[1,}", now, now + 600),  # not a shard
        shard_body(ME, "a,b", b"[]", now, now + 600),  # not a term
        shard_body(ME, "methane", orjson.dumps(good), now, now + 600),
    ]
    push = sign_batch(
        ME, group_bodies(ME, ["titan", "lake", "a,b", "methane"], bodies, [3] * 4), now + 600
    )
    batch = open_batch(push, max_ttl=3600)
    assert [r.term for r in batch.records] == ["titan", "lake", "methane"]
    held = {r.term: r.record for r in batch.records}
    assert verify_copies("lake", [held["lake"]], time.time()) == []
    for term in ("titan", "methane"):
        assert len(verify_copies(term, [held[term]], time.time())) == 1
    assert len(held["titan"]) - len(bodies[0]) == 6 + 2 * DIGEST_BYTES + 64  # depth 2


def test_a_term_record_signed_alone_is_not_taken() -> None:
    """The layout before groups (a signature each, ``shard/4``) is refused by queriers."""
    now = time.time()
    old = sign_record(
        ME,
        kind="shard/4",
        key=b"titan",
        payload=orjson.dumps(shard("titan", 1).to_json()),
        issued_at=now,
        expires_at=now + 600,
    )
    assert verify_copies("titan", [old], now) == []
