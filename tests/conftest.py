"""Test fixtures: a database migrated once per run, a rollback per test, an httpx client on the app.

Set TEST_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/postgres to run on PostgreSQL: a fresh
database is created for the run (one per xdist worker) and dropped at the end."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from alembic import command
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from app.api_keys import service as api_keys
from app.api_keys.schemas import ApiKeyCreate
from app.cli import alembic_config
from app.config import Settings
from app.core.auth import Principal, Role
from app.core.direct import answer_observers, statement_observers
from app.counsellors import service as counsellors
from app.counsellors.models import Counsellor
from app.counsellors.schemas import CounsellorCreate
from app.db import make_engine
from app.main import create_app
from app.territories import service as territories
from app.territories.codes import TerritoryKind
from app.territories.models import Territory
from app.territories.schemas import TerritoryCreate

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
IS_POSTGRES = bool(TEST_DATABASE_URL and TEST_DATABASE_URL.startswith("postgresql"))

postgres_only = pytest.mark.skipif(not IS_POSTGRES, reason="needs PostgreSQL (TEST_DATABASE_URL)")
# TEST_PGBOUNCER=1 (with a PostgreSQL TEST_DATABASE_URL): the run's database is reached through a PgBouncer in
# transaction mode that the run starts (bench/pgbouncer.py), the migrations included; every engine the
# tests make runs as DATABASE_PGBOUNCER=true makes the service's.
THROUGH_PGBOUNCER = IS_POSTGRES and os.environ.get("TEST_PGBOUNCER", "") not in ("", "0")
if THROUGH_PGBOUNCER:
    os.environ["DATABASE_PGBOUNCER"] = "true"


async def _create_pg_database(admin_url: str, name: str) -> None:
    engine = make_engine(admin_url)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()


async def _drop_pg_database(admin_url: str, name: str) -> None:
    engine = make_engine(admin_url)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await engine.dispose()


@pytest.fixture(scope="session")
def database_url(worker_id: str) -> Iterator[str]:
    """A new, migrated database for this run (this xdist worker)."""
    if IS_POSTGRES:
        assert TEST_DATABASE_URL
        name = f"cnfs_test_{worker_id}_{uuid.uuid4().hex[:8]}"
        url = make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
        asyncio.run(_create_pg_database(TEST_DATABASE_URL, name))
        try:
            if THROUGH_PGBOUNCER:
                from bench.pgbouncer import pgbouncer, through

                with pgbouncer(TEST_DATABASE_URL, pool_size=20) as address:
                    url = through(address, url)
                    command.upgrade(alembic_config(url), "head")
                    yield url
                return
            command.upgrade(alembic_config(url), "head")
            yield url
        finally:
            asyncio.run(_drop_pg_database(TEST_DATABASE_URL, name))
    else:
        with tempfile.TemporaryDirectory(prefix="cnfs-test-") as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'test.db'}"
            command.upgrade(alembic_config(url), "head")
            yield url


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    return str(getattr(request.config, "workerinput", {}).get("workerid", "main"))


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        secret_key="test-secret-" + "x" * 32,
        cors_allow_origins=["https://app.example.fr"],
        log_json=False,
        log_level="WARNING",
        # The suite makes many requests from one address: tests/core/test_rate_limits.py turns them on.
        rate_limits_enabled=False,
        # The open-data tests change workshops between two exports (tests/opendata/test_published.py
        # turns the cache on).
        open_data_cache_seconds=0,
        database_pgbouncer=THROUGH_PGBOUNCER,
        # Recorded on a connection of its own, outside the test's transaction (tests/api_keys turns it on).
        api_key_last_used_interval_seconds=0,
    )


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with LifespanManager(app):
        yield app


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One outer transaction per test, rolled back at the end: tests never see each other's rows."""
    async with engine.connect() as conn:
        trans = await conn.begin()
        try:
            yield conn
        finally:
            await trans.rollback()


@pytest.fixture
def sessionmaker(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        bind=connection, expire_on_commit=False, autoflush=False, join_transaction_mode="create_savepoint"
    )


@pytest.fixture
async def session(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        yield session
        await session.flush()


@pytest.fixture
async def client(
    app: FastAPI, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[httpx.AsyncClient]:
    """The app, every request of which runs in a savepoint of the test's transaction."""
    original = app.state.sessionmaker
    app.state.sessionmaker = sessionmaker
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
    finally:
        app.state.sessionmaker = original


# --- the direct path answers as the routes do ---------------------------------------------------------

SameAnswers = Callable[..., Awaitable[httpx.Response]]


@pytest.fixture(scope="session")
async def route_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with `direct_path=False`: every request through its FastAPI route."""
    app = create_app(settings.model_copy(update={"direct_path": False}))
    async with LifespanManager(app):
        yield app


@pytest.fixture
async def route_client(
    route_app: FastAPI, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[httpx.AsyncClient]:
    original = route_app.state.sessionmaker
    route_app.state.sessionmaker = sessionmaker
    transport = httpx.ASGITransport(app=route_app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
    finally:
        route_app.state.sessionmaker = original


def _comparable(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """Everything but the request id (in a header, and in a problem's body)."""
    headers = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "content-length")}
    if headers.get("content-type") == "application/problem+json":
        body = response.json()
        assert body.pop("request_id") == response.headers["x-request-id"]
        return response.status_code, headers, body
    return response.status_code, headers, response.content


@pytest.fixture
def same_answers(client: httpx.AsyncClient, route_client: httpx.AsyncClient) -> SameAnswers:
    """`await same_answers(path, params=..., headers=..., direct=True|False)`: GETs `path` through both
    apps, asserts the answers are equal, and that the direct path answered it itself (`direct=True`) or
    handed it over to the route (`direct=False`; None: not checked)."""

    async def check(
        path: str,
        params: Any = None,
        headers: dict[str, str] | None = None,
        direct: bool | None = True,
    ) -> httpx.Response:
        seen: list[str] = []
        answer_observers.append(seen.append)
        try:
            answer = await client.get(path, params=params, headers=headers)
        finally:
            answer_observers.remove(seen.append)
        expected = await route_client.get(path, params=params, headers=headers)
        assert _comparable(answer) == _comparable(expected), (path, params)
        if direct is not None:
            assert bool(seen) is direct, (path, params, "direct" if seen else "route")
        return answer

    return check


def _masked(value: Any, volatile: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: "<volatile>" if k in volatile else _masked(v, volatile) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, volatile) for v in value]
    return value


def _comparable_write(response: httpx.Response, volatile: frozenset[str]) -> tuple[int, dict[str, str], Any]:
    """`_comparable`, with the values of the `volatile` JSON keys (ids and instants of rows written) masked,
    and `Location` and `ETag` too when `id` is one of them."""
    status, headers, body = _comparable(response)
    if not volatile:
        return status, headers, body
    if "id" in volatile:
        headers = {k: "<volatile>" if k in ("location", "etag") else v for k, v in headers.items()}
    if isinstance(body, bytes) and headers.get("content-type") == "application/json":
        body = orjson.loads(body)
    return status, headers, _masked(body, volatile)


SameWrites = Callable[..., Awaitable[httpx.Response]]


@pytest.fixture
def same_writes(
    client: httpx.AsyncClient, route_client: httpx.AsyncClient, connection: AsyncConnection
) -> SameWrites:
    """`await same_writes(method, path, json=..., content=..., params=..., headers=..., direct=...,
    volatile=...)`: sends a request with a body through both apps from the same database state, asserts the
    answers are equal, and that the direct path answered it itself (`direct=True`) or handed it over to the
    route (`direct=False`; None: not checked).

    The two apps share the test's transaction: the direct path's request runs first in a savepoint, rolled
    back after it, and the route's request then runs on the same state and is kept (the test goes on from
    the route's outcome). A request that creates or changes rows answers new ids and instants each time:
    `volatile` names the JSON keys whose values are not compared (`id` also skips `Location` and `ETag`)."""

    async def check(
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | str | None = None,
        params: Any = None,
        headers: dict[str, str] | None = None,
        direct: bool | None = True,
        volatile: frozenset[str] = frozenset(),
    ) -> httpx.Response:
        seen: list[str] = []
        request = {"json": json, "content": content, "params": params, "headers": headers}
        savepoint = await connection.begin_nested()
        answer_observers.append(seen.append)
        try:
            answer = await client.request(method, path, **request)
        finally:
            answer_observers.remove(seen.append)
            await savepoint.rollback()
        expected = await route_client.request(method, path, **request)
        assert _comparable_write(answer, volatile) == _comparable_write(expected, volatile), (method, path)
        if direct is not None:
            assert bool(seen) is direct, (method, path, "direct" if seen else "route")
        return expected

    return check


class QueryCounter:
    def __init__(self) -> None:
        self.statements: list[str] = []

    @property
    def count(self) -> int:
        return len(self.statements)


@pytest.fixture
def count_queries(connection: AsyncConnection) -> Callable[[], Any]:
    """`with count_queries() as counter:` counts the SQL statements run on the test connection."""
    from contextlib import contextmanager

    @contextmanager
    def counting() -> Iterator[QueryCounter]:
        counter = QueryCounter()

        def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if not statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK TO")):
                counter.statements.append(statement)

        sync_engine = connection.sync_connection.engine if connection.sync_connection else None
        assert sync_engine is not None
        event.listen(sync_engine, "before_cursor_execute", before)
        statement_observers.append(counter.statements.append)
        try:
            yield counter
        finally:
            event.remove(sync_engine, "before_cursor_execute", before)
            statement_observers.remove(counter.statements.append)

    return counting


# --- data helpers ---------------------------------------------------------------------------------

KeyMaker = Callable[..., Awaitable[str]]
TerritoryMaker = Callable[..., Awaitable[Territory]]


CounsellorMaker = Callable[..., Awaitable[Counsellor]]


@pytest.fixture
def make_counsellor(session: AsyncSession) -> CounsellorMaker:
    """A counsellor made directly in the test's transaction (fictitious person)."""

    async def make(territory: Territory, external_ref: str | None = None, **fields: Any) -> Counsellor:
        data = {"first_name": "Camille", "last_name": "Exemple", **fields}
        counsellor = await counsellors.create(
            session,
            CounsellorCreate(territory_id=territory.id, external_ref=external_ref, **data),
            Principal(role=Role.admin, name="test"),
        )
        await session.flush()
        return counsellor

    return make


@pytest.fixture
def make_key(session: AsyncSession, make_counsellor: CounsellorMaker) -> KeyMaker:
    async def make(
        role: str = "admin",
        territories: list[Territory] | None = None,
        counsellor_id: uuid.UUID | None = None,
        name: str | None = None,
    ) -> str:
        if role == "counsellor" and counsellor_id is None:
            # A counsellor key is bound to a real counsellor, employed by the key's first territory.
            counsellor_id = (await make_counsellor((territories or [])[0])).id
        created = await api_keys.create(
            session,
            ApiKeyCreate(
                name=name or f"test {role}",
                role=Role(role),
                territory_ids=[t.id for t in territories or []],
                counsellor_id=counsellor_id,
            ),
        )
        await session.flush()
        return created.key

    return make


@pytest.fixture
async def admin_key(make_key: KeyMaker) -> str:
    return await make_key("admin")


@pytest.fixture
def admin(admin_key: str) -> dict[str, str]:
    """Headers of an admin caller."""
    return {"Authorization": f"Bearer {admin_key}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def make_territory(session: AsyncSession) -> TerritoryMaker:
    async def make(
        kind: str,
        code: str,
        name: str | None = None,
        parent: Territory | None = None,
        population: int | None = None,
    ) -> Territory:
        territory = await territories.create(
            session,
            TerritoryCreate(
                kind=TerritoryKind(kind),
                code=code,
                name=name or f"{kind} {code}",
                parent_id=parent.id if parent else None,
                population=population,
            ),
        )
        await session.flush()
        return territory

    return make


class Tree:
    """Two régions, each with a département and communes: the scoping tests' map."""

    def __init__(self, **nodes: Territory) -> None:
        self.__dict__.update(nodes)

    def __getattr__(self, name: str) -> Territory:  # pragma: no cover - for mypy
        raise AttributeError(name)


@pytest.fixture
async def tree(make_territory: TerritoryMaker) -> Tree:
    ara = await make_territory("region", "84", "Auvergne-Rhône-Alpes")
    occ = await make_territory("region", "76", "Occitanie")
    rhone = await make_territory("departement", "69", "Rhône", ara)
    hg = await make_territory("departement", "31", "Haute-Garonne", occ)
    lyon_metro = await make_territory("metropole", "200046977", "Métropole de Lyon", ara, 1_400_000)
    lyon = await make_territory("commune", "69123", "Lyon", lyon_metro, 520_000)
    villeurbanne = await make_territory("commune", "69266", "Villeurbanne", lyon_metro, 150_000)
    villefranche = await make_territory("commune", "69264", "Villefranche-sur-Saône", rhone, 36_000)
    toulouse = await make_territory("commune", "31555", "Toulouse", hg, 500_000)
    return Tree(
        ara=ara,
        occ=occ,
        rhone=rhone,
        hg=hg,
        lyon_metro=lyon_metro,
        lyon=lyon,
        villeurbanne=villeurbanne,
        villefranche=villefranche,
        toulouse=toulouse,
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fuzzing's counts (tests/test_fuzz.py), so that CI's output shows how much it tried."""
    from tests import test_fuzz

    counts = test_fuzz.COUNTS
    if counts:
        parts = ", ".join(f"{name}: {counts[name]}" for name in sorted(counts))
        database = "PostgreSQL" if IS_POSTGRES else "SQLite"
        limit = f"max {test_fuzz.MAX_EXAMPLES} examples per operation and caller"
        terminalreporter.write_line(f"schemathesis on {database} ({limit}): {parts}")


@pytest.fixture(autouse=True, scope="session")
def _no_dns() -> Iterator[None]:
    """No test resolves a name through the network: a webhook URL's host name resolves nowhere (422)
    unless the test plays the DNS answer itself (`app.webhooks.service.resolver`)."""
    from app.webhooks import service as webhooks

    async def nowhere(host: str, port: int) -> list[str]:
        raise OSError(f"the tests resolve no names ({host})")

    original = webhooks.resolver
    webhooks.resolver = nowhere
    try:
        yield
    finally:
        webhooks.resolver = original
