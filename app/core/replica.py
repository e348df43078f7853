"""Read replicas (DATABASE_READ_URL): which reading requests a streaming replica answers, how each of them
sees every write acknowledged before it arrived, and what happens when the replica cannot be reached.

What reads from the replica: the GET requests of the operations in `REPLICA_OPERATIONS` (searches, lists
and single reads of territories, programmes, agreements, positions and workshops, the statistics and the
referentials), on the FastAPI route and on its direct twin alike, the caller's key
included. Everything else reads and writes on the primary: writes; personal data (counsellors,
assignments, registrations: their reads are journalled, a write); the change feed (its horizon reads the
primary's running transactions); API keys and `/me`; the health checks; the open-data files (built on the
primary and kept by each worker for OPEN_DATA_CACHE_SECONDS).

No read sees less than was acknowledged before it arrived (read-your-writes for every caller, whichever
process, machine or connection answered its write; a key revoked is refused at once). Before a request
reads from the replica, it asks the primary where its write-ahead log stands (`position`: every commit
acknowledged so far is before it; the requests of a worker share the question), then waits until the
replica has replayed that far (`pg_last_wal_replay_lsn()`), checked outside any transaction so that the
snapshot its reads then take holds it. A replica still behind after DATABASE_READ_WAIT_SECONDS is left
alone for DATABASE_READ_RETRY_SECONDS: the request and those that follow read from the primary (one
warning in the log), then the replica is tried again. The check and the reads must reach the same server:
DATABASE_READ_URL names one replica (or a PgBouncer in front of one).

The replica down. A replica that cannot be connected to (refused, timed out, starting up) is left alone for
DATABASE_READ_RETRY_SECONDS as well. A request whose replica connection breaks in the middle of its answer
is answered 503 with Retry-After, as on the primary; the pool's other connections are checked before their
next use, and the next requests find the replica down and read from the primary.

The primary down. A request that cannot ask the primary its position (twice, the second time on a new
connection) reads from the replica as it stands (what was acknowledged and not yet sent to the replica
when the primary failed is not there: a streaming replica is asynchronous), and the primary is not asked
again for DATABASE_READ_RETRY_SECONDS.

`cnfs_replica_reads_total` counts the reading requests of the replica's operations by where they read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import Scope

from app.db import JOURNALED

logger = logging.getLogger("app.replica")

REPLICA_OPERATIONS = frozenset(
    {
        "territories_list",
        "territories_get_by_code",
        "territories_get",
        "programmes_list",
        "programmes_get",
        "agreements_list",
        "agreements_get",
        "agreements_amendments_list",
        "agreements_amendments_get",
        "positions_list",
        "positions_get",
        "workshops_list",
        "workshops_calendar",
        "workshops_get_calendar",
        "workshops_get",
        "stats_positions",
        "stats_workshops",
        "referentials_list",
        "referentials_get",
    }
)
"""The operations whose GET reads from the replica: public or programme data, never personal data."""

READ_METHODS = frozenset({"GET", "HEAD"})

REPLICA_DOWN = (sa_exc.DBAPIError, OSError, TimeoutError)
"""What connecting to the replica (or asking the primary its position) raises when it cannot be reached
(SQLAlchemy's errors wrap the driver's; a connect timeout is the builtin TimeoutError). The pool's own
timeout (every connection in use) is not among them: that is the 503 it always was."""

# The position every acknowledged commit is before: the log flushed, where commits wait for their flush
# (`synchronous_commit` on, local, remote_write, remote_apply); the log inserted where they do not (off).
# The flushed position spares the reads a wait for what the primary has inserted and not yet flushed (the
# pruning and hint bits of its own reads, flushed by its WAL writer within `wal_writer_delay`).
FLUSHED_POSITION = "SELECT pg_current_wal_flush_lsn()::text"
INSERTED_POSITION = "SELECT pg_current_wal_insert_lsn()::text"
# The primary's log page and segment sizes (bytes), read once.
WAL_SETTINGS = (
    "SELECT current_setting('wal_block_size')::bigint, "
    "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), "
    "current_setting('synchronous_commit')"
)
# PostgreSQL's page headers in the log: a page's (short), and the first page of a segment's (long).
_SHORT_PAGE_HEADER, _LONG_PAGE_HEADER = 24, 40
# A server out of recovery (DATABASE_READ_URL naming a primary, or a replica promoted) holds what it holds,
# and is not waited for.
REPLAYED = "SELECT NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= $1::text::pg_lsn"
# The replica's replay is checked again after these pauses (seconds), then every last one, until
# DATABASE_READ_WAIT_SECONDS have passed.
_PAUSES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
# Where a request read, counted once per request (the direct twin that declines hands over to its route).
_READ_ON = "cnfs.read_on"


class ReadRouting:
    """The replica's engine and sessions, and which reading requests it answers (the module's docstring).
    `primary`: an engine of the primary's for the questions about its position (one connection is enough:
    `position`); `count`: told where each request of the replica's operations read ("replica" or
    "primary")."""

    def __init__(
        self,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        primary: AsyncEngine,
        wait_seconds: float,
        retry_seconds: float,
        count: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.sessionmaker = sessionmaker
        self.primary = primary
        self.wait_seconds = wait_seconds
        self.retry_seconds = retry_seconds
        self._count = count
        self._down_until = 0.0
        self._primary_down_until = 0.0
        # The primary's log page and segment sizes, and the statement that gives its position.
        self._wal: tuple[int, int, str] | None = None
        # The primary's connection kept for the questions, and its driver's.
        self._held: tuple[Any, Any] | None = None
        # The questions to the primary (`position`): how many have begun, the answers awaited by number.
        self._asked = 0
        self._answers: dict[int, asyncio.Future[str | None]] = {}
        self._asking: set[asyncio.Task[None]] = set()
        self._one_at_a_time = asyncio.Lock()

    def serves(self, scope: Scope) -> bool:
        """Whether this request reads from the replica (once the replica has replayed the primary's
        position: `position`, `replayed`)."""
        if scope["method"] not in READ_METHODS:
            return False
        route = scope.get("route")
        if getattr(route, "name", None) not in REPLICA_OPERATIONS:
            return False
        if getattr(getattr(route, "endpoint", None), JOURNALED, False):
            # An answer that shows people writes its journal line (app.core.audit): on the primary.
            return False
        if time.monotonic() < self._down_until:
            self.read_on(scope, "primary")
            return False
        return True

    def read_on(self, scope: Scope, database: str) -> None:
        """Where this request of the replica's operations read: counted once."""
        if _READ_ON not in scope:
            scope[_READ_ON] = database
            if self._count is not None:
                self._count(database)

    async def position(self) -> str | None:
        """The primary's write-ahead log position, asked after this call began: every commit acknowledged
        before it is before that position. None when the primary cannot be reached (the replica then answers
        as it stands).

        The requests of a worker share the asking: one question at a time on a connection of its own
        (`primary`, a pool of one), and those that come while one is on its way share the next, which
        starts after they came. However many reads run at once, a worker asks about once per round trip."""
        if time.monotonic() < self._primary_down_until:
            return None
        wanted = self._asked + 1
        answer = self._answers.get(wanted)
        if answer is None:
            answer = self._answers[wanted] = asyncio.get_running_loop().create_future()
            task = asyncio.ensure_future(self._ask(wanted, answer))
            self._asking.add(task)
            task.add_done_callback(self._asking.discard)
        return await asyncio.shield(answer)

    async def _ask(self, number: int, answer: asyncio.Future[str | None]) -> None:
        try:
            async with self._one_at_a_time:
                # From here on, a request that comes wants the next question: this one may be too early.
                self._asked = number
                position = await self._primary_position()
        except BaseException as error:
            if not answer.done():
                answer.set_exception(error)
            if not isinstance(error, Exception):
                raise
        else:
            answer.set_result(position)
        finally:
            self._answers.pop(number, None)
            # Nobody may be left to read it (their requests cancelled).
            if answer.done() and not answer.cancelled():
                answer.exception()

    async def _primary_position(self) -> str | None:
        if time.monotonic() < self._primary_down_until:
            return None
        try:
            try:
                return await self._ask_primary()
            except Exception as error:
                if isinstance(error, sa_exc.TimeoutError):
                    raise
                # A connection that broke since its last use (the primary restarted): once more, on a new
                # one, before the primary is taken for down.
                return await self._ask_primary()
        except Exception as error:
            if isinstance(error, sa_exc.TimeoutError):
                # Its pool full (it is not: one question at a time), or a connect timeout that SQLAlchemy
                # names so: the 503 it always was.
                raise
            logger.warning(
                "the primary cannot be reached (%s): the read replica answers as it stands for %g s",
                type(error).__name__,
                self.retry_seconds,
            )
            self._primary_down_until = time.monotonic() + self.retry_seconds
            return None

    async def _ask_primary(self) -> str:
        """The question, on the connection this worker keeps for it (taken at the first question, and again
        after one broke)."""
        if self._held is None:
            connection = await self.primary.connect()
            try:
                raw = await connection.get_raw_connection()
                driver: Any = raw.driver_connection
                if self._wal is None:
                    block, segment, synchronous_commit = await driver.fetchrow(WAL_SETTINGS)
                    flushed = str(synchronous_commit) != "off"
                    self._wal = (int(block), int(segment), FLUSHED_POSITION if flushed else INSERTED_POSITION)
            except BaseException:
                await self._drop(connection)
                raise
            self._held = (connection, driver)
        connection, driver = self._held
        assert self._wal is not None
        try:
            # Outside any transaction: one round trip, no table read.
            value = await driver.fetchval(self._wal[2])
        except BaseException:
            # Broken, or interrupted in the middle of its statement: not given back to the pool.
            self._held = None
            await self._drop(connection)
            raise
        return end_of_records(str(value), self._wal[0], self._wal[1])

    @staticmethod
    async def _drop(connection: Any) -> None:
        with contextlib.suppress(Exception):
            await connection.invalidate()
        with contextlib.suppress(Exception):
            await connection.close()

    async def close(self) -> None:
        """At shutdown: the connection kept for the questions goes back (before the engines are disposed)."""
        held, self._held = self._held, None
        if held is not None:
            with contextlib.suppress(Exception):
                await held[0].close()

    async def replayed(self, driver: Any, position: str | None) -> bool:
        """Whether the replica, on this connection of its (asyncpg's, in no transaction), has replayed the
        primary's `position`, waiting up to `wait_seconds` for it. False: the replica is left alone for
        `retry_seconds` (one warning), and the request reads from the primary."""
        if position is None:
            return True
        deadline = time.monotonic() + self.wait_seconds
        pauses = iter(_PAUSES)
        while not await driver.fetchval(REPLAYED, position):
            pause = next(pauses, _PAUSES[-1])
            if time.monotonic() + pause > deadline:
                now = time.monotonic()
                if now >= self._down_until:
                    logger.warning(
                        "the read replica has not replayed the primary's position %s within %g s: reads go "
                        "to the primary for %g s",
                        position,
                        self.wait_seconds,
                        self.retry_seconds,
                    )
                self._down_until = now + self.retry_seconds
                return False
            await asyncio.sleep(pause)
        return True

    def failed(self, error: BaseException) -> None:
        """The replica could not be reached: its reads go to the primary for `retry_seconds`."""
        now = time.monotonic()
        if now >= self._down_until:
            logger.warning(
                "the read replica cannot be reached (%s): reads go to the primary for %g s",
                type(error).__name__,
                self.retry_seconds,
            )
        self._down_until = now + self.retry_seconds


def end_of_records(position: str, block: int, segment: int) -> str:
    """The primary's position as the end of its last record, which is what a replica's
    `pg_last_wal_replay_lsn()` reaches: where the insert position (`pg_current_wal_insert_lsn()`, past every
    record inserted) stands just past a page's header with nothing on the page yet, the last record ended
    before that header. A flushed position (`pg_current_wal_flush_lsn()`) is a record's end or a page's
    boundary already, never just past a header: it is left as it is."""
    high, _, low = position.partition("/")
    at = (int(high, 16) << 32) | int(low, 16)
    if at % segment == _LONG_PAGE_HEADER:
        at -= _LONG_PAGE_HEADER
    elif at % block == _SHORT_PAGE_HEADER and at % segment != _SHORT_PAGE_HEADER:
        at -= _SHORT_PAGE_HEADER
    return f"{at >> 32:X}/{at & 0xFFFFFFFF:X}"
