"""What the statistics tests share: workshops built through the API, the figures recomputed naively from
the rows (workshops and registrations, not the per-workshop columns nor the rollup), the rollup compared
with its rebuild."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.referentials.data import AgeBracket, Level, SocialStatus, Theme
from app.stats.models import METRIC_COLUMNS, workshop_monthly_stats
from app.stats.rollup import rebuild
from app.territories.models import Territory
from app.workshops.models import Registration, Workshop
from tests.workshops.helpers import WORKSHOPS, at, create_workshop

STATS = "/api/v1/stats"
AGES = [b.value for b in AgeBracket]
SOCIALS = [s.value for s in SocialStatus]
KEY_FIELDS = {"theme": "theme", "month": "month", "territory": "territory_id", "level": "level"}


def someone(n: int, age: str | None = None, social: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"first_name": "Dominique", "last_name": f"F{n}", "email": f"p.{n}@example.org"}
    if age:
        body["age_bracket"] = age
    if social:
        body["social_status"] = social
    return body


async def version(client: httpx.AsyncClient, headers: dict[str, str], workshop_id: str) -> str:
    response = await client.get(f"{WORKSHOPS}/{workshop_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.headers["etag"]


async def move(client: httpx.AsyncClient, headers: dict[str, str], workshop_id: str, **changes: Any) -> None:
    etag = await version(client, headers, workshop_id)
    response = await client.patch(
        f"{WORKSHOPS}/{workshop_id}", json=changes, headers={**headers, "If-Match": etag}
    )
    assert response.status_code == 200, response.text


async def workshop_with(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    position_id: str,
    starts_at: str,
    *,
    people: tuple[tuple[str | None, str | None], ...] = (),
    present: tuple[int, ...] = (),
    cancelled: tuple[int, ...] = (),
    walk_ins: dict[str, Any] | None = None,
    cancel: bool = False,
    seed: int = 0,
    **changes: Any,
) -> dict[str, Any]:
    """A workshop that had `people` register while it was upcoming (the first `capacity` confirmed), then
    moved to `starts_at`; with `walk_ins`, its activity report (the registrations `present` by index)."""
    workshop = await create_workshop(client, headers, position_id, starts_at=at(5), **changes)
    registrations = []
    for n, (age, social) in enumerate(people):
        response = await client.post(
            f"{WORKSHOPS}/{workshop['id']}/registrations", json=someone(seed * 100 + n, age, social)
        )
        assert response.status_code == 201, response.text
        registrations.append(response.json())
    await move(client, headers, workshop["id"], starts_at=starts_at)
    for i in cancelled:
        response = await client.delete(
            f"{WORKSHOPS}/{workshop['id']}/registrations/{registrations[i]['id']}",
            headers={"X-Cancel-Token": registrations[i]["cancel_token"]},
        )
        assert response.status_code == 204, response.text
    if cancel:
        response = await client.post(
            f"{WORKSHOPS}/{workshop['id']}/cancel", json={"reason": "Salle indisponible"}, headers=headers
        )
        assert response.status_code == 200, response.text
    if walk_ins is not None:
        report = {
            "registrations": [{"id": registrations[i]["id"], "attendance": "present"} for i in present],
            "walk_ins": walk_ins,
        }
        response = await client.put(f"{WORKSHOPS}/{workshop['id']}/attendance", json=report, headers=headers)
        assert response.status_code == 200, response.text
    workshop["registrations"] = registrations
    return workshop


# --- the naive recomputation ---------------------------------------------------------------------------


def _zero() -> dict[str, Any]:
    return {
        "held": 0,
        "cancelled": 0,
        "registrations": 0,
        "attendees": 0,
        "age_brackets": dict.fromkeys(AGES, 0),
        "social_statuses": dict.fromkeys(SOCIALS, 0),
    }


def _add(into: dict[str, Any], figures: dict[str, Any]) -> None:
    for name in ("held", "cancelled", "registrations", "attendees"):
        into[name] += figures[name]
    for name in ("age_brackets", "social_statuses"):
        for key, value in figures[name].items():
            into[name][key] += value


async def naive_workshops(
    session: AsyncSession,
    *,
    territory_id: uuid.UUID | None = None,
    within: uuid.UUID | None = None,
    starts: date | None = None,
    ends: date | None = None,
    group_by: str = "none",
) -> dict[str, Any]:
    """GET /stats/workshops's exact answer, from the workshops' and registrations' rows."""
    territories = {t.id: t.path for t in (await session.execute(select(Territory))).scalars()}
    within_path = territories[within] if within is not None else None
    registrations: dict[uuid.UUID, list[Registration]] = {}
    for r in (await session.execute(select(Registration))).scalars():
        registrations.setdefault(r.workshop_id, []).append(r)
    groups: dict[Any, dict[str, Any]] = {}
    totals = _zero()
    for w in (await session.execute(select(Workshop))).scalars():
        day = w.starts_at.astimezone(UTC).date()
        if (starts is not None and day < starts) or (ends is not None and day > ends):
            continue
        if territory_id is not None and w.territory_id != territory_id:
            continue
        if within_path is not None and not territories[w.territory_id].startswith(within_path):
            continue
        rows = registrations.get(w.id, [])
        came = [r for r in rows if r.status != "cancelled" and r.attendance == "present"]
        walk_ins = w.walk_ins or {}
        ages = Counter(r.age_bracket or "non_communique" for r in came)
        ages.update(walk_ins.get("age_brackets") or {})
        socials = Counter(r.social_status or "non_communique" for r in came)
        socials.update(walk_ins.get("social_statuses") or {})
        figures = {
            "held": int(w.status == "completed"),
            "cancelled": int(w.status == "cancelled"),
            "registrations": sum(r.status == "confirmed" for r in rows),
            "attendees": len(came) + int(walk_ins.get("total") or 0),
            "age_brackets": {a: ages[a] for a in AGES},
            "social_statuses": {s: socials[s] for s in SOCIALS},
        }
        _add(totals, figures)
        keys: list[Any] = {
            "none": [],
            "theme": list(w.themes),
            "month": [f"{day.year:04d}-{day.month:02d}"],
            "territory": [str(w.territory_id)],
            "level": [w.level],
        }[group_by]
        for key in keys:
            _add(groups.setdefault(key, _zero()), figures)
    if group_by == "none":
        return {"totals": totals, "items": []}
    field = KEY_FIELDS[group_by]
    if group_by == "theme":
        order: list[Any] = [t.value for t in Theme]
    elif group_by == "level":
        order = [level.value for level in Level]
    else:
        order = sorted(k for k, v in groups.items() if v != _zero())
    return {"totals": totals, "items": [{field: key, **groups.get(key, _zero())} for key in order]}


def query(**params: Any) -> dict[str, str]:
    """Query parameters as the API takes them (`starts`/`ends` as from/to)."""
    names = {"starts": "from", "ends": "to"}
    return {names.get(k, k): str(v) for k, v in params.items() if v is not None}


# --- the rollup ----------------------------------------------------------------------------------------


async def rollup_rows(connection: AsyncConnection | AsyncSession) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """The rollup's rows that are not all zero (rows that went back to zero are kept, and mean nothing)."""
    t = workshop_monthly_stats
    rows = (await connection.execute(select(t))).all()
    found = {}
    for row in rows:
        values = tuple(int(getattr(row, name)) for name in METRIC_COLUMNS)
        if any(values):
            found[(str(row.territory_id), row.month, row.level, row.theme)] = values
    return found


async def rebuilt_rows(session: AsyncSession) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """What `rebuild` makes of the rows, without keeping it."""
    async with session.begin_nested() as nested:
        await rebuild(session)
        rows = await rollup_rows(session)
        await nested.rollback()
    return rows


def day_of(instant: str) -> date:
    return datetime.fromisoformat(instant.replace("Z", "+00:00")).date()


async def rollup_at_each_statement(connection: AsyncConnection) -> None:
    """On PostgreSQL the rollup's triggers run at commit, which a test's transaction never reaches: run
    them at each statement instead (the deferred behaviour itself: tests/stats/test_concurrency.py)."""
    if connection.dialect.name == "postgresql":
        await connection.execute(
            text("SET CONSTRAINTS workshops_stats_insert, workshops_stats_update IMMEDIATE")
        )
