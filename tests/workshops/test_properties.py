"""Random sequences of registrations, cancellations and capacity changes: after every step the workshop's
counters equal its registrations, nobody waits while a seat is free, and the waitlist ranks are 1..n."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal, Role
from app.core.problems import AppError
from app.referentials.data import Level, Theme
from app.workshops import service
from app.workshops.models import Registration, Workshop, WorkshopFormat
from app.workshops.schemas import RegistrationCreate, WorkshopCreate, WorkshopUpdate
from tests.workshops.helpers import Place

ADMIN = Principal(role=Role.admin, name="property test")

operations = st.lists(
    st.one_of(
        st.tuples(st.just("register"), st.integers(0, 12)),
        st.tuples(st.just("cancel"), st.integers(0, 30)),
        st.tuples(st.just("capacity"), st.integers(1, 6)),
        st.tuples(st.just("waitlist"), st.integers(0, 4)),
    ),
    max_size=25,
)


async def _check(session: AsyncSession, workshop: Workshop) -> None:
    await session.refresh(workshop)
    rows = list(
        (await session.execute(select(Registration).where(Registration.workshop_id == workshop.id))).scalars()
    )
    confirmed = [r for r in rows if r.status == "confirmed"]
    waitlisted = sorted((r for r in rows if r.status == "waitlisted"), key=lambda r: r.waitlist_rank or 0)
    assert workshop.registered_count == len(confirmed) <= workshop.capacity
    assert workshop.waitlisted_count == len(waitlisted) <= workshop.waitlist_capacity
    assert workshop.seats_left == workshop.capacity - len(confirmed)
    assert [r.waitlist_rank for r in waitlisted] == list(range(1, len(waitlisted) + 1))
    if workshop.seats_left > 0:
        assert not waitlisted, "someone waits while a seat is free"
    emails = [r.email_key for r in rows if r.status != "cancelled"]
    assert len(emails) == len(set(emails))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
async def test_counters_always_equal_the_rows(
    session: AsyncSession, place: Place, ops: list[tuple[str, int]]
) -> None:
    created = await service.create(
        session,
        WorkshopCreate(
            position_id=uuid.UUID(place.lyon_position["id"]),
            title="Atelier",
            themes=[Theme.email],
            level=Level.debutant,
            format=WorkshopFormat.remote,
            online_url="https://visio.example.org/p",
            starts_at=datetime.now(UTC) + timedelta(days=2),
            duration_minutes=60,
            capacity=3,
            waitlist_capacity=2,
        ),
        ADMIN,
    )
    workshop_id = created.id
    registered: list[uuid.UUID] = []
    for op, n in ops:
        try:
            async with session.begin_nested():
                if op == "register":
                    data = RegistrationCreate(first_name="A", last_name="B", email=f"p{n}@example.org")
                    registration, _token = await service.register(session, workshop_id, data, ADMIN)
                    registered.append(registration.id)
                elif op == "cancel" and registered:
                    rid = registered[n % len(registered)]
                    await service.cancel_registration(session, workshop_id, rid, ADMIN, None)
                elif op in ("capacity", "waitlist"):
                    workshop = await service.get_for_change(session, workshop_id, ADMIN)
                    field = "capacity" if op == "capacity" else "waitlist_capacity"
                    await service.update(session, workshop, WorkshopUpdate(**{field: n}))
        except AppError as exc:
            refused = exc.code
        else:
            refused = None
        assert refused in (None, "workshop_full", "already_registered", "capacity_below_registrations")
        workshop = (await session.execute(select(Workshop).where(Workshop.id == workshop_id))).scalar_one()
        await _check(session, workshop)
