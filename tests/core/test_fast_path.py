"""The request fast path keeps its promises: reads cost their statements only, a lost connection is a 503
and the next request gets a working one, JSON from rows equals the read models' JSON."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, func, literal, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn

from app.config import Settings
from app.core.direct import (
    DirectSession,
    _kept_connections,
    answer_observers,
    statement_observers,
    transaction_observers,
)
from app.core.internals import FairAsyncQueuePool
from app.db import IDLE_PING_SECONDS, make_engine, suspect_connections
from app.ops.router import expected_head
from app.territories.schemas import TerritoryRead
from tests.conftest import TEST_DATABASE_URL, THROUGH_PGBOUNCER, Tree, postgres_only
from tests.helpers import app_client, assert_problem
from tests.positions.helpers import PERSON, committed_positions_world


def _app_engine(client: Any) -> AsyncEngine:
    engine: AsyncEngine = client._transport.app.state.engine
    return engine


def _remember_backends(engine: AsyncEngine) -> set[int]:
    """The server pids of the connections the app checks out from now on."""
    pids: set[int] = set()

    @event.listens_for(engine.sync_engine, "checkout")
    def remember(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        pids.add(dbapi_connection._connection.get_server_pid())

    return pids


async def _terminate(settings: Settings, pids: set[int]) -> None:
    """The server connections of these pids end, as a server restart or a network cut ends them. Through
    PgBouncer the pids the app sees are PgBouncer's own: every server connection to the database ends
    instead, through a connection of the killer's own that bypasses PgBouncer."""
    url = settings.database_url
    if THROUGH_PGBOUNCER:
        assert TEST_DATABASE_URL is not None
        server = make_url(TEST_DATABASE_URL)
        url = make_url(url).set(host=server.host, port=server.port).render_as_string(hide_password=False)
    killer = make_engine(url)
    try:
        async with killer.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            if THROUGH_PGBOUNCER:
                terminated = await conn.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
                assert terminated.scalar_one() > 0
                return
            for pid in pids:
                await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await killer.dispose()


@postgres_only
@pytest.mark.parametrize("direct_path", [True, False], ids=["direct", "route"])
async def test_a_read_is_one_read_only_snapshot(settings: Settings, direct_path: bool) -> None:
    """One snapshot per answer, at the least cost: the direct path reads a territory by its code in one
    statement (one round trip, no BEGIN and no COMMIT), the route in one REPEATABLE READ, READ ONLY
    transaction; no ping of a connection in use."""
    async with app_client(settings.model_copy(update={"direct_path": direct_path})) as client:
        await client.get("/api/v1/territories/departement/69")  # warms the pool
        engine = _app_engine(client)
        sent: list[str] = []
        began: list[Any] = []
        direct: list[str] = []
        rounds: list[str] = []

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            sent.append(statement)

        @event.listens_for(engine.sync_engine, "begin")
        def begin(conn: Any) -> None:
            options = conn.get_execution_options()
            began.append((options.get("isolation_level"), options.get("postgresql_readonly")))

        statement_observers.append(direct.append)
        transaction_observers.append(rounds.append)
        try:
            response = await client.get("/api/v1/territories/departement/69")
        finally:
            statement_observers.remove(direct.append)
            transaction_observers.remove(rounds.append)
        assert response.status_code == 404
        if direct_path:
            # The driver's connection: the engine sees nothing of it. Behind PgBouncer (TEST_PGBOUNCER=1),
            # the statement runs in a transaction all the same, for the timeouts it sets (app.db).
            assert len(direct) == 1, direct
            assert len(rounds) == (2 if THROUGH_PGBOUNCER else 0), rounds
            assert (sent, began) == ([], [])
        else:
            # Behind PgBouncer, the transaction's timeouts first.
            assert len(sent) == (2 if THROUGH_PGBOUNCER else 1), sent
            assert direct == [], direct
            assert began == [("REPEATABLE READ", True)]
        # A write runs in one READ COMMITTED transaction.
        sent.clear()
        began.clear()
        await client.post("/api/v1/territories", json={})
        assert all(level in (None, "READ COMMITTED") for level, _read_only in began), began


@postgres_only
async def test_a_read_only_snapshot_is_what_the_server_runs(settings: Settings) -> None:
    """The direct path's read transaction (a twin that reads several statements), as PostgreSQL sees it."""
    engine = make_engine(settings.database_url)
    try:
        session = DirectSession(engine, snapshot=True)
        session.begin_answer()
        isolation = select(func.current_setting("transaction_isolation").label("isolation"))
        read_only = select(func.current_setting("transaction_read_only").label("read_only"))
        assert (await session.execute(isolation)).scalar() == "repeatable read"
        assert (await session.execute(read_only)).scalar() == "on"
        await _done(session)
    finally:
        await engine.dispose()


@postgres_only
async def test_a_dropped_connection_answers_503_and_the_next_request_succeeds(settings: Settings) -> None:
    async with app_client(settings) as client:
        engine = _app_engine(client)
        pids = _remember_backends(engine)
        assert (await client.get("/api/v1/territories")).status_code == 200
        await _terminate(settings, pids)
        lost = await client.get("/api/v1/territories")
        if THROUGH_PGBOUNCER and lost.status_code == 200:
            # The app's connections are to PgBouncer, which outlive the server's: PgBouncer may notice
            # the lost server connection first and give the transaction a new one.
            pass
        else:
            assert_problem(lost, 503, "service_unavailable")
            assert lost.headers["retry-after"]
        recovered = await client.get("/api/v1/territories")
        assert recovered.status_code == 200, recovered.text


@postgres_only
async def test_a_connection_that_died_while_idle_is_replaced_before_use(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert IDLE_PING_SECONDS > 0
    async with app_client(settings) as client:
        engine = _app_engine(client)
        pids = _remember_backends(engine)
        assert (await client.get("/api/v1/territories")).status_code == 200
        await _terminate(settings, pids)
        # As if the connection had sat in the pool past the threshold.
        monkeypatch.setattr("app.db.IDLE_PING_SECONDS", 0.0)
        response = await client.get("/api/v1/territories")
        assert response.status_code == 200, response.text


async def test_rows_serialise_as_the_read_model_does(client: Any, tree: Tree) -> None:
    response = await client.get(f"/api/v1/territories/{tree.lyon.id}")
    assert response.status_code == 200
    body = response.json()
    assert body == TerritoryRead.model_validate(tree.lyon).model_dump(mode="json")
    assert body["created_at"].endswith("Z")
    listed = await client.get("/api/v1/territories", params={"q": "lyon"})
    assert body in listed.json()["items"]


def test_the_schema_head_read_from_the_files_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    from app.cli import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite:///:memory:"))
    assert expected_head() == script.get_current_head()


async def test_the_direct_path_keeps_a_connection_between_requests(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sequential reads reuse one kept connection (no checkout from the pool each time); a kept connection
    idle for longer than the pool's threshold goes back, and the next read takes one through the pool,
    which checks it with a ping rather than opening a new one."""
    async with app_client(settings) as client:
        engine = _app_engine(client)
        checkouts: list[int] = []
        event.listen(engine.sync_engine, "checkout", lambda *_a: checkouts.append(1))
        for _ in range(5):
            assert (await client.get("/api/v1/territories")).status_code == 200
        assert len(checkouts) == 1
        opened: list[int] = []
        event.listen(engine.sync_engine.pool, "connect", lambda *_a: opened.append(1))
        monkeypatch.setattr("app.db.IDLE_PING_SECONDS", 0.0)
        assert (await client.get("/api/v1/territories")).status_code == 200
        assert len(checkouts) == 2
        assert opened == []


async def test_kept_connections_go_to_the_requests_that_wait_for_one(settings: Settings) -> None:
    """The direct path keeps connections while nobody waits for one; a request about to wait in the pool's
    queue gets the kept ones first, and a connection given back while a request waits goes to it."""
    engine = make_engine(settings.database_url, pool_size=2, pool_timeout=2)
    kept = _kept_connections(engine)
    assert kept is not None
    first, second = await engine.connect(), await engine.connect()
    try:
        # Both checked out, nobody waiting: the direct path may keep one aside.
        assert kept.keep(first.sync_connection) is True
        # It does not wait for the pool's timeout (2 s): the kept connection comes back to the pool for it.
        waiter = await asyncio.wait_for(engine.connect().start(), 1)
        assert kept.take() is None
        # Now a request waits (the pool is exhausted): a connection coming back goes to it, not aside.
        late = asyncio.create_task(engine.connect().start())
        for _ in range(1000):
            if engine.sync_engine.pool._pool.waiting():  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.001)
        assert kept.keep(second.sync_connection) is False
        await second.close()
        await (await asyncio.wait_for(late, 1)).close()
        await waiter.close()
    finally:
        for connection in (first, second):
            await connection.close()
        await engine.dispose()


def _line(engine: AsyncEngine) -> Any:
    return engine.sync_engine.pool._pool  # type: ignore[attr-defined]


async def _until_in_line(engine: AsyncEngine, count: int) -> None:
    for _ in range(1000):
        if _line(engine).waiting() == count:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{_line(engine).waiting()} waiting, not {count}")


def _pool_events(engine: AsyncEngine) -> list[str]:
    seen: list[str] = []
    event.listen(engine.sync_engine.pool, "checkout", lambda *_a: seen.append("checkout"))
    event.listen(engine.sync_engine.pool, "checkin", lambda *_a: seen.append("checkin"))
    return seen


_ONE = select(literal(1).label("one"))


async def _done(session: DirectSession) -> None:
    """As the direct path ends a request: its transaction ended, then its connection released."""
    await session.finish(commit=True)
    await session.close()


async def test_a_direct_request_hands_its_connection_to_the_next_in_line(settings: Settings) -> None:
    """When every connection is out, a direct request waits in the pool's line; the direct request that
    finishes hands its connection straight to it, without the pool's checkin and checkout."""
    engine = make_engine(settings.database_url, pool_size=1, pool_timeout=2)
    seen = _pool_events(engine)
    try:
        first, second = DirectSession(engine), DirectSession(engine)
        assert (await first.execute(_ONE)).scalar() == 1
        waiting = asyncio.create_task(second.execute(_ONE))
        await _until_in_line(engine, 1)
        await _done(first)
        assert (await asyncio.wait_for(waiting, 1)).scalar() == 1
        assert seen == ["checkout"]
        await _done(second)
        assert _line(engine).waiting() == 0
    finally:
        await engine.dispose()


async def test_direct_and_pool_waiters_are_served_in_the_order_they_came(settings: Settings) -> None:
    """A request of the session path waiting ahead of a direct one gets the connection first, through the
    pool; the direct one then gets it from the pool, its checkout events run."""
    engine = make_engine(settings.database_url, pool_size=1, pool_timeout=2)
    seen = _pool_events(engine)
    served: list[str] = []
    try:
        holder = DirectSession(engine)
        await holder.execute(_ONE)

        async def session_path() -> None:
            async with engine.connect() as connection:
                served.append("session path")
                await connection.execute(text("SELECT 1"))

        async def direct_path() -> None:
            session = DirectSession(engine)
            await session.execute(_ONE)
            served.append("direct path")
            await _done(session)

        tasks = [asyncio.create_task(session_path())]
        await _until_in_line(engine, 1)
        tasks.append(asyncio.create_task(direct_path()))
        await _until_in_line(engine, 2)
        await _done(holder)
        await asyncio.wait_for(asyncio.gather(*tasks), 2)
        assert served == ["session path", "direct path"]
        assert seen == ["checkout", "checkin", "checkout", "checkin", "checkout"]
    finally:
        await engine.dispose()


async def test_a_direct_request_still_times_out_and_leaves_the_line(settings: Settings) -> None:
    engine = make_engine(settings.database_url, pool_size=1, pool_timeout=0.3)
    try:
        holder = DirectSession(engine)
        await holder.execute(_ONE)
        with pytest.raises(sa_exc.TimeoutError):
            await DirectSession(engine).execute(_ONE)
        assert _line(engine).waiting() == 0
        await _done(holder)
        after = DirectSession(engine)
        assert (await after.execute(_ONE)).scalar() == 1
        await _done(after)
    finally:
        await engine.dispose()


async def test_a_direct_request_cancelled_after_a_handoff_passes_the_connection_on(
    settings: Settings,
) -> None:
    """Cancelled once a connection was handed to it, before it ran: the connection goes on to the next
    in line (handed over by a direct request, or given back through the pool), never lost."""
    engine = make_engine(settings.database_url, pool_size=1, pool_timeout=2)
    try:
        for give_back in ("direct", "pool"):
            holder = DirectSession(engine)
            await holder.execute(_ONE)
            cancelled = asyncio.create_task(DirectSession(engine).execute(_ONE))
            await _until_in_line(engine, 1)
            patient_session = DirectSession(engine)
            patient = asyncio.create_task(patient_session.execute(_ONE))
            await _until_in_line(engine, 2)
            if give_back == "direct":
                await _done(holder)
            else:
                # As the session path gives a connection back: through the pool's checkin.
                connection = holder._engine_connection
                holder._engine_connection = None
                await greenlet_spawn(connection.close)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            assert (await asyncio.wait_for(patient, 2)).scalar() == 1, give_back
            await _done(patient_session)
            assert _line(engine).waiting() == 0
    finally:
        await engine.dispose()


async def test_after_a_lost_connection_the_others_are_pinged_not_reopened(settings: Settings) -> None:
    """Only what is broken is thrown away: after a connection was found lost, a connection of the same pool
    is checked with a ping before its next use (kept by the direct path or pooled), and stays in service
    when it answers."""
    engine = make_engine(settings.database_url, pool_size=2, pool_timeout=2)
    opened: list[int] = []
    event.listen(engine.sync_engine.pool, "connect", lambda *_a: opened.append(1))
    try:
        warm = DirectSession(engine)
        await warm.execute(_ONE)
        await _done(warm)
        assert len(opened) == 1
        suspect_connections(engine)
        checkouts: list[int] = []
        event.listen(engine.sync_engine.pool, "checkout", lambda *_a: checkouts.append(1))
        after = DirectSession(engine)
        assert (await after.execute(_ONE)).scalar() == 1
        await _done(after)
        # The kept connection was suspect: back through the pool, whose checkout pinged it; not reopened.
        assert checkouts == [1]
        assert len(opened) == 1
        again = DirectSession(engine)
        assert (await again.execute(_ONE)).scalar() == 1
        await _done(again)
        assert checkouts == [1], "checked once, then trusted again"
    finally:
        await engine.dispose()


async def test_a_direct_request_waits_only_when_the_pool_may_not_open_a_connection(
    settings: Settings,
) -> None:
    """With an overflow the pool may use (here unlimited), a direct request opens a connection rather
    than waiting in line, as the session path does."""
    engine = create_async_engine(
        settings.database_url, poolclass=FairAsyncQueuePool, pool_size=1, max_overflow=-1, pool_timeout=0.2
    )
    try:
        sessions = [DirectSession(engine) for _ in range(3)]
        for session in sessions:
            assert (await session.execute(_ONE)).scalar() == 1
        for session in sessions:
            await _done(session)
    finally:
        await engine.dispose()


@postgres_only
async def test_an_unchanged_hr_put_reads_in_one_statement_and_journals_it(
    settings: Settings, engine: AsyncEngine
) -> None:
    """An HR system's replay (`PUT /counsellors/by-ref/{ref}` that changes nothing) on the direct path: the
    key, then one statement for the employer, the counsellor and its current assignment, each a snapshot
    of its own with no BEGIN and no COMMIT; then the answer's journal line in a transaction (behind
    PgBouncer, each in a transaction, for the timeouts it sets)."""
    own = settings.model_copy(update={"direct_path": True, "rate_limits_enabled": False})
    async with committed_positions_world(own, engine) as world:
        url = "/api/v1/counsellors/by-ref/REPLAY-1"
        body = {**PERSON, "territory_id": str(world.territory_id)}
        created = await world.client.put(url, json=body, headers=world.admin)
        assert created.status_code == 201, created.text
        statements: list[str] = []
        rounds: list[str] = []
        answered: list[str] = []
        statement_observers.append(statements.append)
        transaction_observers.append(rounds.append)
        answer_observers.append(answered.append)
        try:
            replay = await world.client.put(url, json=body, headers=world.admin)
        finally:
            statement_observers.remove(statements.append)
            transaction_observers.remove(rounds.append)
            answer_observers.remove(answered.append)
        assert (replay.status_code, replay.json()) == (200, created.json())
        assert answered == ["counsellors_upsert_by_ref"]
        assert len(statements) == 3, statements
        assert statements[-1].startswith("INSERT INTO audit_events"), statements
        assert rounds == ["BEGIN", "COMMIT"] * (3 if THROUGH_PGBOUNCER else 1), rounds
