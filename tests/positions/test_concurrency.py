"""Races, with committed transactions on separate connections (an app of its own, one connection per
request): positions never exceed what the agreement grants, even against an amendment withdrawing
positions; a position never has two assignments on one day, nor a counsellor two positions; two HR syncs of
one person never make two rows nor a 500. On PostgreSQL the writers meet on row locks; on SQLite they queue
on BEGIN IMMEDIATE: the same outcomes hold on both."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.counsellors.models import Counsellor
from app.positions.models import Position
from tests.agreements.helpers import World, amend, create_programme, create_signed
from tests.conftest import postgres_only
from tests.helpers import assert_problem, wait_until_blocked
from tests.positions.helpers import (
    COUNSELLORS,
    PERSON,
    committed_positions_world,
    create_position,
    post_assignment,
    post_position,
)

WRITERS = 6


@pytest.fixture
async def world(settings: Settings, engine: AsyncEngine) -> AsyncIterator[World]:
    async with committed_positions_world(settings, engine) as world:
        yield world


async def _agreement(world: World, positions: int) -> dict[str, Any]:
    programme = await create_programme(world.client, world.admin, code=f"RACE_{positions}")
    return await create_signed(
        world.client,
        world.admin,
        programme["id"],
        world.territory_id,
        reference="RACE",
        positions_granted=positions,
    )


async def _counsellor(world: World, ref: str) -> str:
    response = await world.client.put(
        f"{COUNSELLORS}/by-ref/{ref}",
        json={**PERSON, "territory_id": str(world.territory_id)},
        headers=world.admin,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _open_positions(world: World, agreement_id: str) -> int:
    async with world.sessions() as session:
        stmt = select(func.count()).where(
            Position.agreement_id == uuid.UUID(agreement_id), Position.closed_on.is_(None)
        )
        return int((await session.execute(stmt)).scalar_one())


async def test_parallel_positions_never_exceed_the_agreement(world: World) -> None:
    agreement = await _agreement(world, 3)
    responses = await asyncio.gather(
        *(post_position(world.client, world.admin, agreement["id"]) for _ in range(WRITERS))
    )
    assert sorted(r.status_code for r in responses) == [201] * 3 + [409] * (WRITERS - 3), [
        r.text for r in responses
    ]
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "agreement_positions_exhausted")
    assert await _open_positions(world, agreement["id"]) == 3


async def test_positions_racing_a_withdrawal_never_overshoot(world: World) -> None:
    agreement = await _agreement(world, 4)
    assert (await post_position(world.client, world.admin, agreement["id"])).status_code == 201
    # 1 open of 4; together: a withdrawal of 2 and 4 creations. Whatever the order, open ≤ granted.
    results = await asyncio.gather(
        amend(world.client, world.admin, agreement["id"], "withdraw_positions", 2),
        *(post_position(world.client, world.admin, agreement["id"]) for _ in range(4)),
    )
    withdrawal, creations = results[0], results[1:]
    assert withdrawal.status_code in (201, 409), withdrawal.text
    for response in creations:
        if response.status_code != 201:
            assert_problem(response, 409, "agreement_positions_exhausted")
    granted = (await world.client.get(f"/api/v1/agreements/{agreement['id']}", headers=world.admin)).json()
    open_positions = await _open_positions(world, agreement["id"])
    assert open_positions == granted["positions_open"] <= granted["positions_granted"]
    if withdrawal.status_code == 201:
        assert granted["positions_granted"] == 2
    else:
        assert_problem(withdrawal, 409, "positions_below_allocated")
        assert open_positions == 4


async def test_one_position_two_counsellors_at_once(world: World) -> None:
    agreement = await _agreement(world, 2)
    position = await create_position(world.client, world.admin, agreement["id"])
    counsellors = [await _counsellor(world, f"P-{i}") for i in range(WRITERS)]
    responses = await asyncio.gather(
        *(post_assignment(world.client, world.admin, position["id"], c, "2021-05-03") for c in counsellors)
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * (WRITERS - 1), [
        r.text for r in responses
    ]
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "position_occupied")


async def test_one_counsellor_two_positions_at_once(world: World) -> None:
    agreement = await _agreement(world, WRITERS)
    positions = [await create_position(world.client, world.admin, agreement["id"]) for _ in range(WRITERS)]
    counsellor = await _counsellor(world, "C-1")
    responses = await asyncio.gather(
        *(post_assignment(world.client, world.admin, p["id"], counsellor, "2021-05-03") for p in positions)
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * (WRITERS - 1), [
        r.text for r in responses
    ]
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "counsellor_already_assigned")


async def _lock_row(
    engine: AsyncEngine,
    counsellor_id: str,
    release: asyncio.Event,
    pid: asyncio.Future[int],
    held: asyncio.Event,
) -> str:
    """Locks the counsellor's row as an assignment does (`FOR UPDATE`) with a lock_timeout of 4 s and a
    statement_timeout of 5 s, holds it until `release`, and says how the lock ended: `held`, or the
    SQLSTATE of the error."""
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SET LOCAL lock_timeout = '4s'")
        await conn.exec_driver_sql("SET LOCAL statement_timeout = '5s'")
        pid.set_result(int((await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()))
        try:
            await conn.execute(
                select(Counsellor.id).where(Counsellor.id == uuid.UUID(counsellor_id)).with_for_update()
            )
        except DBAPIError as error:
            await conn.rollback()
            return str(getattr(error.orig, "sqlstate", error.orig))
        held.set()
        await release.wait()
        await conn.rollback()
        return "held"


@postgres_only
async def test_a_line_on_one_row_waits_past_lock_timeout_until_statement_timeout(
    world: World, engine: AsyncEngine
) -> None:
    """Why a line of writers on one row ends in 57014 rather than 55P03: the third in line waits in one
    statement through two lock acquisitions, the row's tuple lock while the second waits for the first
    (2 s here), then the second's transaction, each shorter than lock_timeout (4 s), and statement_timeout
    (5 s) cancels it (SQLSTATE 57014). Each holder of the line adds its whole transaction to the wait of
    those behind it: `assign` holds the counsellor's lock for as little as it can. (Either wait must stay
    under lock_timeout: the first lasts 2 s and a busy machine's delays, the second the rest of the 5 s.)"""
    counsellor = await _counsellor(world, "LINE")
    releases = [asyncio.Event() for _ in range(3)]
    pids: list[asyncio.Future[int]] = [asyncio.get_running_loop().create_future() for _ in range(3)]
    held = [asyncio.Event() for _ in range(3)]
    writers: list[asyncio.Task[str]] = []
    try:
        async with world.sessions() as observer:
            for index in range(3):
                started = asyncio.get_running_loop().time()
                writers.append(
                    asyncio.create_task(
                        _lock_row(engine, counsellor, releases[index], pids[index], held[index])
                    )
                )
                if index:
                    await wait_until_blocked(observer, await pids[index], writers[index])
                else:
                    await asyncio.wait_for(held[0].wait(), timeout=10)
        await asyncio.sleep(2.0)
        releases[0].set()
        assert await writers[0] == "held"
        # The second holds the row now; the third waits for its transaction, past lock_timeout in all.
        third = await asyncio.wait_for(writers[2], timeout=10)
        waited = asyncio.get_running_loop().time() - started
        assert third == "57014", third
        assert waited > 4.0, waited
    finally:
        for release in releases:
            release.set()
        await asyncio.gather(*writers, return_exceptions=True)


@postgres_only
async def test_assignments_in_line_for_one_counsellor_hold_its_lock_briefly(
    settings: Settings, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks of an assignment that do not depend on the counsellor (its position's: here each made
    0.8 s slower) run before the counsellor's lock: the line of six writers on that lock does not add them
    up, and no writer reaches statement_timeout (3 s, lock_timeout 2 s) where the line would have held the
    last one for five times 0.8 s."""
    from app.positions import repository

    slow = Settings.model_validate(
        {
            **settings.model_dump(),
            "database_lock_timeout_ms": 2000,
            "database_statement_timeout_ms": 3000,
        }
    )
    async with committed_positions_world(slow, engine) as world:
        agreement = await _agreement(world, WRITERS)
        positions = [
            await create_position(world.client, world.admin, agreement["id"]) for _ in range(WRITERS)
        ]
        counsellor = await _counsellor(world, "C-SLOW")
        overlap = repository.position_has_overlap

        async def slow_overlap(*args: Any, **kwargs: Any) -> bool:
            await asyncio.sleep(0.8)
            return await overlap(*args, **kwargs)

        monkeypatch.setattr(repository, "position_has_overlap", slow_overlap)
        responses = await asyncio.gather(
            *(
                post_assignment(world.client, world.admin, p["id"], counsellor, "2021-05-03")
                for p in positions
            )
        )
    assert sorted(r.status_code for r in responses) == [201] + [409] * (WRITERS - 1), [
        r.text for r in responses
    ]
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "counsellor_already_assigned")


async def test_a_termination_racing_an_assignment(world: World) -> None:
    agreement = await _agreement(world, 2)
    position = await create_position(world.client, world.admin, agreement["id"])
    counsellor = await _counsellor(world, "T-1")
    assignment, termination = await asyncio.gather(
        post_assignment(world.client, world.admin, position["id"], counsellor, "2021-05-03"),
        world.client.post(
            f"/api/v1/agreements/{agreement['id']}/terminate",
            json={"terminated_on": "2022-01-01", "reason": "Fin."},
            headers=world.admin,
        ),
    )
    # Either the assignment came first (and the termination is refused), or the termination did (and the
    # position is closed when the assignment looks at it): never an occupied position on a terminated
    # agreement.
    if assignment.status_code == 201:
        assert_problem(termination, 409, "agreement_has_occupied_positions")
    else:
        assert termination.status_code == 200, termination.text
        assert_problem(assignment, 409, "position_closed")


async def test_two_syncs_of_one_person_at_once(world: World) -> None:
    body = {**PERSON, "territory_id": str(world.territory_id)}
    puts = [
        world.client.put(
            f"{COUNSELLORS}/by-ref/SAME", json={**body, "first_name": f"N{i}"}, headers=world.admin
        )
        for i in range(WRITERS)
    ]
    bulk_items = {"items": [{**body, "external_ref": "SAME"}, {**body, "external_ref": "OTHER"}]}
    bulks = [world.client.post(f"{COUNSELLORS}/bulk", json=bulk_items, headers=world.admin) for _ in range(3)]
    responses: list[httpx.Response] = await asyncio.gather(*puts, *bulks)
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 201, 207}, [r.text for r in responses]
    item_statuses = Counter(
        item["status"] for r in responses if r.status_code == 207 for item in r.json()["items"]
    )
    assert set(item_statuses) <= {200, 201}
    # Exactly one creation per person, and every other sync updated that row.
    assert (
        statuses[201]
        + sum(
            1
            for r in responses
            if r.status_code == 207
            for i in r.json()["items"]
            if i["status"] == 201 and i["external_ref"] == "SAME"
        )
        == 1
    )
    async with world.sessions() as session:
        rows = (
            await session.execute(
                select(Counsellor.external_ref, func.count())
                .where(Counsellor.territory_id == world.territory_id)
                .group_by(Counsellor.external_ref)
            )
        ).all()
    assert dict(rows) == {"SAME": 1, "OTHER": 1}
    # No update was lost: every PUT (each with its own name) made its own version, and the row is at the
    # highest version any writer reported.
    put_versions = [r.json()["version"] for r in responses[:WRITERS]]
    assert len(set(put_versions)) == WRITERS
    bulk_versions = [
        i["version"] for r in responses[WRITERS:] for i in r.json()["items"] if i["external_ref"] == "SAME"
    ]
    final = (await world.client.get(COUNSELLORS, params={"external_ref": "SAME"}, headers=world.admin)).json()
    assert final["items"][0]["version"] == max(put_versions + bulk_versions)
