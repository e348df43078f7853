"""The request transaction: committed before the response is sent, reads beside writers on SQLite,
bound values kept out of error texts."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import delete, event, select, text
from sqlalchemy.exc import DBAPIError

from app.api_keys import service as api_keys
from app.api_keys.models import ApiKey
from app.api_keys.schemas import ApiKeyCreate
from app.config import Settings
from app.core.auth import Role
from app.db import SessionDep, make_engine, make_sessionmaker
from app.programmes.models import Programme
from app.territories.codes import fold
from app.territories.models import Territory
from tests.conftest import IS_POSTGRES, bearer
from tests.helpers import add_route, app_client, assert_problem


def _region(code: str, name: str) -> Territory:
    ident = uuid.uuid4()
    return Territory(id=ident, kind="region", code=code, name=name, name_sort=fold(name), path=f"/{ident}/")


async def test_a_failure_at_commit_reaches_the_client(settings: Settings) -> None:
    """The session commits before the response goes out: a write that only fails at COMMIT time (here a
    duplicate left unflushed by the handler) is answered 409, never 200 followed by a lost write."""
    engine = make_engine(settings.database_url)
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as session:
        session.add(_region("01", "Guadeloupe"))
        await session.commit()

    async def duplicate(session: SessionDep) -> dict[str, bool]:
        session.add(_region("01", "Guadeloupe (copy)"))
        return {"ok": True}

    def setup(app: FastAPI) -> None:
        add_route(app, "/duplicate", duplicate, methods=["POST"])

    try:
        async with app_client(settings, setup) as client:
            response = await client.post("/duplicate")
            assert_problem(response, 409, "conflict")
        async with sessionmaker() as session:
            names = (await session.execute(select(Territory.name).where(Territory.code == "01"))).scalars()
            assert list(names) == ["Guadeloupe"]
    finally:
        async with sessionmaker() as session:
            await session.execute(delete(Territory).where(Territory.code == "01"))
            await session.commit()
        await engine.dispose()


async def test_bound_values_stay_out_of_database_errors(settings: Settings) -> None:
    """Exception texts end up in logs; the values bound to a statement may be personal data."""
    engine = make_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError) as caught:
                await conn.execute(
                    text("SELECT * FROM no_such_table WHERE email = :email"), {"email": "j.d@ex.fr"}
                )
        assert "j.d@ex.fr" not in str(caught.value)
    finally:
        await engine.dispose()


@pytest.mark.skipif(IS_POSTGRES, reason="SQLite's locking")
@pytest.mark.parametrize("direct_path", [True, False], ids=["direct", "route"])
async def test_on_sqlite_reads_go_on_while_a_writer_holds_the_lock(
    settings: Settings, direct_path: bool
) -> None:
    quick = settings.model_copy(update={"sqlite_busy_timeout_ms": 300, "direct_path": direct_path})
    engine = make_engine(settings.database_url)
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as session:
        admin = await api_keys.create(session, ApiKeyCreate(name="lock test", role=Role.admin))
        await session.commit()
    statements: list[str] = []
    apps: list[FastAPI] = []
    try:
        async with app_client(quick, apps.append) as client:
            event.listen(
                apps[0].state.engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2])
            )
            async with engine.connect() as writer:
                await writer.begin()  # BEGIN IMMEDIATE: the write lock, held until the end of the block
                read = await asyncio.wait_for(client.get("/api/v1/territories"), timeout=5)
                assert read.status_code == 200
                write = await client.post(
                    "/api/v1/territories",
                    json={"kind": "region", "code": "02", "name": "Martinique"},
                    headers=bearer(str(admin.key)),
                )
                # The writer is still there: after busy_timeout, a clean "retry later".
                assert_problem(write, 503, "service_unavailable")
                assert write.headers["retry-after"]
                await writer.rollback()
        begins = [s for s in statements if s.startswith("BEGIN")]
        # The direct path reads outside any transaction (one statement); the route in a DEFERRED one.
        expected = ["BEGIN IMMEDIATE"] if direct_path else ["BEGIN DEFERRED", "BEGIN IMMEDIATE"]
        assert begins[: len(expected)] == expected
    finally:
        async with sessionmaker() as session:
            await session.execute(delete(ApiKey).where(ApiKey.id == admin.id))
            await session.commit()
        await engine.dispose()


@pytest.mark.skipif(IS_POSTGRES, reason="SQLite's locking")
async def test_on_sqlite_a_body_that_is_not_json_gets_its_answer_while_a_writer_holds_the_lock(
    settings: Settings,
) -> None:
    """Such a request's key is looked up for its 401 or 403 (`check_caller_of_unread_body`) as a read:
    without the write lock, so that a writer holding it delays neither its refusal nor its 422."""
    quick = settings.model_copy(update={"sqlite_busy_timeout_ms": 300})
    engine = make_engine(settings.database_url)
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as session:
        admin = await api_keys.create(session, ApiKeyCreate(name="lock test", role=Role.admin))
        await session.commit()
    broken, json_type = b'{"kind": ', {"Content-Type": "application/json"}
    try:
        async with app_client(quick) as client, engine.connect() as writer:
            await writer.begin()  # BEGIN IMMEDIATE: the write lock, held until the end of the block
            unknown = await client.post(
                "/api/v1/territories", content=broken, headers={**json_type, **bearer("cnfs_unknown")}
            )
            assert_problem(unknown, 401, "unauthenticated")
            known = await client.post(
                "/api/v1/territories", content=broken, headers={**json_type, **bearer(str(admin.key))}
            )
            assert_problem(known, 422, "validation_error")
            await writer.rollback()
    finally:
        async with sessionmaker() as session:
            await session.execute(delete(ApiKey).where(ApiKey.id == admin.id))
            await session.commit()
        await engine.dispose()


@pytest.mark.skipif(not IS_POSTGRES, reason="PostgreSQL row locks and lock_timeout")
async def test_a_lock_held_too_long_is_a_503_not_a_hang(settings: Settings) -> None:
    """Writes to one programme queue on its row lock; past lock_timeout the waiter gets "retry later"."""
    quick = settings.model_copy(update={"database_lock_timeout_ms": 200})
    engine = make_engine(settings.database_url)
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as session:
        admin = await api_keys.create(session, ApiKeyCreate(name="lock test", role=Role.admin))
        programme = Programme(
            code="LOCK_TEST",
            name="Lock test",
            positions_target=10,
            budget_cents=10_000,
            subsidy_per_position_cents=1_000,
            starts_on=date(2026, 1, 1),
        )
        session.add(programme)
        await session.commit()
    try:
        async with app_client(quick) as client, engine.connect() as holder:
            await holder.begin()
            await holder.execute(select(Programme).where(Programme.id == programme.id).with_for_update())
            started = asyncio.get_running_loop().time()
            response = await client.patch(
                f"/api/v1/programmes/{programme.id}",
                json={"name": "renamed"},
                headers={**bearer(str(admin.key)), "If-Match": f'"{programme.version}"'},
            )
            waited = asyncio.get_running_loop().time() - started
            await holder.rollback()
        assert_problem(response, 503, "service_unavailable")
        assert response.headers["retry-after"]
        assert waited < 5
    finally:
        async with sessionmaker() as session:
            await session.execute(delete(Programme).where(Programme.id == programme.id))
            await session.execute(delete(ApiKey).where(ApiKey.id == admin.id))
            await session.commit()
        await engine.dispose()


async def test_a_sqlite_connection_back_in_the_pool_is_rolled_back_only_inside_a_transaction(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's reset costs a trip through aiosqlite's thread: it runs only when a transaction is open."""
    from sqlalchemy.util import greenlet_spawn

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/reset.db", pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        raw = await engine.raw_connection()
        adapted = raw.dbapi_connection
        rollbacks: list[Any] = []
        real = type(adapted).rollback

        def counted(self: Any) -> None:
            rollbacks.append(self)
            real(self)

        monkeypatch.setattr(type(adapted), "rollback", counted)
        driver: Any = raw.driver_connection
        # A read outside a transaction: nothing to roll back.
        await (await driver.execute("SELECT count(*) FROM t")).fetchone()
        await greenlet_spawn(raw.close)
        assert rollbacks == []
        # A transaction left open: rolled back, and the next user finds the connection clean.
        raw = await engine.raw_connection()
        assert raw.dbapi_connection is adapted
        await driver.execute("BEGIN")
        await driver.execute("INSERT INTO t VALUES (1)")
        await greenlet_spawn(raw.close)
        assert rollbacks == [adapted]
        raw = await engine.raw_connection()
        assert not driver.in_transaction
        assert await (await driver.execute("SELECT count(*) FROM t")).fetchone() == (0,)
        await greenlet_spawn(raw.close)
    finally:
        await engine.dispose()
