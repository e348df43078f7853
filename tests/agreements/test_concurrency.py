"""Parallel writers on one programme never take it past its target: proven on PostgreSQL, with one
connection per request and committed transactions (the rollback-per-test fixtures share one connection)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import delete, select

from app.agreements.models import Agreement, Amendment
from app.api_keys import service as api_keys
from app.api_keys.models import ApiKey
from app.api_keys.schemas import ApiKeyCreate
from app.config import Settings
from app.core.auth import Role
from app.core.idempotency import IdempotencyRecord
from app.main import create_app
from app.programmes.models import Programme
from app.territories import service as territories
from app.territories.codes import TerritoryKind
from app.territories.models import Territory
from app.territories.schemas import TerritoryCreate
from tests.agreements.helpers import AGREEMENTS, PROGRAMMES, amend, get_programme, post_agreement
from tests.conftest import bearer, postgres_only
from tests.helpers import assert_problem

CODE = "CONCURRENCY_TEST"
WRITERS = 8


@postgres_only
async def test_parallel_writers_never_push_a_programme_past_its_target(settings: Settings) -> None:
    app = create_app(settings)
    async with LifespanManager(app):
        sessionmaker = app.state.sessionmaker
        async with sessionmaker() as session:
            region = await territories.create(
                session, TerritoryCreate(kind=TerritoryKind.region, code="11", name="Île-de-France")
            )
            key = await api_keys.create(session, ApiKeyCreate(name="concurrency test", role=Role.admin))
            await session.commit()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                await _race(client, bearer(key.key), region.id)
        finally:
            async with sessionmaker() as session:
                programme_ids = select(Programme.id).where(Programme.code == CODE)
                agreement_ids = select(Agreement.id).where(Agreement.programme_id.in_(programme_ids))
                await session.execute(delete(Amendment).where(Amendment.agreement_id.in_(agreement_ids)))
                await session.execute(delete(Agreement).where(Agreement.programme_id.in_(programme_ids)))
                await session.execute(delete(Programme).where(Programme.code == CODE))
                await session.execute(
                    delete(IdempotencyRecord).where(IdempotencyRecord.caller == str(key.id))
                )
                await session.execute(delete(ApiKey).where(ApiKey.id == key.id))
                await session.execute(delete(Territory).where(Territory.id == region.id))
                await session.commit()


async def _race(client: httpx.AsyncClient, admin: dict[str, str], territory_id: uuid.UUID) -> None:
    programme_response = await client.post(
        PROGRAMMES,
        json={
            "code": CODE,
            "name": "Concurrency",
            "positions_target": 10,
            "budget_cents": 10 * 5_000_000,
            "subsidy_per_position_cents": 5_000_000,
            "starts_on": "2021-01-01",
        },
        headers=admin,
    )
    assert programme_response.status_code == 201, programme_response.text
    programme_id = programme_response.json()["id"]

    # Each draft alone fits (3 of 10 positions); together they would take 24.
    creations = await asyncio.gather(
        *(
            post_agreement(client, admin, programme_id, territory_id, reference=f"C-{i}", positions_granted=3)
            for i in range(WRITERS)
        )
    )
    created = [r.json() for r in creations if r.status_code == 201]
    refused = [r for r in creations if r.status_code != 201]
    assert len(created) == 3, [r.text for r in creations]
    for response in refused:
        assert_problem(response, 409, "programme_positions_exceeded")
    await _assert_totals(client, programme_id, 9)

    # Signing does not move the totals: every signature succeeds.
    signatures = await asyncio.gather(
        *(
            client.post(f"{AGREEMENTS}/{a['id']}/sign", json={"signed_on": "2021-03-01"}, headers=admin)
            for a in created
        )
    )
    assert [r.status_code for r in signatures] == [200, 200, 200]

    # One position is left: of the parallel amendments adding one each, exactly one gets it.
    additions = await asyncio.gather(
        *(amend(client, admin, a["id"], "add_positions", 1) for a in created for _ in range(2))
    )
    statuses = sorted(r.status_code for r in additions)
    assert statuses == [201] + [409] * 5, [r.text for r in additions]
    for response in additions:
        if response.status_code == 409:
            assert_problem(response, 409, "programme_positions_exceeded")
    await _assert_totals(client, programme_id, 10)

    # Parallel drafts while others free positions: the totals always match the agreements.
    mixed: list[Any] = [
        client.post(
            f"{AGREEMENTS}/{created[0]['id']}/terminate",
            json={"terminated_on": "2022-01-01", "reason": "x"},
            headers=admin,
        ),
        *(
            post_agreement(client, admin, programme_id, territory_id, reference=f"D-{i}", positions_granted=2)
            for i in range(4)
        ),
    ]
    results = await asyncio.gather(*mixed)
    assert results[0].status_code == 200, results[0].text
    drafted = sum(1 for r in results[1:] if r.status_code == 201)
    # The termination freed 4 positions (3 + 1 if its amendment won): at most 2 drafts of 2 fit.
    assert drafted <= 2
    listed = (
        await client.get(AGREEMENTS, params={"programme_id": programme_id, "limit": 200}, headers=admin)
    ).json()
    live = [a for a in listed["items"] if a["status"] != "terminated"]
    programme = await get_programme(client, programme_id)
    assert programme["positions_granted"] == sum(a["positions_granted"] for a in live) <= 10
    assert programme["subsidy_committed_cents"] == sum(a["subsidy_total_cents"] for a in live)


async def _assert_totals(client: httpx.AsyncClient, programme_id: str, positions: int) -> None:
    programme = await get_programme(client, programme_id)
    assert programme["positions_granted"] == positions
    assert programme["subsidy_committed_cents"] == positions * 5_000_000
