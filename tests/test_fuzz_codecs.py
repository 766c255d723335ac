"""Property tests for what peers send us: shard JSON, signed records, zstd frames."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rhizome.dht import (
    DhtError,
    Identity,
    VerifiedRecords,
    compress,
    decompress,
    sign_record,
    verify_record,
)
from rhizome.federation.wire import sign_shard, verify_lookups
from rhizome.index import SHARD_FIELDS, PageWeights
from rhizome.index.bm25 import MAX_FIELD_WEIGHT
from rhizome.index.shard_codec import (
    MAX_FIELD_LENGTH,
    Posting,
    TermShard,
    _postings,
    _weights,
    field_lengths,
)

IDENTITY = Identity.generate()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(json_values)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_shard_decoding_accepts_or_refuses_cleanly(value: object) -> None:
    try:
        shard = TermShard.from_json("term", value)
    except (ValueError, TypeError, KeyError, IndexError):
        return
    for posting in shard.postings:
        assert len(posting.weights) == len(SHARD_FIELDS)
        assert all(0.0 <= w <= MAX_FIELD_WEIGHT for w in posting.weights)


@given(
    st.integers(1, 10_000),
    st.lists(st.integers(0, 10_000), min_size=len(SHARD_FIELDS), max_size=len(SHARD_FIELDS)),
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=50),
            st.text(max_size=50),
            st.lists(st.floats(-1e9, 1e9), min_size=len(SHARD_FIELDS), max_size=len(SHARD_FIELDS)),
            st.lists(st.integers(-(10**12), 10**12), min_size=len(SHARD_FIELDS), max_size=5),
        ),
        max_size=10,
    ),
    st.lists(st.floats(allow_nan=True), min_size=len(SHARD_FIELDS), max_size=len(SHARD_FIELDS)),
)
def test_shard_round_trip_clamps_claimed_weights(
    n_docs: int,
    field_df: list[int],
    postings: list[tuple[str, str, list[float], list[int]]],
    avgdl: list[float],
) -> None:
    raw = [max(field_df), n_docs, field_df, [[u, t, w, n] for u, t, w, n in postings], avgdl]
    shard = TermShard.from_json("t", json.loads(json.dumps(raw)))
    again = TermShard.from_json("t", json.loads(json.dumps(shard.to_json())))
    assert [p.url for p in again.postings] == [u for u, _t, _w, _n in postings]
    # A peer claiming a huge weight for its page gets BM25's ceiling, not its claim; its
    # claimed field lengths and averages are bounded the same way.
    assert all(0.0 <= w <= MAX_FIELD_WEIGHT for p in again.postings for w in p.weights)
    assert all(0 <= n <= MAX_FIELD_LENGTH for p in again.postings for n in p.lengths)
    assert all(0.0 <= a <= MAX_FIELD_LENGTH for a in again.avgdl)


field_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**12), 10**12),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)


@given(
    st.lists(
        st.tuples(
            st.text(max_size=10) | st.integers(),
            st.text(max_size=10) | st.none(),
            st.lists(field_values, min_size=4, max_size=6),
            st.lists(field_values, min_size=4, max_size=6) | st.none(),
        ),
        max_size=6,
    )
)
@settings(max_examples=500)
def test_bulk_posting_checks_agree_with_the_per_posting_ones(rows: list[tuple]) -> None:
    """A shard's postings are checked all at once when every value looks honest; whatever
    that shortcut lets through must be exactly what the careful per-posting checks make of
    the same rows (a NaN or a bool in the middle of a shard, an int among floats), and the
    columns it makes on the way are those the careful postings give."""
    raw = [list(r) for r in rows]
    try:
        careful = tuple(
            Posting(str(u), str(t), _weights(w), field_lengths(dl)) for u, t, w, dl in raw
        )
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)):
            _postings(raw)
        return
    postings, columns = _postings(raw)
    assert postings == careful
    if columns is not None:
        expected = TermShard("t", 1, 1, (1,) * len(SHARD_FIELDS), careful).columns()
        assert columns.urls == expected.urls
        assert np.array_equal(columns.weights, expected.weights)
        assert np.array_equal(columns.lengths, expected.lengths)


@given(st.binary(max_size=2048))
@settings(max_examples=500)
def test_garbage_records_raise_only_dht_errors(data: bytes) -> None:
    with pytest.raises(DhtError):
        verify_record(data, now=time.time(), max_size=4096)


@given(st.binary(max_size=512), st.integers(0, 600))
@settings(max_examples=200)
def test_any_single_byte_change_breaks_a_signed_record(payload: bytes, position: int) -> None:
    now = time.time()
    record = bytearray(
        sign_record(
            IDENTITY, kind="shards", key=b"k", payload=payload, issued_at=now, expires_at=now + 60
        )
    )
    assert verify_record(bytes(record), now=now, max_size=1 << 20).payload == payload
    record[position % len(record)] ^= 0x40
    with pytest.raises(DhtError):
        verify_record(bytes(record), now=now, max_size=1 << 20)


@given(st.binary(max_size=4096))
@settings(max_examples=300)
def test_zstd_round_trip_and_garbage(data: bytes) -> None:
    assert decompress(compress(data), max_size=8192) == data
    # Arbitrary bytes either decode within the cap or raise the package's own error.
    try:
        assert len(decompress(data, max_size=8192)) <= 8192
    except DhtError:
        pass


def test_two_holders_serving_one_record_cost_one_signature_check() -> None:
    now = time.time()
    shard = TermShard(
        term="titan",
        df=1,
        n_docs=10,
        field_df=(1,) * len(SHARD_FIELDS),
        postings=(Posting("http://a.test/", "A", (1.0,) * len(SHARD_FIELDS), (5,) * 5),),
        avgdl=(5.0,) * len(SHARD_FIELDS),
    )
    good = sign_shard(IDENTITY, "titan", shard.to_json(), now, now + 60)
    other = sign_shard(Identity.generate(), "titan", ["not", "a", "shard"], now, now + 60)
    verifier = VerifiedRecords()
    found = verify_lookups(
        {"h1": {"titan": [good, other]}, "h2": {"titan": [good, good[:-1] + b"x"]}},
        now,
        verifier,
    )
    assert [c.shard.postings[0].url for c in found["h1"]["titan"]] == ["http://a.test/"]
    assert found["h2"]["titan"] == found["h1"]["titan"]
    assert verifier.checked == 2  # good and other's record, once each; the garbled one fails
    again = verify_lookups({"h3": {"titan": [good]}}, now, verifier)
    assert again["h3"]["titan"][0].publisher == IDENTITY.node_id.hex()
    assert (verifier.checked, verifier.remembered) == (2, 1)


weight_values = st.floats(allow_nan=True) | st.integers(-10, 10) | st.booleans() | st.none()
owner_weights = st.dictionaries(
    st.text(max_size=8),
    st.dictionaries(
        st.text(max_size=6), st.lists(weight_values, min_size=4, max_size=6), max_size=4
    )
    | json_values,
    max_size=4,
)


@given(owner_weights | json_values)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_an_owners_weights_are_read_within_bounds_whatever_it_sends(raw: object) -> None:
    """An owner's answer is read all at once when honest, value by value otherwise: either
    way nothing raises, and every weight kept is five numbers within bounds."""
    answer = PageWeights.from_json({"weights": raw, "lengths": {}, "avgdl": []})
    for units in answer.weights.values():
        for weights in units.values():
            assert len(weights) == len(SHARD_FIELDS)
            assert all(0.0 <= w <= MAX_FIELD_WEIGHT for w in weights)


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.dictionaries(
            st.text(min_size=1, max_size=6),
            st.lists(
                st.floats(0.0, MAX_FIELD_WEIGHT),
                min_size=len(SHARD_FIELDS),
                max_size=len(SHARD_FIELDS),
            ),
            max_size=4,
        ),
        max_size=4,
    ),
    st.sampled_from([float("nan"), -1.0, MAX_FIELD_WEIGHT * 2, None]),
)
def test_honest_weights_read_as_sent_and_one_bad_value_is_clamped_alone(
    raw: dict[str, dict[str, list[float]]], bad: float | None
) -> None:
    answer = PageWeights.from_json({"weights": raw})
    assert answer.weights == {u: {k: tuple(v) for k, v in us.items()} for u, us in raw.items()}
    pages = [u for u, units in raw.items() if units]
    if not pages:
        return
    page = pages[0]
    unit = next(iter(raw[page]))
    hostile = {u: {k: list(v) for k, v in us.items()} for u, us in raw.items()}
    hostile[page][unit][0] = bad  # type: ignore[call-overload]
    read = PageWeights.from_json(json.loads(json.dumps({"weights": hostile})))
    for u, units in raw.items():
        for k, v in units.items():
            if (u, k) != (page, unit):
                assert read.weights[u][k] == tuple(v)
    if bad is None:
        assert unit not in read.weights[page]
    else:
        assert all(0.0 <= w <= MAX_FIELD_WEIGHT for w in read.weights[page][unit])
