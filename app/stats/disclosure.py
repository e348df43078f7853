"""Statistical confidentiality of published counts of persons: the primary rule only.

A cell from 1 to `threshold - 1` is suppressed (None); 0 stays 0. This placeholder does not yet suppress
the secondary cells that would let a suppressed one be recovered from the exact totals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def _cell(value: int, threshold: int) -> int | None:
    return None if 0 < value < threshold else value


def protect(
    rows: Sequence[Mapping[str, int]],
    row_totals: Sequence[int],
    totals: Mapping[str, int],
    grand_total: int,
    threshold: int,
) -> tuple[list[dict[str, int | None]], dict[str, int | None]]:
    """One breakdown table: `rows[i]` is item i's breakdown and `row_totals[i]` its exact total, `totals`
    the breakdown of the answer's totals and `grand_total` their exact total. Returns the rows and the
    totals with the suppressed cells as None."""
    del row_totals, grand_total
    protected = [{key: _cell(value, threshold) for key, value in row.items()} for row in rows]
    return protected, {key: _cell(value, threshold) for key, value in totals.items()}
