"""The direct path: the hottest reads answered without FastAPI's request handling and without the ORM session.

A *direct handler* is the twin of one FastAPI route (`direct(route_name)`). `RequestMiddleware` matches the
request against the direct handlers first; a handler parses the few parameters of the common case, resolves
the caller, calls the same service function as its route with a `DirectSession`, and answers with the same
response builders (`app.core.responses`). For anything else it returns None, and the request goes to the
FastAPI route as usual: invalid or unusual parameters (so that every error is the route's own), a cursor it
does not read, a service call that needs the ORM (`DirectSession` raises `Fallback`, caught here). So the
direct path changes no behaviour: the same service code, SQL, JSON, headers and problems (the parity tests
send every request both ways and compare the answers), only less work per request.

`DirectSession` runs SQLAlchemy Core statements that select columns (`app.core.columns.ReadColumns`) on the
driver's own connection (asyncpg, aiosqlite): the statement is compiled once per shape (SQLAlchemy's cache
key, as the engine does) and its rows come back with the same type processing as through the engine, but
without the session, the execution context, the result objects and the adapter's greenlet hops per
statement. Reads run outside any transaction (PostgreSQL autocommit, SQLite's implicit transaction per
statement), as the session path does for reads."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
import weakref
from collections import namedtuple
from collections.abc import Awaitable, Callable, Iterator, Sequence
from enum import Enum
from typing import Any, TypeVar, cast

from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import TypeAdapter
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.pool import QueuePool
from sqlalchemy.pool.base import _ConnectionRecord
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import LRUCache, greenlet_spawn
from sqlalchemy.util.queue import Full
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import db
from app.core.pool import FairAsyncQueue, FairAsyncQueuePool
from app.core.types import no_control_characters

logger = logging.getLogger("app.direct")

E = TypeVar("E", bound=Enum)
S = TypeVar("S", bound=ClauseElement)
T = TypeVar("T")
DirectHandler = Callable[[Request, "DirectSession"], Awaitable[Response | None]]
_HANDLERS: dict[str, DirectHandler] = {}


def direct(route_name: str) -> Callable[[DirectHandler], DirectHandler]:
    """Registers `handler` as the direct twin of the FastAPI route named `route_name`."""

    def register(handler: DirectHandler) -> DirectHandler:
        _HANDLERS[route_name] = handler
        return handler

    return register


class Fallback(Exception):
    """The direct path cannot answer this request; the FastAPI route will."""


# --- statements ------------------------------------------------------------------------------------------


class _Compiled:
    """A statement compiled for one dialect, with what running it on the driver needs."""

    __slots__ = (
        "compiled",
        "defaults",
        "dml",
        "expanding",
        "names",
        "processors",
        "result_processors",
        "returns_rows",
        "row",
    )

    def __init__(self, compiled: SQLCompiler, dialect: Dialect) -> None:
        self.compiled = compiled
        self.dml = bool(compiled.isinsert or compiled.isupdate or compiled.isdelete)
        self.returns_rows = not self.dml or bool(compiled._result_columns)
        # Python-side column defaults (`default=new_id`, `onupdate=utcnow`): computed here, as the engine's
        # execution context does.
        self.defaults: list[tuple[str, Any]] = [
            (column.key, getattr(default, "arg", None))
            for column, default in [
                *((c, c.default) for c in compiled.insert_prefetch),
                *((c, c.onupdate) for c in compiled.update_prefetch),
            ]
            if default is not None
        ]
        self.expanding = bool(compiled.literal_execute_params or compiled.post_compile_params)
        self.processors: Any = compiled._bind_processors
        columns = compiled._result_columns
        self.names = [entry.keyname for entry in columns]
        self.result_processors = [
            (index, processor)
            for index, entry in enumerate(columns)
            if (processor := entry.type._cached_result_processor(dialect, None)) is not None
        ]
        try:
            self.row: Any = namedtuple("DirectRow", self.names)  # type: ignore[misc]
        except ValueError:
            self.row = None


def _reads_columns_only(statement: ClauseElement) -> bool:
    """A SELECT of columns (not of mapped entities, which the ORM would turn into objects), a text, or an
    INSERT, UPDATE or DELETE (on a writing request)."""
    if getattr(statement, "is_dml", False) is True:
        return True
    descriptions = getattr(statement, "column_descriptions", None)
    if descriptions is None:
        return getattr(statement, "is_text", False) is True
    return getattr(statement, "is_select", False) is True and not any(
        isinstance(d.get("expr"), type) for d in descriptions
    )


_CACHE: LRUCache[Any, Any] = LRUCache(2000)
_PREPARED: LRUCache[int, Any] = LRUCache(2000)


def prepared(statement: S) -> S:
    """Marks a long-lived statement (a template whose values all come as parameters): the direct path
    finds its compiled form by the object itself, without computing its cache key on every execution."""
    _PREPARED[id(statement)] = statement
    return statement


def _compile(
    statement: ClauseElement, dialect: Dialect, params: dict[str, Any] | None
) -> tuple[_Compiled, dict[str, Any]]:
    if _PREPARED.get(id(statement)) is statement:
        key = ("prepared", id(statement), dialect.name)
        known = _CACHE.get(key)
        if known is None or known[0] is not statement:
            if not _reads_columns_only(statement):
                raise Fallback(f"not a SELECT of columns: {type(statement).__name__}")
            fresh = _Compiled(statement.compile(dialect=dialect), dialect)
            if fresh.row is None:
                raise Fallback("result columns without names")
            known = (statement, fresh)
            _CACHE[key] = known
        made = known[1]
        return made, dict(made.compiled.construct_params(params or None, escape_names=False))
    compiled: Any
    compiled, extracted, param_dict, _hit = statement._compile_w_cache(
        dialect=dialect,
        compiled_cache=_CACHE,
        column_keys=[],
        for_executemany=False,
        schema_translate_map=None,
    )
    entry = _CACHE.get(("direct", id(compiled)))
    if entry is None or entry.compiled is not compiled:
        if not _reads_columns_only(statement):
            raise Fallback(f"not a SELECT of columns: {type(statement).__name__}")
        entry = _Compiled(compiled, dialect)
        if entry.row is None:
            raise Fallback("result columns without names")
        _CACHE[("direct", id(compiled))] = entry
    values: dict[str, Any] = compiled.construct_params(
        params or None, extracted_parameters=extracted, escape_names=False, _collected_params=param_dict
    )
    return entry, values


StatementObserver = Callable[[str], None]
statement_observers: list[StatementObserver] = []
"""Called with each statement the direct path runs (the statement counts of the tests and the benchmark,
which count the engine's statements through its events)."""
transaction_observers: list[StatementObserver] = []
"""Called with BEGIN, COMMIT or ROLLBACK (and their savepoint forms) for a writing request's transaction:
round trips that are not statements (the benchmark's counts)."""
answer_observers: list[Callable[[str], None]] = []
"""Called with the route's name when the direct path answers a request itself (tests)."""


class DirectResult:
    """What the services read from a result: rows (attributes, `_asdict()`), scalars, mappings."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int | None = None) -> None:
        self._rows = rows
        self.rowcount = len(rows) if rowcount is None else rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return self._rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise sa_exc.MultipleResultsFound("multiple rows where one was required")
        return self.first()

    def one(self) -> Any:
        row = self.one_or_none()
        if row is None:
            raise sa_exc.NoResultFound("no row where one was required")
        return row

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalars(self) -> DirectResult:
        return DirectResult([row[0] for row in self._rows])

    def mappings(self) -> DirectResult:
        return DirectResult([row._asdict() for row in self._rows])


def _driver_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(what the drivers raise, what of it means the connection is gone)."""
    import sqlite3

    import asyncpg

    errors = (OSError, TimeoutError, sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError)
    # A connection cut in the middle of a statement also ends in asyncpg's InternalClientError ("cannot
    # switch to state ..."): nothing more can be done with it.
    lost = (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
    )
    return errors + lost, lost


_DRIVER_ERRORS, _LOST_CONNECTION_ERRORS = _driver_errors()


def _integrity_errors() -> tuple[type[BaseException], ...]:
    import sqlite3

    import asyncpg

    return (sqlite3.IntegrityError, asyncpg.IntegrityConstraintViolationError)


_INTEGRITY_ERRORS = _integrity_errors()


def _is_disconnect(error: BaseException) -> bool:
    return isinstance(error, _LOST_CONNECTION_ERRORS)


def _wrapped(sql: str, error: BaseException) -> sa_exc.DBAPIError:
    """The driver's error as the engine would raise it, for the application's problem handlers: a lost
    connection is an OperationalError (503), a constraint an IntegrityError (409), any other a DBAPIError
    (503 when transient, else 500)."""
    if _is_disconnect(error):
        return sa_exc.OperationalError(sql, None, error)
    if isinstance(error, _INTEGRITY_ERRORS):
        return sa_exc.IntegrityError(sql, None, error)
    return sa_exc.DBAPIError(sql, None, error)


class _KeptConnections:
    """The connections the direct path keeps between requests instead of giving them back to the pool.

    Checking a connection out of SQLAlchemy's async pool and back in costs two greenlet switches, the pool's
    bookkeeping and its events: on a small read, about a third of the direct path's own work (measured on
    SQLite at 32 connections: 0.52 ms of CPU per request through the pool, 0.37 ms kept). The direct path
    keeps its connections, up to the pool's size, as long as nobody waits for one:

    - a connection coming back while a request waits in the pool's queue goes to the pool, hence to the
      longest waiter (`app.core.pool.FairAsyncQueue`);
    - a request of the session path about to wait in the pool's queue first has every kept connection
      given back to the pool (`release`), so that none sits idle while a request waits;
    - a direct request that finds none kept and every connection out waits in the same line
      (`DirectSession._checkout`), and a direct request done with its connection hands it over as it is
      when the longest waiter is a direct request;
    - one idle for longer than the pool's idle threshold goes back through the pool, which pings it before
      handing it out, and every kept one goes when a connection is found broken or the engine is disposed.

    With another pool than `FairAsyncQueuePool`, at most `MAX_KEPT_OTHER` are kept, and only while the pool
    has a connection to spare."""

    MAX_KEPT_OTHER = 2

    def __init__(self, engine: AsyncEngine) -> None:
        self._idle: list[tuple[Any, float]] = []
        self.stale: list[tuple[Any, float]] = []
        self._hooked: Any = None
        event.listen(engine.sync_engine, "engine_disposed", lambda _conn: self.drop_all())

    def take(self) -> Any:
        while self._idle:
            connection, since = self._idle.pop()
            if time.monotonic() - since < db.IDLE_PING_SECONDS and not connection.closed:
                return connection
            self.stale.append((connection, since))
        return None

    def release_stale(self) -> None:
        """The connections kept idle for too long back to the pool, which pings each before handing it out
        again (one round trip, where opening a new connection would cost several). Synchronous: runs in a
        greenlet."""
        stale, self.stale = self.stale, []
        for connection, since in stale:
            if not connection.closed:
                self._give_back(connection, since)

    @staticmethod
    def _give_back(connection: Any, since: float) -> None:
        """Back to the pool, keeping the time it has been idle (`db._ping_idle_connections`)."""
        info = connection.connection.info
        connection.close()
        info["idle_since"] = min(info.get("idle_since", since), since)

    def keep(self, connection: Any) -> bool:
        """Whether `connection` (a Connection of the engine, done with) is kept or handed over; if not, the
        caller gives it back to the pool."""
        if connection.invalidated or connection.closed:
            return False
        pool = connection.engine.pool
        fairy = connection.connection
        if getattr(fairy, "_pool", pool) is not pool:
            # Checked out of the pool that `dispose` replaced: it goes back to that one, to be closed.
            return False
        record = getattr(fairy, "_connection_record", None)
        if record is None or record.starttime < getattr(pool, "_invalidate_time", 0):
            # Opened before a connection was found broken (`DirectSession._failed`): it goes back through
            # the pool, whose next checkout opens a fresh one, as the engine does after a disconnect.
            return False
        if _in_transaction(fairy.driver_connection):
            # Left in a transaction (a cancelled COMMIT): the pool's reset rolls it back.
            return False
        queue = getattr(pool, "_pool", None)
        if isinstance(queue, FairAsyncQueue):
            waiter = queue.first_direct()
            if waiter is not None:
                # The longest waiter is a direct request: it takes this connection as it is, without the
                # pool's checkin and checkout (`DirectSession._checkout`).
                queue.hand(waiter, connection)
                return True
            if queue.waiting():
                return False
            if self._hooked is not queue:
                # The engine's pool (a new one after `dispose`) gives the kept connections back before a
                # request waits for one.
                queue.before_wait = self.release
                self._hooked = queue
            limit = pool.size()
        else:
            # Only while the pool has a connection to spare: a request waiting for one in the pool's queue
            # must get this one, not the next request to arrive.
            if pool.checkedout() >= pool.size():
                return False
            limit = self.MAX_KEPT_OTHER
        if len(self._idle) >= limit:
            return False
        self._idle.append((connection, time.monotonic()))
        return True

    def release(self) -> None:
        """Every kept connection back to the pool, synchronously and without a round trip (it runs in the
        greenlet of the request about to wait; a kept connection is in no transaction, so the pool's reset
        does nothing). Each keeps the time it has been idle, so that the pool's checkout pings those idle
        for too long (`db._ping_idle_connections`)."""
        idle, self._idle = self._idle, []
        for connection, since in idle:
            self._give_back(connection, since)

    def drop_all(self) -> None:
        """Synchronous: runs in a greenlet (or in the engine's disposal)."""
        connections = [c for c, _since in self._idle + self.stale]
        self._idle, self.stale = [], []
        self._drop(connections)

    @staticmethod
    def _drop(connections: list[Any]) -> None:
        for connection in connections:
            try:
                connection.invalidate()
                connection.close()
            except Exception:  # pragma: no cover - already broken
                logger.debug("dropping a kept connection failed", exc_info=True)


_KEPT: weakref.WeakKeyDictionary[Any, _KeptConnections] = weakref.WeakKeyDictionary()
_CLOSING: set[asyncio.Task[Any]] = set()


def _in_transaction(driver: Any) -> bool:
    """Whether the driver's connection (asyncpg, aiosqlite) is inside a transaction."""
    is_in_transaction = getattr(driver, "is_in_transaction", None)
    if is_in_transaction is not None:
        return bool(is_in_transaction())
    return bool(getattr(driver, "in_transaction", False))


def _pass_on(kept: _KeptConnections, pool: Any, item: Any) -> None:
    """What a direct request was handed while it stopped waiting (a cancellation) goes on: a pooled
    connection's record to the line or the pool's queue, a connection to the next direct waiter or aside;
    else back to the pool (a checkin, or closing a record the full queue cannot take: both may need a round
    trip, hence a greenlet, in a task of its own)."""
    if isinstance(item, _ConnectionRecord):
        try:
            pool._pool.put_nowait(item)
            return
        except Full:
            closing: Any = greenlet_spawn(pool._do_return_conn, item)
    elif kept.keep(item):
        return
    else:
        closing = greenlet_spawn(item.close)
    task = asyncio.get_running_loop().create_task(closing)
    _CLOSING.add(task)
    task.add_done_callback(_closed)


def _closed(task: asyncio.Task[Any]) -> None:
    _CLOSING.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.warning("giving a connection back to the pool failed", exc_info=task.exception())


def _kept_connections(engine: AsyncEngine) -> _KeptConnections | None:
    """The engine's kept connections; None where the pool is not a queue of connections (a static pool
    shares one connection, which must not be kept)."""
    sync_engine = engine.sync_engine
    kept = _KEPT.get(sync_engine)
    if kept is None:
        if not isinstance(sync_engine.pool, QueuePool):
            return None
        kept = _KeptConnections(engine)
        _KEPT[sync_engine] = kept
    return kept


class DirectSession:
    """Runs the services' column SELECTs on the driver's connection, taken from the engine's pool on the
    first statement and given back by `close()`. Any other use of the session (ORM objects, writes)
    raises `Fallback`, so that the FastAPI route answers instead.

    Bound to a connection rather than an engine (the tests' transaction), it runs on that connection."""

    def __init__(self, bind: AsyncEngine | AsyncConnection, write: bool = False) -> None:
        self._bind = bind
        self._write = write
        self._transaction: Any = None
        self._dialect: Dialect = bind.dialect
        self._postgres = self._dialect.name == "postgresql"
        self._engine_connection: Any = None
        self._fairy: Any = None
        self._driver: Any = None
        self._lock: Any = None

    def __getattr__(self, name: str) -> Any:
        raise Fallback(f"the direct path has no session.{name}")

    def get_bind(self) -> AsyncEngine | AsyncConnection:
        """What the session is bound to (its `dialect` says which database)."""
        return self._bind

    async def _connection(self) -> Any:
        if self._driver is not None:
            return self._driver
        if isinstance(self._bind, AsyncEngine):
            kept = _kept_connections(self._bind)
            if kept is not None:
                self._engine_connection = kept.take()
                if kept.stale:
                    await greenlet_spawn(kept.release_stale)
            if self._engine_connection is None:
                self._engine_connection = await self._checkout(kept)
            self._fairy = self._engine_connection.connection
        else:
            self._fairy = await self._bind.get_raw_connection()
            # The test's connection is shared with the session path: take turns, as its adapter does.
            self._lock = getattr(self._fairy.dbapi_connection, "_execute_mutex", None)
        self._driver = self._fairy.driver_connection
        return self._driver

    async def _checkout(self, kept: _KeptConnections | None) -> Any:
        """A Connection of the engine: the pool's checkout runs its events (the idle ping), and a failure to
        connect comes out as the same SQLAlchemy error (503) as on the session path.

        When every connection of a `FairAsyncQueuePool` is out, the request waits in the pool's line as
        the direct path's: it then gets either a connection given back to the pool, or one that another
        direct request hands over as it is (`_KeptConnections.keep`), which saves the pool's checkin and
        checkout on both sides."""
        engine = cast(AsyncEngine, self._bind).sync_engine
        pool = engine.pool
        queue = getattr(pool, "_pool", None)
        if (
            kept is None
            or not isinstance(pool, FairAsyncQueuePool)
            or not isinstance(queue, FairAsyncQueue)
            or queue.available()
            # The pool's own test (`QueuePool._do_get`): may it open one more connection?
            or pool._max_overflow <= -1
            or pool._overflow < pool._max_overflow
        ):
            return await greenlet_spawn(engine.connect)
        # One kept meanwhile (while stale ones were dropped) is this request's rather than idle.
        connection = kept.take()
        if connection is not None:
            return connection
        waiter = queue.join(pool.timeout())
        try:
            handed = await waiter
        except TimeoutError as error:
            raise sa_exc.TimeoutError(
                f"QueuePool limit of size {pool.size()} overflow {pool.overflow()} reached, "
                f"connection timed out, timeout {pool.timeout():0.2f}"
            ) from error
        except BaseException:
            left = queue.leave(waiter)
            if left is not None:
                _pass_on(kept, pool, left)
            raise
        if isinstance(handed, _ConnectionRecord):
            if engine.pool is not pool:
                # The pool was replaced (`dispose`) while this request waited: the record goes back to its
                # own pool, and the request asks the new one.
                _pass_on(kept, pool, handed)
                return await greenlet_spawn(engine.connect)
            return await greenlet_spawn(pool.checkout_handed, handed, engine.connect)
        return handed

    async def execute(self, statement: Any, params: dict[str, Any] | None = None) -> DirectResult:
        entry, values = _compile(statement, self._dialect, params)
        if entry.dml and not self._write:
            raise Fallback("a write on a reading request")
        for key, default in entry.defaults:
            if values.get(key) is None:
                values[key] = default(None) if callable(default) else default
        compiled: Any = entry.compiled
        processors: Any = entry.processors
        if entry.expanding:
            expanded = compiled._process_parameters_for_postcompile(values)
            sql = expanded.statement
            processors = {**processors, **expanded.processors}
            positions = expanded.positiontup or ()
            values = expanded.parameters
        else:
            sql = compiled.string
            positions = compiled.positiontup or ()
        args = [processors[name](values[name]) if name in processors else values[name] for name in positions]
        if not entry.returns_rows:
            return DirectResult([], await self._run(sql, args, rowcount=True))
        raw_rows = await self._run(sql, args)
        make = entry.row._make
        result_processors = entry.result_processors
        if result_processors:
            rows = []
            for raw in raw_rows:
                row = list(raw)
                for index, processor in result_processors:
                    row[index] = processor(row[index])
                rows.append(make(row))
        else:
            rows = [make(raw) for raw in raw_rows]
        return DirectResult(rows)

    async def scalar(self, statement: Any, params: dict[str, Any] | None = None) -> Any:
        return (await self.execute(statement, params)).scalar()

    async def scalars(self, statement: Any, params: dict[str, Any] | None = None) -> DirectResult:
        return (await self.execute(statement, params)).scalars()

    async def _run(self, sql: str, args: Sequence[Any], rowcount: bool = False) -> Any:
        driver = await self._connection()
        for observe in statement_observers:
            observe(sql)
        try:
            if self._write and self._transaction is None:
                await self._begin(driver)
            if self._lock is not None:
                async with self._lock:
                    return await self._fetch(driver, sql, args, rowcount)
            return await self._fetch(driver, sql, args, rowcount)
        except _DRIVER_ERRORS as error:
            await self._failed(error)
            raise _wrapped(sql, error) from error

    async def _fetch(self, driver: Any, sql: str, args: Sequence[Any], rowcount: bool) -> Any:
        if self._postgres:
            if rowcount:
                status: str = await driver.execute(sql, *args)
                return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else -1
            return await driver.fetch(sql, *args)
        if rowcount:
            cursor = await driver.execute(sql, args)
            count: int = cursor.rowcount
            await cursor.close()
            return count
        return await driver.execute_fetchall(sql, args)

    # --- the transaction of a writing request ---

    async def _begin(self, driver: Any) -> None:
        """PostgreSQL: a transaction (a savepoint inside the tests' one); SQLite: BEGIN IMMEDIATE (the
        write lock up front, as the session path takes it), or a savepoint inside the tests' transaction."""
        nested = not isinstance(self._bind, AsyncEngine)
        for observe in transaction_observers:
            observe("BEGIN")
        if self._postgres:
            transaction = driver.transaction()
            await transaction.start()
            self._transaction = transaction
        else:
            state = "savepoint" if nested else "transaction"
            try:
                await driver.execute("SAVEPOINT direct_write" if nested else "BEGIN IMMEDIATE")
            except asyncio.CancelledError:
                # The statement may still run in aiosqlite's thread once this task has stopped waiting: the
                # ROLLBACK of `finish` then goes after it, and the connection never returns to the pool
                # inside a transaction (the pool rolls back only a connection it sees in one).
                self._transaction = state
                raise
            self._transaction = state

    async def finish(self, commit: bool) -> None:
        """Commits (or rolls back) the writing request's transaction, if it began one; before the response
        is sent, so that a failed commit is the request's problem, never after a 2xx."""
        transaction, self._transaction = self._transaction, None
        if transaction is None or self._driver is None:
            return
        driver = self._driver
        for observe in transaction_observers:
            observe("COMMIT" if commit else "ROLLBACK")
        try:
            if self._postgres:
                await (transaction.commit() if commit else transaction.rollback())
            elif transaction == "savepoint":
                if not commit:
                    await driver.execute("ROLLBACK TO direct_write")
                await driver.execute("RELEASE direct_write")
            else:
                await driver.execute("COMMIT" if commit else "ROLLBACK")
        except _DRIVER_ERRORS as error:
            await self._failed(error)
            if commit:
                raise _wrapped("COMMIT", error) from error

    async def _failed(self, error: BaseException) -> None:
        """A connection that broke goes out of the pool, and the connections opened before it are
        recycled (what the engine does on a disconnect), so that the next request gets a working one."""
        if (
            not _is_disconnect(error)
            or self._engine_connection is None
            or not isinstance(self._bind, AsyncEngine)
        ):
            return
        connection, fairy = self._engine_connection, self._fairy
        self._engine_connection = self._fairy = self._driver = None
        pool = self._bind.sync_engine.pool
        kept = _kept_connections(self._bind)
        try:
            await greenlet_spawn(pool._invalidate, fairy, error)
            await greenlet_spawn(connection.close)
            if kept is not None:
                # Those were opened before the failure too: the pool recycles its own, these go.
                await greenlet_spawn(kept.drop_all)
        except Exception:  # pragma: no cover - already broken
            logger.debug("invalidating a broken connection failed", exc_info=True)

    async def close(self) -> None:
        connection = self._engine_connection
        self._engine_connection = self._fairy = self._driver = None
        if connection is None:
            return
        kept = _kept_connections(self._bind) if isinstance(self._bind, AsyncEngine) else None
        if kept is None or not kept.keep(connection):
            await greenlet_spawn(connection.close)


def as_session(session: DirectSession) -> AsyncSession:
    """The direct session where a service function takes the request's session (it runs its SELECTs of
    columns; anything else it asks of the session raises Fallback)."""
    return cast(AsyncSession, session)


# --- parameters: the common, valid case only; anything else is the route's to answer ----------------------

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII)


def uuid_param(value: str | None) -> uuid.UUID | None:
    """A UUID in its canonical form; Fallback for any other text (the route answers it)."""
    if value is None:
        return None
    if _UUID.fullmatch(value) is None:
        raise Fallback("not a canonical UUID")
    return uuid.UUID(value)


def text_param(value: str | None, max_length: int, min_length: int = 0) -> str | None:
    """Text of an accepted length without control characters; Fallback otherwise."""
    if value is None:
        return None
    if not min_length <= len(value) <= max_length:
        raise Fallback("text of another length")
    try:
        return no_control_characters(value)
    except ValueError:
        raise Fallback("control characters") from None


def int_param(value: str | None, low: int, high: int, default: int) -> int:
    if value is None:
        return default
    if not (value.isascii() and value.isdigit() and len(value) <= 6) or not low <= int(value) <= high:
        raise Fallback("integer outside what the direct path takes")
    return int(value)


def bool_param(value: str | None, default: bool = False) -> bool:
    if value is None:
        return default
    if value not in ("true", "false"):
        raise Fallback("boolean spelt otherwise")
    return value == "true"


def enum_param(enum: type[E], value: str | None) -> E | None:
    if value is None:
        return None
    try:
        return enum(value)
    except ValueError:
        raise Fallback("not a member") from None


async def json_body(request: Request) -> Any:
    """The JSON body as the route reads it (`json.loads` of a body sent as `application/json`); Fallback
    for anything else (no body, another type, JSON that does not parse), which the route answers."""
    content_type = request.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != "application/json":
        raise Fallback("not a JSON body")
    body = await request.body()
    if not body:
        raise Fallback("no body")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise Fallback("not JSON") from None


def validated(adapter: TypeAdapter[T], data: Any) -> T:
    """`data` validated as the route validates its body (Python mode); Fallback when invalid."""
    try:
        return adapter.validate_python(data)
    except ValueError:
        raise Fallback("an invalid body") from None


# --- routing ---------------------------------------------------------------------------------------------


class DirectRoutes:
    """The direct handlers of an application's routes, matched by method and path."""

    def __init__(self) -> None:
        self._routes_id: int | None = None
        self._count = -1
        self._table: dict[str, list[tuple[Any, APIRoute, DirectHandler]]] = {}

    def _build(self, routes: list[Any]) -> None:
        table: dict[str, list[tuple[Any, APIRoute, DirectHandler]]] = {}
        for context in iter_route_contexts(routes):
            route = context.original_route
            handler = _HANDLERS.get(str(context.name))
            if handler is None or not isinstance(route, APIRoute):
                continue
            regex, _format, _convertors = compile_path(str(context.path_format or context.path))
            for method in route.methods or ():
                table.setdefault(method, []).append((regex, route, handler))
        self._table = table
        self._routes_id = id(routes)
        self._count = len(routes)

    def match(self, scope: Scope) -> tuple[APIRoute, DirectHandler, dict[str, str]] | None:
        routes = scope["app"].routes
        if id(routes) != self._routes_id or len(routes) != self._count:
            self._build(routes)
        candidates = self._table.get(scope["method"])
        if not candidates:
            return None
        path = scope["path"]
        for regex, route, handler in candidates:
            found = regex.match(path)
            if found is not None:
                return route, handler, found.groupdict()
        return None


def _exception_handler(app: Any, error: Exception) -> Any:
    handlers = app.exception_handlers
    for cls in type(error).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


class DirectMiddleware:
    """The innermost middleware: hands a request to its route's direct handler when there is one, and to
    the application otherwise (or when the handler declines). Exceptions become the application's own
    problem responses (its exception handlers)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.routes = DirectRoutes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            matched = self.routes.match(scope)
            if matched is not None:
                if scope["method"] == "GET":
                    if await self._direct(scope, receive, send, *matched):
                        return
                else:
                    # The body, as read by the direct handler, is given again to the route if it declines.
                    messages: list[Message] = []

                    async def recording() -> Message:
                        message = await receive()
                        messages.append(message)
                        return message

                    if await self._direct(scope, recording, send, *matched):
                        return

                    async def replaying() -> Message:
                        return messages.pop(0) if messages else await receive()

                    await self.app(scope, replaying, send)
                    return
        await self.app(scope, receive, send)

    async def _direct(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: APIRoute,
        handler: DirectHandler,
        path_params: dict[str, str],
    ) -> bool:
        """A writing request's statements run in one transaction, committed when the handler answers
        (before the answer is sent), rolled back when it raises or declines."""
        app = scope["app"]
        scope["route"] = route
        scope["path_params"] = path_params
        request = Request(scope, receive)
        session = DirectSession(app.state.sessionmaker.kw["bind"], write=scope["method"] != "GET")
        response: Response | None
        try:
            try:
                response = await handler(request, session)
                await session.finish(commit=response is not None)
            except BaseException:
                await session.finish(commit=False)
                raise
            finally:
                await session.close()
        except Fallback as reason:
            logger.debug("direct path declined: %s", reason)
            response = None
        except Exception as error:
            exception_handler = _exception_handler(app, error)
            if exception_handler is None:
                raise
            response = await exception_handler(request, error)
        if response is None:
            # The router matches again and sets its own route and parameters.
            del scope["route"]
            scope.pop("path_params", None)
            return False
        for observe in answer_observers:
            observe(route.name)
        await response(scope, receive, send)
        return True
