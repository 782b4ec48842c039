"""Counter cells for decisions counted on the hot path, compiled with it.

The policy filters count their decisions in rows of a dict (``POLICY.decisions[(route, filter,
result)] += 1``, see :mod:`sidegate.filters.counters`): two look-ups of a tuple key, each hashing the
tuple again, per count. A compiled fast path counts its few steady rows in a :class:`Tally` instead,
a native object whose ``count += 1`` is one C increment. Tallies are kept by row in a dict beside the
counters (:func:`tally` finds or makes one), so a reloaded route counts on in the same cell, and
whoever reads the counters adds the tallies in.
"""

from __future__ import annotations

from typing import Any


class Tally:
    """One row's count, kept by a compiled fast path."""

    def __init__(self) -> None:
        self.count = 0


def tally(tallies: dict[Any, Tally], row: object) -> Tally:
    """The cell of ``row`` in ``tallies``, made on first use."""
    found = tallies.get(row)
    if found is None:
        found = tallies[row] = Tally()
    return found


def with_tallies(counts: dict[Any, int], tallies: dict[Any, Tally]) -> dict[Any, int]:
    """``counts`` with the tallies added in (rows counted nowhere yet left out)."""
    merged = dict(counts)
    for row, cell in tallies.items():
        if cell.count:
            merged[row] = merged.get(row, 0) + cell.count
    return merged
