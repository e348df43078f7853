"""Programme codes under concurrent writes: whoever loses the race for a `code` is answered
`programme_exists`, never the bare `conflict` of the unique constraint."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.db import new_id, utcnow
from app.programmes import repository
from app.programmes import service as programmes
from app.programmes.errors import ProgrammeExists
from app.programmes.models import Programme
from app.programmes.schemas import ProgrammeCreate, ProgrammeUpdate
from tests.agreements.helpers import (
    PROGRAMME,
    PROGRAMMES,
    committed_rows,
    committed_world,
    create_programme,
    get_programme,
    merge_patch,
)
from tests.conftest import postgres_only
from tests.helpers import assert_problem, backend_pid, ids, wait_until_blocked

CODE = "RACE_FOR_THIS_CODE"


def competitor_after_the_check(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The first look-up of a code answers truly ("free"); then a competitor's programme with that code is
    written through another path, before ours is flushed: the window between the check and the write.

    Returns the answers of every look-up, the later ones being the service's second look after a failed
    write."""
    real = repository.exists_with_code
    answers: list[bool] = []

    async def racing(session: AsyncSession, code: str, exclude_id: Any) -> bool:
        answer = await real(session, code, exclude_id)
        answers.append(answer)
        if len(answers) == 1:
            now = utcnow()
            await session.execute(
                insert(Programme.__table__).values(
                    id=new_id(),
                    code=code,
                    name="Competitor",
                    positions_target=10,
                    budget_cents=0,
                    subsidy_per_position_cents=0,
                    starts_on=date(2021, 1, 1),
                    version=1,
                    created_at=now,
                    updated_at=now,
                )
            )
        return answer

    monkeypatch.setattr(repository, "exists_with_code", racing)
    return answers


async def test_a_create_that_loses_the_race_for_its_code_is_409_programme_exists(
    client: httpx.AsyncClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = competitor_after_the_check(monkeypatch)
    response = await client.post(PROGRAMMES, json={**PROGRAMME, "code": CODE}, headers=admin)
    assert_problem(response, 409, "programme_exists")
    # Free at the check, taken at the write, and looked up again after the failed INSERT: the transaction
    # survived it (the write ran in a savepoint; PostgreSQL refuses any statement after a failed one).
    assert answers == [False, True]
    # The request rolled back as a whole (the competitor's row went with it: it shared the transaction).
    assert ids(await client.get(PROGRAMMES)) == []


async def test_a_patch_that_loses_the_race_for_its_code_is_409_programme_exists(
    client: httpx.AsyncClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    programme = await create_programme(client, admin)
    answers = competitor_after_the_check(monkeypatch)
    response = await merge_patch(
        client, admin, f"{PROGRAMMES}/{programme['id']}", {"code": CODE, "name": "Renamed"}
    )
    assert_problem(response, 409, "programme_exists")
    assert answers == [False, True]
    assert await get_programme(client, programme["id"]) == programme


# --- real concurrency ----------------------------------------------------------------------------------


async def test_parallel_creates_of_one_code_give_one_programme_and_programme_exists(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with committed_world(settings, engine) as world:
        responses = await asyncio.gather(
            *(
                world.client.post(
                    PROGRAMMES, json={**PROGRAMME, "code": CODE, "name": f"Copy {i}"}, headers=world.admin
                )
                for i in range(6)
            )
        )
        assert sorted(r.status_code for r in responses) == [201] + [409] * 5, [r.text for r in responses]
        for response in responses:
            if response.status_code != 201:
                assert_problem(response, 409, "programme_exists")
        listed = (await world.client.get(PROGRAMMES)).json()["items"]
        assert [(p["code"], p["id"]) for p in listed] == [
            (CODE, next(r.json()["id"] for r in responses if r.status_code == 201))
        ]


async def test_parallel_renames_to_one_code_leave_one_programme_with_it(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with committed_world(settings, engine) as world:
        created = [await create_programme(world.client, world.admin, code=f"RENAMED_{i}") for i in range(5)]
        responses = await asyncio.gather(
            *(
                merge_patch(world.client, world.admin, f"{PROGRAMMES}/{p['id']}", {"code": CODE})
                for p in created
            )
        )
        assert sorted(r.status_code for r in responses) == [200] + [409] * 4, [r.text for r in responses]
        for response in responses:
            if response.status_code != 200:
                assert_problem(response, 409, "programme_exists")
        codes = sorted(p["code"] for p in (await world.client.get(PROGRAMMES)).json()["items"])
        assert codes.count(CODE) == 1
        assert len(codes) == 5


def _create(code: str, name: str = "Programme") -> ProgrammeCreate:
    return ProgrammeCreate.model_validate({**PROGRAMME, "code": code, "name": name})


async def _count(engine: AsyncEngine, code: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).where(Programme.code == code))).scalar_one())


@postgres_only
async def test_a_create_waiting_on_an_uncommitted_code_is_programme_exists_once_it_commits(
    engine: AsyncEngine,
) -> None:
    async with committed_rows(engine) as sessions, sessions() as first, sessions() as second:
        await programmes.create(first, _create(CODE))
        # Its check sees no committed row; its INSERT then waits on the first's uncommitted key.
        pid = await backend_pid(second)
        competitor = asyncio.create_task(programmes.create(second, _create(CODE, "Second")))
        await wait_until_blocked(second, pid, competitor)
        await first.commit()
        with pytest.raises(ProgrammeExists):
            await competitor
        await second.rollback()
        assert await _count(engine, CODE) == 1


@postgres_only
async def test_a_rename_waiting_on_an_uncommitted_code_is_programme_exists_once_it_commits(
    engine: AsyncEngine,
) -> None:
    async with committed_rows(engine) as sessions:
        async with sessions() as setup:
            other = await programmes.create(setup, _create("OTHER"))
            await setup.commit()
        async with sessions() as first, sessions() as second:
            await programmes.create(first, _create(CODE))

            async def rename() -> None:
                locked = await programmes.get_for_update(second, other.id)
                await programmes.update(second, locked, ProgrammeUpdate(code=CODE))

            pid = await backend_pid(second)
            competitor = asyncio.create_task(rename())
            await wait_until_blocked(second, pid, competitor)
            await first.commit()
            with pytest.raises(ProgrammeExists):
                await competitor
            await second.rollback()
        assert await _count(engine, CODE) == 1
        assert await _count(engine, "OTHER") == 1
