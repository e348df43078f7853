"""The service through PgBouncer in transaction mode (DATABASE_PGBOUNCER=true): a PgBouncer of the test's own
in front of the test's PostgreSQL, fewer server connections than the service's pool, so that the service's
connections share server sessions.

The whole suite runs through PgBouncer with TEST_PGBOUNCER=1 (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from asgi_lifespan import LifespanManager
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from app.api_keys import service as api_keys
from app.api_keys.schemas import ApiKeyCreate
from app.cli import alembic_config
from app.config import Settings
from app.core.auth import Role
from app.core.direct import DirectSession, answer_observers
from app.db import make_engine, make_sessionmaker
from app.main import create_app
from app.startup import StartupError, check_database
from bench.pgbouncer import MISSING, PGBOUNCER, free_port, pgbouncer, through
from tests.conftest import TEST_DATABASE_URL, _create_pg_database, _drop_pg_database, postgres_only

needs_pgbouncer = pytest.mark.skipif(PGBOUNCER is None, reason=MISSING)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bouncer() -> Iterator[str]:
    """A database of its own, migrated through PgBouncer (two server connections); its URL through it."""
    assert TEST_DATABASE_URL
    name = f"cnfs_pgbouncer_{uuid.uuid4().hex[:8]}"
    asyncio.run(_create_pg_database(TEST_DATABASE_URL, name))
    try:
        with pgbouncer(TEST_DATABASE_URL, pool_size=2) as address:
            url = through(address, make_url(TEST_DATABASE_URL).set(database=name).render_as_string(False))
            config = alembic_config(url)
            config.attributes["pgbouncer"] = True
            command.upgrade(config, "head")
            yield url
    finally:
        asyncio.run(_drop_pg_database(TEST_DATABASE_URL, name))


def _asyncpg_dsn(url: str) -> dict[str, Any]:
    parsed = make_url(url)
    return {"host": parsed.host, "port": parsed.port, "user": parsed.username, "database": parsed.database}


async def _admin_key(bouncer: str, name: str) -> str:
    """An admin key, written through PgBouncer."""
    engine = make_engine(bouncer, pgbouncer=True)
    try:
        async with make_sessionmaker(engine)() as session:
            key = (await api_keys.create(session, ApiKeyCreate(name=name, role=Role.admin))).key
            await session.commit()
    finally:
        await engine.dispose()
    return key


@pytest.fixture(scope="module")
async def bounced(bouncer: str) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """The service through PgBouncer (a pool of 8 connections over PgBouncer's 2), and an admin's headers."""
    key = await _admin_key(bouncer, "pgbouncer")
    settings = Settings(
        database_url=bouncer,
        database_pgbouncer=True,
        database_pool_size=8,
        secret_key="pgbouncer-test-" + "x" * 32,
        log_json=False,
        log_level="WARNING",
        rate_limits_enabled=False,
    )
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            yield client, {"Authorization": f"Bearer {key}"}


@postgres_only
@needs_pgbouncer
async def test_concurrent_writes_and_reads_through_pgbouncer(
    bounced: tuple[httpx.AsyncClient, dict[str, str]], bouncer: str
) -> None:
    """Twenty callers at once, each creating, reading (the route and the direct twin), listing and changing
    a territory, then creating a counsellor in it, found in the change feed: eight service connections over
    two server sessions."""
    client, admin = bounced
    answered: list[str] = []
    answer_observers.append(answered.append)
    departements = [f"{n:02d}" for n in range(21, 41)]

    async def one(code: str) -> tuple[str, str]:
        created = await client.post(
            "/api/v1/territories",
            json={"kind": "departement", "code": code, "name": f"Département {code}"},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        territory = created.json()
        by_code = await client.get(f"/api/v1/territories/departement/{code}", headers=admin)
        assert by_code.status_code == 200, by_code.text
        assert by_code.json()["id"] == territory["id"]
        listed = await client.get(f"/api/v1/territories?kind=departement&code={code}", headers=admin)
        assert [item["id"] for item in listed.json()["items"]] == [territory["id"]]
        renamed = await client.patch(
            f"/api/v1/territories/{territory['id']}",
            json={"name": f"Renommé {code}"},
            headers={**admin, "If-Match": '"1"', "Content-Type": "application/merge-patch+json"},
        )
        assert renamed.status_code == 200, renamed.text
        by_id = await client.get(f"/api/v1/territories/{territory['id']}", headers=admin)
        assert (by_id.json()["name"], by_id.headers["etag"]) == (f"Renommé {code}", '"2"')
        counsellor = await client.post(
            "/api/v1/counsellors",
            json={"territory_id": territory["id"], "first_name": "Camille", "last_name": f"Exemple {code}"},
            headers=admin,
        )
        assert counsellor.status_code == 201, counsellor.text
        return str(counsellor.json()["id"]), code

    try:
        made = await asyncio.gather(*(one(code) for code in departements))
    finally:
        answer_observers.remove(answered.append)
    assert answered.count("territories_get_by_code") == len(departements)
    # The change feed, read through PgBouncer too: every counsellor's creation, once. A change shows up once
    # every transaction of the database that took an id before it has ended (app/core/changes.py): on a
    # busy server, the last ones may take a moment.
    expected = sorted((counsellor_id, "created") for counsellor_id, _code in made)
    seen: list[tuple[str, str]] = []
    after: str | None = None
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        page = await client.get(
            "/api/v1/changes",
            params={"resource": "counsellors", "limit": 200, **({"after": after} if after else {})},
            headers=admin,
        )
        assert page.status_code == 200, page.text
        items = page.json()["items"]
        seen += [(item["id"], item["action"]) for item in items]
        after = page.json()["next_after"]
        if len(seen) >= len(expected) or asyncio.get_running_loop().time() > deadline:
            break
        if not items:
            await asyncio.sleep(0.1)
    assert sorted(seen) == expected
    # Nothing the service did stayed with the server sessions: a client of the same PgBouncer finds the
    # server's defaults, and no prepared statement left behind.
    connection = await asyncpg.connect(**_asyncpg_dsn(bouncer), statement_cache_size=0)
    try:
        assert await connection.fetchval("SHOW statement_timeout") == "0"
        assert await connection.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0
    finally:
        await connection.close()


@postgres_only
@needs_pgbouncer
async def test_timeouts_hold_in_each_transaction_behind_pgbouncer(bouncer: str) -> None:
    """The statement timeout is set in each transaction (SET LOCAL), on the session path and on the direct
    path's driver transactions: a statement that runs longer is cancelled, whichever server session the
    transaction gets."""
    engine = make_engine(bouncer, pgbouncer=True, statement_timeout_ms=200, lock_timeout_ms=150)
    try:
        for _ in range(3):
            async with engine.connect() as connection:
                shown = (await connection.execute(text("SHOW statement_timeout"))).scalar()
                assert shown == "200ms"
                with pytest.raises(sa_exc.DBAPIError, match="statement timeout"):
                    await connection.execute(text("SELECT pg_sleep(2)"))
        session = DirectSession(engine, write=True)
        try:
            session.begin_answer()
            with pytest.raises(sa_exc.DBAPIError, match="statement timeout"):
                await session.execute(select(func.pg_sleep(2).label("slept")))
        finally:
            await session.finish(commit=False)
            await session.close()
    finally:
        await engine.dispose()
    # Without DATABASE_PGBOUNCER the timeouts are sent when connecting, which PgBouncer refuses.
    plain = make_engine(bouncer, pgbouncer=False)
    try:
        with pytest.raises(sa_exc.DBAPIError, match="unsupported startup parameter"):
            async with plain.connect() as connection:
                await connection.execute(text("SELECT 1"))
    finally:
        await plain.dispose()


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("postgresql+asyncpg://cnfs@db/cnfs?server_settings=x", "server_settings"),
        (
            "postgresql+asyncpg://cnfs@db/cnfs?prepared_statement_cache_size=100",
            "prepared_statement_cache_size",
        ),
        ("postgresql+asyncpg://cnfs@db/cnfs?options=-c%20statement_timeout%3D5", "options"),
    ],
)
def test_session_settings_are_refused_at_start_up(url: str, named: str) -> None:
    settings = Settings(database_url=url, database_pgbouncer=True, secret_key="x" * 40)
    problem = settings.pgbouncer_problem()
    assert problem is not None
    assert problem.startswith(f"DATABASE_URL sets {named}, which lasts a whole server session")
    with pytest.raises(RuntimeError, match="transaction pooling"):
        create_app(settings)
    assert (
        Settings(database_url=url, database_pgbouncer=False, secret_key="x" * 40).pgbouncer_problem() is None
    )


@postgres_only
@needs_pgbouncer
@pytest.mark.parametrize(
    ("code", "locked", "keyed", "lock_timeout_ms", "statement_timeout_ms", "fired"),
    [
        # A one-statement read of the direct path, anonymous: the lock timeout cancels its wait.
        ("51", "territories", False, 250, 20_000, "55P03"),
        # The same read after the caller's key lookup: the statement timeout cancels it.
        ("52", "territories", True, 20_000, 350, "57014"),
        # The caller's key lookup itself, on a read and on a write.
        ("53", "api_keys", True, 250, 20_000, "55P03"),
    ],
    ids=["read-lock-timeout", "keyed-read-statement-timeout", "key-lookup-lock-timeout"],
)
async def test_direct_path_statements_time_out_on_the_server_behind_pgbouncer(
    bouncer: str,
    caplog: pytest.LogCaptureFixture,
    code: str,
    locked: str,
    keyed: bool,
    lock_timeout_ms: int,
    statement_timeout_ms: int,
    fired: str,
) -> None:
    """Behind PgBouncer every statement of the direct path runs in a transaction that sets the timeouts,
    its one-statement reads and key lookups included: a read that waits on a lock (held here, on a
    connection straight to PostgreSQL) is cancelled by the server after the lock or statement timeout,
    long before the client's own command timeout (60 s here), answered 503, and leaves nothing running on
    the server. Once the lock is gone, the same connections answer again."""
    database = make_url(bouncer).database
    key = await _admin_key(bouncer, "timeouts")
    admin = {"Authorization": f"Bearer {key}"}
    settings = Settings(
        database_url=bouncer,
        database_pgbouncer=True,
        database_pool_size=4,
        database_lock_timeout_ms=lock_timeout_ms,
        database_statement_timeout_ms=statement_timeout_ms,
        database_command_timeout_seconds=60,
        secret_key="pgbouncer-test-" + "x" * 32,
        log_json=False,
        log_level="WARNING",
        rate_limits_enabled=False,
        api_key_last_used_interval_seconds=0,
    )
    upstream = make_url(TEST_DATABASE_URL)
    locker = await asyncpg.connect(
        host=upstream.host, port=upstream.port or 5432, user=upstream.username, database=database
    )
    answered: list[str] = []
    app = create_app(settings)
    try:
        async with LifespanManager(app):
            logging.getLogger().addHandler(caplog.handler)
            answer_observers.append(answered.append)
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=90) as client:
                created = await client.post(
                    "/api/v1/territories",
                    json={"kind": "departement", "code": code, "name": f"Département {code}"},
                    headers=admin,
                )
                assert created.status_code == 201, created.text
                path = f"/api/v1/territories/departement/{code}"
                headers = admin if keyed else {}
                assert (await client.get(path, headers=headers)).status_code == 200
                answered.clear()

                async with locker.transaction():
                    await locker.execute(f"LOCK TABLE {locked} IN ACCESS EXCLUSIVE MODE")
                    started = time.monotonic()
                    refused = await asyncio.wait_for(client.get(path, headers=headers), 20)
                    waited = time.monotonic() - started
                    assert refused.status_code == 503, refused.text
                    assert refused.json()["code"] == "service_unavailable"
                    assert answered == ["territories_get_by_code"]
                    assert waited < 10, waited
                    if locked == "api_keys":
                        # A writing request's key lookup (the direct twin of the creation).
                        write = await asyncio.wait_for(
                            client.post("/api/v1/agreements", json={}, headers=admin), 20
                        )
                        assert write.status_code == 503, write.text
                        assert answered == ["territories_get_by_code", "agreements_create"]
                    # Cancelled by the server: nothing of the service waits or runs there any more, while
                    # the lock is still held.
                    busy = await locker.fetch(
                        "SELECT state, wait_event_type, query FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                        "AND backend_type = 'client backend' AND state <> 'idle'"
                    )
                    assert busy == []
                assert f"SQLSTATE {fired}" in caplog.text

                answered.clear()
                again = await client.get(path, headers=headers)
                assert again.status_code == 200, again.text
                assert answered == ["territories_get_by_code"]
    finally:
        logging.getLogger().removeHandler(caplog.handler)
        if answered.append in answer_observers:
            answer_observers.remove(answered.append)
        await locker.close()
    # The timeouts were set for the transactions only: a client of the same PgBouncer finds the defaults.
    connection = await asyncpg.connect(**_asyncpg_dsn(bouncer), statement_cache_size=0)
    try:
        assert await connection.fetchval("SHOW statement_timeout") == "0"
        assert await connection.fetchval("SHOW lock_timeout") == "0"
    finally:
        await connection.close()


@postgres_only
@needs_pgbouncer
def test_a_pooler_without_the_setting_is_refused_at_start_up(bouncer: str, tmp_path: Path) -> None:
    """A URL that leads to PgBouncer without DATABASE_PGBOUNCER=true is refused before anything runs, in one
    line that says what to set (`cnfs-api migrate`, as an operator starts it: exit status 2); with the
    setting it migrates. The database itself, reached directly, is not a pooler."""
    settings = Settings(database_url=bouncer, database_pgbouncer=False, secret_key="x" * 40)
    with pytest.raises(StartupError, match="leads to a pooler or proxy") as refused:
        check_database(settings)
    assert "set DATABASE_PGBOUNCER=true" in str(refused.value)
    assert TEST_DATABASE_URL
    direct = make_url(TEST_DATABASE_URL).set(database=make_url(bouncer).database).render_as_string(False)
    check_database(Settings(database_url=direct, database_pgbouncer=False, secret_key="x" * 40))
    check_database(settings.model_copy(update={"database_pgbouncer": True}))
    # A read replica's URL likewise, when it answers; one that does not is no reason not to start.
    with pytest.raises(StartupError, match=r"^DATABASE_READ_URL leads to a pooler or proxy"):
        check_database(settings.model_copy(update={"database_url": direct, "database_read_url": bouncer}))
    nowhere = make_url(direct).set(host="127.0.0.1", port=free_port()).render_as_string(False)
    check_database(settings.model_copy(update={"database_url": direct, "database_read_url": nowhere}))
    # One that answers, then fails the check's query (PgBouncer's own console refuses it) is left for later.
    console = make_url(bouncer).set(database="pgbouncer").render_as_string(False)
    check_database(settings.model_copy(update={"database_url": direct, "database_read_url": console}))
    # DATABASE_URL itself so: one line, no traceback.
    with pytest.raises(StartupError, match="accepted the connection, then failed its first query"):
        check_database(settings.model_copy(update={"database_url": console}))

    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")},
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": bouncer,
        "SECRET_KEY": "pgbouncer-test-" + "x" * 32,
    }
    migrate = [sys.executable, "-m", "app.cli", "migrate"]
    run = subprocess.run(migrate, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert "set DATABASE_PGBOUNCER=true" in lines[0], run.stderr
    environment["DATABASE_PGBOUNCER"] = "true"
    run = subprocess.run(migrate, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
