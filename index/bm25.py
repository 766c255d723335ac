"""BM25 arithmetic shared by the local index and the federated ranker.

tantivy scores a term in a field as boost x IDF x tf-norm, tf-norm = tf (k1 + 1) /
(tf + k1 (1 - b + b dl/avgdl)), with one-byte field lengths. Shards and owners send the
IDF-free part (boost x tf-norm); this module turns it back into a term frequency and
forward again against other averages (``renormalize``), so that every publisher's pages
are scored on one scale, the way one index over all their pages would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .schema import FIELD_BOOSTS, SHARD_FIELDS

FieldWeights = tuple[float, ...]  # one entry per SHARD_FIELDS
FieldLengths = tuple[int, ...]  # tokens per SHARD_FIELDS field; 0 = not known
NO_LENGTHS: FieldLengths = (0,) * len(SHARD_FIELDS)
# tantivy's BM25 constants.
K1 = 1.2
B = 0.75
# boost x tf-norm is at most boost x (k1 + 1) = 3 x 2.2 in tantivy's BM25; anything larger
# is a peer lying about its pages.
MAX_FIELD_WEIGHT = max(FIELD_BOOSTS.values()) * 2.2 + 1e-6
MAX_TF_NORM = tuple(FIELD_BOOSTS[f] * (K1 + 1.0) for f in SHARD_FIELDS)  # boost x (k1 + 1)
# A weight this close to its ceiling says nothing of its tf (it grows without bound there).
SATURATED = 0.999


def bm25_idf(df: float, n_docs: float) -> float:
    """tantivy's (Lucene's) BM25 IDF."""
    return math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))


def renormalize(
    weights: Sequence[float],
    lengths: Sequence[int],
    avgdl_from: Sequence[float],
    avgdl_to: Sequence[float],
) -> FieldWeights:
    """boost x tf-norm computed against one index's average field lengths, re-computed
    against another's (the whole network's). tf-norm = tf / (tf + K1 (1 - B + B dl/avgdl))
    gives back tf from the weight and dl; a field whose length or averages are unknown
    keeps its weight. (A querying node runs this for every posting it is sent.)"""
    out = list(weights)
    for i, w in enumerate(weights):
        if w <= 0.0:
            continue
        dl, a_to = lengths[i], avgdl_to[i]
        tf = recovered_tf(i, w, dl, avgdl_from[i])
        if tf is None or a_to <= 0.0:
            continue
        out[i] = MAX_TF_NORM[i] * tf / (tf + K1 * (1.0 - B + B * dl / a_to))
    return tuple(out)


def renormalize_array(
    weights: npt.NDArray[np.float64],
    lengths: npt.NDArray[np.float64],
    avgdl_from: npt.NDArray[np.float64],
    avgdl_to: Sequence[float],
) -> npt.NDArray[np.float64]:
    """``renormalize`` of many weight rows at once (rows x SHARD_FIELDS, each row with
    its own lengths and averages): a querying node re-scales every posting of a query
    this way, where the loop above cost a quarter of its scoring."""
    to = np.asarray(avgdl_to, dtype=np.float64)
    ceiling = np.asarray(MAX_TF_NORM, dtype=np.float64)
    norm = weights / ceiling
    known = (weights > 0.0) & (lengths > 0) & (avgdl_from > 0.0) & (norm < SATURATED) & (to > 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tf = norm * K1 * (1.0 - B + B * lengths / avgdl_from) / (1.0 - norm)
        again = ceiling * tf / (tf + K1 * (1.0 - B + B * lengths / to))
    out: npt.NDArray[np.float64] = np.where(known, again, weights)
    return out


def recovered_tf(i: int, weight: float, dl: int, avgdl: float) -> float | None:
    """The term frequency behind field ``i``'s boost x tf-norm ``weight`` (> 0) at field
    length ``dl`` and average ``avgdl``; None where it cannot be told (unknown lengths, or
    a weight at the ceiling)."""
    norm = weight / MAX_TF_NORM[i]
    if dl <= 0 or avgdl <= 0.0 or norm >= SATURATED:
        return None
    return norm * K1 * (1.0 - B + B * dl / avgdl) / (1.0 - norm)


def recovered_round_tf(i: int, weight: float, dl: int, avgdl: float) -> float:
    """A weight's term frequency, rounded (the weight itself, rounded, where the tf
    cannot be told): what stays put when only the averages move."""
    if weight <= 0.0:
        return 0.0
    tf = recovered_tf(i, weight, dl, avgdl)
    return round(weight, 2) if tf is None else float(round(tf))


# tantivy keeps a field's length in one byte, as Lucene does: exact below 24 tokens, then
# 3 significant bits (rounding down). BM25 sees that value, so the federated side must too.
_EXACT_LENGTHS = 24


def quantized_length(tokens: int) -> int:
    """The field length tantivy's BM25 uses for a field of ``tokens`` tokens."""
    if tokens < _EXACT_LENGTHS:
        return max(tokens, 0)
    rest = tokens - _EXACT_LENGTHS
    bits = rest.bit_length()
    if bits < 4:
        return tokens
    shift = bits - 4
    return _EXACT_LENGTHS + ((rest >> shift) << shift)
