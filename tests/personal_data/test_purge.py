"""The retention purge: registrants of old workshops and counsellors long gone are erased, nothing else;
every statistic stays the same; a second run changes nothing."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.audit import AuditEvent
from app.counsellors.models import Counsellor
from app.db import utcnow
from app.personal_data import journal, service
from app.workshops.models import Registration
from tests.audit.helpers import events
from tests.helpers import assert_problem
from tests.positions.helpers import (
    COUNSELLORS,
    assign,
    create_counsellor,
    create_position,
    day,
    end_assignment,
)
from tests.stats.helpers import STATS, rollup_rows, workshop_with
from tests.workshops.helpers import WORKSHOPS, Place, at

RETENTION = service.Retention(
    registration_months=12, counsellor_months=24, journal_days=365, idempotency_hours=24
)
WALK_INS = {"total": 1, "age_brackets": {"soixante_dix_plus": 1}, "social_statuses": {"retraite": 1}}
PEOPLE = (
    ("soixante_dix_plus", "retraite"),
    ("douze_dix_huit", "scolarise"),
    (None, None),
    ("vingt_cinq_trente_neuf", "en_emploi"),
)


async def every_statistic(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    """Every grouping of both statistics, for a caller without a key and for `headers`' caller, JSON and
    CSV."""
    answers: dict[str, Any] = {}
    for caller, sent in (("public", {}), ("scoped", headers)):
        for group_by in ("none", "theme", "month", "territory", "level"):
            params = {"group_by": group_by, "from": "2020-01-01"}
            response = await client.get(f"{STATS}/workshops", params=params, headers=sent)
            assert response.status_code == 200, response.text
            answers[f"{caller} workshops {group_by}"] = response.json()
            csv = await client.get(
                f"{STATS}/workshops", params=params, headers={**sent, "Accept": "text/csv"}
            )
            answers[f"{caller} workshops {group_by} csv"] = csv.text
        for group_by in ("none", "territory", "kind"):
            response = await client.get(f"{STATS}/positions", params={"group_by": group_by}, headers=sent)
            assert response.status_code == 200, response.text
            answers[f"{caller} positions {group_by}"] = response.json()
    return answers


async def scene(client: httpx.AsyncClient, place: Place) -> dict[str, Any]:
    """Two old workshops (one held, one cancelled), a recent one held, one upcoming; counsellors whose
    last assignment ended long ago, recently, or lasts."""
    admin, position = place.admin, place.lyon_position["id"]
    old = await workshop_with(
        client, admin, position, "2024-03-12T09:00:00Z", people=PEOPLE, present=(0, 1, 2), walk_ins=WALK_INS
    )
    old_cancelled = await workshop_with(
        client, admin, position, "2024-05-02T09:00:00Z", people=PEOPLE[:2], cancel=True, seed=1
    )
    recent = await workshop_with(
        client, admin, position, at(-20), people=PEOPLE, present=(0, 3), walk_ins=WALK_INS, seed=2
    )
    upcoming = await workshop_with(client, admin, position, at(30), people=PEOPLE[:1], seed=3)
    extra = await create_position(client, admin, place.world.lyon["id"], external_ref="P-EXTRA")
    gone = await create_counsellor(client, admin, place.tree.lyon_metro.id, email="gone@example.org")
    first = await assign(client, admin, extra["id"], gone["id"], started_on="2021-05-03")
    assert (await end_assignment(client, admin, first["id"], "2022-06-30")).status_code == 200
    recently = await create_counsellor(client, admin, place.tree.lyon_metro.id, email="recent@example.org")
    second = await assign(client, admin, extra["id"], recently["id"], started_on="2022-07-01")
    assert (await end_assignment(client, admin, second["id"], day(-10))).status_code == 200
    return {
        "old": old,
        "old_cancelled": old_cancelled,
        "recent": recent,
        "upcoming": upcoming,
        "gone": gone,
        "recently": recently,
    }


async def registrations(session: AsyncSession, workshop: dict[str, Any]) -> list[Registration]:
    stmt = select(Registration).where(Registration.workshop_id == uuid.UUID(workshop["id"]))
    return list((await session.execute(stmt.execution_options(populate_existing=True))).scalars())


async def counsellor(session: AsyncSession, counsellor_id: str) -> Counsellor:
    stmt = select(Counsellor).where(Counsellor.id == uuid.UUID(counsellor_id))
    return (await session.execute(stmt.execution_options(populate_existing=True))).scalar_one()


async def test_purge_erases_what_is_past_retention_and_keeps_every_statistic(
    client: httpx.AsyncClient, session: AsyncSession, place: Place
) -> None:
    world = await scene(client, place)
    before = await every_statistic(client, place.admin)
    rollup = await rollup_rows(session)

    report = await service.purge(session, RETENTION)
    await session.flush()

    assert (report.registrations, report.counsellors) == (6, 1)
    for name in ("old", "old_cancelled"):
        for r in await registrations(session, world[name]):
            assert (r.first_name, r.last_name, r.email, r.email_key, r.phone) == (None,) * 5
            assert r.anonymized_at is not None
    for name in ("recent", "upcoming"):
        rows = await registrations(session, world[name])
        assert rows
        assert all(r.email and r.first_name and r.anonymized_at is None for r in rows)
    gone = await counsellor(session, world["gone"]["id"])
    assert (gone.first_name, gone.email, gone.anonymized_at is not None) == (None, None, True)
    for kept in (world["recently"]["id"], place.counsellor["id"]):
        row = await counsellor(session, kept)
        assert row.first_name == "Camille"
        assert row.email
        assert row.anonymized_at is None

    assert await every_statistic(client, place.admin) == before
    assert await rollup_rows(session) == rollup

    # The old workshop's activity report sent again counts the same people the same way: an erased
    # registration keeps its attendance, age bracket and social status.
    report_again = {
        "registrations": [
            {"id": world["old"]["registrations"][i]["id"], "attendance": "present"} for i in (0, 1, 2)
        ],
        "walk_ins": WALK_INS,
    }
    resent = await client.put(
        f"{WORKSHOPS}/{world['old']['id']}/attendance", json=report_again, headers=place.admin
    )
    assert resent.status_code == 200, resent.text
    assert await every_statistic(client, place.admin) == before

    # Idempotent: nothing more to do, nothing changes.
    again = await service.purge(session, RETENTION)
    assert (again.registrations, again.counsellors) == (0, 0)
    assert await every_statistic(client, place.admin) == before


async def test_purge_by_batches(
    client: httpx.AsyncClient, session: AsyncSession, place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = await scene(client, place)
    monkeypatch.setattr(service, "BATCH", 4)
    report = await service.purge(session, RETENTION)
    await session.flush()
    assert report.registrations == 6
    for name in ("old", "old_cancelled"):
        assert all(r.anonymized_at is not None for r in await registrations(session, world[name]))
    assert (await service.purge(session, RETENTION)).registrations == 0


async def test_a_counsellor_with_an_active_assignment_is_never_purged(
    client: httpx.AsyncClient, session: AsyncSession, place: Place
) -> None:
    # The place's counsellor holds a position since 2021; even a purge far in the future keeps them.
    report = await service.purge(session, RETENTION, now=utcnow() + timedelta(days=3650))
    await session.flush()
    row = await counsellor(session, place.counsellor["id"])
    assert row.anonymized_at is None
    assert row.first_name == "Camille"
    # The other counsellor of the place was never assigned: past retention, it goes.
    assert report.counsellors == 1


async def test_purge_wipes_the_stored_responses_of_the_registrations_it_erases(
    client: httpx.AsyncClient, session: AsyncSession, place: Place
) -> None:
    workshop = await workshop_with(client, place.admin, place.lyon_position["id"], at(5))
    path = f"{WORKSHOPS}/{workshop['id']}/registrations"
    body = {"first_name": "Zéphyrine", "last_name": "Secrète", "email": "zephyrine@example.org"}
    first = await client.post(path, json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201
    replay = await client.post(path, json=body, headers={"Idempotency-Key": "k-1"})
    assert replay.json()["email"] == "zephyrine@example.org"
    # Thirteen months after the workshop.
    await service.purge(session, RETENTION, now=utcnow() + timedelta(days=5 + 400))
    await session.flush()
    gone = await client.post(path, json=body, headers={"Idempotency-Key": "k-1"})
    assert_problem(gone, 410, "idempotency_key_erased")
    assert "zephyrine" not in gone.text.lower()


async def test_purge_deletes_old_journal_lines_keeps_the_others_and_is_journaled(
    client: httpx.AsyncClient, session: AsyncSession, connection: AsyncConnection, place: Place
) -> None:
    world = await scene(client, place)
    person = place.counsellor["id"]
    long_ago = utcnow() - timedelta(days=RETENTION.journal_days + 30)
    session.add(
        AuditEvent(
            occurred_at=long_ago,
            kind="read",
            action="counsellors_get",
            resource="counsellors",
            actor_role="admin",
            subject_ids=[person],
        )
    )
    session.add(
        AuditEvent(
            occurred_at=long_ago,
            kind="write",
            action="counsellors_update",
            resource="counsellors",
            resource_id=uuid.UUID(person),
            actor_role="admin",
        )
    )
    await session.flush()
    # A recent journal line: this access.
    assert (await client.get(f"{COUNSELLORS}/{person}/personal-data", headers=place.admin)).status_code == 200
    reads = await events(connection, kind="read")
    assert len(reads) == 2

    with journal.command_context(service.PURGE_ACTION):
        report = await service.purge(session, RETENTION)
        await session.commit()

    assert report.journal_lines == 1
    assert [e["action"] for e in await events(connection, kind="read")] == ["counsellors_personal_data"]
    # The trail of writes stays, old or not.
    assert [e["occurred_at"] for e in await events(connection, action="counsellors_update")] == [long_ago]
    purge_events = await events(connection, action=service.PURGE_ACTION)
    by_resource: dict[str, list[dict[str, Any]]] = {}
    for event in purge_events:
        by_resource.setdefault(event["resource"], []).append(event)
        assert event["actor_role"] == "system"
    # One event per registration erased, masked; one per counsellor anonymised; the journal's purge; the
    # counts.
    erased = {str(e["resource_id"]) for e in by_resource["registrations"]}
    assert erased == {r["id"] for name in ("old", "old_cancelled") for r in world[name]["registrations"]}
    assert by_resource["registrations"][0]["changes"]["email"] == {"before": "***", "after": None}
    [gone] = by_resource["counsellors"]
    assert str(gone["resource_id"]) == world["gone"]["id"]
    assert gone["changes"]["email"] == {"before": "***", "after": None}
    assert len(by_resource["audit_events"]) == 1
    [summary] = by_resource["personal_data"]
    assert summary["changes"]["registrations"] == {"before": None, "after": 6}
    assert summary["changes"]["counsellors"] == {"before": None, "after": 1}
    assert summary["changes"]["journal_lines"] == {"before": None, "after": 1}
