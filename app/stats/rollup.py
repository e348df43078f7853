"""Recomputes the workshop rollup (`workshop_monthly_stats`) whole from `workshops`.

The triggers of migration 0010 keep the rollup in every writing transaction; this is for rows loaded with
the triggers disabled (a bulk dataset), for `cnfs-api stats rebuild` after a repair, and for the tests that
compare what the triggers kept with what the rows say."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.stats.models import AGE_COLUMNS, COUNTS, METRIC_COLUMNS, SOCIAL_COLUMNS

KEYS = ("territory_id", "month", "level", "theme")
_BREAKDOWN = tuple(("age_brackets", v, c) for v, c in AGE_COLUMNS.items()) + tuple(
    ("social_statuses", v, c) for v, c in SOCIAL_COLUMNS.items()
)
assert COUNTS + tuple(c for _, _, c in _BREAKDOWN) == METRIC_COLUMNS


def _month(dialect: str) -> str:
    if dialect == "postgresql":
        return "to_char(w.starts_at AT TIME ZONE 'UTC', 'YYYY-MM')"
    return "substr(w.starts_at, 1, 7)"


def _share(group: str, value: str, dialect: str) -> str:
    if dialect == "postgresql":
        return f"COALESCE((w.attendee_breakdown #>> '{{{group},{value}}}')::integer, 0)"
    return f"COALESCE(json_extract(w.attendee_breakdown, '$.{group}.{value}'), 0)"


def rebuild_sql(dialect: str) -> str:
    """One INSERT ... SELECT over `workshops`: each workshop once under theme '', and once per theme."""
    values = [
        "CASE WHEN w.status = 'completed' THEN 1 ELSE 0 END",
        "CASE WHEN w.status = 'cancelled' THEN 1 ELSE 0 END",
        "w.registered_count",
        "w.attendees",
        *(_share(group, value, dialect) for group, value, _ in _BREAKDOWN),
    ]
    metrics = ", ".join(f"{v} AS {c}" for v, c in zip(values, METRIC_COLUMNS, strict=True))
    head = f"SELECT w.territory_id AS territory_id, {_month(dialect)} AS month, w.level AS level"
    if dialect == "postgresql":
        themed = "CROSS JOIN LATERAL json_array_elements_text(w.themes) AS t(theme)"
    else:
        themed = ", json_each(w.themes) AS t"
    theme = "t.theme" if dialect == "postgresql" else "t.value"
    rows = (
        f"{head}, '' AS theme, {metrics} FROM workshops AS w "
        f"UNION ALL {head}, {theme} AS theme, {metrics} FROM workshops AS w {themed}"
    )
    keys = ", ".join(KEYS)
    sums = ", ".join(f"sum({c})" for c in METRIC_COLUMNS)
    return (
        f"INSERT INTO workshop_monthly_stats ({keys}, {', '.join(METRIC_COLUMNS)}) "
        f"SELECT {keys}, {sums} FROM ({rows}) AS c GROUP BY {keys}"
    )


async def rebuild(connection: AsyncConnection | AsyncSession) -> None:
    """Replaces the rollup with what `workshops` says, in the caller's transaction (which commits it).

    PostgreSQL: the table is locked against writers first (EXCLUSIVE: reads go on), so that a workshop
    written meanwhile is either in the rows read or adds its contribution after the rebuild commits, never
    both or neither."""
    bind = connection.get_bind() if isinstance(connection, AsyncSession) else connection
    dialect = bind.dialect.name
    if dialect == "postgresql":
        await connection.execute(text("LOCK TABLE workshop_monthly_stats IN EXCLUSIVE MODE"))
    await connection.execute(text("DELETE FROM workshop_monthly_stats"))
    await connection.execute(text(rebuild_sql(dialect)))
