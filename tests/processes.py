"""Builders for the tests that start real processes (`cnfs-api serve`, redis-server) on loopback ports: a
PostgreSQL database of their own, migrated, with a region and an admin key; a remote workshop made through a
server; a redis-server of their own."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from sqlalchemy.engine import make_url

from app.api_keys import service as api_keys
from app.api_keys.schemas import ApiKeyCreate
from app.cli import alembic_config
from app.core.auth import Role
from app.db import make_engine, make_sessionmaker
from app.territories import service as territories
from app.territories.codes import TerritoryKind
from app.territories.schemas import TerritoryCreate
from tests.agreements.helpers import create_programme, create_signed
from tests.conftest import (
    IS_POSTGRES,
    TEST_DATABASE_URL,
    THROUGH_PGBOUNCER,
    _create_pg_database,
    _drop_pg_database,
    bearer,
)
from tests.positions.helpers import create_position
from tests.workshops.helpers import WORKSHOPS, at, workshop_body

needs_postgres = pytest.mark.skipif(
    not IS_POSTGRES,
    reason="needs PostgreSQL (TEST_DATABASE_URL): what is proven here across processes (row locks held by "
    "the test, advisory locks, the change feed's transaction ids) is PostgreSQL's; on SQLite the processes "
    "queue on the file's one write lock",
)
SECRET_KEY = "processes-test-" + "x" * 32


@dataclass(frozen=True)
class Database:
    """A migrated database of its own: the SQLAlchemy URL its servers are given (through a PgBouncer of
    its own in transaction mode when the run goes through one, TEST_PGBOUNCER=1), the admin key's headers,
    a region's id, and the server's own URL (`direct_url`: the test's own connections, pg_dump)."""

    url: str
    admin: dict[str, str]
    region_id: uuid.UUID
    direct_url: str = ""

    def connect_args(self) -> dict[str, Any]:
        target = make_url(self.direct_url or self.url)
        return {
            "host": target.host,
            "port": target.port or 5432,
            "user": target.username,
            "password": target.password,
            "database": target.database,
        }

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(**self.connect_args())

    def server_env(self, **env: str) -> dict[str, str]:
        """The settings of a `serve` on this database (`tests.test_serve.serve`'s keyword arguments)."""
        return {
            "DATABASE_URL": self.url,
            "DATABASE_PGBOUNCER": "true" if self.url != (self.direct_url or self.url) else "false",
            "SECRET_KEY": SECRET_KEY,
            "DATABASE_POOL_SIZE": "6",
            "RATE_LIMITS_ENABLED": "false",
            **env,
        }


@contextmanager
def postgres_database(prefix: str) -> Iterator[Database]:
    """A new database on the test server, migrated, with a region and an admin key; dropped at the end."""
    assert TEST_DATABASE_URL
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_create_pg_database(TEST_DATABASE_URL, name))
    try:
        command.upgrade(alembic_config(url), "head")
        region_id, secret = asyncio.run(_seed(url))
        if not THROUGH_PGBOUNCER:
            yield Database(url, bearer(secret), region_id, direct_url=url)
            return
        from bench.pgbouncer import pgbouncer, through

        # Fewer server connections than the servers' pools hold: their transactions share server sessions.
        with pgbouncer(TEST_DATABASE_URL, pool_size=6) as address:
            yield Database(through(address, url), bearer(secret), region_id, direct_url=url)
    finally:
        asyncio.run(_drop_pg_database(TEST_DATABASE_URL, name))


async def _seed(url: str) -> tuple[uuid.UUID, str]:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            region = await territories.create(
                session, TerritoryCreate(kind=TerritoryKind.region, code="11", name="Île-de-France")
            )
            key = await api_keys.create(session, ApiKeyCreate(name="operations test", role=Role.admin))
            await session.commit()
        return region.id, key.key
    finally:
        await engine.dispose()


async def position_in(client: httpx.AsyncClient, database: Database) -> str:
    """A position under a signed agreement of the region, made through the API."""
    programme = await create_programme(client, database.admin, code=f"OPS_{uuid.uuid4().hex[:8].upper()}")
    agreement = await create_signed(
        client,
        database.admin,
        programme["id"],
        database.region_id,
        reference=f"OPS-{uuid.uuid4().hex[:8]}",
        positions_granted=1,
    )
    return str((await create_position(client, database.admin, agreement["id"]))["id"])


def remote_workshop(position_id: str, **changes: Any) -> dict[str, Any]:
    return workshop_body(
        position_id,
        format="remote",
        venue=None,
        online_url="https://visio.example.org/atelier",
        starts_at=at(3),
        **changes,
    )


async def create_remote_workshop(
    client: httpx.AsyncClient, database: Database, position_id: str, **changes: Any
) -> dict[str, Any]:
    response = await client.post(
        WORKSHOPS, json=remote_workshop(position_id, **changes), headers=database.admin
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@asynccontextmanager
async def row_locked(database: Database, table: str, row_id: str) -> AsyncIterator[asyncpg.Connection]:
    """The test's own transaction holds this row's lock (`SELECT ... FOR UPDATE`) until the block ends."""
    connection = await database.connect()
    try:
        async with connection.transaction():
            await connection.execute(f"SELECT 1 FROM {table} WHERE id = $1 FOR UPDATE", uuid.UUID(row_id))
            yield connection
    finally:
        await connection.close()


async def wait_until_blocked(holder: asyncpg.Connection, count: int = 1) -> None:
    """Until `count` other backends wait for a lock the holder's backend holds (30 s at most)."""
    pid = holder.get_server_pid()
    deadline = time.monotonic() + 30
    while True:
        waiting = await holder.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", pid
        )
        if waiting >= count:
            return
        assert time.monotonic() < deadline, f"{waiting} of {count} requests wait for the test's lock"
        await asyncio.sleep(0.05)


@contextmanager
def redis_server() -> Iterator[tuple[int, str]]:
    """A redis-server of the test's own on a free loopback port (no persistence): its pid and its URL.
    Resumed (a test may SIGSTOP it) and terminated at the end, whatever happened."""
    executable = shutil.which("redis-server")
    if executable is None:
        reason = "redis-server is not installed (.ci/run installs it: apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert process.poll() is None, "redis-server did not start"
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.05)
        yield process.pid, f"redis://127.0.0.1:{port}/0"
    finally:
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
