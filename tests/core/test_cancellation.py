"""A request cancelled at any await point loses no acknowledged write: its connection, whose transaction is
in doubt, is rolled back or thrown away, never handed on as it is (direct path and session path, both
databases)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Generator
from typing import Any

import pytest
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.agreements.models import Agreement
from app.config import Settings
from app.core.changes import Change
from app.core.direct import answer_observers
from app.counsellors.models import Counsellor
from app.db import make_engine
from tests.agreements.helpers import AGREEMENTS, World, agreement_body, committed_world, create_programme
from tests.conftest import postgres_only
from tests.positions.helpers import COUNSELLORS, PERSON


class CancelledAt:
    """Runs `coroutine` and cancels its task when it suspends for the `at`-th time, as `Task.cancel` does
    from outside: the future it waits on is cancelled, and CancelledError comes out of that await."""

    def __init__(self, coroutine: Coroutine[Any, Any, Any], at: int) -> None:
        self.coroutine = coroutine
        self.at = at
        self.suspensions = 0
        self.task: asyncio.Task[Any] | None = None

    def __await__(self) -> Generator[Any, Any, Any]:
        steps = self.coroutine.__await__()
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                yielded = steps.throw(thrown) if thrown is not None else steps.send(sent)
            except StopIteration as done:
                return done.value
            self.suspensions += 1
            if self.suspensions == self.at:
                assert self.task is not None
                # Called inside the task's step: the task cancels the future it is about to wait on.
                self.task.cancel()
            try:
                sent, thrown = (yield yielded), None
            except BaseException as error:
                sent, thrown = None, error


async def _run_cancelled_at(coroutine: Coroutine[Any, Any, Any], at: int) -> tuple[bool, int]:
    """(whether it ran to its end, how often it suspended)."""
    runner = CancelledAt(coroutine, at)

    async def run() -> Any:
        return await runner

    task = asyncio.get_running_loop().create_task(run())
    runner.task = task
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():  # pragma: no cover - this test's own task was cancelled
            raise
        return False, runner.suspensions
    return True, runner.suspensions


async def _count(engine: AsyncEngine, statement: Any) -> int:
    """As another connection sees the committed data."""
    async with engine.connect() as other:
        return int(await other.scalar(statement) or 0)


class Writes:
    """One kind of write: a request that writes the row named `name`, and whether that row is committed."""

    def __init__(self, world: World, kind: str, programme_id: str | None) -> None:
        self.world, self.kind, self.programme_id = world, kind, programme_id

    def request(self, name: str) -> Coroutine[Any, Any, Any]:
        world = self.world
        if self.kind == "agreement":
            # The direct path writes it (`agreements_create`): BEGIN, INSERTs, COMMIT on the driver.
            body = agreement_body(str(self.programme_id), world.territory_id, reference=name)
            return world.client.post(AGREEMENTS, json=body, headers=world.admin)
        # The direct path reads (an unchanged replay is answered there), the route writes (session path).
        body = {**PERSON, "territory_id": str(world.territory_id), "email": f"{name.lower()}@example.org"}
        return world.client.put(f"{COUNSELLORS}/by-ref/{name}", json=body, headers=world.admin)

    async def committed(self, engine: AsyncEngine, name: str) -> bool:
        if self.kind == "agreement":
            statement = select(func.count()).where(Agreement.reference == name)
        else:
            statement = select(func.count()).where(Counsellor.external_ref == name)
        return await _count(engine, statement) == 1


@pytest.mark.parametrize("kind", ["agreement", "counsellor"])
@pytest.mark.parametrize("direct_path", [True, False], ids=["direct", "session"])
async def test_no_acknowledged_write_is_lost_to_a_cancellation(
    settings: Settings, engine: AsyncEngine, direct_path: bool, kind: str
) -> None:
    """A write cancelled at its 1st, 2nd, ... await point (the connection's checkout, BEGIN, each statement,
    COMMIT, the connection's release, until it runs to its end); after each, two more writes are answered
    201 and each is committed, as another connection sees it. A pool of one connection, so that the next
    requests get the connection the cancelled one used (or its replacement). On PostgreSQL, no connection is
    left idle in a transaction. With the direct path, the direct path answered some of the writes."""
    own = settings.model_copy(
        update={"direct_path": direct_path, "database_pool_size": 1, "rate_limits_enabled": False}
    )
    answered_directly: list[str] = []
    answer_observers.append(answered_directly.append)
    async with committed_world(own, engine) as world:
        programme_id = None
        if kind == "agreement":
            programme_id = (await create_programme(world.client, world.admin))["id"]
        writes = Writes(world, kind, programme_id)
        try:
            at = 0
            while True:
                at += 1
                finished, suspensions = await _run_cancelled_at(writes.request(f"CANCELLED-{at}"), at)
                for probe in ("A", "B"):
                    name = f"PROBE-{at}-{probe}"
                    answered = await writes.request(name)
                    assert answered.status_code == 201, (at, suspensions, answered.text)
                    assert await writes.committed(engine, name), (
                        f"acknowledged, then lost (cancelled at {at})"
                    )
                if finished:
                    break
                assert at < 500, "the request never ran to its end"
            # Cancelled at every await point of a write: there were several.
            assert at > 5, (at, suspensions)
            if engine.dialect.name == "postgresql":
                in_doubt = await _count(
                    engine,
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND state LIKE 'idle in transaction%'"
                    ),
                )
                assert in_doubt == 0
            if direct_path and kind == "agreement":
                assert answered_directly, "the direct path wrote none of them"
        finally:
            answer_observers.remove(answered_directly.append)
            async with world.sessions() as session:
                await session.execute(delete(Counsellor).where(Counsellor.territory_id == world.territory_id))
                await session.execute(delete(Change).where(Change.territory_id == world.territory_id))
                await session.commit()


@postgres_only
async def test_a_transaction_that_failed_to_start_is_not_handed_on(settings: Settings) -> None:
    """A BEGIN interrupted on a pooled PostgreSQL connection leaves asyncpg's record of the transaction
    behind; given back to the pool as it is, the next request's transaction would be a savepoint inside one
    that nobody commits, and its acknowledged write would be lost. The pool throws such a connection away."""
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            started = asyncio.get_running_loop().create_task(driver.transaction().start())
            await asyncio.sleep(0)
            started.cancel()
            with pytest.raises(asyncio.CancelledError):
                await started
            assert driver._top_xact is not None  # what the cancellation leaves behind
        name = f"probe_{uuid.uuid4().hex[:8]}"
        async with engine.begin() as connection:
            await connection.execute(text(f"CREATE TABLE {name} (n int)"))
            await connection.execute(text(f"INSERT INTO {name} VALUES (1)"))
        other = make_engine(settings.database_url, pool_size=1)
        try:
            async with other.connect() as reader:
                assert await reader.scalar(text(f"SELECT count(*) FROM {name}")) == 1
            async with other.begin() as connection:
                await connection.execute(text(f"DROP TABLE {name}"))
        finally:
            await other.dispose()
    finally:
        await engine.dispose()
