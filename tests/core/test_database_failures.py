"""A sick database gets a fast 503 with Retry-After: a server that never answers, one that refuses
connections, a read-only SQLite file. Every request answers within the client-side timeout."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, text
from sqlalchemy.engine import make_url

from app.api_keys import service as api_keys
from app.api_keys.models import ApiKey
from app.api_keys.schemas import ApiKeyCreate
from app.config import Settings
from app.core.auth import Role
from app.db import make_engine, make_sessionmaker
from tests.conftest import IS_POSTGRES, TEST_DATABASE_URL, postgres_only
from tests.helpers import app_client, assert_problem

CONNECT_TIMEOUT = 1.0
# Every answer within the timeout, plus room for a loaded machine.
DEADLINE = CONNECT_TIMEOUT + 2.0

REQUESTS = [
    ("GET", "/api/v1/territories", None),
    ("GET", "/api/v1/programmes", None),
    ("GET", "/api/v1/me", None),
    ("POST", "/api/v1/territories", {"kind": "region", "code": "84", "name": "Auvergne-Rhône-Alpes"}),
]


async def _assert_every_request_is_a_fast_503(client: httpx.AsyncClient) -> None:
    for method, url, body in REQUESTS:
        started = time.perf_counter()
        headers = {"Authorization": "Bearer cnfs_" + "x" * 40}
        response = await client.request(method, url, json=body, headers=headers)
        elapsed = time.perf_counter() - started
        assert_problem(response, 503, "service_unavailable")
        assert response.headers["retry-after"].isdigit()
        assert elapsed < DEADLINE, (method, url, elapsed)
    started = time.perf_counter()
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["database"] == "unreachable"
    assert time.perf_counter() - started < DEADLINE + 3


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP listener on 127.0.0.1 that accepts connections and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_server_that_never_answers_gets_a_fast_503(silent_server: int) -> None:
    settings = Settings(
        database_url=f"postgresql+asyncpg://cnfs@127.0.0.1:{silent_server}/cnfs",
        database_connect_timeout_seconds=CONNECT_TIMEOUT,
        secret_key="s" * 40,
        log_json=False,
        log_level="WARNING",
    )
    # Timed from the app's start-up, once it is built (building it is not what is measured, and takes
    # seconds of CPU on a loaded machine).
    started: list[float] = []
    async with app_client(settings, setup=lambda _app: started.append(time.perf_counter())) as client:
        # The start-up housekeeping gives up within the timeout too.
        assert time.perf_counter() - started[0] < DEADLINE
        await _assert_every_request_is_a_fast_503(client)


@postgres_only
async def test_a_database_that_refuses_connections_gets_a_fast_503(settings: Settings) -> None:
    """`ALLOW_CONNECTIONS false` answers SQLSTATE 55000 at connect: 503, not 500."""
    assert TEST_DATABASE_URL
    name = f"cnfs_refusing_{uuid.uuid4().hex[:8]}"
    admin = make_engine(TEST_DATABASE_URL)
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
        await conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
    try:
        url = make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
        refused = settings.model_copy(
            update={"database_url": url, "database_connect_timeout_seconds": CONNECT_TIMEOUT}
        )
        async with app_client(refused) as client:
            await _assert_every_request_is_a_fast_503(client)
    finally:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.mark.skipif(IS_POSTGRES, reason="SQLite only")
async def test_a_read_only_sqlite_file(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Reads work; `/readyz` and every write answer 503, and the log says why. (`mode=ro` stands for a file
    without write permission, which root, running the tests, would ignore.)"""
    source = Path(make_url(settings.database_url).database or "")
    copy = tmp_path / "read-only.db"
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            created = await api_keys.create(session, ApiKeyCreate(name="read-only test", role=Role.admin))
            await session.commit()
        # The backup API copies what is committed, the pages still in the WAL included.
        with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(copy)) as dst:
            src.backup(dst)
    finally:
        async with make_sessionmaker(engine)() as session:
            await session.execute(delete(ApiKey).where(ApiKey.name == "read-only test"))
            await session.commit()
        await engine.dispose()
    read_only = settings.model_copy(
        update={"database_url": f"sqlite+aiosqlite:///file:{copy}?mode=ro&uri=true"}
    )
    admin = {"Authorization": f"Bearer {created.key}"}
    async with app_client(read_only) as client:
        # create_app installs its own root handler: listen beside it.
        logging.getLogger().addHandler(caplog.handler)
        assert (await client.get("/api/v1/territories")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["database"] == "read_only"
        response = await client.post(
            "/api/v1/territories",
            json={"kind": "region", "code": "84", "name": "Auvergne-Rhône-Alpes"},
            headers=admin,
        )
        assert_problem(response, 503, "service_unavailable")
        assert response.headers["retry-after"].isdigit()
    logging.getLogger().removeHandler(caplog.handler)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "read-only" in messages


class StallingProxy:
    """A TCP proxy to the PostgreSQL server that stops forwarding when told: a proxy or a server that stalls
    in the middle of a conversation."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.stalled = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.stalled.is_set():
                    await asyncio.Event().wait()  # hold the bytes forever
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self.target)
        self.writers += [client_writer, server_writer]
        await asyncio.gather(
            self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer)
        )

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def cut(self) -> None:
        for writer in self.writers:
            writer.close()

    async def __aexit__(self, *_: object) -> None:
        self.cut()
        self.server.close()


@postgres_only
async def test_a_server_that_stalls_mid_conversation_gets_a_fast_503(settings: Settings) -> None:
    """The command timeout: a statement whose answer never comes fails within it (503), instead of
    holding the request as long as the stall lasts."""
    url = make_url(settings.database_url)
    proxy = StallingProxy(url.host or "127.0.0.1", url.port or 5432)
    async with proxy as port:
        proxied = settings.model_copy(
            update={
                "database_url": url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False),
                "database_connect_timeout_seconds": CONNECT_TIMEOUT,
                "database_command_timeout_seconds": 1.0,
            }
        )
        async with app_client(proxied) as client:
            assert (await client.get("/api/v1/territories")).status_code == 200
            proxy.stalled.set()
            started = time.perf_counter()
            response = await client.get("/api/v1/territories")
            assert_problem(response, 503, "service_unavailable")
            assert time.perf_counter() - started < DEADLINE
            proxy.cut()  # the engine's shutdown then closes broken connections at once
