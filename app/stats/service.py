"""Rules of the statistics domain: what each figure counts, how groups are keyed, the date range cut into
whole months (the rollup) and partial ones (the workshops themselves), and statistical confidentiality for
callers without a key.

Answers are plain data, `{"totals": {...}, "items": [...]}`, that any writer (JSON, CSV) can render."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.problems import NotFound, ValidationFailed
from app.programmes import service as programmes
from app.referentials.data import AgeBracket, Level, SocialStatus, Theme
from app.stats import repository as repo
from app.stats.disclosure import protect
from app.stats.models import ALL_THEMES, COUNTS
from app.territories import service as territories
from app.territories.codes import TerritoryKind

BREAKDOWNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("age_brackets", tuple(b.value for b in AgeBracket)),
    ("social_statuses", tuple(s.value for s in SocialStatus)),
)


class PositionGroup(StrEnum):
    none = "none"
    territory = "territory"
    kind = "kind"


class WorkshopGroup(StrEnum):
    none = "none"
    theme = "theme"
    month = "month"
    territory = "territory"
    level = "level"


# The field that carries an item's group key.
KEY_FIELDS = {
    "territory": "territory_id",
    "kind": "kind",
    "theme": "theme",
    "month": "month",
    "level": "level",
}


async def place(
    session: AsyncSession, territory_id: uuid.UUID | None, within: uuid.UUID | None
) -> repo.Place:
    """The territory filters, each naming a territory that exists (else 422 at its query parameter)."""
    paths: dict[str, str | None] = {}
    for name, value in (("territory_id", territory_id), ("within", within)):
        if value is not None:
            paths[name] = await territories.path_of(session, value)
            if paths[name] is None:
                raise ValidationFailed(f"/query/{name}", "no territory with this id")
    return repo.Place(territory_id=territory_id, within_path=paths.get("within"))


# --- positions -------------------------------------------------------------------------------------------


def _occupancy(figures: dict[str, Any]) -> dict[str, Any]:
    figures["vacant"] = figures["open"] - figures["occupied"]
    figures["occupancy_rate"] = figures["occupied"] / figures["open"] if figures["open"] else None
    return figures


def _position_figures(granted: Sequence[Any] | None, positions: Sequence[Any] | None) -> dict[str, Any]:
    figures = {
        "granted": int(granted[1]) if granted else 0,
        "open": int(positions[1]) if positions else 0,
        "occupied": int(positions[2]) if positions else 0,
        "vacant": 0,
        "closed": int(positions[3]) if positions else 0,
        # PostgreSQL sums bigints as numeric: int() keeps the cents exact.
        "subsidy_committed_cents": int(granted[2]) if granted else 0,
        "occupancy_rate": None,
    }
    return _occupancy(figures)


def _key(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


async def position_stats(
    session: AsyncSession,
    *,
    programme_id: uuid.UUID | None,
    territory_id: uuid.UUID | None,
    within: uuid.UUID | None,
    group_by: PositionGroup,
) -> dict[str, Any]:
    """Positions granted (draft and signed agreements, as the programme totals count them), and open,
    occupied, vacant and closed positions as of today (UTC), every figure attributed to the agreement's
    territory (the employer)."""
    if programme_id is not None:
        try:
            await programmes.get(session, programme_id)
        except NotFound:
            raise ValidationFailed("/query/programme_id", "no programme with this id") from None
    where = await place(session, territory_id, within)
    granted = {_key(r[0]): r for r in await repo.granted_sums(session, group_by.value, programme_id, where)}
    positions = {
        _key(r[0]): r for r in await repo.position_sums(session, group_by.value, programme_id, where)
    }
    if group_by is PositionGroup.none:
        return {"totals": _position_figures(granted.get(""), positions.get("")), "items": []}
    if group_by is PositionGroup.kind:
        keys: list[Any] = [kind.value for kind in TerritoryKind]
    else:
        keys = sorted(granted.keys() | positions.keys())
    field = KEY_FIELDS[group_by.value]
    items = [{field: key, **_position_figures(granted.get(key), positions.get(key))} for key in keys]
    totals: dict[str, Any] = {
        name: sum(item[name] for item in items)
        for name in ("granted", "open", "occupied", "vacant", "closed", "subsidy_committed_cents")
    }
    return {"totals": _occupancy(totals), "items": items}


# --- workshops -------------------------------------------------------------------------------------------


def month_of(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def _first_of_next_month(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def _instant(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


@dataclass(frozen=True)
class Range:
    """A date range [from, to] cut into whole months (read from the rollup) and partial months at its
    edges (read from the workshops): `edges` are [start, end) instants, each within one month."""

    first_month: str | None
    last_month: str | None
    whole: bool
    edges: tuple[tuple[datetime, datetime, str], ...]


def split(starts: date | None, ends: date | None) -> Range:
    """`starts` and `ends` inclusive, either open; days in UTC."""
    edges: list[tuple[datetime, datetime, str]] = []
    first: date | None = None
    last_next: date | None = None  # the first day after the last whole month
    if starts is not None:
        first = starts if starts.day == 1 else _first_of_next_month(starts)
    if ends is not None:
        after = ends + timedelta(days=1)
        last_next = after if after.day == 1 else after.replace(day=1)
    if first is not None and last_next is not None and first >= last_next:
        # No whole month: the range lies within one month, or spans the end of one and the start of the next.
        assert starts is not None
        assert ends is not None
        cut = _first_of_next_month(starts)
        if ends < cut:
            edges.append((_instant(starts), _instant(ends + timedelta(days=1)), month_of(starts)))
        else:
            edges.append((_instant(starts), _instant(cut), month_of(starts)))
            edges.append((_instant(cut), _instant(ends + timedelta(days=1)), month_of(cut)))
        return Range(None, None, False, tuple(edges))
    if starts is not None and first is not None and starts != first:
        edges.append((_instant(starts), _instant(first), month_of(starts)))
    if ends is not None and last_next is not None and last_next != ends + timedelta(days=1):
        edges.append((_instant(last_next), _instant(ends + timedelta(days=1)), month_of(last_next)))
    last = last_next - timedelta(days=1) if last_next is not None else None
    return Range(
        first_month=month_of(first) if first is not None else None,
        last_month=month_of(last) if last is not None else None,
        whole=True,
        edges=tuple(edges),
    )


def _empty() -> list[int]:
    return [0] * (len(COUNTS) + sum(len(values) for _, values in BREAKDOWNS))


def _add(sums: dict[Any, list[int]], rows: Iterable[Sequence[Any]]) -> None:
    for row in rows:
        into = sums.setdefault(_key(row[0]), _empty())
        for i, value in enumerate(row[1:]):
            into[i] += int(value or 0)


def _workshop_figures(values: list[int]) -> dict[str, Any]:
    figures: dict[str, Any] = dict(zip(COUNTS, values, strict=False))
    offset = len(COUNTS)
    for name, keys in BREAKDOWNS:
        figures[name] = dict(zip(keys, values[offset : offset + len(keys)], strict=True))
        offset += len(keys)
    return figures


async def workshop_stats(
    session: AsyncSession,
    principal: Principal,
    *,
    territory_id: uuid.UUID | None,
    within: uuid.UUID | None,
    starts: date | None,
    ends: date | None,
    group_by: WorkshopGroup,
    threshold: int,
) -> dict[str, Any]:
    """Held (completed) and cancelled workshops, confirmed registrations and attendees (present
    registrations and walk-ins) with their age brackets and social statuses, of the workshops that start
    within [starts, ends] (UTC days)."""
    if starts is not None and ends is not None and starts > ends:
        raise ValidationFailed("/query/to", "to must be on or after from")
    where = await place(session, territory_id, within)
    cut = split(starts, ends)
    sums: dict[Any, list[int]] = {}
    if cut.whole:
        _add(
            sums,
            await repo.workshop_rollup_sums(session, group_by.value, where, cut.first_month, cut.last_month),
        )
    for edge_starts, edge_ends, month in cut.edges:
        _add(
            sums, await repo.workshop_edge_sums(session, group_by.value, where, edge_starts, edge_ends, month)
        )
    if group_by is WorkshopGroup.none:
        answer: dict[str, Any] = {"totals": _workshop_figures(sums.get(ALL_THEMES, _empty())), "items": []}
    else:
        field = KEY_FIELDS[group_by.value]
        if group_by is WorkshopGroup.theme:
            keys: list[Any] = [theme.value for theme in Theme]
            total = sums.get(ALL_THEMES, _empty())
        else:
            if group_by is WorkshopGroup.level:
                keys = [level.value for level in Level]
            else:
                # The rollup keeps rows that went back to zero (a workshop moved to another month): a
                # month or territory is listed when one of its figures is not 0.
                keys = sorted(key for key, values in sums.items() if any(values))
            total = [sum(column) for column in zip(*sums.values(), strict=True)] if sums else _empty()
        items = [{field: key, **_workshop_figures(sums.get(key, _empty()))} for key in keys]
        answer = {"totals": _workshop_figures(total), "items": items}
    if principal.is_anonymous:
        _protect(answer, threshold)
    return answer


def _protect(answer: dict[str, Any], threshold: int) -> None:
    """Statistical confidentiality of the breakdowns (counts of persons), for callers without a key."""
    items, totals = answer["items"], answer["totals"]
    for name, _ in BREAKDOWNS:
        rows, cells = protect(
            [item[name] for item in items],
            [item["attendees"] for item in items],
            totals[name],
            totals["attendees"],
            threshold,
        )
        for item, row in zip(items, rows, strict=True):
            item[name] = row
        totals[name] = cells
