"""Only what is broken is thrown away: a statement past the client's command timeout throws away its own
connection, a statement the server cancels (`statement_timeout`) or a parameter the driver refuses none, and
the other connections of the pool stay in service (PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import Integer, bindparam, event, func, literal, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.core.direct import DirectSession
from app.db import make_engine
from tests.conftest import postgres_only

pytestmark = postgres_only

POOL = 4
_ONE = select(literal(1).label("one"))


async def _read(engine: AsyncEngine, statement: Any = _ONE, params: dict[str, Any] | None = None) -> Any:
    async with DirectSession(engine) as session:
        return (await session.execute(statement, params)).scalar()


async def _all_busy(engine: AsyncEngine) -> None:
    """POOL direct requests at once: every connection of the pool is used (and kept)."""
    slow = select(func.pg_sleep(0.05).label("slept"))
    await asyncio.gather(*(_read(engine, slow) for _ in range(POOL)))


def _opened(engine: AsyncEngine) -> list[int]:
    opened: list[int] = []
    event.listen(engine.sync_engine.pool, "connect", lambda *_a: opened.append(1))
    return opened


@pytest.mark.parametrize("failure", ["command_timeout", "statement_timeout", "bad_parameter"])
async def test_a_failed_statement_throws_away_at_most_its_own_connection(
    settings: Settings, failure: str
) -> None:
    engine = make_engine(
        settings.database_url,
        pool_size=POOL,
        command_timeout=0.5 if failure == "command_timeout" else None,
        statement_timeout_ms=200 if failure == "statement_timeout" else 10_000,
    )
    try:
        await _all_busy(engine)
        opened = _opened(engine)
        if failure == "bad_parameter":
            statement = select(literal(1).label("one")).where(bindparam("number", type_=Integer) == 1)
            with pytest.raises(sa_exc.DBAPIError):
                await _read(engine, statement, {"number": "not a number"})
        else:
            with pytest.raises(sa_exc.DBAPIError):
                await _read(engine, select(func.pg_sleep(2).label("slept")))
        for _ in range(3):
            await _all_busy(engine)
        # The command timeout: the one connection whose answer never came is replaced; nothing else.
        assert len(opened) == (1 if failure == "command_timeout" else 0)
        assert await _read(engine) == 1
    finally:
        await engine.dispose()
