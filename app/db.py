"""Database plumbing: declarative base, column types, engine factory and the request session."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

import uuid_utils
from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from app.core.pool import FairAsyncQueuePool

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


SQLITE_BEGIN_OPTION = "sqlite_begin"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A pooled connection unused for longer than this is checked with a ping before it is handed out; a busy
# pool hands out its connections without that extra round trip.
IDLE_PING_SECONDS = 10.0


def new_id() -> uuid.UUID:
    """UUID v7: time-ordered, so primary-key indexes stay append-mostly."""
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on both databases (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class TimestampedMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class VersionedMixin:
    """`version` is the ETag; the mapper increments it and checks it in the WHERE clause of every
    UPDATE, so that a lost update raises instead of overwriting."""

    version: Mapped[int] = mapped_column(nullable=False)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:  # noqa: N805 - a declared_attr receives the class
        return {"version_id_col": cls.__table__.c.version}  # type: ignore[attr-defined]


def _sqlite_on_connect(busy_timeout_ms: int, foreign_keys: bool, cache_kib: int | None = None) -> Any:
    def on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # pysqlite's own transaction handling breaks SAVEPOINTs; SQLAlchemy emits BEGIN itself (see below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if cache_kib is not None:
            # A negative size is in KiB rather than pages.
            cursor.execute(f"PRAGMA cache_size={-int(cache_kib)}")
        cursor.close()

    return on_connect


def _sqlite_reset(dbapi_connection: Any, _record: Any, state: Any) -> None:
    """The pool's rollback of a connection coming back, for SQLite: only when a transaction is open.

    The driver runs in autocommit (`_sqlite_on_connect`), so a read outside a transaction leaves nothing to
    roll back, and aiosqlite's ROLLBACK would still cost a trip through the connection's thread on every
    request. A connection dropped by the garbage collector (not asyncio-safe) is not touched: the pool
    closes it."""
    driver = getattr(dbapi_connection, "_connection", None)
    if state.asyncio_safe and (driver is None or driver.in_transaction):
        dbapi_connection.rollback()


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    pool_timeout: float = 5.0,
    sqlite_busy_timeout_ms: int = 5000,
    sqlite_cache_kib: int | None = None,
    lock_timeout_ms: int = 5000,
    statement_timeout_ms: int = 30000,
    connect_timeout: float = 10.0,
    command_timeout: float | None = None,
    foreign_keys: bool = True,
    echo: bool = False,
) -> AsyncEngine:
    """`foreign_keys=False` is for migrations only: SQLite's batch mode rebuilds tables, and with foreign
    keys on, dropping the old table would fire ON DELETE actions on the rows that refer to it.

    `connect_timeout` and `command_timeout` (seconds, PostgreSQL) bound the waits on the client side: a server
    or a proxy that accepts the connection and then says nothing must not hold a request (or the start-up)
    for asyncpg's 60 s, or forever; both end in TimeoutError, answered 503."""
    if url.startswith("sqlite"):
        in_memory = ":memory:" in url or url.rstrip("/").endswith(":")
        engine = create_async_engine(
            url,
            echo=echo,
            # Bound values may be personal data: keep them out of exception texts, hence out of logs.
            hide_parameters=True,
            # As on PostgreSQL, no overflow: a connection opened past the pool's size would be closed again
            # when it comes back, and the next burst would open it again (a thread and the PRAGMAs each).
            **(
                {}
                if in_memory
                else {
                    "poolclass": FairAsyncQueuePool,
                    "pool_timeout": pool_timeout,
                    "pool_size": pool_size,
                    "max_overflow": 0,
                }
            ),
            # A connection coming back is rolled back only if it is in a transaction (`_sqlite_reset`).
            pool_reset_on_return=None,
        )
        event.listen(
            engine.sync_engine,
            "connect",
            _sqlite_on_connect(sqlite_busy_timeout_ms, foreign_keys, sqlite_cache_kib),
        )
        event.listen(engine.sync_engine.pool, "reset", _sqlite_reset)

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Any) -> None:
            # Writes take the write lock up front (IMMEDIATE): two writers queue on busy_timeout instead of
            # failing on a lock upgrade, which is what makes read-check-write rules safe on SQLite. Reads
            # (see get_session) begin DEFERRED and run beside a writer, as WAL allows.
            mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "IMMEDIATE")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    engine = create_async_engine(
        url,
        echo=echo,
        hide_parameters=True,
        # Requests waiting for a connection are served in the order they came (`app.core.pool`).
        poolclass=FairAsyncQueuePool,
        pool_size=pool_size,
        # No overflow: a connection opened past the pool's size is closed again when it comes back, so a
        # burst above it would pay a new connection (several round trips and authentication) per request.
        # Requests beyond the pool wait for one of its connections (up to pool_timeout, then 503).
        max_overflow=0,
        pool_timeout=pool_timeout,
        # A request never waits long on a lock or a runaway statement: it fails with 503 (retry later).
        connect_args={
            "timeout": connect_timeout,
            "command_timeout": command_timeout,
            "server_settings": {
                "lock_timeout": str(lock_timeout_ms),
                "statement_timeout": str(statement_timeout_ms),
            },
        },
    )
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """Pre-ping, but only for connections that sat idle in the pool.

    SQLAlchemy's `pool_pre_ping` costs three round trips (BEGIN, a ping, ROLLBACK on asyncpg) on every
    checkout. Connections go stale while idle (a server restart, a proxy closing quiet sockets), so only those
    are checked; a failed check makes the pool open a fresh connection. A connection that dies while in use
    still fails its request with a 503 (`connection_invalidated`), and SQLAlchemy then recycles every
    connection that was opened before the failure, so the next request gets a working one."""

    @event.listens_for(engine.sync_engine.pool, "checkin")
    def _checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def _checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            raise DisconnectionError("stale pooled connection") from exc


def make_sessionmaker(bind: Any) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(bind=bind, expire_on_commit=False, autoflush=False)


def read_execution_options(engine: AsyncEngine) -> dict[str, Any]:
    """How a reading request runs.

    PostgreSQL: in autocommit, so that a read costs its statements and nothing else (no BEGIN and COMMIT
    round trips); each statement sees committed data. SQLite: a DEFERRED transaction, which runs beside a
    writer (WAL) instead of queuing behind it."""
    if engine.dialect.name == "sqlite":
        return {SQLITE_BEGIN_OPTION: "DEFERRED"}
    return {"isolation_level": "AUTOCOMMIT"}


_SESSION_KEY = "db_session"


async def get_session(request: Request) -> AsyncSession:
    """The request's session: one transaction per writing request (reads: see `read_execution_options`),
    committed by `TransactionRoute` after the handler and before the response is sent.

    A plain dependency rather than a generator: FastAPI runs a generator dependency's exit under an AnyIO
    cancel scope and an exit stack, which cost more than the rest of a small read put together."""
    route = request.scope.get("route")
    if not isinstance(route, TransactionRoute):
        raise RuntimeError(
            f"{getattr(route, 'name', route)!r} uses the database session but is not a TransactionRoute: "
            "create its router with APIRouter(..., route_class=TransactionRoute)"
        )
    state = request.app.state
    session: AsyncSession = state.sessionmaker()
    request.scope.setdefault("state", {})[_SESSION_KEY] = session
    # A session bound to one connection (the tests' rolled-back transaction) keeps its transaction.
    if request.method in READ_METHODS and isinstance(session.bind, AsyncEngine):
        await session.connection(execution_options=state.read_options)
    return session


async def _end_session(request: Request, commit: bool) -> None:
    session: AsyncSession | None = request.scope.get("state", {}).pop(_SESSION_KEY, None)
    if session is None:
        return
    try:
        if commit:
            await session.commit()
        else:
            await session.rollback()
    except BaseException:
        await session.rollback()
        raise
    finally:
        await session.close()


class TransactionRoute(APIRoute):
    """A route whose database session (`SessionDep`) is committed when the handler returns, before the
    response is sent, and rolled back when it raises: a commit that fails (a unique constraint checked at
    commit, a lost connection) reaches the client as its problem, never after a 2xx it already saw."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                response = await handler(request)
            except BaseException:
                await _end_session(request, commit=False)
                raise
            await _end_session(request, commit=True)
            return response

        return run


SessionDep = Annotated[AsyncSession, Depends(get_session)]
