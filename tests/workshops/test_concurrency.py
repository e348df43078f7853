"""Capacity under real concurrency: 200 simultaneous registrations on 20 seats and 10 waitlist places, then
5 simultaneous cancellations, through an app of its own over committed data (one connection per request).

On PostgreSQL the registrations meet on the workshop's row lock; on SQLite they queue on BEGIN IMMEDIATE:
the outcome is the same on both."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.core.changes import Change
from app.positions.models import Position
from app.workshops.models import Registration, Workshop
from tests.agreements.helpers import World, committed_world, create_programme, create_signed
from tests.helpers import app_client, assert_problem
from tests.positions.helpers import create_position
from tests.workshops.helpers import WORKSHOPS, at, person, workshop_body

REGISTRANTS = 200
SEATS = 20
WAITLIST = 10


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


async def _counts(world: World, workshop: str) -> tuple[tuple[int, int, int], list[Registration]]:
    workshop_id = uuid.UUID(workshop)
    async with world.sessions() as session:
        workshop = (await session.execute(select(Workshop).where(Workshop.id == workshop_id))).scalar_one()
        rows = list(
            (
                await session.execute(select(Registration).where(Registration.workshop_id == workshop_id))
            ).scalars()
        )
    return (workshop.registered_count, workshop.waitlisted_count, workshop.seats_left), rows


@pytest.mark.parametrize("direct_path", [True, False], ids=["direct", "route"])
async def test_capacity_holds_under_200_simultaneous_registrations(
    world: World, settings: Settings, direct_path: bool
) -> None:
    programme = await create_programme(world.client, world.admin, code="WORKSHOP_RACE")
    agreement = await create_signed(
        world.client, world.admin, programme["id"], world.territory_id, reference="W", positions_granted=1
    )
    position = await create_position(world.client, world.admin, agreement["id"])
    body = workshop_body(
        position["id"],
        format="remote",
        venue=None,
        online_url="https://visio.example.org/race",
        capacity=SEATS,
        waitlist_capacity=WAITLIST,
        starts_at=at(3),
    )
    created = await world.client.post(WORKSHOPS, json=body, headers=world.admin)
    assert created.status_code == 201, created.text
    workshop_id = created.json()["id"]
    url = f"{WORKSHOPS}/{workshop_id}/registrations"

    # Many connections at once (a pool of 16), long waits allowed: what
    # is measured is the outcome, not the latency. Rate limits are off in the tests' settings.
    racing = settings.model_copy(
        update={
            "database_pool_size": 8,
            "database_pool_timeout_seconds": 120.0,
            "sqlite_busy_timeout_ms": 120_000,
            "database_lock_timeout_ms": 60_000,
            # The registrations through their direct path (app.core.direct), or through the route.
            "direct_path": direct_path,
        }
    )
    async with app_client(racing) as client:
        answers = await asyncio.gather(*(client.post(url, json=person(n)) for n in range(REGISTRANTS)))
        statuses: dict[Any, int] = {}
        for answer in answers:
            key = answer.json().get("status") if answer.status_code == 201 else answer.json().get("code")
            statuses[key] = statuses.get(key, 0) + 1
        assert statuses == {"confirmed": SEATS, "waitlisted": WAITLIST, "workshop_full": REGISTRANTS - 30}, [
            a.text for a in answers if a.status_code not in (201, 409)
        ][:3]
        for answer in answers:
            if answer.status_code != 201:
                assert_problem(answer, 409, "workshop_full")
        counters, rows = await _counts(world, workshop_id)
        assert counters == (SEATS, WAITLIST, 0)
        assert sorted(r.waitlist_rank for r in rows if r.status == "waitlisted") == list(
            range(1, WAITLIST + 1)
        )
        assert sum(r.status == "confirmed" for r in rows) == SEATS

        # Five confirmed people cancel at once with their tokens: exactly the first five waitlisted move up.
        confirmed = [a.json() for a in answers if a.status_code == 201 and a.json()["status"] == "confirmed"]
        waitlisted = sorted(
            (a.json() for a in answers if a.status_code == 201 and a.json()["status"] == "waitlisted"),
            key=lambda r: r["waitlist_rank"],
        )
        cancellations = await asyncio.gather(
            *(
                client.delete(f"{url}/{r['id']}", headers={"X-Cancel-Token": r["cancel_token"]})
                for r in confirmed[:5]
            )
        )
        assert [c.status_code for c in cancellations] == [204] * 5, [c.text for c in cancellations]
    counters, rows = await _counts(world, workshop_id)
    assert counters == (SEATS, WAITLIST - 5, 0)
    by_id = {str(r.id): r for r in rows}
    assert [by_id[r["id"]].status for r in waitlisted[:5]] == ["confirmed"] * 5
    assert [by_id[r["id"]].waitlist_rank for r in waitlisted[5:]] == [1, 2, 3, 4, 5]
    assert sum(r.status == "confirmed" for r in rows) == SEATS
    assert sum(r.status == "cancelled" for r in rows) == 5


async def _remote_workshop(world: World, code: str, seats: int) -> str:
    programme = await create_programme(world.client, world.admin, code=code)
    agreement = await create_signed(
        world.client, world.admin, programme["id"], world.territory_id, reference=code, positions_granted=1
    )
    position = await create_position(world.client, world.admin, agreement["id"])
    body = workshop_body(
        position["id"],
        format="remote",
        venue=None,
        online_url="https://visio.example.org/same-email",
        capacity=seats,
        waitlist_capacity=0,
        starts_at=at(3),
    )
    created = await world.client.post(WORKSHOPS, json=body, headers=world.admin)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


@pytest.mark.parametrize("direct_path", [True, False], ids=["direct", "route"])
async def test_one_email_registered_by_many_requests_at_once_is_registered_once(
    world: World, settings: Settings, direct_path: bool
) -> None:
    """The email is checked in the statement that waits for the workshop's lock, on what it saw before
    waiting: a request that registered the same email meanwhile is caught by the unique index at the
    INSERT, and the loser's counters are rolled back with it."""
    workshop_id = await _remote_workshop(world, "SAME_EMAIL", seats=50)
    racing = settings.model_copy(
        update={
            "database_pool_size": 8,
            "database_pool_timeout_seconds": 120.0,
            "sqlite_busy_timeout_ms": 120_000,
            "database_lock_timeout_ms": 60_000,
            "direct_path": direct_path,
        }
    )
    url = f"{WORKSHOPS}/{workshop_id}/registrations"
    async with app_client(racing) as client:
        answers = await asyncio.gather(*(client.post(url, json=person(7)) for _ in range(20)))
    assert sorted(a.status_code for a in answers) == [201] + [409] * 19, [a.text for a in answers][:3]
    for answer in answers:
        if answer.status_code == 409:
            assert_problem(answer, 409, "already_registered")
    counters, rows = await _counts(world, workshop_id)
    assert counters == (1, 0, 49)
    assert [r.email_key for r in rows] == ["personne.7@example.org"]


def _email_seen_by_the_lock_as(registered: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The locking statement answers `registered` for the email, whatever the table holds: what its
    snapshot, taken before it waited for the lock, may show."""
    from app.workshops import repository

    real = repository.lock_for_registration

    async def stale(*args: Any, **kwargs: Any) -> Any:
        row = await real(*args, **kwargs)
        return None if row is None else SimpleNamespace(**{**row._asdict(), "email_registered": registered})

    monkeypatch.setattr(repository, "lock_for_registration", stale)


@pytest.mark.parametrize("direct_path", [True, False], ids=["direct", "route"])
async def test_the_same_email_committed_while_waiting_for_the_lock_is_409_and_nothing_is_written(
    world: World, settings: Settings, monkeypatch: pytest.MonkeyPatch, direct_path: bool
) -> None:
    """What the unique index answers when the locking statement saw no registration of the email (its
    snapshot predates the other request's commit): simulated by hiding the registration from that
    statement's answer."""
    workshop_id = await _remote_workshop(world, "STALE_EMAIL", seats=5)
    url = f"{WORKSHOPS}/{workshop_id}/registrations"
    async with app_client(settings.model_copy(update={"direct_path": direct_path})) as client:
        first = await client.post(url, json=person(3))
        assert first.status_code == 201, first.text
        _email_seen_by_the_lock_as(False, monkeypatch)
        second = await client.post(url, json=person(3))
    assert_problem(second, 409, "already_registered")
    counters, rows = await _counts(world, workshop_id)
    assert counters == (1, 0, 4)
    assert len(rows) == 1


async def test_a_registration_cancelled_while_waiting_for_the_lock_frees_its_email(
    world: World, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The locking statement may still see a registration that was cancelled while it waited: its "already
    registered" is checked again, and the person registers."""
    workshop_id = await _remote_workshop(world, "CANCELLED_EMAIL", seats=5)
    url = f"{WORKSHOPS}/{workshop_id}/registrations"
    async with app_client(settings) as client:
        _email_seen_by_the_lock_as(True, monkeypatch)
        registered = await client.post(url, json=person(4))
    assert registered.status_code == 201, registered.text
    counters, rows = await _counts(world, workshop_id)
    assert counters == (1, 0, 4)
    assert len(rows) == 1


async def test_a_full_workshop_answers_already_registered_to_a_registered_email(
    world: World, settings: Settings
) -> None:
    workshop_id = await _remote_workshop(world, "FULL_EMAIL", seats=1)
    url = f"{WORKSHOPS}/{workshop_id}/registrations"
    async with app_client(settings) as client:
        assert (await client.post(url, json=person(5))).status_code == 201
        assert_problem(await client.post(url, json=person(5)), 409, "already_registered")
        assert_problem(await client.post(url, json=person(6)), 409, "workshop_full")
