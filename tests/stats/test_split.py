"""A date range cut into whole months and partial months at its edges covers every day of the range once."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from app.stats.service import month_of, split

days = st.dates(min_value=date(2019, 1, 1), max_value=date(2029, 12, 31))


def _covered(starts: date | None, ends: date | None, probe: date) -> int:
    """How many parts of the cut hold `probe`."""
    cut = split(starts, ends)
    count = 0
    if cut.whole:
        month = month_of(probe)
        if (cut.first_month is None or cut.first_month <= month) and (
            cut.last_month is None or month <= cut.last_month
        ):
            count += 1
    instant = datetime.combine(probe, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
    for edge_starts, edge_ends, month in cut.edges:
        assert month_of(edge_starts.date()) == month == month_of((edge_ends - timedelta(seconds=1)).date())
        count += edge_starts <= instant < edge_ends
    return count


@given(starts=st.none() | days, ends=st.none() | days, probe=days)
def test_every_day_of_the_range_once(starts: date | None, ends: date | None, probe: date) -> None:
    if starts is not None and ends is not None and starts > ends:
        starts, ends = ends, starts
    inside = (starts is None or starts <= probe) and (ends is None or probe <= ends)
    assert _covered(starts, ends, probe) == int(inside)


def test_at_most_two_edges() -> None:
    assert len(split(date(2026, 1, 15), date(2026, 2, 10)).edges) == 2
    assert split(date(2026, 2, 1), date(2026, 2, 28)).edges == ()
    assert len(split(date(2026, 1, 31), date(2027, 3, 1)).edges) == 2
    assert split(None, None).whole
