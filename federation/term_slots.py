"""Which publishers of one term a holder keeps, and in what form.

A word every node publishes reaches its holders from every publisher. A holder keeps the
``full`` strongest publishers' signed records whole (the postings a query scores) and the
next ``summaries`` strongest as summaries (the shard without its postings: what owner
choice and the network's statistics need); anyone weaker is not kept. Strength is the df
the record claims (its publisher's pages with the term), newer first among equals. A
stronger newcomer takes the weakest full slot, whose copy becomes a summary. Pure: the
shard store applies the decision to its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


class Keep(Enum):
    FULL = "full"
    SUMMARY = "summary"
    NOTHING = "nothing"  # outranked


@dataclass(frozen=True, slots=True)
class Slot:
    """A copy of the term held now, as the store's row says."""

    publisher: str
    strength: int
    expires_at: float
    full: bool


@dataclass(frozen=True, slots=True)
class Decision:
    keep: Keep
    demote: str | None = None  # a full copy that becomes a summary to make room
    drop: str | None = None  # a copy deleted to make room


def _rank(slot: Slot) -> tuple[int, float]:
    return slot.strength, slot.expires_at


def place(
    publisher: str,
    strength: int,
    expires_at: float,
    held: Sequence[Slot],
    *,
    now: float,
    full: int,
    summaries: int,
) -> Decision:
    """Where ``publisher``'s new copy goes among the term's ``held`` copies (its own old
    copy, and expired ones, take no place)."""
    others = [s for s in held if s.publisher != publisher and s.expires_at > now]
    whole = [s for s in others if s.full]
    cut = [s for s in others if not s.full]
    mine = (strength, expires_at)
    if len(whole) < full:
        return Decision(Keep.FULL)
    weakest_whole = min(whole, key=_rank)
    weakest_cut = min(cut, key=_rank) if cut else None
    if mine > _rank(weakest_whole):
        if len(cut) < summaries:
            return Decision(Keep.FULL, demote=weakest_whole.publisher)
        if weakest_cut is not None and _rank(weakest_whole) > _rank(weakest_cut):
            return Decision(Keep.FULL, demote=weakest_whole.publisher, drop=weakest_cut.publisher)
        return Decision(Keep.FULL, drop=weakest_whole.publisher)
    if len(cut) < summaries:
        return Decision(Keep.SUMMARY)
    if weakest_cut is not None and mine > _rank(weakest_cut):
        return Decision(Keep.SUMMARY, drop=weakest_cut.publisher)
    return Decision(Keep.NOTHING)
