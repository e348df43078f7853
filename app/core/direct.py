"""The direct path: the hottest reads answered without FastAPI's request handling and without the ORM session.

A *direct handler* is the twin of one FastAPI route (`direct(route_name)`). `DirectMiddleware` matches the
request as the router would (`DirectRoutes`); the twin gets its route's parameters, read by the route's own
fields (`TwinParameters`), once the caller is resolved; it calls the same service function as its route with a
`DirectSession`, and answers with the same response builders (`app.core.responses`). For anything else it
returns None, and the request goes to the FastAPI route as usual: a request that asks for CSV (`Accept:
text/csv`; twins answer JSON only, and `DirectMiddleware` hands such a request over before any twin runs), a
parameter the route does not declare or a value it refuses (so that every error is the route's own), a
service call that needs the ORM or an answer of several statements the twin did not declare (`DirectSession`
raises `Fallback`, caught here). So the direct path changes no behaviour: the same service code, SQL, JSON,
headers and problems (the parity tests send every request both ways and compare the answers), only less
work per request.

`DirectSession` runs SQLAlchemy Core statements that select columns (`app.core.columns.ReadColumns`) on the
driver's own connection (asyncpg, aiosqlite): the statement is compiled once per shape (SQLAlchemy's cache
key, as the engine does) and its rows come back with the same type processing as through the engine, but
without the session, the execution context, the result objects and the adapter's greenlet hops per
statement. How a request's statements share one snapshot, and what becomes of a connection whose transaction
did not end cleanly: `DirectSession`."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import weakref
from collections import abc, deque, namedtuple
from collections.abc import Awaitable, Callable, Iterator, Sequence
from copy import deepcopy
from enum import Enum
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, cast, get_args, get_origin

from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import TypeAdapter
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TupleType
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import db
from app.core.auth import resolve_principal
from app.core.internals import (
    FairAsyncQueuePool,
    LRUCache,
    compile_cached,
    execute_mutex,
    expanded,
    greenlet_spawn,
    is_record,
    parameters,
    pool_of,
    result_columns,
)
from app.core.media import scope_accepts_csv
from app.core.metrics import committed, rolled_back
from app.core.replica import REPLICA_DOWN

logger = logging.getLogger("app.direct")

S = TypeVar("S", bound=ClauseElement)
T = TypeVar("T")
DirectHandler = Callable[..., Awaitable[Response | None]]
_HANDLERS: dict[str, DirectHandler] = {}
_REFUSED: dict[str, frozenset[str]] = {}
Snapshot = bool | Callable[[dict[str, Any]], bool]
_SNAPSHOT: dict[str, Snapshot] = {}
_JOURNAL: dict[str, bool] = {}


def direct(
    route_name: str, refuses: tuple[str, ...] = (), snapshot: Snapshot = False, journal: bool = False
) -> Callable[[DirectHandler], DirectHandler]:
    """Registers `handler` as the direct twin of the FastAPI route named `route_name`.

    Its parameters are the route's own: `handler(request, session, **params)` gets every path and query
    parameter the route declares (its dependencies' included: the page's `limit`, `cursor`,
    `include_total`), by their Python names, parsed and validated by the route's own declarations (the
    same validation, hence the same values). Its signature names each of them, except those it `refuses`
    (by their names in the query string): a request that sends one of those goes to the route. A request
    with a parameter the route does not declare or a value the route would refuse goes to the route too (a
    parameter sent twice is read as the route reads it: the last one). `twins` (at start-up) fails when a
    twin's signature and its route's parameters differ, and a test fails when a twin's body does not use
    one of its parameters.

    A reading twin's answer is read in one snapshot: in one statement (the caller's key is resolved before,
    on its own), or, with `snapshot` (True, or a function of the parameters that says when), in a
    transaction begun before its first statement (REPEATABLE READ on PostgreSQL). A twin without it whose
    answer takes a second statement declines it (`Fallback`): the route answers, in its own transaction.

    A reading twin whose answer shows people (`journal`, the twin of a route marked
    `app.core.audit.journaled`) writes its journal line in the answer's transaction: its answer runs in a
    transaction that may write, begun before its first statement, in one snapshot (REPEATABLE READ on
    PostgreSQL; BEGIN IMMEDIATE on SQLite, as its route's), committed before the answer is sent."""

    def register(handler: DirectHandler) -> DirectHandler:
        _HANDLERS[route_name] = handler
        _REFUSED[route_name] = frozenset(refuses)
        _SNAPSHOT[route_name] = snapshot
        _JOURNAL[route_name] = journal
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
        "dialect",
        "dml",
        "expanding",
        "names",
        "processors",
        "result_processors",
        "result_types",
        "returns_rows",
        "row",
    )

    def __init__(self, compiled: SQLCompiler, dialect: Dialect) -> None:
        self.compiled = compiled
        self.dml = bool(compiled.isinsert or compiled.isupdate or compiled.isdelete)
        columns = result_columns(compiled)
        self.returns_rows = not self.dml or bool(columns)
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
        self.processors = _bind_processors(compiled, dialect)
        self.names = [name for name, _type in columns]
        self.result_processors = [
            (index, processor)
            for index, (_name, type_) in enumerate(columns)
            if (processor := type_.dialect_impl(dialect).result_processor(dialect, None)) is not None
        ]
        self.result_types = {
            index: columns[index][1].dialect_impl(dialect) for index, _processor in self.result_processors
        }
        self.dialect = dialect
        try:
            self.row: Any = namedtuple("DirectRow", self.names)  # type: ignore[misc]
        except ValueError:
            self.row = None


def _bind_processors(compiled: SQLCompiler, dialect: Dialect) -> dict[str, Callable[[Any], Any]]:
    """Each bound parameter's processor, by name: what the engine's compiled statement keeps, from the
    public type API."""
    processors: dict[str, Callable[[Any], Any]] = {}
    for bindparam, name in compiled.bind_names.items():
        if isinstance(bindparam.type, TupleType):
            # Only ever expanded (`IN` of tuples): the expanded state brings each element's processor.
            continue
        processor = bindparam.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            processors[name] = processor
    return processors


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
        key = ("prepared", id(statement), id(dialect))
        known = _CACHE.get(key)
        if known is None or known[0] is not statement or known[1] is not dialect:
            if not _reads_columns_only(statement):
                raise Fallback(f"not a SELECT of columns: {type(statement).__name__}")
            fresh = _Compiled(statement.compile(dialect=dialect), dialect)
            if fresh.row is None:
                raise Fallback("result columns without names")
            known = (statement, dialect, fresh)
            _CACHE[key] = known
        made = known[2]
        return made, dict(made.compiled.construct_params(params or None, escape_names=False))
    compiled: Any
    compiled, extracted, collected = compile_cached(statement, dialect, _CACHE)
    entry = _CACHE.get(("direct", id(compiled)))
    if entry is None or entry.compiled is not compiled:
        if not _reads_columns_only(statement):
            raise Fallback(f"not a SELECT of columns: {type(statement).__name__}")
        entry = _Compiled(compiled, dialect)
        if entry.row is None:
            raise Fallback("result columns without names")
        _CACHE[("direct", id(compiled))] = entry
    return entry, parameters(compiled, params, extracted, collected)


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


class DriverRows:
    """A SELECT's rows as the driver returned them (asyncpg's records, SQLite's tuples), before the type
    processing the engine applies to each value: `names` are the result's columns in order, `processors`
    the (index, processor) of those whose values the engine converts (`processed` applies them to one row),
    `types` their types (for the dialect, by index). A reader of many rows (a CSV export) applies them
    itself, only where a value is read, without a row object per row."""

    __slots__ = ("_entry", "dialect", "names", "processors", "rows", "types")

    def __init__(self, rows: Sequence[Any], entry: _Compiled) -> None:
        self.rows = rows
        self._entry = entry
        self.dialect = entry.dialect
        self.names: tuple[str, ...] = tuple(entry.names)
        self.processors: tuple[tuple[int, Callable[[Any], Any]], ...] = tuple(entry.result_processors)
        self.types: dict[int, Any] = entry.result_types

    def processed(self, raw: Any) -> Any:
        """One row as the engine gives it (a named tuple of processed values)."""
        row = list(raw)
        for index, processor in self.processors:
            row[index] = processor(row[index])
        return self._entry.row._make(row)


async def driver_rows(
    connection: AsyncConnection, statement: Any, params: dict[str, Any] | None = None
) -> DriverRows | None:
    """A SELECT of columns run on the driver's connection under `connection` (an engine's connection, in
    its transaction), its rows as the driver returns them; None when that connection is in no
    transaction yet (SQLAlchemy's asyncpg adapter begins it at its first statement: this one must then
    go through the engine) or when the direct path cannot run the statement (`Fallback`). Driver errors
    come out as the engine's (`_wrapped`)."""
    session = DirectSession(connection)
    try:
        return await session.driver_rows(statement, params, in_transaction_only=True)
    except Fallback:
        return None
    finally:
        await session.close()


def _driver_errors() -> tuple[
    tuple[type[BaseException], ...], tuple[type[BaseException], ...], tuple[type[BaseException], ...]
]:
    """(what the drivers raise, what of it means the server is gone, asyncpg's client-side errors)."""
    import sqlite3

    import asyncpg

    errors = (
        OSError,
        TimeoutError,
        sqlite3.Error,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
    )
    # ConnectionDoesNotExistError (a connection closed under a statement) is a PostgresConnectionError; a
    # connection cut in the middle of a statement may also end in asyncpg's InternalClientError ("cannot
    # switch to state ...").
    lost = (OSError, asyncpg.PostgresConnectionError, asyncpg.InternalClientError)
    return errors, lost, (asyncpg.InterfaceError, asyncpg.InternalClientError)


_DRIVER_ERRORS, _LOST_CONNECTION_ERRORS, _INTERFACE_ERRORS = _driver_errors()


def _integrity_errors() -> tuple[type[BaseException], ...]:
    import sqlite3

    import asyncpg

    return (sqlite3.IntegrityError, asyncpg.IntegrityConstraintViolationError)


_INTEGRITY_ERRORS = _integrity_errors()


def _is_disconnect(error: BaseException) -> bool:
    """The server is gone (a network error, a terminated backend, a closed connection)."""
    return isinstance(error, _LOST_CONNECTION_ERRORS)


def _leaves_connection_unusable(error: BaseException, driver: Any) -> bool:
    """Whether the connection that raised `error` must be thrown away: the server is gone, or the client
    stopped waiting for an answer (`command_timeout`), or the driver's state is unknown (an interface error,
    but for a parameter the driver refused before sending anything). A statement that failed on the server
    (a constraint, `statement_timeout`, a lock timeout) leaves a connection whose transaction is rolled
    back as usual, and that stays in service."""
    if _is_disconnect(error) or isinstance(error, TimeoutError):
        return True
    if isinstance(error, _INTERFACE_ERRORS):
        # asyncpg's client-side DataError (a value it cannot encode, nothing sent) is an InterfaceError and
        # a ValueError; any other interface or internal error leaves the protocol's state unknown.
        return not isinstance(error, ValueError)
    return _is_closed(driver)


def _is_closed(driver: Any) -> bool:
    is_closed = getattr(driver, "is_closed", None)
    return bool(is_closed()) if is_closed is not None else False


def _wrapped(sql: str, error: BaseException, driver: Any = None) -> sa_exc.DBAPIError:
    """The driver's error as the engine would raise it, for the application's problem handlers: a lost
    connection (or one found closed) or a client-side timeout is an OperationalError (503), a constraint an
    IntegrityError (409), any other a DBAPIError (503 when transient, else 500)."""
    if _is_disconnect(error) or isinstance(error, TimeoutError) or _is_closed(driver):
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
      longest waiter (`app.core.internals.FairAsyncQueue`);
    - a request of the session path about to wait in the pool's queue first has every kept connection
      given back to the pool (`release`), so that none sits idle while a request waits;
    - a direct request that finds none kept and every connection out waits in the same line
      (`DirectSession._checkout`), and a direct request done with its connection hands it over as it is
      when the longest waiter is a direct request;
    - one idle for longer than the pool's idle threshold goes back through the pool, which pings it before
      handing it out; a suspect one (`db.suspect_connections`) too, and every kept one goes when the engine is
      disposed.

    One per pool (engines made by `execution_options` share their engine's pool), and only for the
    service's own pool (`FairAsyncQueuePool`); with another, the direct path checks connections out and in
    as the session path does."""

    def __init__(self, engine: AsyncEngine, pool: FairAsyncQueuePool) -> None:
        self.pool = pool
        self._idle: list[tuple[Any, float]] = []
        self.stale: list[tuple[Any, float]] = []
        # A request of the session path about to wait gives the kept connections back to the pool first.
        pool.line().before_wait = self.release
        event.listen(engine.sync_engine, "engine_disposed", lambda _conn: self.drop_all())

    def take(self) -> Any:
        while self._idle:
            connection, since = self._idle.pop()
            if connection.closed:
                continue
            if time.monotonic() - since < db.IDLE_PING_SECONDS and not db.is_suspect(
                connection.connection.info, connection.engine.pool
            ):
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
        fairy = connection.connection
        if pool_of(fairy) is not self.pool or connection.engine.pool is not self.pool:
            # Checked out of the pool that `dispose` replaced: it goes back to that one, to be closed.
            return False
        if _in_transaction(fairy.driver_connection, connection.dialect.name == "postgresql"):
            # `DirectSession.close` throws away a connection whose transaction did not end: not reached.
            return False
        queue = self.pool.line()
        waiter = queue.first_direct()
        if waiter is not None:
            # The longest waiter is a direct request: it takes this connection as it is, without the pool's
            # checkin and checkout (`DirectSession._checkout`).
            queue.hand(waiter, connection)
            return True
        if queue.waiting() or len(self._idle) >= self.pool.size():
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


def kept_idle(pool: Any) -> int:
    """How many of the pool's checked-out connections the direct path keeps idle between requests (the
    metrics count them as not in use)."""
    kept = _KEPT.get(pool)
    return 0 if kept is None else len(kept._idle) + len(kept.stale)


_CLOSING: set[asyncio.Task[Any]] = set()


def _in_transaction(driver: Any, postgres: bool) -> bool:
    """Whether the driver's connection (asyncpg's, aiosqlite's) is inside a transaction."""
    return bool(driver.is_in_transaction()) if postgres else bool(driver.in_transaction)


def _pass_on(kept: _KeptConnections, pool: FairAsyncQueuePool, item: Any) -> None:
    """What a direct request was handed while it stopped waiting (a cancellation) goes on: a pooled
    connection's record to the line or the pool's queue, a connection to the next direct waiter or aside;
    else back to the pool (a checkin, or closing a record the full queue cannot take: both may need a round
    trip, hence a greenlet, in a task of its own)."""
    if is_record(item):
        if pool.requeue(item):
            return
        closing: Any = greenlet_spawn(pool.return_record, item)
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
    """The kept connections of the engine's pool; None for another pool than the service's (a static pool
    shares one connection, which must not be kept)."""
    pool = engine.sync_engine.pool
    kept = _KEPT.get(pool)
    if kept is None:
        if not isinstance(pool, FairAsyncQueuePool):
            return None
        kept = _KeptConnections(engine, pool)
        _KEPT[pool] = kept
    return kept


class DirectSession:
    """Runs the services' column SELECTs on the driver's connection, taken from the engine's pool on the
    first statement and given back by `close()`. Any other use of the session (ORM objects, writes)
    raises `Fallback`, so that the FastAPI route answers instead.

    The caller is resolved first, outside the answer (`begin_answer` marks where the answer starts). A
    writing request's answer runs in one transaction (READ COMMITTED on PostgreSQL, as the session path;
    BEGIN IMMEDIATE on SQLite). A reading request's answer is one statement, or, where the twin declares
    it (`snapshot`), one transaction begun before its first statement (REPEATABLE READ, READ ONLY on
    PostgreSQL; a DEFERRED transaction on SQLite, whose snapshot is taken by its first read); a second
    statement of an undeclared answer declines (`Fallback`). Behind PgBouncer (`db.per_transaction_sql`),
    no statement runs outside a transaction, so that each runs under the server's lock and statement
    timeouts that the transaction sets: a reading request's first statement (its key lookup, or its answer)
    begins a REPEATABLE READ, READ ONLY transaction that the answer goes on in; a writing request's key
    lookup runs in one of its own, ended before the answer's. A connection
    whose transaction did not end cleanly (a cancellation or any error between BEGIN and the end of COMMIT
    or ROLLBACK), or that raised an error leaving it unusable, is thrown away by `close()`: never kept,
    handed on or given back to the pool as it is.

    Bound to a connection rather than an engine (the tests' transaction), it runs on that connection; a
    read then runs in the tests' transaction."""

    def __init__(
        self,
        bind: AsyncEngine | AsyncConnection,
        write: bool = False,
        snapshot: bool = False,
        journal: bool = False,
        fallback: AsyncEngine | None = None,
        on_fallback: Callable[[BaseException], None] | None = None,
        before_replica: Callable[[], Awaitable[None]] | None = None,
        replayed: Callable[[Any], Awaitable[bool]] | None = None,
    ) -> None:
        self._bind = bind
        # A read on the replica (`app.core.replica`): the primary's engine, used when the replica cannot be
        # connected to (`on_fallback` is told), or has not replayed what the read must see (`replayed`, asked
        # on the replica's connection before its first statement, says whether it has).
        self._fallback = fallback
        self._on_fallback = on_fallback
        self._before_replica = before_replica
        self._replayed = replayed
        self._write = write
        # A read that writes its journal line: a writing transaction in one snapshot (REPEATABLE READ).
        self._journal = journal and write
        self._nested = not isinstance(bind, AsyncEngine)
        # A read: its statements run outside a transaction until `begin_answer`; then the answer's first
        # statement begins the snapshot transaction (`snapshot`), or runs alone and a second one declines.
        # Behind PgBouncer, the first statement begins a transaction whatever it is (`_run`).
        self._snapshot = snapshot and not write
        self._answering = False
        self._answer_statements = 0
        # The transaction begun and not yet ended: an asyncpg Transaction, or "transaction"/"savepoint" on
        # SQLite. Set before BEGIN is sent, cleared only once COMMIT or ROLLBACK has completed.
        self._transaction: Any = None
        self._unusable = False
        self._dialect: Dialect = bind.dialect
        self._postgres = self._dialect.name == "postgresql"
        self._per_transaction = db.per_transaction_sql(bind) if self._postgres else None
        # Behind PgBouncer every statement runs in a transaction (`_run`), under the timeouts it sets.
        self._bounced = self._per_transaction is not None and not self._nested
        self._engine_connection: Any = None
        self._fairy: Any = None
        self._driver: Any = None
        self._lock: Any = None
        # As a session's `info`: what waits for the commit (`app.core.metrics.on_commit`).
        self.info: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        raise Fallback(f"the direct path has no session.{name}")

    def begin_answer(self) -> None:
        """What comes next is the answer (the caller is resolved): one snapshot from here."""
        self._answering = True

    async def __aenter__(self) -> DirectSession:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _tb: Any
    ) -> None:
        """Commits when the block ends without an error, rolls back on an error, and leaves a cancelled
        block's transaction in doubt (`close` throws the connection away); then `close`."""
        try:
            if error is None or isinstance(error, Exception):
                await self.finish(commit=error is None)
        finally:
            await self.close()

    def get_bind(self) -> AsyncEngine | AsyncConnection:
        """What the session is bound to (its `dialect` says which database)."""
        return self._bind

    async def _connection(self) -> Any:
        if self._driver is not None:
            return self._driver
        if self._before_replica is not None:
            # Before the replica's connection is taken (`fallback` given): what the check will need.
            before, self._before_replica = self._before_replica, None
            await before()
        if isinstance(self._bind, AsyncEngine):
            kept = _kept_connections(self._bind)
            if kept is not None:
                self._engine_connection = kept.take()
                if kept.stale:
                    await greenlet_spawn(kept.release_stale)
            if self._engine_connection is None:
                try:
                    self._engine_connection = await self._checkout(kept)
                except REPLICA_DOWN as error:
                    if self._fallback is None:
                        raise
                    if self._on_fallback is not None:
                        self._on_fallback(error)
                    return await self._on_primary()
            self._fairy = self._engine_connection.connection
        else:
            self._fairy = await self._bind.get_raw_connection()
            # The test's connection is shared with the session path: take turns, as its adapter does.
            self._lock = execute_mutex(self._fairy.dbapi_connection)
        self._driver = self._fairy.driver_connection
        replayed, self._replayed = self._replayed, None
        if replayed is not None:
            try:
                # No statement has run on this connection for this request: outside any transaction.
                ready = await replayed(self._driver)
            except BaseException as error:
                # Broken (closed, the server shutting down), or interrupted in the middle of the statement:
                # thrown away by `close`.
                self._unusable = True
                if not isinstance(error, Exception) or self._fallback is None:
                    raise
                await self.close()
                if self._on_fallback is not None:
                    self._on_fallback(error)
                return await self._on_primary()
            if not ready:
                await self.close()
                return await self._on_primary()
        return self._driver

    async def _on_primary(self) -> Any:
        """The replica's read goes to the primary (`fallback`): its connection, as `_connection`'s."""
        fallback = self._fallback
        assert fallback is not None
        self._fallback = None
        self._before_replica = None
        self._replayed = None
        self._bind = fallback
        self._per_transaction = db.per_transaction_sql(fallback)
        self._bounced = self._per_transaction is not None
        return await self._connection()

    async def _checkout(self, kept: _KeptConnections | None) -> Any:
        """A Connection of the engine: the pool's checkout runs its events (the idle ping), and a failure to
        connect comes out as the same SQLAlchemy error (503) as on the session path.

        When every connection of a `FairAsyncQueuePool` is out, the request waits in the pool's line as
        the direct path's: it then gets either a connection given back to the pool, or one that another
        direct request hands over as it is (`_KeptConnections.keep`), which saves the pool's checkin and
        checkout on both sides."""
        engine = cast(AsyncEngine, self._bind).sync_engine
        pool = engine.pool
        if kept is None or kept.pool is not pool or pool.line().available() or pool.may_open_more():
            return await greenlet_spawn(engine.connect)
        queue = pool.line()
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
        if is_record(handed):
            if engine.pool is not pool:
                # The pool was replaced (`dispose`) while this request waited: the record goes back to its
                # own pool, and the request asks the new one.
                _pass_on(kept, pool, handed)
                return await greenlet_spawn(engine.connect)
            return await greenlet_spawn(pool.checkout_handed, handed, engine.connect)
        return handed

    async def execute(self, statement: Any, params: dict[str, Any] | None = None) -> DirectResult:
        entry, raw_rows = await self._execute(statement, params)
        if not entry.returns_rows:
            return DirectResult([], raw_rows)
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

    async def driver_rows(
        self, statement: Any, params: dict[str, Any] | None = None, *, in_transaction_only: bool = False
    ) -> DriverRows | None:
        """The rows of a SELECT of columns as the driver returns them (see `DriverRows`); with
        `in_transaction_only`, None (nothing run) when the connection is in no transaction."""
        if in_transaction_only and not _in_transaction(await self._connection(), self._postgres):
            return None
        entry, raw_rows = await self._execute(statement, params)
        if not entry.returns_rows or entry.dml:
            raise Fallback("not a SELECT")
        return DriverRows(raw_rows, entry)

    async def _execute(self, statement: Any, params: dict[str, Any] | None) -> tuple[_Compiled, Any]:
        """The statement run on the driver: its compiled form, and the driver's rows (its row count for a
        statement that returns none)."""
        entry, values = _compile(statement, self._dialect, params)
        if entry.dml and not self._write:
            raise Fallback("a write on a reading request")
        for key, default in entry.defaults:
            if values.get(key) is None:
                values[key] = default(None) if callable(default) else default
        compiled: Any = entry.compiled
        processors: Any = entry.processors
        if entry.expanding:
            state = expanded(compiled, values)
            sql = state.statement
            processors = {**processors, **state.processors}
            positions = state.positiontup or ()
            values = state.parameters
        else:
            sql = compiled.string
            positions = compiled.positiontup or ()
        args = [processors[name](values[name]) if name in processors else values[name] for name in positions]
        if not entry.returns_rows:
            return entry, await self._run(sql, args, rowcount=True)
        return entry, await self._run(sql, args)

    async def scalar(self, statement: Any, params: dict[str, Any] | None = None) -> Any:
        return (await self.execute(statement, params)).scalar()

    async def scalars(self, statement: Any, params: dict[str, Any] | None = None) -> DirectResult:
        return (await self.execute(statement, params)).scalars()

    async def _run(self, sql: str, args: Sequence[Any], rowcount: bool = False) -> Any:
        driver = await self._connection()
        for observe in statement_observers:
            observe(sql)
        try:
            if self._answering:
                if not self._write and not self._snapshot:
                    # Counted inside the tests' transaction too, so that the tests see the twins that
                    # decline; and behind PgBouncer, where the answer runs in a transaction all the same.
                    self._answer_statements += 1
                    if self._answer_statements > 1:
                        raise Fallback("an answer of several statements: the route reads it in one snapshot")
                if self._transaction is None and (
                    self._write or self._bounced or (self._snapshot and not self._nested)
                ):
                    await self._begin(driver)
            elif self._bounced and self._transaction is None:
                # Behind PgBouncer, the caller's key is looked up in a transaction too (its timeouts): a
                # reading request's, which its answer goes on in; a writing request's own (`_direct` ends
                # it before the answer's transaction begins).
                await self._begin(driver)
            if self._lock is not None:
                async with self._lock:
                    return await self._fetch(driver, sql, args, rowcount)
            return await self._fetch(driver, sql, args, rowcount)
        except _DRIVER_ERRORS as error:
            self._failed(error, driver)
            raise _wrapped(sql, error, driver) from error

    async def _fetch(self, driver: Any, sql: str, args: Sequence[Any], rowcount: bool) -> Any:
        if self._postgres:
            if rowcount:
                status: str = await driver.execute(sql, *args)
                return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else -1
            if self._per_transaction is not None:
                # Behind PgBouncer: the statement's description, kept for this connection (`_unnamed`).
                statement = await _unnamed(driver, sql)
                return await statement.fetch(*args)
            return await driver.fetch(sql, *args)
        if rowcount:
            cursor = await driver.execute(sql, args)
            count: int = cursor.rowcount
            await cursor.close()
            return count
        return await driver.execute_fetchall(sql, args)

    # --- the request's transaction ---

    async def _begin(self, driver: Any) -> None:
        """PostgreSQL: a transaction (a savepoint inside the tests' one); a read's is REPEATABLE READ and
        READ ONLY. SQLite: BEGIN IMMEDIATE for a write (the write lock up front, as the session path takes
        it), BEGIN DEFERRED for a read, or a savepoint inside the tests' transaction.

        Behind PgBouncer (not inside the tests' transaction), BEGIN and the timeouts of the transaction
        (`db.per_transaction_sql`) go in one string of the simple protocol, one round trip; the key lookup
        before the answer begins a read's transaction (the reading request's answer goes on in it).

        `_transaction` is set before BEGIN is sent: a BEGIN that is cancelled or fails may have reached the
        server, and the connection is then in doubt (`close`)."""
        for observe in transaction_observers:
            observe("BEGIN")
        if self._bounced:
            if not self._answering or not self._write:
                begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
            elif self._journal:
                begin = "BEGIN ISOLATION LEVEL REPEATABLE READ"
            else:
                begin = "BEGIN"
            self._transaction = "transaction"
            await driver.execute(f"{begin}; {self._per_transaction}")
        elif self._postgres:
            if self._journal and not self._nested:
                # (Inside the tests' transaction, a savepoint of it: asyncpg takes no isolation there.)
                transaction = driver.transaction(isolation="repeatable_read")
            elif self._write:
                transaction = driver.transaction()
            else:
                transaction = driver.transaction(isolation="repeatable_read", readonly=True)
            self._transaction = transaction
            await transaction.start()
        elif self._nested:
            self._transaction = "savepoint"
            await driver.execute("SAVEPOINT direct_write")
        else:
            self._transaction = "transaction"
            await driver.execute("BEGIN IMMEDIATE" if self._write else "BEGIN DEFERRED")

    async def finish(self, commit: bool) -> None:
        """Commits (or rolls back) the request's transaction, if it began one; before the response is sent,
        so that a failed commit is the request's problem, never after a 2xx. The transaction counts as
        ended only once COMMIT or ROLLBACK has completed: interrupted, it leaves the connection in doubt."""
        transaction = self._transaction
        if transaction is None or self._driver is None or self._unusable:
            if commit and not self._unusable:
                committed(self.info)
            else:
                rolled_back(self.info)
            return
        driver = self._driver
        for observe in transaction_observers:
            observe("COMMIT" if commit else "ROLLBACK")
        try:
            if not isinstance(transaction, str):
                await (transaction.commit() if commit else transaction.rollback())
            elif transaction == "savepoint":
                if not commit:
                    await driver.execute("ROLLBACK TO direct_write")
                await driver.execute("RELEASE direct_write")
            else:
                await driver.execute("COMMIT" if commit else "ROLLBACK")
        except _DRIVER_ERRORS as error:
            self._unusable = True
            self._failed(error, driver)
            rolled_back(self.info)
            if commit:
                raise _wrapped("COMMIT", error, driver) from error
            return
        self._transaction = None
        if commit:
            committed(self.info)
        else:
            rolled_back(self.info)

    def _failed(self, error: BaseException, driver: Any) -> None:
        """A connection left unusable by `error` is thrown away by `close`; when the server is gone, the
        pool's other connections are checked (a ping) before they are used again, rather than reopened."""
        if not _leaves_connection_unusable(error, driver):
            return
        self._unusable = True
        if (_is_disconnect(error) or _is_closed(driver)) and isinstance(self._bind, AsyncEngine):
            db.suspect_connections(self._bind)

    async def close(self) -> None:
        """The connection back to the pool (or kept for the next request), or thrown away when it is
        unusable or its transaction did not end (`finish` not reached or interrupted: a cancellation)."""
        connection, driver = self._engine_connection, self._driver
        in_doubt = self._unusable or self._transaction is not None
        self._engine_connection = self._fairy = self._driver = None
        self._transaction = None
        if connection is None:
            return
        if in_doubt:
            # In a task of its own, which a second cancellation of this one does not interrupt.
            cleanup = asyncio.ensure_future(_settle(connection, driver, self._postgres or self._unusable))
            _CLOSING.add(cleanup)
            cleanup.add_done_callback(_closed)
            await asyncio.shield(cleanup)
            return
        kept = _kept_connections(self._bind) if isinstance(self._bind, AsyncEngine) else None
        if kept is None or not kept.keep(connection):
            await greenlet_spawn(connection.close)


_UNNAMED: weakref.WeakKeyDictionary[Any, LRUCache[str, Any]] = weakref.WeakKeyDictionary()


async def _unnamed(driver: Any, sql: str) -> Any:
    """Behind PgBouncer (asyncpg's statement cache off, `db._pgbouncer_options`): asyncpg's prepared form of
    `sql` for this connection, kept as SQLAlchemy's adapter keeps its own. It is unnamed: asyncpg sends its
    Parse again with each execution, in the same message as Bind and Execute, so nothing is kept on a
    server session, and an execution is one round trip instead of the two (Parse and Describe, then Parse,
    Bind and Execute) of `fetch` without a cache."""
    statements = _UNNAMED.get(driver)
    if statements is None:
        statements = _UNNAMED[driver] = LRUCache(500)
    statement = statements.get(sql)
    if statement is None:
        statement = statements[sql] = await driver.prepare(sql)
    return statement


async def _settle(connection: Any, driver: Any, throw_away: bool) -> None:
    """A connection whose transaction is in doubt: SQLite's is rolled back (aiosqlite runs calls in order in
    the connection's thread, so an interrupted one has finished there, and a ROLLBACK ends the transaction:
    `db._discard` says why not close it) and given back; any other, or one still in a transaction, is
    thrown away."""
    if not throw_away and await _rolled_back(driver):
        await greenlet_spawn(connection.close)
        return
    await greenlet_spawn(_throw_away, connection)


async def _rolled_back(driver: Any) -> bool:
    """Whether a SQLite connection whose transaction is in doubt is now out of any transaction."""
    try:
        # A call of its own, queued behind the interrupted one (which may not have run yet): reading
        # `in_transaction` now could miss a BEGIN still to come. sqlite3's rollback does nothing outside a
        # transaction.
        await driver.rollback()
    except Exception:
        logger.debug("rolling back a transaction in doubt failed", exc_info=True)
        return False
    return not driver.in_transaction


def _throw_away(connection: Any) -> None:
    """Invalidates the connection (the pool closes it and opens a fresh one when asked), then releases it.
    Synchronous: runs in a greenlet."""
    try:
        connection.invalidate()
        connection.close()
    except Exception:  # pragma: no cover - already broken
        logger.debug("throwing a connection away failed", exc_info=True)


def as_session(session: DirectSession) -> AsyncSession:
    """The direct session where a service function takes the request's session (it runs its SELECTs of
    columns; anything else it asks of the session raises Fallback)."""
    return cast(AsyncSession, session)


# --- bodies: the common, valid case only; anything else is the route's to answer ---------------------------


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


def _route_fields(route: APIRoute) -> list[tuple[str, Any]]:
    """The route's path and query parameters, its dependencies' included, as (where, FastAPI's field)."""
    found: list[tuple[str, Any]] = []

    def walk(dependant: Any) -> None:
        found.extend(("path", field) for field in dependant.path_params)
        found.extend(("query", field) for field in dependant.query_params)
        for sub in dependant.dependencies:
            walk(sub)

    walk(route.dependant)
    return found


class _Param:
    """One parameter of a route, as FastAPI reads it (`request_params_to_args`): its field, the name the
    handler takes, the key in the request, a list or one value, required or its default."""

    __slots__ = (
        "alias",
        "copy_default",
        "default",
        "factory",
        "field",
        "name",
        "required",
        "sequence",
        "validate_default",
    )

    def __init__(self, field: Any, where: str, route: APIRoute) -> None:
        info = field.field_info
        if (
            info.validation_alias not in (None, field.alias)
            or _is_model(info.annotation)
            or any(type(item).__name__ == "Json" for item in info.metadata)
        ):
            raise TypeError(
                f"{route.name!r}: the direct path reads plain {where} parameters only ({field.name})"
            )
        self.field, self.name, self.alias = field, field.name, field.alias
        self.sequence = where == "query" and _is_sequence(info.annotation)
        self.required = info.is_required()
        self.factory = info.default_factory is not None
        self.default = None if self.required or self.factory else field.get_default()
        self.copy_default = not isinstance(
            self.default, (type(None), bool, int, float, str, bytes, Enum, tuple)
        )
        self.validate_default = bool(info.validate_default)


def _is_sequence(annotation: Any) -> bool:
    """A list parameter (`theme=a&theme=b`), as FastAPI tells them (`field_annotation_is_sequence`)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _is_sequence(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return any(_is_sequence(arg) for arg in get_args(annotation))
    kind = origin or annotation
    return isinstance(kind, type) and not issubclass(kind, (str, bytes)) and issubclass(kind, _SEQUENCES)


_SEQUENCES = (list, set, frozenset, tuple, deque, abc.Sequence)


def _is_model(annotation: Any) -> bool:
    from pydantic import BaseModel

    origin = get_origin(annotation)
    if origin in (Union, UnionType, Annotated):
        return any(_is_model(arg) for arg in get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


class TwinParameters:
    """How a twin's parameters are read: by the route's own fields (FastAPI's, with their validation),
    as FastAPI's `request_params_to_args` reads them for the route, so that the twin and its route read
    one request alike (`tests/core/test_twins.py` compares the two on every route's parameters)."""

    def __init__(self, route: APIRoute, handler: DirectHandler, refused: frozenset[str]) -> None:
        self.route, self.handler, self.refused = route, handler, refused
        self.snapshot: Snapshot = _SNAPSHOT.get(route.name, False)
        self.journal = _JOURNAL.get(route.name, False)
        self.convertors: dict[str, Any] = {}
        fields = _route_fields(route)
        self.path = [_Param(field, where, route) for where, field in fields if where == "path"]
        self.query = [
            _Param(field, where, route)
            for where, field in fields
            if where == "query" and field.alias not in refused
        ]
        self.declared = frozenset(field.alias for where, field in fields if where == "query")
        wanted = {param.name for param in self.path + self.query}
        taken = _keyword_parameters(handler)
        unknown = refused - self.declared
        if unknown or wanted != taken:
            raise TypeError(
                f"the direct twin {handler.__qualname__} of {route.name!r} must take exactly its route's "
                f"parameters: missing {sorted(wanted - taken)}, not the route's {sorted(taken - wanted)}, "
                f"refuses what the route does not declare {sorted(unknown)}"
            )

    def parse(self, path_params: dict[str, Any], query: Any) -> dict[str, Any]:
        """The parameters as the route reads them (`path_params` converted by the route's convertors, as
        the router converts them); Fallback for a request the twin leaves to the route: a
        parameter the route does not declare (its 422) or that the twin refuses, a value the route would
        refuse (its 422)."""
        keys = query.keys()
        if keys and (not self.declared.issuperset(keys) or not self.refused.isdisjoint(keys)):
            raise Fallback("a query parameter the twin does not read")
        values: dict[str, Any] = {}
        for param in self.path:
            values[param.name] = _validated(param, path_params[param.alias], "path")
        for param in self.query:
            sent = query.getlist(param.alias) if param.sequence else query.get(param.alias)
            if sent is None or (param.sequence and not sent):
                if param.required:
                    raise Fallback("a required parameter is missing")
                if param.factory:
                    default = param.field.get_default()  # a fresh value per request, as FastAPI's
                else:
                    default = deepcopy(param.default) if param.copy_default else param.default
                values[param.name] = (
                    _validated(param, default, "query") if param.validate_default else default
                )
            else:
                values[param.name] = _validated(param, sent, "query")
        return values


def _validated(param: _Param, value: Any, where: str) -> Any:
    """`value` validated by the route's own field, as the route validates it; Fallback when it refuses."""
    valid, errors = param.field.validate(value, {}, loc=(where, param.alias))
    if errors:
        raise Fallback("a value the route refuses")
    return valid


def _keyword_parameters(handler: DirectHandler) -> set[str]:
    return {
        name
        for name, parameter in inspect.signature(handler).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }


def twins(routes: list[Any]) -> list[TwinParameters]:
    """Every direct twin of `routes`, with how its parameters are read. Raises TypeError when a twin's
    signature differs from its route's parameters (`create_app` calls it: the service does not start)."""
    found: list[TwinParameters] = []
    for context in iter_route_contexts(routes):
        route = context.original_route
        name = str(context.name)
        handler = _HANDLERS.get(name)
        if handler is None or not isinstance(route, APIRoute):
            continue
        found.append(TwinParameters(route, handler, _REFUSED.get(name, frozenset())))
    return found


class DirectRoutes:
    """The direct handlers of an application's routes, matched as the router matches them: by the route's
    own path regex and convertors, and only when no route before it in the application's order would take
    the request (the router takes the first route that matches the path and the method)."""

    def __init__(self) -> None:
        self._routes_id: int | None = None
        self._count = -1
        self._table: dict[str, list[tuple[Any, TwinParameters, list[tuple[Any, Any]]]]] = {}

    def _build(self, routes: list[Any]) -> None:
        table: dict[str, list[tuple[Any, TwinParameters, list[tuple[Any, Any]]]]] = {}
        contexts = list(iter_route_contexts(routes))
        for index, context in enumerate(contexts):
            route = context.original_route
            name = str(context.name)
            handler = _HANDLERS.get(name)
            if handler is None or not isinstance(route, APIRoute):
                continue
            twin = TwinParameters(route, handler, _REFUSED.get(name, frozenset()))
            twin.convertors = dict(context.param_convertors)
            prefix = _literal_prefix(context.path_format)
            # The routes before it that could match one of its paths: their literal beginnings agree.
            earlier = [
                (other.path_regex, other.methods)
                for other in contexts[:index]
                if _may_overlap(prefix, _literal_prefix(getattr(other, "path_format", None) or ""))
            ]
            for method in route.methods or ():
                table.setdefault(method, []).append((context.path_regex, twin, earlier))
        self._table = table
        self._routes_id = id(routes)
        self._count = len(routes)

    def match(self, scope: Scope) -> tuple[TwinParameters, dict[str, Any]] | None:
        routes = scope["app"].routes
        if id(routes) != self._routes_id or len(routes) != self._count:
            self._build(routes)
        candidates = self._table.get(scope["method"])
        if not candidates:
            return None
        path = scope["path"]
        method = scope["method"]
        for regex, twin, earlier in candidates:
            found = regex.match(path)
            if found is None:
                continue
            for other, methods in earlier:
                if (methods is None or method in methods) and other.match(path) is not None:
                    return None  # an earlier route takes it
            convertors = twin.convertors
            return twin, {key: convertors[key].convert(value) for key, value in found.groupdict().items()}
        return None


def _literal_prefix(path_format: str | None) -> str:
    return (path_format or "").split("{", 1)[0]


def _may_overlap(first: str, second: str) -> bool:
    return first.startswith(second) or second.startswith(first)


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
        self, scope: Scope, receive: Receive, send: Send, twin: TwinParameters, path_params: dict[str, str]
    ) -> bool:
        """A request's statements run in one transaction (`DirectSession`), committed when the handler
        answers (before the answer is sent), rolled back when it raises or declines."""
        if scope_accepts_csv(scope["headers"]):
            # A twin answers JSON only: a request for CSV (`Accept: text/csv`) is its route's to answer.
            logger.debug("direct path declined: CSV asked for")
            return False
        app = scope["app"]
        route = twin.route
        scope["route"] = route
        scope["path_params"] = path_params
        request = Request(scope, receive)
        try:
            params = twin.parse(path_params, request.query_params)
        except Fallback as reason:
            logger.debug("direct path declined: %s", reason)
            del scope["route"]
            scope.pop("path_params", None)
            return False
        write = scope["method"] != "GET" or twin.journal
        snapshot = twin.snapshot(params) if callable(twin.snapshot) else twin.snapshot
        primary = app.state.sessionmaker.kw["bind"]
        # The twin reads where its route reads (`app.core.replica`): the replica's reads, on the replica.
        routing = getattr(app.state, "replica", None)
        on_replica = (
            routing is not None and not write and isinstance(primary, AsyncEngine) and routing.serves(scope)
        )
        if on_replica:
            assert routing is not None
            position: str | None = None

            async def ask() -> None:
                # Where the primary's log stands, asked as the request's first connection is taken (after
                # the rate limits): the replica's reads wait for it.
                nonlocal position
                assert routing is not None
                position = await routing.position()

            async def replayed(driver: Any) -> bool:
                assert routing is not None
                ready: bool = await routing.replayed(driver, position)
                routing.read_on(scope, "replica" if ready else "primary")
                return ready

            def failed(error: BaseException) -> None:
                routing.failed(error)
                routing.read_on(scope, "primary")

            session = DirectSession(
                routing.engine,
                snapshot=snapshot,
                fallback=primary,
                on_fallback=failed,
                before_replica=ask,
                replayed=replayed,
            )
        else:
            session = DirectSession(primary, write=write, snapshot=snapshot, journal=twin.journal)
        response: Response | None
        try:
            try:
                # The caller first, on its own (its key is no part of the answer, nor of a write's
                # transaction: an unknown key takes no write lock); then the answer. (Behind PgBouncer, a
                # read's lookup begins the transaction that its answer goes on in: `_run`.)
                await resolve_principal(request, session)
                if write:
                    # The write's transaction takes a connection when it begins: meanwhile (a twin that
                    # reads on a session of its own, or declines) this request holds none. (Behind
                    # PgBouncer, the lookup's own transaction ends first.)
                    await session.finish(commit=True)
                    await session.close()
                session.begin_answer()
                response = await twin.handler(request, session, **params)
                await session.finish(commit=response is not None)
            except Exception:
                await session.finish(commit=False)
                raise
            finally:
                # A cancellation (or any BaseException) leaves the transaction in doubt: the connection is
                # thrown away rather than rolled back.
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
