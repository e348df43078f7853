"""The change feed: one row per change of a resource, written in the same transaction as the change.

Every service that creates, changes or deletes a resource calls `record` (or `record_many`) before its
transaction commits, so a change is in the feed if and only if it happened.

Order and completeness. A serial number alone is not a safe cursor on PostgreSQL: numbers are drawn when rows
are inserted, not when transactions commit, so a reader could see 11 (committed) while 10 (still running)
commits later, move its cursor past 10 and never see it. Each row therefore also stores the id of the
transaction that wrote it (`pg_current_xact_id()`), the cursor is (xid, seq), and a reader only returns rows
below a horizon that no row still to come can fall behind (`_horizon`): a change shows up once every
transaction of this database that took its id before it (by writing something) has ended.

Which transactions the horizon waits for. A row not yet visible to the reader's snapshot comes from a
transaction that was running at the snapshot (its xid is in the snapshot's `xip` list, or at or above its
`xmax`) or from one that starts later (xid at or above `xmax`, xids being handed out in increasing order).
Every row's key is at or above its transaction's xid (see below). So the horizon is the smallest xid of
`xip` that may still write a row below it, or `xmax` when none may; an xid of `xip` is left out when
`pg_stat_activity`, read after `pg_locks` in the same statement, shows it as the running transaction of:
- a backend connected to another database: only a transaction connected to this database can write to this
  database's `changes` table, and an xid belongs to one backend, connected to one database for its life;
- or a backend of this database that holds no lock on `changes` (it has not written a change: an INSERT
  locks the table first, until the transaction ends) and whose transaction began more than
  `IDLE_WRITER_SECONDS` before the reader's statement. Such a transaction may still write a change later:
  `record` then keys it with the `xmax` of its own INSERT's snapshot rather than its xid, whenever its
  transaction is older than half that bound. The INSERT's snapshot is taken after its lock on `changes`,
  hence after the reader's `pg_locks` (which did not show it) and after the reader's snapshot (PostgreSQL
  takes a READ COMMITTED statement's snapshot once the locks of its plan are held): its `xmax` is at or
  above the reader's `xmax`, hence at or above any horizon that reader used. The transaction was older than
  the bound at the reader's statement, so older than half of it at its INSERT: the half leaves room for
  the server's clock (both sides read it) to step back. `pg_locks` must be read before
  `pg_stat_activity`: a transaction shown running by the later read was running at the earlier one, so
  holding no lock then means it had written no change yet.
An xid not shown by `pg_stat_activity` (its transaction ended meanwhile) is kept, which only delays the
horizon until the next read: the rule errs on the side of waiting, never of skipping. `pg_stat_activity`
shows an xid as 32 bits: the running xids are less than 2^31 apart, so its low 32 bits name one of them. The
cluster-wide `pg_snapshot_xmin` that this replaces also waited for every transaction of every database of
the server (an idle-in-transaction session in another database stopped the feed for as long as it stayed
open).

What a consumer sees: a change appears once every transaction of this database that had written something
before it has ended (usually within milliseconds), except that a transaction that has written no change
stops holding the feed back once it has been open `IDLE_WRITER_SECONDS`. A change written by a transaction
older than half of that bound is keyed at the `xmax` of its INSERT's snapshot: it shows up once a transaction
that took an id at or above that key has ended (any later write of the server). A transaction that has
written a change holds the changes written after it back until it ends (the service's own transactions are
bounded by its statement and lock timeouts; PostgreSQL's `idle_in_transaction_session_timeout` bounds other
clients'). Transactions of other databases and transactions that have written nothing never hold it back.

On SQLite, writing transactions run one at a time (BEGIN IMMEDIATE), so they commit in the order of their
serial numbers: xid is 0 and the serial number alone orders the feed."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Index,
    Integer,
    Interval,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.core import audit
from app.core.auth import Principal
from app.core.direct import prepared
from app.core.pagination import InvalidCursor
from app.db import Base, utcnow


class Action(StrEnum):
    created = "created"
    updated = "updated"
    deleted = "deleted"


class Change(Base):
    __tablename__ = "changes"
    __table_args__ = (
        # The feed's order: every read seeks this index.
        Index("ix_changes_xid_seq", "xid", "seq"),
        {"sqlite_autoincrement": True},
    )

    # INTEGER on SQLite (an alias of the rowid, hence autoincrementing), BIGINT (identity) on PostgreSQL.
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    xid: Mapped[int] = mapped_column(BigInteger)
    resource: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[uuid.UUID] = mapped_column()
    action: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column()
    # No foreign key: the feed outlives the objects it speaks of (a territory may be deleted later).
    territory_id: Mapped[uuid.UUID | None] = mapped_column()
    occurred_at: Mapped[datetime] = mapped_column()


FEED_ORDER = (Change.xid, Change.seq)


# A transaction of this database that has written nothing to the feed stops holding it back after this long
# (the module's docstring); one older than half of it keys its changes past every reader that let it go.
IDLE_WRITER_SECONDS = 60.0


def _xid_expression(postgres: bool) -> ColumnElement[int]:
    """The row's key: its transaction's xid; for a transaction older than `late_after`, the greater of its
    xid and the `xmax` of the INSERT's snapshot (see the module's docstring)."""
    if postgres:
        # xid8 has no direct cast to bigint; through text it is exact (a 64-bit epoch-extended id).
        own = cast(cast(func.pg_current_xact_id(), Text), BigInteger)
        xmax = cast(cast(func.pg_snapshot_xmax(func.pg_current_snapshot()), Text), BigInteger)
        late = func.clock_timestamp() - func.now() > bindparam("late_after", type_=Interval())
        return case((late, func.greatest(own, xmax)), else_=own)
    return literal(0, BigInteger)


@cache
def _insert(postgres: bool) -> Any:
    """The feed's INSERT, built once per dialect: every value but the transaction id a bound parameter."""
    table = Change.__table__
    assert isinstance(table, Table)
    values = {
        name: bindparam(name, type_=table.c[name].type)
        for name in ("resource", "object_id", "action", "version", "territory_id", "occurred_at")
    }
    return prepared(insert(table).values(xid=_xid_expression(postgres), **values))


@dataclass(frozen=True)
class Entry:
    resource: str
    id: uuid.UUID
    action: Action
    version: int
    territory_id: uuid.UUID | None
    # The audit event's changed fields for a Core write ({field: {"before", "after"}}); None: those the
    # session's flushes kept for the object (`app.core.audit`).
    fields: Mapping[str, Mapping[str, Any]] | None = None


async def record(
    session: AsyncSession,
    *,
    resource: str,
    id: uuid.UUID,
    action: Action | str,
    version: int,
    territory_id: uuid.UUID | None,
    fields: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Adds one change to the feed, in the caller's transaction (one INSERT, no extra round trip), and its
    audit event (`fields`: see `Entry`)."""
    await record_many(session, [Entry(resource, id, Action(action), version, territory_id, fields)])


async def record_many(session: AsyncSession, entries: Iterable[Entry]) -> None:
    """Adds several changes in one statement (bulk writes), and their audit events in another
    (`app.core.audit`: every change of the feed is audited, in the same transaction)."""
    entries = list(entries)
    rows: list[dict[str, Any]] = [
        {
            "resource": e.resource,
            "object_id": e.id,
            "action": e.action.value,
            "version": e.version,
            "territory_id": e.territory_id,
            "occurred_at": utcnow(),
        }
        for e in entries
    ]
    if not rows:
        return
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        late_after = timedelta(seconds=IDLE_WRITER_SECONDS / 2)
        for row in rows:
            row["late_after"] = late_after
    stmt = _insert(postgres)
    await session.execute(stmt, rows[0] if len(rows) == 1 else rows)
    await audit.record_writes(session, [(e.resource, e.id, e.fields) for e in entries])


# What the feed reads: every column but none of the ORM's bookkeeping.
_READ_COLUMNS = (
    Change.xid,
    Change.seq,
    Change.resource,
    Change.object_id,
    Change.action,
    Change.version,
    Change.territory_id,
    Change.occurred_at,
)


def encode_cursor(xid: int, seq: int) -> str:
    return f"{xid}.{seq}"


def decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        xid_text, seq_text = cursor.split(".")
        xid, seq = int(xid_text), int(seq_text)
        if xid < 0 or seq < 0 or xid >= 2**63 or seq >= 2**63:
            raise ValueError("range")
    except ValueError as exc:
        raise InvalidCursor("`after` must be a `cursor` or `next_after` of this feed") from exc
    return xid, seq


# The smallest xid, in the reader's snapshot, of a transaction running then that may still write a change
# below it (xmax when there is none): see the module's docstring. Every pg_current_snapshot() of one statement
# is the statement's snapshot, the one the rows are read with. `writers` (pg_locks) is read before
# `running` (pg_stat_activity): it is an argument of the latter, which also drops the activity this
# transaction may have read before (pg_stat_clear_snapshot). An xid is left out only when every backend
# showing it allows it (a parallel worker shows its leader's); unknown (a lock of a prepared transaction,
# without a pid) counts as not allowing.
_HORIZON_SQL = """WITH writers AS MATERIALIZED (
       SELECT lock.pid FROM pg_locks AS lock
       WHERE lock.locktype = 'relation' AND lock.relation = 'changes'::regclass),
   running AS MATERIALIZED (
       SELECT activity.backend_xid::text::bigint AS xid32,
              bool_and(coalesce(activity.datid IS NOT NULL AND (
                  activity.datid <> (SELECT oid FROM pg_database WHERE datname = current_database())
                  OR (activity.pid NOT IN (SELECT writers.pid FROM writers)
                      AND activity.xact_start < statement_timestamp() - :idle_after)), false)) AS left_out
       FROM pg_stat_get_activity((SELECT NULL::integer
                                  FROM (SELECT count(*) FROM writers) AS locks_read,
                                       pg_stat_clear_snapshot() AS cleared)) AS activity
       WHERE activity.backend_xid IS NOT NULL
       GROUP BY activity.backend_xid::text::bigint)
 SELECT coalesce(min(snapshot.xid::text::bigint),
                 pg_snapshot_xmax(pg_current_snapshot())::text::bigint)
 FROM pg_snapshot_xip(pg_current_snapshot()) AS snapshot(xid)
 WHERE snapshot.xid::text::bigint % 4294967296 NOT IN (
     SELECT running.xid32 FROM running WHERE running.left_out IS TRUE)"""


def _horizon(session: AsyncSession) -> ColumnElement[bool]:
    """Rows whose transaction has certainly ended, and no row can still appear below them (see above).

    A transaction also sees its own changes (keyed with its xid unless it is older than half of
    `IDLE_WRITER_SECONDS`), which only matters to a caller that writes and reads the feed in one transaction
    (the tests' rollback-per-test transaction does)."""
    if session.get_bind().dialect.name != "postgresql":
        return literal(True)
    horizon = (
        text(_HORIZON_SQL)
        .bindparams(bindparam("idle_after", timedelta(seconds=IDLE_WRITER_SECONDS), type_=Interval()))
        .columns(horizon=BigInteger)
        .scalar_subquery()
    )
    own = cast(cast(func.pg_current_xact_id_if_assigned(), Text), BigInteger)
    return or_(Change.xid < horizon, Change.xid == own)


async def read(
    session: AsyncSession,
    principal: Principal,
    *,
    after: str | None,
    resources: Sequence[str] | None,
    limit: int,
) -> tuple[list[Any], str]:
    """Up to `limit` changes after the cursor `after`, in feed order, that `principal` may see in the
    `resources` given (None: all of them), as rows of `_READ_COLUMNS` (no ORM object); returns them and the
    cursor to continue from."""
    xid, seq = decode_cursor(after) if after else (0, 0)
    clauses: list[Any] = [
        tuple_(*FEED_ORDER) > tuple_(literal(xid, BigInteger), literal(seq, BigInteger)),
        _horizon(session),
    ]
    if resources is not None:
        clauses.append(Change.resource.in_(list(resources)))
    if not principal.is_admin:
        clauses.append(principal.territory_clause(Change.territory_id))  # type: ignore[arg-type]
    stmt = select(*_READ_COLUMNS).where(and_(*clauses)).order_by(*FEED_ORDER).limit(limit)
    rows = list((await session.execute(stmt)).all())
    next_after = encode_cursor(rows[-1].xid, rows[-1].seq) if rows else encode_cursor(xid, seq)
    return rows, next_after
