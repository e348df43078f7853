"""Every query of the statistics domain: grouped sums, never rows of people.

Workshops are read from the rollup (`workshop_monthly_stats`) for whole months and from the per-workshop
columns of `workshops` (by `starts_at`, indexed) for the partial months at the edges of a date range: an
answer reads a few rows per territory and month, never the registrations."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Integer,
    and_,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.agreements.models import LIVE_STATUSES, Agreement
from app.core.paths import path_startswith
from app.positions.models import TODAY, Assignment, Position, covers
from app.referentials.data import THEME_BITS
from app.stats.models import (
    AGE_COLUMNS,
    ALL_THEMES,
    METRIC_COLUMNS,
    SOCIAL_COLUMNS,
    workshop_monthly_stats,
)
from app.territories.models import Territory
from app.workshops.models import Workshop, WorkshopStatus

ROLLUP = workshop_monthly_stats


@dataclass(frozen=True)
class Place:
    """The territory filters: one territory, and/or the subtree under a path."""

    territory_id: uuid.UUID | None = None
    within_path: str | None = None


def _in_place(column: Any, place: Place) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if place.territory_id is not None:
        clauses.append(column == place.territory_id)
    if place.within_path is not None:
        subtree = select(Territory.id).where(path_startswith(Territory.path, place.within_path))
        clauses.append(column.in_(subtree))
    return clauses


# --- workshops -------------------------------------------------------------------------------------------

# Each row these queries return: the group key, then METRIC_COLUMNS in order.
Sums = Sequence[Any]


def _themes() -> FromClause:
    """(theme, bit) for every theme, and ('', 0) that every workshop matches: its row where it counts once."""
    rows = [select(literal(ALL_THEMES).label("theme"), literal(0, Integer).label("bit"))]
    rows += [
        select(literal(t).label("theme"), literal(b, Integer).label("bit")) for t, b in THEME_BITS.items()
    ]
    return union_all(*rows).subquery("themes")


def _workshop_metrics() -> list[ColumnElement[Any]]:
    w = Workshop.__table__.c

    def count(status: WorkshopStatus) -> ColumnElement[Any]:
        return func.sum(case((w.status == status.value, 1), else_=0))

    def share(group: str, value: str) -> ColumnElement[Any]:
        return func.sum(func.coalesce(w.attendee_breakdown[(group, value)].as_integer(), 0))

    metrics = [
        count(WorkshopStatus.completed),
        count(WorkshopStatus.cancelled),
        func.sum(w.registered_count),
        func.sum(w.attendees),
    ]
    metrics += [share("age_brackets", v) for v in AGE_COLUMNS]
    metrics += [share("social_statuses", v) for v in SOCIAL_COLUMNS]
    return metrics


async def workshop_edge_sums(
    session: AsyncSession, group_by: str, place: Place, starts: datetime, ends: datetime, month: str
) -> list[Sums]:
    """The sums of the workshops starting in [starts, ends), a part of the one month `month`, per group
    (`group_by` none, month, territory, level or theme; for theme, the key '' is the total)."""
    w = Workshop.__table__.c
    metrics = _workshop_metrics()
    where = [w.starts_at >= starts, w.starts_at < ends, *_in_place(w.territory_id, place)]
    if group_by == "theme":
        # Summed per set of themes first, then spread over the themes of each set: the breakdowns are read
        # once per workshop, not once per workshop and theme.
        per_set = (
            select(w.themes_mask.label("mask"), *(m.label(f"m{i}") for i, m in enumerate(metrics)))
            .where(*where)
            .group_by(w.themes_mask)
            .subquery()
        )
        themes = _themes()
        spread = per_set.join(themes, or_(themes.c.bit == 0, per_set.c.mask.bitwise_and(themes.c.bit) != 0))
        sums = [func.sum(per_set.c[f"m{i}"]) for i in range(len(metrics))]
        stmt = select(themes.c.theme, *sums).select_from(spread).group_by(themes.c.theme)
        return list((await session.execute(stmt)).all())
    key: ColumnElement[Any] = {
        "month": literal(month),
        "territory": w.territory_id,
        "level": w.level,
    }.get(group_by, literal(ALL_THEMES))
    stmt = select(key, *metrics).select_from(Workshop.__table__).where(*where)
    if group_by != "none":
        stmt = stmt.group_by(key)
    # An aggregate without GROUP BY answers one row even when nothing matches: its sums are NULL.
    return [row for row in (await session.execute(stmt)).all() if row[1] is not None]


async def workshop_rollup_sums(
    session: AsyncSession, group_by: str, place: Place, first_month: str | None, last_month: str | None
) -> list[Sums]:
    """The rollup's sums over the whole months [first_month, last_month] (None: unbounded), per group."""
    r = ROLLUP.c
    key: ColumnElement[Any] = {
        "month": r.month,
        "territory": r.territory_id,
        "level": r.level,
        "theme": r.theme,
    }.get(group_by, literal(ALL_THEMES))
    stmt = select(key, *(func.sum(r[name]) for name in METRIC_COLUMNS)).where(
        *_in_place(r.territory_id, place)
    )
    if group_by != "theme":
        stmt = stmt.where(r.theme == ALL_THEMES)
    if first_month is not None:
        stmt = stmt.where(r.month >= first_month)
    if last_month is not None:
        stmt = stmt.where(r.month <= last_month)
    if group_by != "none":
        stmt = stmt.group_by(key)
    return [row for row in (await session.execute(stmt)).all() if row[1] is not None]


# --- positions -------------------------------------------------------------------------------------------


def _position_key(group_by: str) -> Any:
    if group_by == "territory":
        return Position.agreement_territory_id
    if group_by == "kind":
        return Territory.kind
    return literal("")


async def granted_sums(
    session: AsyncSession, group_by: str, programme_id: uuid.UUID | None, place: Place
) -> list[Sums]:
    """(key, positions granted, subsidy cents) of the live (draft and signed) agreements, per group of
    their territory."""
    key = {"territory": Agreement.territory_id, "kind": Territory.kind}.get(group_by, literal(""))
    stmt = select(
        key,
        func.sum(Agreement.positions_granted),
        func.sum(Agreement.positions_granted * Agreement.subsidy_per_position_cents),
    ).where(Agreement.status.in_(LIVE_STATUSES), *_in_place(Agreement.territory_id, place))
    if programme_id is not None:
        stmt = stmt.where(Agreement.programme_id == programme_id)
    if group_by == "kind":
        stmt = stmt.join(Territory, Territory.id == Agreement.territory_id)
    if group_by != "none":
        stmt = stmt.group_by(key)
    return [row for row in (await session.execute(stmt)).all() if row[1] is not None]


async def position_sums(
    session: AsyncSession, group_by: str, programme_id: uuid.UUID | None, place: Place
) -> list[Sums]:
    """(key, open, occupied, closed) positions as of today (UTC), per group of their agreement's territory."""
    occupied = and_(
        Position.closed_on.is_(None),
        exists().where(Assignment.position_id == Position.id, covers(TODAY)),
    )
    key = _position_key(group_by)
    stmt = select(
        key,
        func.sum(case((Position.closed_on.is_(None), 1), else_=0)),
        func.sum(case((occupied, 1), else_=0)),
        func.sum(case((Position.closed_on.is_not(None), 1), else_=0)),
    ).where(*_in_place(Position.agreement_territory_id, place))
    if programme_id is not None:
        stmt = stmt.join(Agreement, Agreement.id == Position.agreement_id).where(
            Agreement.programme_id == programme_id
        )
    if group_by == "kind":
        stmt = stmt.join(Territory, Territory.id == Position.agreement_territory_id)
    if group_by != "none":
        stmt = stmt.group_by(key)
    return [row for row in (await session.execute(stmt)).all() if row[1] is not None]
