"""Read replicas (DATABASE_READ_URL): which reading requests a streaming replica answers, how each of them
sees every write acknowledged before it arrived, and what happens when the replica cannot be reached.

What reads from the replica: the GET requests of the operations in `REPLICA_OPERATIONS` (searches, lists
and single reads of territories, programmes, agreements, positions and workshops, the statistics, the
referentials and the open-data files), on the FastAPI route and on its direct twin alike, the caller's key
included. Everything else reads and writes on the primary: writes; personal data (counsellors,
assignments, registrations: their reads are journalled, a write); the change feed (its horizon reads the
primary's running transactions); API keys and `/me`; the health checks.

No read sees less than was acknowledged before it arrived (read-your-writes for every caller, whichever
process, machine or connection answered its write; a key revoked is refused at once). Before a request
reads from the replica, it asks the primary where its write-ahead log stands (the end of the last record
inserted, `end_of_records`: every commit acknowledged so far is before it, whatever `synchronous_commit`;
one round trip with no table read), then waits until the replica has replayed that far
(`pg_last_wal_replay_lsn()`), checked outside any transaction so that the snapshot its reads then take
holds it. A replica still behind after DATABASE_READ_WAIT_SECONDS is left alone for
DATABASE_READ_RETRY_SECONDS: the request and those that follow read from the primary (one warning in the
log), then the replica is tried again. The check and the reads must reach the same server:
DATABASE_READ_URL names one replica (or a PgBouncer in front of one).

The replica down. A replica that cannot be connected to (refused, timed out, starting up) is left alone for
DATABASE_READ_RETRY_SECONDS as well. A request whose replica connection breaks in the middle of its answer
is answered 503 with Retry-After, as on the primary; the pool's other connections are checked before their
next use, and the next requests find the replica down and read from the primary.

The primary down. A request that cannot ask the primary its position reads from the replica as it stands
(what was acknowledged and not yet sent to the replica when the primary failed is not there: a streaming
replica is asynchronous), and the primary is not asked again for DATABASE_READ_RETRY_SECONDS. Writes fail
meanwhile with 503, as without a replica.

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
        "open_data_lieux_csv",
        "open_data_lieux_json",
    }
)
"""The operations whose GET reads from the replica: public or programme data, never personal data."""

READ_METHODS = frozenset({"GET", "HEAD"})

REPLICA_DOWN = (sa_exc.DBAPIError, OSError, TimeoutError)
"""What connecting to the replica (or asking the primary its position) raises when it cannot be reached
(SQLAlchemy's errors wrap the driver's; a connect timeout is the builtin TimeoutError). The pool's own
timeout (every connection in use) is not among them: that is the 503 it always was."""

PRIMARY_POSITION = "SELECT pg_current_wal_insert_lsn()::text"
# The primary's log page and segment sizes (bytes), read once.
WAL_SIZES = (
    "SELECT current_setting('wal_block_size')::bigint, "
    "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')"
)
# PostgreSQL's page headers in the log: a page's (short), and the first page of a segment's (long).
_SHORT_PAGE_HEADER, _LONG_PAGE_HEADER = 24, 40
# NULL on a server out of recovery (DATABASE_READ_URL naming a primary, or a replica promoted): it holds what
# it holds, and is not waited for.
REPLAYED = "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, true)"
# The replica's replay is checked again after these pauses (seconds), then every last one, until
# DATABASE_READ_WAIT_SECONDS have passed.
_PAUSES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
# Where a request read, counted once per request (the direct twin that declines hands over to its route).
_READ_ON = "cnfs.read_on"


class ReadRouting:
    """The replica's engine and sessions, and which reading requests it answers (the module's docstring).
    `primary`: the primary's engine (its position is asked there); `count`: told where each request of the
    replica's operations read ("replica" or "primary")."""

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
        self._wal_sizes: tuple[int, int] | None = None

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
        """The primary's write-ahead log position now: every commit acknowledged so far is before it. None
        when the primary cannot be reached (the replica then answers as it stands)."""
        now = time.monotonic()
        if now < self._primary_down_until:
            return None
        connection = None
        try:
            connection = await self.primary.connect()
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection
            if self._wal_sizes is None:
                block, segment = await driver.fetchrow(WAL_SIZES)
                self._wal_sizes = (int(block), int(segment))
            # Outside any transaction: one round trip, no table read.
            value = await driver.fetchval(PRIMARY_POSITION)
        except BaseException as error:
            if connection is not None:
                # Broken, or interrupted in the middle of its statement: not given back to the pool.
                with contextlib.suppress(Exception):
                    await connection.invalidate()
                await connection.close()
            if not isinstance(error, Exception) or isinstance(error, sa_exc.TimeoutError):
                # Interrupted; or the primary's pool full: the 503 it always was.
                raise
            # Not connected, or the statement failed on the connection (closed, the server shutting down).
            logger.warning(
                "the primary cannot be reached (%s): the read replica answers as it stands for %g s",
                type(error).__name__,
                self.retry_seconds,
            )
            self._primary_down_until = time.monotonic() + self.retry_seconds
            return None
        await connection.close()
        return end_of_records(str(value), *self._wal_sizes)

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
    """The primary's insert position (`pg_current_wal_insert_lsn()`: past every record inserted, so past
    every commit acknowledged, `synchronous_commit` off included) as the end of its last record, which is
    what a replica's `pg_last_wal_replay_lsn()` reaches: where the insert position stands just past a page's
    header with nothing on the page yet, the last record ended before that header."""
    high, _, low = position.partition("/")
    at = (int(high, 16) << 32) | int(low, 16)
    if at % segment == _LONG_PAGE_HEADER:
        at -= _LONG_PAGE_HEADER
    elif at % block == _SHORT_PAGE_HEADER and at % segment != _SHORT_PAGE_HEADER:
        at -= _SHORT_PAGE_HEADER
    return f"{at >> 32:X}/{at & 0xFFFFFFFF:X}"
