"""Every private attribute of SQLAlchemy and asyncpg that the service uses, in one module.

Written for SQLAlchemy 2.1.9, asyncpg 0.32.0 and aiosqlite 0.22.1, the exact pins of pyproject.toml. Each use
says why the public API does not serve. `check()` runs at import: a release that lacks one of them stops the
service at start-up with one line naming it, never a silent fallback at run time. Everything else the
service reaches of these libraries is their public API (`tests/core/test_internals.py` fails on a private
name used elsewhere).

It holds:
- the compiled-statement cache of the direct path (`compile_cached`, `parameters`, `result_columns`,
  `LRUCache`);
- the greenlet bridge, by which async code runs SQLAlchemy's synchronous pool and engine calls
  (`greenlet_spawn`, `await_`);
- the fair connection pool (`FairAsyncQueue`, `FairAsyncQueuePool`) and what the direct path needs of a
  checked-out connection (`pool_of`, `is_record`, `execute_mutex`);
- whether an asyncpg connection was left with a transaction nobody will end (`transaction_left_open`).

The fair pool
-------------
A connection pool that serves the requests waiting for a connection in the order they arrived.

SQLAlchemy's asyncio pool keeps its idle connections in an `asyncio.Queue`. A connection given back is
taken by whichever coroutine asks next: a request that has just arrived (it tries the queue before waiting)
or a waiter that was woken but has not run yet, which then finds the queue empty and waits again at the end
of the line. Under a load above the pool's size, an unlucky request loses that race again and again: the
median does not move, the slowest requests wait ten times longer. Measured with the load benchmark (a
territory by code at 32 connections, pool of 10 per worker): p99 50 to 125 ms against 15 to 20 with this
queue, for the same throughput.

`FairAsyncQueue` hands a connection given back straight to the longest waiter, and a newcomer waits behind
the waiters instead of overtaking them. The pool's timeout is unchanged: a request still waits at most
`pool_timeout` seconds, then gets SQLAlchemy's `TimeoutError` (answered 503).

The direct path (`app.core.direct`) waits in the same line (`join`), for either a pooled connection or
one that another direct request hands over without giving it back to the pool (`hand`): first come, first
served across both paths."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from importlib.metadata import version
from typing import Any, TypeVar, cast

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

WRITTEN_FOR = {"sqlalchemy": "2.1.9", "asyncpg": "0.32.0", "aiosqlite": "0.22.1"}


class MissingInternal(ImportError):
    """A private attribute the service relies on is missing: the installed release is not the one the
    service was written for."""


def _versions() -> str:
    return ", ".join(f"{name} {version(name)} (written for {wanted})" for name, wanted in WRITTEN_FOR.items())


def _missing(what: str, error: BaseException) -> MissingInternal:
    return MissingInternal(
        f"cnfs-api cannot run on these releases: {what} is missing ({error}); installed: {_versions()}"
    )


try:
    # Why private: the record class the pool's queue holds (`is_record`).
    from sqlalchemy.pool.base import _ConnectionRecord

    # Why private: SQLAlchemy's bridge between async code and its synchronous pool and engine (the asyncio
    # extension runs them in a greenlet); its public face, `AsyncConnection.run_sync`, needs a connection
    # already checked out, and the direct path checks connections out and in itself. LRUCache: the bounded
    # cache the engine keeps its compiled statements in, which `compile_cached` takes.
    from sqlalchemy.util import LRUCache, await_, greenlet_spawn

    # Why private: the queue class SQLAlchemy's asyncio pool is built on, with the exceptions the pool
    # expects.
    from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty, Full
except ImportError as error:  # pragma: no cover - another release
    raise _missing("a module or class of SQLAlchemy's", error) from None

__all__ = [
    "WRITTEN_FOR",
    "FairAsyncQueue",
    "FairAsyncQueuePool",
    "LRUCache",
    "MissingInternal",
    "check",
    "compile_cached",
    "execute_mutex",
    "expanded",
    "greenlet_spawn",
    "is_record",
    "parameters",
    "pool_of",
    "result_columns",
    "transaction_left_open",
]

_T = TypeVar("_T")


# --- the direct path's compiled statements ------------------------------------------------------------------


def compile_cached(
    statement: ClauseElement, dialect: Any, cache: Any
) -> tuple[SQLCompiler, Any, dict[str, Any] | None]:
    """The statement compiled for `dialect`, found in `cache` by its cache key (the engine's own cache
    logic), with the values the key extracted from this statement.

    Why private: the public API reaches this cache only through `Connection.execute`, which builds an
    execution context, a cursor result and its rows per statement, the work the direct path exists to
    avoid; `ClauseElement.compile()` compiles anew each time (a tenth of a millisecond and more)."""
    compiled, extracted, collected, _hit = statement._compile_w_cache(
        dialect=dialect,
        compiled_cache=cache,
        column_keys=[],
        for_executemany=False,
        schema_translate_map=None,
    )
    return cast(SQLCompiler, compiled), extracted, cast("dict[str, Any] | None", collected)


def parameters(
    compiled: SQLCompiler, params: dict[str, Any] | None, extracted: Any, collected: dict[str, Any] | None
) -> dict[str, Any]:
    """The bound values of one execution of a statement found by `compile_cached`.

    Why private: `_collected_params` (the values `compile_cached` collected from this statement) is how
    the engine's execution context passes them; the public `construct_params` has no other way in."""
    values = compiled.construct_params(
        params or None, extracted_parameters=extracted, escape_names=False, _collected_params=collected
    )
    return dict(values) if not isinstance(values, dict) else values


def expanded(compiled: SQLCompiler, values: dict[str, Any]) -> Any:
    """The SQL, positions, values and processors of a statement with expanding parameters (`IN`), for
    the values of this execution.

    Why private: the public `construct_expanded_state` builds the values again from the statement the
    cache holds, without this execution's extracted values (`parameters`)."""
    return compiled._process_parameters_for_postcompile(values)


def result_columns(compiled: SQLCompiler) -> list[tuple[str, Any]]:
    """(name, type) of each column of the rows, in order, as the engine's results name them.

    Why private: the compiler's own list is the one that holds for every statement the services run
    (selects of labels, textual selects, RETURNING) with the names the engine's rows use; a statement's
    `selected_columns` does not cover RETURNING, nor the names of repeated columns."""
    return [(entry.keyname, entry.type) for entry in compiled._result_columns]


# --- a checked-out connection -------------------------------------------------------------------------------


def transaction_left_open(driver: Any) -> bool:
    """Whether an asyncpg connection is in a transaction, or holds one that failed to start: a BEGIN
    interrupted (cancelled, timed out) leaves asyncpg's record of it behind, and the next `transaction()`
    on that connection would be a SAVEPOINT inside a transaction nobody commits.

    Why private: asyncpg says whether the server is in a transaction (`is_in_transaction`), not whether
    its own record of the top transaction (`_top_xact`) was left behind."""
    return bool(driver.is_in_transaction()) or driver._top_xact is not None


def pool_of(fairy: Any) -> Any:
    """The pool a checked-out connection came from (the engine may have replaced its pool since:
    `dispose`).

    Why private: `PoolProxiedConnection` does not say which pool it belongs to."""
    return fairy._pool


def is_record(item: Any) -> bool:
    """Whether `item`, handed to a request waiting in the pool's line, is a pooled connection's record
    (rather than a connection another request handed over).

    Why private: the pool's queue holds `_ConnectionRecord`s, a class the public API names only as a
    protocol (`ConnectionPoolEntry`), which `isinstance` cannot test."""
    return isinstance(item, _ConnectionRecord)


def execute_mutex(dbapi_connection: Any) -> asyncio.Lock:
    """The lock by which SQLAlchemy's asyncio adapters run one call at a time on a connection.

    Why private: the adapters do not expose it; the tests' transaction shares one connection between the
    direct path and the session path, which must take turns on it."""
    lock: asyncio.Lock = dbapi_connection._execute_mutex
    return lock


# --- the fair pool ------------------------------------------------------------------------------------------


class FairAsyncQueue(AsyncAdaptedQueue[_T]):
    """First come, first served: the idle items are in the asyncio queue only while nobody waits."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._waiters: deque[asyncio.Future[_T]] = deque()
        # The direct path's waiters (`join`), which take a connection handed over as well as a pooled one,
        # with their deadlines, in the order they came; one timer, for the earliest deadline (`_expire`).
        self._direct: dict[asyncio.Future[Any], float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        # Called (in the waiting request's greenlet) when a request starts waiting: connections held idle
        # outside the pool (`app.core.direct`) come back to it then, to the waiters.
        self.before_wait: Callable[[], None] | None = None

    def waiting(self) -> int:
        """How many requests wait: every way out of the line (served, timed out, cancelled) removes the
        waiter from it, so its length is the count."""
        return len(self._waiters)

    def available(self) -> bool:
        """Whether a request asking now would get an idle connection without waiting."""
        return not self._queue.empty() and not self.waiting()

    def first_direct(self) -> asyncio.Future[Any] | None:
        """The longest waiter if it is the direct path's (`join`), which may be handed a connection
        outside the pool (`hand`); None when nobody waits or the longest waiter is the pool's."""
        while self._waiters:
            waiter = self._waiters[0]
            if not waiter.done():
                return waiter if waiter in self._direct else None
            self._waiters.popleft()
            self._direct.pop(waiter, None)
        return None

    def join(self, seconds: float) -> asyncio.Future[Any]:
        """A place in the line for the direct path, for at most `seconds`: its future gets a pooled
        connection's record (`put`), a connection handed over (`hand`), or TimeoutError. The caller awaits
        it, and calls `leave` if it stops waiting.

        Every direct waiter waits for the same time (the pool's timeout) and they come in order, so the
        earliest deadline is the longest direct waiter's: one timer serves them all, instead of one per
        request."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + seconds
        self._waiters.append(waiter)
        self._direct[waiter] = deadline
        if self._timer is None or self._timer_loop is not loop:
            self._timer = loop.call_at(deadline, self._expire)
            self._timer_loop = loop
        return waiter

    def _expire(self) -> None:
        """The direct waiters past their deadline get TimeoutError; the timer is set again for the next."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for waiter, deadline in list(self._direct.items()):
            if waiter.done() or waiter.get_loop() is not loop:
                # Served already, or left behind by a loop that has closed (tests run several in turn).
                del self._direct[waiter]
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                continue
            if deadline > now:
                self._timer = loop.call_at(deadline, self._expire)
                return
            del self._direct[waiter]
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            waiter.set_exception(TimeoutError())

    def hand(self, waiter: asyncio.Future[Any], item: Any) -> None:
        """`item` to `waiter`, the longest waiter (`first_direct`), outside the pool."""
        self._waiters.remove(waiter)
        self._direct.pop(waiter, None)
        waiter.set_result(item)

    def leave(self, waiter: asyncio.Future[Any]) -> Any:
        """A direct-path waiter gives up (cancelled): out of the line. Returns what it was handed
        meanwhile, if anything (a pooled connection's record or a connection), for the caller to pass on."""
        self._direct.pop(waiter, None)
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            return waiter.result()
        waiter.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        return None

    def put_nowait(self, item: _T) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            self._direct.pop(waiter, None)
            if not waiter.done():
                waiter.set_result(item)
                return
        super().put_nowait(item)

    def put(self, item: _T, block: bool = True, timeout: float | None = None) -> None:
        # The pool gives connections back without blocking (its queue never holds more than its size).
        self.put_nowait(item)

    def get(self, block: bool = True, timeout: float | None = None) -> _T:
        if not self.waiting():
            try:
                return self._queue.get_nowait()
            except asyncio.QueueEmpty:
                pass
        if not block:
            raise Empty()
        waiter: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if self.before_wait is not None:
            # In line first, so that what the hook gives back comes to the waiters in their order.
            try:
                self.before_wait()
            except BaseException:
                self._leave(waiter)
                raise
        return await_(self._wait(waiter, seconds=timeout))

    async def _wait(self, waiter: asyncio.Future[_T], seconds: float | None) -> _T:
        try:
            async with asyncio.timeout(seconds):
                return await waiter
        except BaseException as exc:
            self._leave(waiter)
            if isinstance(exc, TimeoutError):
                raise Empty() from exc
            raise

    def _leave(self, waiter: asyncio.Future[_T]) -> None:
        """A waiter gives up (timeout, cancellation, an error): out of the line, and a connection it was
        handed meanwhile goes on to the next waiter or back to the queue."""
        if waiter.done() and not waiter.cancelled():
            self.put_nowait(waiter.result())
        else:
            waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)


class FairAsyncQueuePool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio pool on `FairAsyncQueue`.

    Why private: the pool's queue is chosen by its `_queue_class` and taken from in `_do_get`; SQLAlchemy
    offers no public hook for the order in which waiting requests are served."""

    _queue_class: Any = FairAsyncQueue
    _handed: ConnectionPoolEntry | None = None

    def _do_get(self) -> Any:
        handed, self._handed = self._handed, None
        if handed is not None:
            return handed
        return super()._do_get()

    def checkout_handed(self, record: ConnectionPoolEntry, connect: Callable[[], _T]) -> _T:
        """`connect()` (the engine's checkout, synchronous: in a greenlet) on `record`, a connection this
        pool's queue handed to a direct-path waiter (`FairAsyncQueue.join`): the checkout's events run on
        it as on any other."""
        self._handed = record
        try:
            return connect()
        finally:
            if self._handed is record:
                # Not reached (the checkout failed before it asked): the connection goes back to the line.
                self._handed = None
                self._pool.put_nowait(record)

    def line(self) -> FairAsyncQueue[Any]:
        """The pool's queue of idle connections, where requests wait in line."""
        return cast("FairAsyncQueue[Any]", self._pool)

    def may_open_more(self) -> bool:
        """Whether a request asking now would be given a new connection rather than wait (the overflow
        allows it): `QueuePool._do_get`'s own test."""
        limit: int = self._max_overflow
        return limit <= -1 or self._overflow < limit

    def requeue(self, record: ConnectionPoolEntry) -> bool:
        """A record handed to a request that stopped waiting, back in line (to the next waiter, or idle);
        False when the queue is full (`return_record` then)."""
        try:
            self._pool.put_nowait(record)
        except Full:
            return False
        return True

    def return_record(self, record: ConnectionPoolEntry) -> None:
        """A record the full queue could not take, back through the pool's checkin (which closes it).
        Synchronous: runs in a greenlet."""
        self._do_return_conn(record)


# --- the check at import ------------------------------------------------------------------------------------


def _no_connection() -> Any:  # pragma: no cover - the probe pool never connects
    raise RuntimeError("a probe")


def _probe_pool() -> Any:
    return AsyncAdaptedQueuePool(_no_connection, pool_size=1)


def check() -> None:
    """Every private attribute above, on probes: a statement compiled for both dialects, an asyncio pool
    and its queue, the classes of a checked-out connection and of the asyncio adapters. Raises
    MissingInternal, one line naming what is missing and the versions installed."""
    import asyncpg
    from sqlalchemy import Integer, bindparam, column, literal, select, table
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
    from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
    from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection
    from sqlalchemy.dialects.sqlite.aiosqlite import dialect as aiosqlite_dialect
    from sqlalchemy.pool.base import _ConnectionFairy

    probe_table = table("probe", column("n", Integer))
    probe = select(probe_table.c.n, literal(1).label("one")).where(
        probe_table.c.n.in_(bindparam("ns", expanding=True))
    )

    def compiles(dialect: Any) -> None:
        compiled, extracted, collected = compile_cached(probe, dialect, LRUCache(10))
        expanded(compiled, parameters(compiled, {"ns": [1, 2]}, extracted, collected))
        if [name for name, _type in result_columns(compiled)] != ["n", "one"]:
            raise AttributeError("_result_columns")

    def has(owner: Any, *names: str) -> Callable[[], None]:
        def probe_owner() -> None:
            for name in names:
                if not hasattr(owner, name):
                    raise AttributeError(f"{owner.__name__}.{name}")

        return probe_owner

    probes: list[tuple[str, Callable[[], Any]]] = [
        ("the compiled-statement cache (PostgreSQL)", lambda: compiles(asyncpg_dialect())),  # type: ignore[no-untyped-call]
        ("the compiled-statement cache (SQLite)", lambda: compiles(aiosqlite_dialect())),
        (
            "the asyncio pool's queue hooks",
            has(AsyncAdaptedQueuePool, "_queue_class", "_do_get", "_do_return_conn"),
        ),
        ("the asyncio queue's own queue", lambda: AsyncAdaptedQueue(1)._queue),
        ("the pool's queue and overflow", lambda: (_probe_pool()._pool, _probe_pool()._overflow)),
        ("asyncpg's record of its top transaction", has(asyncpg.Connection, "_top_xact")),
        (
            "the pool's overflow counts",
            lambda: _probe_pool()._max_overflow,
        ),
        ("a checked-out connection's record and pool", has(_ConnectionFairy, "_connection_record", "_pool")),
        ("the asyncpg adapter's lock", has(AsyncAdapt_asyncpg_connection, "_execute_mutex")),
        ("the aiosqlite adapter's lock", has(AsyncAdapt_aiosqlite_connection, "_execute_mutex")),
    ]
    for what, run in probes:
        try:
            run()
        except Exception as error:
            raise _missing(what, error) from None


check()
