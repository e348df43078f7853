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
Only a transaction connected to this database can write to this database's `changes` table, and an xid
belongs to one transaction of one backend, connected to one database for its whole life. So the horizon is
the smallest xid of `xip` that may be this database's, or `xmax` when none is: an xid is left out only when
`pg_stat_activity` shows it as the running transaction of a backend connected to another database (then it
certainly is not ours). An xid that ended between the snapshot and the look at `pg_stat_activity` is not
shown, so it is kept, which only delays the horizon until the next read: the rule errs on the side of
waiting, never of skipping. `pg_stat_activity` shows an xid as 32 bits: the running xids are less than 2^31
apart, so its low 32 bits name one of them. The cluster-wide `pg_snapshot_xmin`, which this replaces, also
waited for every transaction of every other database of the server (an idle-in-transaction session in
another database stopped the feed for as long as it stayed open).

What a consumer sees: a change appears once every transaction of this database that was running when it
was written, and took its id before it, has ended; usually within milliseconds. A transaction of this
database that has taken an id (it wrote something) and stays open holds back the changes written after it
began: it may still write a change that sorts before them, which must not be skipped. The service's own
transactions are bounded by its statement and pool timeouts; another client's session left idle in a
transaction holds the feed back until it ends (PostgreSQL's `idle_in_transaction_session_timeout` bounds
it). Transactions of other databases of the server and transactions that have not written anything never
hold it back.

On SQLite, writing transactions run one at a time (BEGIN IMMEDIATE), so they commit in the order of their
serial numbers: xid is 0 and the serial number alone orders the feed."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Index,
    Integer,
    String,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

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


def _xid_expression(postgres: bool) -> ColumnElement[int]:
    if postgres:
        # xid8 has no direct cast to bigint; through text it is exact (a 64-bit epoch-extended id).
        return cast(cast(func.pg_current_xact_id(), Text), BigInteger)
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


async def record(
    session: AsyncSession,
    *,
    resource: str,
    id: uuid.UUID,
    action: Action | str,
    version: int,
    territory_id: uuid.UUID | None,
) -> None:
    """Adds one change to the feed, in the caller's transaction (one INSERT, no extra round trip)."""
    await record_many(session, [Entry(resource, id, Action(action), version, territory_id)])


async def record_many(session: AsyncSession, entries: Iterable[Entry]) -> None:
    """Adds several changes in one statement (bulk writes)."""
    rows = [
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
    stmt = _insert(session.get_bind().dialect.name == "postgresql")
    await session.execute(stmt, rows[0] if len(rows) == 1 else rows)


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


# The smallest xid, in the reader's snapshot, of a transaction running then that may be this database's
# (xmax when there is none): see the module's docstring. Every pg_current_snapshot() of one statement is the
# statement's snapshot, the one the rows are read with.
_HORIZON_SQL = """(SELECT coalesce(min(running.xid::text::bigint),
                  pg_snapshot_xmax(pg_current_snapshot())::text::bigint)
   FROM pg_snapshot_xip(pg_current_snapshot()) AS running(xid)
   WHERE running.xid::text::bigint % 4294967296 NOT IN (
       SELECT other.backend_xid::text::bigint FROM pg_stat_activity AS other
       WHERE other.backend_xid IS NOT NULL AND other.datid IS NOT NULL
         AND other.datid <> (SELECT oid FROM pg_database WHERE datname = current_database())))"""


def _horizon(session: AsyncSession) -> ColumnElement[bool]:
    """Rows whose transaction has certainly ended, and no row can still appear below them (see above).

    A transaction also sees its own changes, which only matters to a caller that writes and reads the feed
    in one transaction (the tests' rollback-per-test transaction does)."""
    if session.get_bind().dialect.name != "postgresql":
        return literal(True)
    horizon = literal_column(_HORIZON_SQL, BigInteger)
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
