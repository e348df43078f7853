"""Territories under concurrent writes: a lost uniqueness race is still `territory_exists`; a child created
while an ancestor moves lands on the new path. The real races need separate connections, hence PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db import make_sessionmaker
from app.territories import repository
from app.territories import service as territories
from app.territories.codes import TerritoryKind
from app.territories.errors import TerritoryExists
from app.territories.models import Territory
from app.territories.schemas import TerritoryCreate, TerritoryUpdate
from tests.conftest import Tree, postgres_only
from tests.helpers import assert_problem, backend_pid, wait_until_blocked
from tests.territories.helpers import BASE, siren


def lose_the_race(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first uniqueness check answers "free", as if the competitor had not committed yet."""
    real = repository.exists_with_code
    calls = {"n": 0}

    async def racing(*args: Any, **kwargs: Any) -> bool:
        calls["n"] += 1
        return False if calls["n"] == 1 else await real(*args, **kwargs)

    monkeypatch.setattr(repository, "exists_with_code", racing)


async def test_create_that_loses_the_uniqueness_race_is_409_territory_exists(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    lose_the_race(monkeypatch)
    response = await client.post(
        BASE, json={"kind": "region", "code": "84", "name": "ARA bis"}, headers=admin
    )
    assert_problem(response, 409, "territory_exists")
    # The request's transaction survived the failed INSERT (it ran in a savepoint) and nothing was written.
    listed = await client.get(BASE, params={"kind": "region", "code": "84"})
    assert [t["name"] for t in listed.json()["items"]] == ["Auvergne-Rhône-Alpes"]


async def test_patch_that_loses_the_uniqueness_race_is_409_territory_exists(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    lose_the_race(monkeypatch)
    response = await client.patch(
        f"{BASE}/{tree.occ.id}", json={"code": "84", "name": "Renamed"}, headers={**admin, "If-Match": '"1"'}
    )
    assert_problem(response, 409, "territory_exists")
    occ = (await client.get(f"{BASE}/{tree.occ.id}")).json()
    assert (occ["code"], occ["name"], occ["version"]) == ("76", "Occitanie", 1)


# --- real concurrency (PostgreSQL) -------------------------------------------------------------------


@pytest.fixture
async def committed(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions that really commit; every territory they leave behind is deleted afterwards, leaves first."""
    maker = make_sessionmaker(engine)
    async with maker() as session:
        before = set((await session.execute(select(Territory.id))).scalars())
    try:
        yield maker
    finally:
        async with maker() as session:
            rows = (await session.execute(select(Territory.id, Territory.path))).all()
            # Deepest first: a longer path is a deeper territory.
            for territory_id, _path in sorted(
                (r for r in rows if r[0] not in before), key=lambda r: -len(r[1])
            ):
                await session.execute(delete(Territory).where(Territory.id == territory_id))
            await session.commit()


async def _create(session: AsyncSession, kind: str, code: str, parent: Territory | None = None) -> Territory:
    return await territories.create(
        session,
        TerritoryCreate(
            kind=TerritoryKind(kind),
            code=code,
            name=f"{kind} {code}",
            parent_id=parent.id if parent else None,
        ),
    )


@postgres_only
async def test_concurrent_creates_of_one_code_give_one_row_and_one_409(
    committed: async_sessionmaker[AsyncSession],
) -> None:
    async with committed() as first, committed() as second:
        await _create(first, "region", "98")

        async def compete() -> None:
            await _create(second, "region", "98")

        # The second INSERT waits on the first's uncommitted unique key, then fails once it commits.
        pid = await backend_pid(second)
        competitor = asyncio.create_task(compete())
        await wait_until_blocked(second, pid, competitor)
        await first.commit()
        with pytest.raises(TerritoryExists):
            await competitor
        await second.rollback()
    async with committed() as session:
        rows = (await session.execute(select(Territory).where(Territory.code == "98"))).scalars().all()
        assert len(rows) == 1


@postgres_only
async def test_a_child_created_while_its_ancestor_moves_follows_the_move(
    committed: async_sessionmaker[AsyncSession],
) -> None:
    async with committed() as session:
        old_region = await _create(session, "region", "98")
        new_region = await _create(session, "region", "99")
        departement = await _create(session, "departement", "974", old_region)
        epci = await _create(session, "epci", siren("21974000"), departement)
        await session.commit()

    async with committed() as mover, committed() as creator:
        moving = await mover.get_one(Territory, departement.id)
        await territories.update(mover, moving, TerritoryUpdate(parent_id=new_region.id))

        async def create_child() -> uuid.UUID:
            commune = await _create(creator, "commune", "97411", epci)
            await creator.commit()
            return commune.id

        # Without a lock, the creator would read the EPCI's old path and commit a commune that the mover's
        # UPDATE of the subtree never saw.
        pid = await backend_pid(creator)
        creating = asyncio.create_task(create_child())
        await wait_until_blocked(creator, pid, creating)
        await mover.commit()
        commune_id = await creating

    async with committed() as session:
        commune = await session.get_one(Territory, commune_id)
        assert commune.path == f"/{new_region.id}/{departement.id}/{epci.id}/{commune_id}/"

        def subtree(path: str) -> Any:
            return session.execute(
                repository.list_query(within_path=path).with_only_columns(Territory.id),
                repository.list_params(within_path=path),
            )

        assert commune_id in set((await subtree(f"/{new_region.id}/")).scalars())
        assert list((await subtree(f"/{old_region.id}/")).scalars()) == [old_region.id]


async def test_a_territory_moved_right_after_one_of_its_ancestors_moved(
    session: AsyncSession, make_territory: Any
) -> None:
    """The EPCI's path in memory went stale when its département moved (one UPDATE of the subtree, which the
    loaded objects do not see): its own move must start from the path the database holds, or its communes
    stay behind. Both databases: what matters is one session, not two."""
    old_region = await make_territory("region", "98")
    new_region = await make_territory("region", "99")
    departement = await make_territory("departement", "974", parent=old_region)
    other_departement = await make_territory("departement", "976", parent=old_region)
    epci = await make_territory("epci", siren("21974000"), parent=departement)
    commune = await make_territory("commune", "97411", parent=epci)

    await territories.update(session, departement, TerritoryUpdate(parent_id=new_region.id))
    await territories.update(session, epci, TerritoryUpdate(parent_id=other_departement.id))
    await session.flush()

    expected = f"/{old_region.id}/{other_departement.id}/{epci.id}/"
    stored = {row.id: row.path for row in await session.execute(select(Territory.id, Territory.path))}
    assert stored[epci.id] == expected
    assert stored[commune.id] == f"{expected}{commune.id}/"
