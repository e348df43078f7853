"""The rollup under real concurrency: simultaneous registrations, cancellations and attendance reports on
workshops of one territory and month, whose themes overlap (so that their transactions update the same
rollup rows), each request on its own connection over committed data. No deadlock, no lost update: the
rollup equals its rebuild afterwards.

On PostgreSQL the writers meet on the rollup rows' locks, which every trigger takes in key order; on SQLite
they queue on BEGIN IMMEDIATE."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.core.changes import Change
from app.positions.models import Position
from app.workshops.models import Registration, Workshop
from tests.agreements.helpers import World, committed_world, create_programme, create_signed
from tests.helpers import app_client
from tests.positions.helpers import create_position
from tests.stats.helpers import STATS, naive_workshops, rebuilt_rows, rollup_rows, someone
from tests.workshops.helpers import WORKSHOPS, workshop_body

UPCOMING = 4
REGISTRANTS = 24  # per upcoming workshop: 10 seats, 10 waitlist places, 4 turned away
THEMES = (["email", "sante"], ["sante", "email", "bureautique"], ["bureautique", "sante"], ["email"])


@pytest.fixture
async def world(settings: Settings, engine: AsyncEngine) -> AsyncIterator[World]:
    async with committed_world(settings, engine) as world:
        try:
            yield world
        finally:
            async with world.sessions() as session:
                workshops = select(Workshop.id).where(Workshop.territory_id == world.territory_id)
                await session.execute(delete(Registration).where(Registration.workshop_id.in_(workshops)))
                await session.execute(delete(Workshop).where(Workshop.territory_id == world.territory_id))
                await session.execute(delete(Position).where(Position.territory_id == world.territory_id))
                await session.execute(delete(Change).where(Change.territory_id == world.territory_id))
                await session.commit()


def _instant(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def test_simultaneous_writes_keep_the_rollup_exact(world: World, settings: Settings) -> None:
    programme = await create_programme(world.client, world.admin, code="STATS_RACE")
    agreement = await create_signed(
        world.client, world.admin, programme["id"], world.territory_id, reference="S", positions_granted=1
    )
    position = await create_position(world.client, world.admin, agreement["id"])
    now = datetime.now(UTC)
    # The same month (UTC) for all, unless the test runs within hours of a month's end.
    later, earlier = now + timedelta(hours=3), now - timedelta(hours=2)
    if later.month != now.month:
        later, earlier = now + timedelta(minutes=20), now - timedelta(hours=2)

    async def schedule(themes: list[str], starts_at: datetime) -> str:
        body = workshop_body(
            position["id"],
            themes=themes,
            format="remote",
            venue=None,
            online_url="https://visio.example.org/stats",
            capacity=10,
            waitlist_capacity=10,
            starts_at=_instant(starts_at),
        )
        response = await world.client.post(WORKSHOPS, json=body, headers=world.admin)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    upcoming = [await schedule(THEMES[i % len(THEMES)], later) for i in range(UPCOMING)]
    started = [await schedule(THEMES[i % len(THEMES)], earlier) for i in range(3)]

    racing = settings.model_copy(
        update={
            "database_pool_size": 8,
            "database_pool_timeout_seconds": 120.0,
            "sqlite_busy_timeout_ms": 120_000,
            "database_lock_timeout_ms": 60_000,
        }
    )
    async with app_client(racing) as client:

        async def register(n: int) -> Any:
            workshop = upcoming[n % UPCOMING]
            person = someone(
                n, ("moins_de_douze", None, "soixante_dix_plus")[n % 3], ("retraite", None)[n % 2]
            )
            return await client.post(f"{WORKSHOPS}/{workshop}/registrations", json=person)

        first = await asyncio.gather(*(register(n) for n in range(REGISTRANTS * UPCOMING // 2)))
        assert {r.status_code for r in first} == {201}, [r.text for r in first if r.status_code != 201][:3]

        async def cancel(registration: dict[str, Any], workshop: str) -> Any:
            return await client.delete(
                f"{WORKSHOPS}/{workshop}/registrations/{registration['id']}",
                headers={"X-Cancel-Token": registration["cancel_token"]},
            )

        async def report(workshop: str, walk_ins: int) -> Any:
            body = {
                "registrations": [],
                "walk_ins": {
                    "total": walk_ins,
                    "age_brackets": {"soixante_dix_plus": walk_ins},
                    "social_statuses": {"retraite": walk_ins},
                },
            }
            return await client.put(f"{WORKSHOPS}/{workshop}/attendance", json=body, headers=world.admin)

        # Everything at once: the second half of the registrations, a cancellation of every third of the
        # first half, and attendance reports (each sent twice: the second replaces the first).
        race = [register(n) for n in range(REGISTRANTS * UPCOMING // 2, REGISTRANTS * UPCOMING)]
        race += [cancel(r.json(), upcoming[n % UPCOMING]) for n, r in enumerate(first) if n % 3 == 0]
        race += [report(workshop, w) for workshop in started for w in (3, 5)]
        answers = await asyncio.gather(*race)
        unexpected = [a.text for a in answers if a.status_code not in (200, 201, 204, 409)]
        assert not unexpected, unexpected[:3]
        for answer in answers:
            if answer.status_code == 409:
                assert answer.json()["code"] == "workshop_full", answer.text

    async with world.sessions() as session:
        kept = await rollup_rows(session)
        assert kept == await rebuilt_rows(session)
        ours = {key: values for key, values in kept.items() if key[0] == str(world.territory_id)}
        if earlier.month == later.month:
            # Every upcoming workshop is full (10 confirmed), the started ones completed.
            key = (str(world.territory_id), later.strftime("%Y-%m"), "debutant", "")
            assert ours[key][:3] == (3, 0, UPCOMING * 10)
        answer = await world.client.get(
            f"{STATS}/workshops", params={"territory_id": str(world.territory_id)}, headers=world.admin
        )
        assert answer.json() == await naive_workshops(session, territory_id=world.territory_id)
