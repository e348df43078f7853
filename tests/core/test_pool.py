"""The connection pool serves the requests waiting for a connection in the order they came
(`app.core.internals`), on the test database (SQLite file or PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import greenlet_spawn

from app.config import Settings
from app.core.internals import FairAsyncQueue, FairAsyncQueuePool
from app.db import make_engine


@pytest.fixture
async def one_connection(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine whose pool holds one connection, waited for at most 0.5 s."""
    engine = make_engine(settings.database_url, pool_size=1, pool_timeout=0.5)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def patient_connection(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """One connection, waited for up to 10 s: for an order that must not depend on a busy machine's speed
    (four requests served one after the other within 0.5 s is not a given on 2 loaded cores)."""
    engine = make_engine(settings.database_url, pool_size=1, pool_timeout=10)
    try:
        yield engine
    finally:
        await engine.dispose()


def _waiting(engine: AsyncEngine) -> int:
    queue = engine.sync_engine.pool._pool  # type: ignore[attr-defined]
    assert isinstance(queue, FairAsyncQueue)
    return queue.waiting()


async def _until_waiting(engine: AsyncEngine, count: int) -> None:
    for _ in range(500):
        if _waiting(engine) == count:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{_waiting(engine)} waiting, not {count}")


async def test_the_engines_use_the_fair_pool(one_connection: AsyncEngine) -> None:
    assert isinstance(one_connection.sync_engine.pool, FairAsyncQueuePool)


async def test_waiters_get_the_connection_in_the_order_they_came(
    patient_connection: AsyncEngine,
) -> None:
    served: list[str] = []

    async def request(name: str) -> None:
        async with patient_connection.connect() as connection:
            served.append(name)
            await connection.execute(text("SELECT 1"))

    held = await patient_connection.connect()
    await held.execute(text("SELECT 1"))
    waiters = []
    for index, name in enumerate(["first", "second", "third"]):
        waiters.append(asyncio.create_task(request(name)))
        await _until_waiting(patient_connection, index + 1)
    # The connection comes back, and a request asks for one in the same instant, before the first waiter
    # has run: it comes last, behind the three that were waiting, instead of taking the connection.
    await held.close()
    async with patient_connection.connect() as late:
        served.append("late")
        await late.execute(text("SELECT 1"))
    await asyncio.gather(*waiters)
    assert served == ["first", "second", "third", "late"]
    assert _waiting(patient_connection) == 0
    assert patient_connection.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_waiter_still_times_out_and_leaves_the_line(one_connection: AsyncEngine) -> None:
    async with one_connection.connect() as held:
        await held.execute(text("SELECT 1"))
        with pytest.raises(exc.TimeoutError):
            async with one_connection.connect():
                pass  # pragma: no cover - never reached
        assert _waiting(one_connection) == 0
    # The connection given back goes to the next request, not to the waiter that gave up.
    async with one_connection.connect() as connection:
        assert (await connection.execute(text("SELECT 2"))).scalar() == 2


async def test_a_waiter_cancelled_after_the_handoff_passes_the_connection_on(
    one_connection: AsyncEngine,
) -> None:
    held: AsyncConnection = await one_connection.connect()
    await held.execute(text("SELECT 1"))
    cancelled = asyncio.create_task(one_connection.connect().start())
    await _until_waiting(one_connection, 1)
    patient = asyncio.create_task(one_connection.connect().start())
    await _until_waiting(one_connection, 2)
    # Give the connection back and cancel the first waiter before it runs: the connection it was handed
    # must reach the second waiter, not be lost (the pool has one).
    await held.close()
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    connection = await asyncio.wait_for(patient, 2)
    try:
        assert (await connection.execute(text("SELECT 3"))).scalar() == 3
    finally:
        await connection.close()
    assert one_connection.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_waiter_whose_hook_fails_after_a_handoff_passes_the_connection_on() -> None:
    """The hook that gives connections back before a request waits (`before_wait`) may hand one to that very
    request and then fail (the request cancelled): the connection must not be lost with it."""
    queue: FairAsyncQueue[str] = FairAsyncQueue(maxsize=1)

    def give_back_then_fail() -> None:
        queue.put_nowait("connection")
        raise asyncio.CancelledError

    queue.before_wait = give_back_then_fail
    with pytest.raises(asyncio.CancelledError):
        await greenlet_spawn(queue.get, True, 1.0)
    assert queue.waiting() == 0
    queue.before_wait = None
    assert await greenlet_spawn(queue.get, True, 1.0) == "connection"
