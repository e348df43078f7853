"""Database plumbing: declarative base, column types, engine factory and the request session."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
import weakref
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

import orjson
import uuid_utils
from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.engine import Dialect, ExceptionContext
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from app.core.internals import FairAsyncQueuePool, transaction_left_open
from app.core.problems import refused_before_dependencies

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
        zone = value.tzinfo
        if zone is UTC:
            # asyncpg's instants come in UTC already: no copy (four per row of a long list).
            return value
        return value.replace(tzinfo=UTC) if zone is None else value.astimezone(UTC)

    def keeps_utc_as_is(self, dialect: Dialect) -> bool:
        """Whether the result processing of this type (adapted to `dialect`) gives back unchanged a
        `datetime` that the driver returns in UTC (`tzinfo is UTC`): the driver's value is not converted
        first (asyncpg's instants; SQLite's come as text), and `process_result_value` keeps it. A reader
        of many rows may then skip the processing of such values (`app.core.csv`)."""
        return self.impl_instance.result_processor(dialect, None) is None


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


def _sqlite_reset(dbapi_connection: Any, record: Any, state: Any) -> None:
    """The pool's rollback of a connection coming back, for SQLite: only when a transaction is open.

    The driver runs in autocommit (`_sqlite_on_connect`), so a read outside a transaction leaves nothing to
    roll back, and aiosqlite's ROLLBACK would still cost a trip through the connection's thread on every
    request. A connection dropped by the garbage collector (not asyncio-safe) is not touched: the pool
    closes it."""
    if state.asyncio_safe and record.driver_connection.in_transaction:
        dbapi_connection.rollback()


def _sqlite_roll_back_before_closing(dbapi_connection: Any, _record: Any, _exception: Any) -> None:
    """A SQLite connection thrown away (SQLAlchemy invalidates one whose statement was cancelled) is rolled
    back first. Closing it is not enough: while a statement of it is still referenced (the cancelled
    call's cursor, kept alive by the traceback), SQLite keeps the connection and its write lock until the
    garbage collector finalizes that statement, and every other writer waits, then fails."""
    try:
        dbapi_connection.rollback()
    except Exception:
        logging.getLogger(__name__).debug("rolling back a connection thrown away failed", exc_info=True)


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
    pgbouncer: bool | None = None,
) -> AsyncEngine:
    """`foreign_keys=False` is for migrations only: SQLite's batch mode rebuilds tables, and with foreign
    keys on, dropping the old table would fire ON DELETE actions on the rows that refer to it.

    `connect_timeout` and `command_timeout` (seconds, PostgreSQL) bound the waits on the client side: a server
    or a proxy that accepts the connection and then says nothing must not hold a request (or the start-up)
    for asyncpg's 60 s, or forever; both end in TimeoutError, answered 503.

    `pgbouncer` (PostgreSQL behind PgBouncer in transaction mode, where consecutive transactions of one
    connection may run on different server sessions): see `_pgbouncer_options`; None reads
    DATABASE_PGBOUNCER from the environment (the commands and scripts that build an engine from a URL)."""
    if url.startswith("sqlite"):
        in_memory = ":memory:" in url or url.rstrip("/").endswith(":")
        engine = create_async_engine(
            url,
            echo=echo,
            json_deserializer=orjson.loads,
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
        event.listen(engine.sync_engine.pool, "invalidate", _sqlite_roll_back_before_closing)
        if not in_memory:
            _ping_idle_connections(engine)

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Any) -> None:
            # Writes take the write lock up front (IMMEDIATE): two writers queue on busy_timeout instead of
            # failing on a lock upgrade, which is what makes read-check-write rules safe on SQLite. Reads
            # (see get_session) begin DEFERRED and run beside a writer, as WAL allows.
            mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "IMMEDIATE")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    if pgbouncer is None:
        pgbouncer = pgbouncer_from_environment()
    connect_args: dict[str, Any] = {"timeout": connect_timeout, "command_timeout": command_timeout}
    if pgbouncer:
        connect_args.update(_pgbouncer_options())
    else:
        # A request never waits long on a lock or a runaway statement: it fails with 503 (retry later).
        connect_args["server_settings"] = {
            "lock_timeout": str(lock_timeout_ms),
            "statement_timeout": str(statement_timeout_ms),
        }
    engine = create_async_engine(
        url,
        echo=echo,
        # JSON columns (a workshop's themes, venue and walk-ins) are read on every row of a list: orjson reads
        # them several times faster than the standard library, into the same values.
        json_deserializer=orjson.loads,
        hide_parameters=True,
        # Requests waiting for a connection are served in the order they came (`app.core.internals`).
        poolclass=FairAsyncQueuePool,
        pool_size=pool_size,
        # No overflow: a connection opened past the pool's size is closed again when it comes back, so a
        # burst above it would pay a new connection (several round trips and authentication) per request.
        # Requests beyond the pool wait for one of its connections (up to pool_timeout, then 503).
        max_overflow=0,
        pool_timeout=pool_timeout,
        connect_args=connect_args,
    )
    if pgbouncer:
        _set_timeouts_per_transaction(engine, lock_timeout_ms, statement_timeout_ms)
    _ping_idle_connections(engine)
    event.listen(engine.sync_engine.pool, "checkin", _pg_discard_open_transaction)
    return engine


def pgbouncer_from_environment() -> bool:
    """DATABASE_PGBOUNCER as the settings read it (pydantic's spellings of true)."""
    return os.environ.get("DATABASE_PGBOUNCER", "").strip().lower() in ("1", "true", "yes", "on", "t", "y")


def _pgbouncer_options() -> dict[str, Any]:
    """asyncpg behind PgBouncer in transaction mode (PgBouncer 1.18 keeps no prepared statement across
    server sessions): no statement cache in asyncpg. Its statements are then all unnamed, and asyncpg sends
    an unnamed statement's Parse again with each Bind, Execute and Sync (one message, one round trip: the
    statement is parsed and run on the same server session, in a transaction or not). SQLAlchemy's adapter
    keeps its cache of them (`prepared_statement_cache_size`): what it caches is the statement's
    description, which spares the Describe round trip, never a statement kept by the server. Named
    statements (asyncpg's `__asyncpg_stmt_N__`, the same names in every process) would outlive the
    transaction on a server session that the next client gets: "already exists", or "does not exist" on
    another one. The cost: the server parses and plans each statement each time (docs/performance.md,
    PgBouncer)."""
    return {"statement_cache_size": 0}


_PER_TRANSACTION: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def per_transaction_sql(bind: AsyncEngine | AsyncConnection) -> str | None:
    """What a transaction begun on the driver of `bind`'s engine sets first, behind PgBouncer (its
    timeouts: `SET LOCAL lock_timeout = ...; SET LOCAL statement_timeout = ...`, statements of the simple
    protocol, sent after BEGIN in the same string: `app.core.direct`); None when there is none."""
    return _PER_TRANSACTION.get(bind.sync_engine)


def _set_timeouts_per_transaction(
    engine: AsyncEngine, lock_timeout_ms: int, statement_timeout_ms: int
) -> None:
    """Behind PgBouncer, a server session serves many clients in turn: a setting made for the session
    (`server_settings` at connect, which PgBouncer refuses anyway, or SET) would stay with whichever client
    gets the session next, and would be missing from this connection's next transaction. The timeouts are
    set with each transaction instead (set_config(..., true): SET LOCAL), one statement at its start.

    The direct path (`app.core.direct`), which talks to the driver, runs every statement in a transaction
    behind PgBouncer, its key lookups and one-statement reads included: it begins each with one string of
    the simple protocol, BEGIN and these settings (`per_transaction_sql`), in one round trip. No statement
    of the service runs outside a transaction there, hence none without these timeouts (but `VACUUM` after a
    territories import, which cannot run in one: `app.territories.repository.vacuum`; and, with a read
    replica, the two one-function questions about the write-ahead log that must come before a read's
    snapshot: `app.core.replica`, bounded by the driver's command timeout)."""
    sql = (
        f"SELECT set_config('lock_timeout', '{int(lock_timeout_ms)}', true), "
        f"set_config('statement_timeout', '{int(statement_timeout_ms)}', true)"
    )
    _PER_TRANSACTION[engine.sync_engine] = (
        f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}; "
        f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}"
    )

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql(sql)


def _pg_discard_open_transaction(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    """A PostgreSQL connection coming back to the pool in a transaction, or with one that failed to start
    (a BEGIN interrupted: asyncpg keeps its record of it, and the next transaction on the connection would
    be a savepoint in one nobody commits), is thrown away rather than handed to the next request. The
    pool's own reset cannot see it: SQLAlchemy's adapter rolls back only the transactions it started."""
    if dbapi_connection is None or record.driver_connection is None:
        return
    if transaction_left_open(record.driver_connection):
        record.invalidate()


_SUSPECT_SINCE: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


def suspect_connections(engine: AsyncEngine) -> None:
    """A connection was found lost (the server restarted, a proxy cut it, its backend was terminated): every
    other connection of the pool is checked with a ping before it is used again, and replaced only if it
    fails. Only what is broken is thrown away; a slow or refused statement suspects nothing."""
    _SUSPECT_SINCE[engine.sync_engine.pool] = time.monotonic()


def is_suspect(info: dict[str, Any], pool: Any) -> bool:
    """Whether a connection (its record's `info`) was last known to work before a connection of its pool
    was found lost."""
    return bool(info.get("verified_at", 0.0) < _SUSPECT_SINCE.get(pool, 0.0))


def needs_ping(info: dict[str, Any], pool: Any) -> bool:
    """Whether a connection checked out of the pool must be checked first: idle in the pool for too long,
    or suspect."""
    idle_since = info.get("idle_since")
    if idle_since is not None and time.monotonic() - idle_since >= IDLE_PING_SECONDS:
        return True
    return is_suspect(info, pool)


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """Pre-ping, but only for connections that sat idle in the pool, or that a lost connection makes suspect.

    SQLAlchemy's `pool_pre_ping` costs three round trips (BEGIN, a ping, ROLLBACK on asyncpg) on every
    checkout. Connections go stale while idle (a server restart, a proxy closing quiet sockets), so only those
    are checked; a failed check makes the pool open a fresh connection. A connection that dies while in use
    fails its request with a 503 (`connection_invalidated`) and is replaced; the others are pinged before
    their next use (`suspect_connections`), rather than all reopened as SQLAlchemy does by default."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["verified_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine.pool, "checkin")
    def _checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def _checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        # The engine's pool now (`dispose` replaces it), the one `suspect_connections` marks.
        if not needs_ping(record.info, engine.sync_engine.pool):
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("stale pooled connection") from exc
        record.info["verified_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "handle_error")
    def _lost(context: ExceptionContext) -> None:
        if context.is_disconnect:
            # That connection is invalidated; the others are checked before their next use.
            context.invalidate_pool_on_disconnect = False
            suspect_connections(engine)


def make_sessionmaker(bind: Any) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(bind=bind, expire_on_commit=False, autoflush=False)


def read_execution_options(engine: AsyncEngine) -> dict[str, Any]:
    """How a reading request runs: in one transaction, so that an answer read in several statements (a page
    and its total, an object and its current assignment, an object and its ETag) reads one snapshot.

    PostgreSQL: REPEATABLE READ and READ ONLY (every statement sees the snapshot of the first; the
    transaction takes no lock and cannot write). SQLite: a DEFERRED transaction, whose snapshot is taken by
    its first read and which runs beside a writer (WAL) instead of queuing behind it."""
    if engine.dialect.name == "sqlite":
        return {SQLITE_BEGIN_OPTION: "DEFERRED"}
    return {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}


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
            "declare its router with app.core.routers.api_router"
        )
    state = request.app.state
    routing = getattr(state, "replica", None)
    if routing is not None and request.method in READ_METHODS and routing.serves(request.scope):
        replica = await _replica_session(routing, request.scope, state.read_options)
        if replica is not None:
            request.scope.setdefault("state", {})[_SESSION_KEY] = replica
            return replica
    session: AsyncSession = state.sessionmaker()
    request.scope.setdefault("state", {})[_SESSION_KEY] = session
    # A session bound to one connection (the tests' rolled-back transaction) keeps its transaction.
    if request.method in READ_METHODS and isinstance(session.bind, AsyncEngine):
        options = state.read_options
        if getattr(route.endpoint, JOURNALED, False) and not _asks_csv(request):
            options = state.journal_options
        await session.connection(execution_options=options)
    return session


async def _replica_session(routing: Any, scope: Any, read_options: dict[str, Any]) -> AsyncSession | None:
    """A reading session on the read replica (`app.core.replica`), once the replica has replayed what the
    primary had acknowledged when the request came; None when the replica is behind or cannot be reached
    (the request reads from the primary)."""
    from app.core.replica import REPLICA_DOWN

    position = await routing.position()
    if per_transaction_sql(routing.engine) is not None:
        # Behind PgBouncer, the session's transaction begins (and takes its snapshot, with its timeouts)
        # as soon as it has a connection: the check runs before, on a connection of its own. (PgBouncer
        # sends both to the same server.)
        ready = await _replayed_apart(routing, scope, position)
        if ready is None:
            return None
        session: AsyncSession = routing.sessionmaker()
        try:
            await session.connection(execution_options=read_options)
        except REPLICA_DOWN as error:
            await session.close()
            routing.failed(error)
            routing.read_on(scope, "primary")
            return None
        except BaseException:
            await session.close()
            raise
        if not ready:
            await session.close()
            routing.read_on(scope, "primary")
            return None
        routing.read_on(scope, "replica")
        return session
    session = routing.sessionmaker()
    connection = None
    try:
        connection = await session.connection(execution_options=read_options)
        raw = await connection.get_raw_connection()
        # No statement has run: the check is outside the transaction (SQLAlchemy's asyncpg adapter begins
        # it with the first statement), whose snapshot comes after it.
        ready = await routing.replayed(raw.driver_connection, position)
    except Exception as error:
        await _invalidated(connection)
        await session.close()
        if connection is None and not isinstance(error, REPLICA_DOWN):
            # The replica's pool full: the 503 it always was.
            raise
        # Not connected, or the check failed on the connection (closed, the server shutting down).
        routing.failed(error)
        routing.read_on(scope, "primary")
        return None
    except BaseException:
        # Interrupted (a cancellation) in the middle of a statement: the connection is not given back.
        await _invalidated(connection)
        await session.close()
        raise
    if not ready:
        await session.close()
        routing.read_on(scope, "primary")
        return None
    routing.read_on(scope, "replica")
    return session


async def _replayed_apart(routing: Any, scope: Any, position: str | None) -> bool | None:
    """The replica's check on a connection of its own, given back at once: whether it has replayed
    `position`; None when it cannot be reached (counted, and left alone)."""
    from app.core.replica import REPLICA_DOWN

    connection = None
    try:
        connection = await routing.engine.connect()
        raw = await connection.get_raw_connection()
        ready: bool = await routing.replayed(raw.driver_connection, position)
    except Exception as error:
        await _invalidated(connection)
        if connection is not None:
            await connection.close()
        if connection is None and not isinstance(error, REPLICA_DOWN):
            raise
        routing.failed(error)
        routing.read_on(scope, "primary")
        return None
    except BaseException:
        await _invalidated(connection)
        if connection is not None:
            await connection.close()
        raise
    await connection.close()
    return ready


async def _invalidated(connection: Any) -> None:
    if connection is not None:
        with contextlib.suppress(Exception):
            await connection.invalidate()


JOURNALED = "__cnfs_journaled__"
"""Set on a GET endpoint whose answer shows people (`app.core.audit.journaled`): its JSON answer writes its
journal line, so its transaction is not read-only (`journal_execution_options`). Its CSV export reads in the
read-only snapshot and journals each batch in a transaction of its own (`app.core.csv`)."""


def _asks_csv(request: Request) -> bool:
    from app.core.media import scope_accepts_csv

    return scope_accepts_csv(request.scope["headers"])


def journal_execution_options(engine: AsyncEngine) -> dict[str, Any]:
    """How a reading request that writes its journal line runs: one snapshot, as a read
    (`read_execution_options`), in a transaction that may write. PostgreSQL: REPEATABLE READ (it only
    inserts, so it never fails to serialize). SQLite: BEGIN IMMEDIATE (the write lock up front, as a write
    takes it: a DEFERRED transaction upgraded at its INSERT would fail when a writer committed since its
    snapshot)."""
    if engine.dialect.name == "sqlite":
        return {SQLITE_BEGIN_OPTION: "IMMEDIATE"}
    return {"isolation_level": "REPEATABLE READ"}


async def _end_session(request: Request, commit: bool) -> None:
    session: AsyncSession | None = request.scope.get("state", {}).pop(_SESSION_KEY, None)
    if session is None:
        return
    try:
        if commit:
            await session.commit()
        else:
            await session.rollback()
    except Exception:
        await session.rollback()
        raise
    except BaseException:
        await _discard(session)
        raise
    finally:
        await session.close()


async def _discard(session: AsyncSession | None) -> None:
    """A cancelled request's session, whose transaction is in doubt (BEGIN, a statement or COMMIT may have
    been interrupted). PostgreSQL: asyncpg's own transaction state may be left behind (a failed BEGIN keeps
    the connection's top transaction, and the next one would become a savepoint in it), so the connection
    is invalidated rather than handed to the next request. SQLite: aiosqlite runs every call in order in
    the connection's thread, so an interrupted call has finished there and a ROLLBACK ends the transaction
    (closing it instead would leave its write lock to the garbage collector: a connection whose statement
    is still referenced is not really closed). Inside the tests' transaction, a rollback."""
    if session is None:
        return
    if isinstance(session.bind, AsyncEngine) and session.bind.dialect.name != "sqlite":
        await session.invalidate()
    else:
        await session.rollback()


def detach_session(request: Request) -> AsyncSession:
    """Takes the request's session (its connection, and a read's snapshot) away from `TransactionRoute`:
    the caller now ends it, with `end_detached`. A streamed answer (`app.core.csv`) reads on after the
    handler has returned, in the same snapshot as the checks the handler made."""
    session: AsyncSession | None = request.scope.get("state", {}).pop(_SESSION_KEY, None)
    if session is None:
        raise RuntimeError("the request has no session to detach (it needs SessionDep)")
    return session


async def end_detached(session: AsyncSession, in_doubt: bool) -> None:
    """Ends a detached session: rolled back (a read has nothing to commit) and its connection back to the
    pool; one interrupted in the middle of a statement (`in_doubt`) as a cancelled request's is
    (`_discard`). In a task of its own, which a cancellation of the caller does not interrupt halfway."""

    async def end() -> None:
        try:
            if in_doubt:
                await _discard(session)
            else:
                await session.rollback()
        finally:
            await session.close()

    task = asyncio.ensure_future(end())
    _ENDING.add(task)
    task.add_done_callback(_ENDING.discard)
    await asyncio.shield(task)


_ENDING: set[asyncio.Future[None]] = set()


class TransactionRoute(APIRoute):
    """A route whose database session (`SessionDep`) is committed when the handler returns, before the
    response is sent, and rolled back when it raises: a commit that fails (a unique constraint checked at
    commit, a lost connection) reaches the client as its problem, never after a 2xx it already saw."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as error:
                await _end_session(request, commit=False)
                if refused_before_dependencies(error):
                    # The caller's 401, 403 or 429 before the body's 422, as for any other request.
                    from app.core.auth import check_caller_of_unread_body

                    await check_caller_of_unread_body(request)
                raise
            except BaseException:
                await _discard(request.scope.get("state", {}).pop(_SESSION_KEY, None))
                raise
            await _end_session(request, commit=True)
            return response

        return run


SessionDep = Annotated[AsyncSession, Depends(get_session)]
