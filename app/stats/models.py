"""The workshop rollup: one row per territory, month (UTC), level and theme, kept by database triggers.

Each workshop counts once in the rows whose `theme` is '' and once more in the row of each of its themes.
The triggers live in the migration (migrations/versions/0010_workshop_statistics.py) so that every write of
`workshops`, whichever path makes it, keeps the rollup in its own transaction; `app.stats.rollup.rebuild`
recomputes it whole. Rows that fall back to zero are kept: they read as nothing."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, Uuid, text

from app.db import Base
from app.referentials.data import AgeBracket, SocialStatus

# A workshop's theme row and its "every workshop once" row ('').
ALL_THEMES = ""
COUNTS = ("held", "cancelled", "registrations", "attendees")
AGE_COLUMNS = {bracket.value: f"age_{bracket.value}" for bracket in AgeBracket}
SOCIAL_COLUMNS = {status.value: f"social_{status.value}" for status in SocialStatus}
METRIC_COLUMNS = (*COUNTS, *AGE_COLUMNS.values(), *SOCIAL_COLUMNS.values())


def _count(name: str) -> Column[int]:
    return Column(name, Integer(), nullable=False, server_default=text("0"))


workshop_monthly_stats = Table(
    "workshop_monthly_stats",
    Base.metadata,
    # A territory deleted takes its rows at zero with it (a territory with workshops cannot be deleted).
    Column("territory_id", Uuid(), ForeignKey("territories.id", ondelete="CASCADE"), primary_key=True),
    # 'YYYY-MM' of `starts_at` in UTC.
    Column("month", String(7), primary_key=True),
    Column("level", String(16), primary_key=True),
    Column("theme", String(64), primary_key=True),
    *(_count(name) for name in METRIC_COLUMNS),
    # National figures over a range of months, without a territory filter.
    Index("ix_workshop_monthly_stats_month_theme", "month", "theme"),
)
