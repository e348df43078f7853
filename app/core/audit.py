"""The audit trail (every write) and the personal-data journal (every read of a person), in `audit_events`.

**What is recorded.** One `kind='write'` event per object written: its `resource` (the plural path segment),
`resource_id`, the `action` (the operation id of the route, e.g. `counsellors_bulk`), the actor (the API key's
id, name and role; `public` without a key, `system` outside a request) and `request_id` (the `X-Request-ID`),
and `changes`, `{field: {"before": v, "after": v}}`. Personal and secret values are masked (`"***"`; null
stays null, so that "set" and "cleared" remain visible): which fields are personal is declared on the model
(`AuditSpec`) and applies to explicit calls for the same resource alike. One `kind='read'` event per answer
that shows people (a counsellor, an assignment, a registration): `subject_ids` are the ids of the people
(counsellors, registrations) the answer returned (the journal; `record_read`).

**Safe by construction.** An audit event is written in the transaction of its write, so it exists if and only
if the write committed (a refused or rolled-back request leaves none). No write path has to remember it:
- every ORM write of an audited model (a class with `__audit__`) is seen by the session's `after_flush` event,
  which keeps the object's before/after values (the attribute history, still there after the flush) in the
  session (`session.info`); when the transaction commits (`before_commit`) what no explicit call took is
  written, one INSERT (executemany) for the whole transaction;
- every change of the change feed (`app.core.changes.record_many`, which every write of a resource of the
  feed calls in its transaction, the direct path's writes included) writes its audit events in the same
  call, one INSERT (executemany) for the batch, taking the before/after values that the flush kept for those
  objects, or those the caller gives for a Core write (`Entry.fields`: the bulk upsert);
- the remaining Core writes (a registration, which is not in the feed) call `record_write`.
`tests/audit/test_coverage.py` sends a request to every write route of the application and fails when one
commits without its audit event, or when a new write route has no case there.

What is not recorded separately: bookkeeping that follows from a recorded write (a version or counter moved,
the waitlist ranks renumbered, the change feed and idempotency tables, a territory's search words, the
registrations cancelled with their workshop, which the workshop's event records).

**Append-only.** On PostgreSQL a trigger refuses UPDATE and DELETE on `audit_events` (SQLite: triggers
that RAISE(ABORT)), except inside `audit_purge(before)`, the one function that deletes, which sets a
transaction-local flag the trigger checks, and records its own event. It deletes journal lines (`kind='read'`)
older than `before` only: the write events are the trail of what happened to the data and are kept (an
anonymised counsellor's events hold no personal value, being masked). `purge_journal` is its caller
(`cnfs-api purge`, with `JOURNAL_RETENTION_DAYS`).

**Context.** The actor, the action and the request id come from the request being served (its ASGI scope,
kept in a context variable by the request middleware: the route the router or the direct path chose, the
caller `app.core.auth` resolved, the `X-Request-ID`); outside a request, from `acting(...)` (the CLI), else
`system`."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from functools import cache
from itertools import chain
from typing import Any, TypeVar

from asgi_correlation_id import correlation_id
from sqlalchemy import (
    JSON,
    Column,
    Index,
    Integer,
    String,
    Table,
    bindparam,
    delete,
    event,
    func,
    insert,
    inspect,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, Session, mapped_column

from app.core.auth import PRINCIPAL_SCOPE_KEY, Principal
from app.core.direct import DirectSession, prepared
from app.db import JOURNALED, Base, new_id, utcnow

MASK = "***"
WRITE = "write"
READ = "read"
SYSTEM_ROLE = "system"


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        # GET /audit-events?resource_id=..: the history of one object (with its journal lines, below).
        Index("ix_audit_events_resource_id", "resource_id", "id"),
        Index("ix_audit_events_actor_key_id", "actor_key_id", "id"),
        # The retention purge: the journal lines older than a date.
        Index("ix_audit_events_kind_occurred_at", "kind", "occurred_at"),
        # "Who looked at this person": the read events whose `subject_ids` hold an id (`@>`, GIN). SQLite
        # cannot index the elements of a JSON array: an empty partial index there (the schema matches the
        # models), and the lookup reads the events with `json_each`.
        Index(
            "ix_audit_events_subject_ids",
            "subject_ids",
            postgresql_using="gin",
            postgresql_ops={"subject_ids": "jsonb_path_ops"},
            sqlite_where=text("0"),
        ),
    )

    # UUID v7: time-ordered, the keyset order of GET /audit-events.
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    occurred_at: Mapped[datetime] = mapped_column()
    kind: Mapped[str] = mapped_column(String(8))
    action: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[uuid.UUID | None] = mapped_column()
    actor_key_id: Mapped[uuid.UUID | None] = mapped_column()
    actor_name: Mapped[str | None] = mapped_column(String(120))
    actor_role: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[str | None] = mapped_column(String(128))
    changes: Mapped[dict[str, Any] | None] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))
    # JSONB on PostgreSQL: a GIN index finds the read events that returned one person (`@>`).
    subject_ids: Mapped[list[str] | None] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))


# The SQLite purge's mark: the trigger that refuses DELETE lets it through while this table has a row,
# which only the purge's own transaction writes and empties (unused on PostgreSQL, whose flag is a setting).
purge_flag = Table(
    "audit_purge_flag", Base.metadata, Column("flag", Integer, primary_key=True, autoincrement=False)
)


# --- what is audited ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditSpec:
    """Declared on a model as `__audit__`: its writes are recorded under `resource`, with the values of
    `masked` fields (personal data, secrets) masked. Explicit calls for the same resource mask alike."""

    resource: str
    masked: frozenset[str] = frozenset()
    # Columns left out of `changes` (derived bookkeeping).
    ignored: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        _SPECS[self.resource] = self


_SPECS: dict[str, AuditSpec] = {}
# The row's bookkeeping: its id is `resource_id`, its instants `occurred_at`; its version moves with any
# change.
_ALWAYS_IGNORED = frozenset({"id", "created_at", "updated_at", "version"})


def spec_for(resource: str) -> AuditSpec | None:
    return _SPECS.get(resource)


def plain(value: Any) -> Any:
    """A value as JSON holds it."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return MASK
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    return str(value)


def _masked(value: Any) -> Any:
    return None if value is None else MASK


def masked_changes(resource: str, changes: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any] | None:
    """`changes` as stored: JSON values, the resource's masked fields masked."""
    if changes is None:
        return None
    spec = _SPECS.get(resource)
    hidden = spec.masked if spec else frozenset()
    out: dict[str, Any] = {}
    for name, change in changes.items():
        before, after = change.get("before"), change.get("after")
        if name in hidden:
            out[name] = {"before": _masked(before), "after": _masked(after)}
        else:
            out[name] = {"before": plain(before), "after": plain(after)}
    return out


def created_fields(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The `changes` of a creation: every field from null."""
    return {k: {"before": None, "after": v} for k, v in values.items() if k not in _ALWAYS_IGNORED}


def changed_fields(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The `changes` of an update: the fields of `after` whose value differs from `before`."""
    return {
        k: {"before": before.get(k), "after": v}
        for k, v in after.items()
        if k not in _ALWAYS_IGNORED and before.get(k) != v
    }


# --- who is acting --------------------------------------------------------------------------------------

# The ASGI scope of the request being served (set by the request middleware, `bind_request`).
_REQUEST: ContextVar[MutableMapping[str, Any] | None] = ContextVar("cnfs_audit_request", default=None)


@dataclass(frozen=True)
class Actor:
    role: str
    key_id: uuid.UUID | None = None
    name: str | None = None


_ACTING: ContextVar[tuple[Actor, str] | None] = ContextVar("cnfs_audit_acting", default=None)
_DISABLED: ContextVar[bool] = ContextVar("cnfs_audit_disabled", default=False)


@contextmanager
def bind_request(scope: MutableMapping[str, Any]) -> Iterator[None]:
    """The request being served, for the events its writes and reads record (the request middleware)."""
    token = _REQUEST.set(scope)
    try:
        yield
    finally:
        _REQUEST.reset(token)


@contextmanager
def acting(action: str, role: str = SYSTEM_ROLE, name: str | None = None) -> Iterator[None]:
    """Outside a request (the CLI): who the events recorded in this block are by, and their action."""
    token = _ACTING.set((Actor(role=role, name=name), action))
    try:
        yield
    finally:
        _ACTING.reset(token)


@contextmanager
def disabled() -> Iterator[None]:
    """Nothing recorded in this block: for the benchmark's comparison only (bench/), never the service."""
    token = _DISABLED.set(True)
    try:
        yield
    finally:
        _DISABLED.reset(token)


def is_disabled() -> bool:
    return _DISABLED.get()


def _context(action: str | None) -> tuple[Actor, str, str | None]:
    acting_now = _ACTING.get()
    if acting_now is not None:
        actor, default_action = acting_now
        return actor, action or default_action, correlation_id.get()
    scope = _REQUEST.get()
    if scope is None:
        return Actor(SYSTEM_ROLE), action or SYSTEM_ROLE, correlation_id.get()
    principal: Principal | None = scope.get(PRINCIPAL_SCOPE_KEY)
    if principal is None:
        actor = Actor("public")
    else:
        actor = Actor(principal.role.value, principal.key_id, principal.name)
    route = scope.get("route")
    return actor, action or getattr(route, "name", None) or SYSTEM_ROLE, correlation_id.get()


# --- writing events -------------------------------------------------------------------------------------


@cache
def _insert() -> Any:
    """The events' INSERT, built once: every value a bound parameter (the direct path runs it as it is)."""
    table = AuditEvent.__table__
    assert isinstance(table, Table)
    return prepared(insert(table).values({c.name: bindparam(c.name, type_=c.type) for c in table.columns}))


def _row(
    kind: str,
    resource: str,
    resource_id: uuid.UUID | None,
    changes: dict[str, Any] | None,
    subject_ids: list[str] | None,
    context: tuple[Actor, str, str | None],
    now: datetime,
) -> dict[str, Any]:
    actor, action, request_id = context
    return {
        "id": new_id(),
        "occurred_at": now,
        "kind": kind,
        "action": action,
        "resource": resource,
        "resource_id": resource_id,
        "actor_key_id": actor.key_id,
        "actor_name": actor.name,
        "actor_role": actor.role,
        "request_id": request_id,
        "changes": changes,
        "subject_ids": subject_ids,
    }


async def _insert_rows(session: Any, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(_insert(), rows[0] if len(rows) == 1 else rows)


_PENDING = "cnfs.audit.pending"
_ORIGIN = "cnfs.audit.origin"
Key = tuple[str, uuid.UUID]
Pending = dict[Key, dict[str, dict[str, Any]]]


def _pending(session: Any) -> Pending | None:
    """The before/after values the flushes kept for objects not recorded yet (none on the direct path)."""
    if isinstance(session, DirectSession):
        return None
    info: dict[str, Any] = session.info
    return info.get(_PENDING)


async def _flush_if_needed(session: Any, keys: set[Key]) -> None:
    """Flushes when one of these objects has unflushed changes, so that its event holds them."""
    if isinstance(session, DirectSession) or not keys:
        return
    for obj in chain(session.new, session.dirty, session.deleted):
        spec: AuditSpec | None = getattr(type(obj), "__audit__", None)
        if spec is not None and (spec.resource, getattr(obj, "id", None)) in keys:
            await session.flush()
            return


async def record_writes(
    session: AsyncSession | DirectSession,
    items: Iterable[tuple[str, uuid.UUID | None, Mapping[str, Mapping[str, Any]] | None]],
    *,
    action: str | None = None,
) -> None:
    """One write event per (resource, resource_id, changes), in one statement, in the caller's transaction.
    `changes` None: those the session's flushes kept for that object (an ORM write), if any."""
    if _DISABLED.get():
        return
    items = list(items)
    if not items:
        return
    await _flush_if_needed(session, {(r, i) for r, i, c in items if c is None and i is not None})
    pending = _pending(session)
    context = _context(action)
    now = utcnow()
    rows = []
    for resource, resource_id, changes in items:
        kept = pending.pop((resource, resource_id), None) if pending and resource_id is not None else None
        # `kept` is masked already.
        stored = kept if changes is None else masked_changes(resource, changes)
        rows.append(_row(WRITE, resource, resource_id, stored, None, context, now))
    await _insert_rows(session, rows)


async def record_write(
    session: AsyncSession | DirectSession,
    *,
    resource: str,
    resource_id: uuid.UUID | None,
    changes: Mapping[str, Mapping[str, Any]] | None = None,
    action: str | None = None,
) -> None:
    """One write event, in the caller's transaction (see `record_writes`)."""
    await record_writes(session, [(resource, resource_id, changes)], action=action)


async def record_read(
    session: AsyncSession | DirectSession,
    *,
    resource: str,
    subject_ids: Iterable[uuid.UUID | str],
    action: str | None = None,
) -> None:
    """The journal line of an answer that shows people: one event, `subject_ids` the ids of the people it
    returned (in order, without repeats), in the answer's transaction. An answer that shows nobody (an
    empty page) records nothing."""
    if _DISABLED.get():
        return
    ids = list(dict.fromkeys(str(i) for i in subject_ids))
    if not ids:
        return
    row = _row(READ, resource, None, None, ids, _context(action), utcnow())
    await session.execute(_insert(), row)


# --- reads that journal -----------------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def journaled(endpoint: F) -> F:
    """Marks a GET route whose answer shows people: its transaction may write (`app.db.JOURNALED`), and
    the route records its journal line (`record_read`) in it."""
    setattr(endpoint, JOURNALED, True)
    return endpoint


@dataclass(frozen=True)
class Journal:
    """What a list's journal line names: the people of `resource`, by the `subject` field of each row (`id`
    for counsellors and registrations, `counsellor_id` for assignments)."""

    resource: str
    subject: str = "id"

    def ids(self, rows: Iterable[Any]) -> list[Any]:
        name = self.subject
        return [row[name] if isinstance(row, Mapping) else getattr(row, name) for row in rows]


def journal_batch(request: Any, resource: str) -> Callable[[Sequence[uuid.UUID | str]], Awaitable[None]]:
    """The journal of a streamed CSV export: each batch's line, in a transaction of its own committed before
    the batch is sent (the export's snapshot is read-only). Called with the ids of the people of the batch."""
    sessionmaker = request.app.state.sessionmaker
    scope = request.scope

    async def journal(subject_ids: Sequence[uuid.UUID | str]) -> None:
        if not subject_ids or _DISABLED.get():
            return
        with bind_request(scope):
            async with sessionmaker() as session:
                await record_read(session, resource=resource, subject_ids=subject_ids)
                await session.commit()

    return journal


# --- the ORM's writes -----------------------------------------------------------------------------------


def _object_changes(state: Any, spec: AuditSpec, created: bool, deleted: bool) -> dict[str, Any]:
    ignored = spec.ignored | _ALWAYS_IGNORED
    out: dict[str, Any] = {}
    for attr in state.mapper.column_attrs:
        key = attr.key
        if key in ignored:
            continue
        if created or deleted:
            if key not in state.dict:
                continue
            value = state.dict[key]
            if created and value is None:
                continue
            out[key] = {"before": value, "after": None} if deleted else {"before": None, "after": value}
            continue
        history = state.attrs[key].history
        if not history.added and not history.deleted:
            continue
        before = history.deleted[0] if history.deleted else None
        after = history.added[0] if history.added else None
        if before == after:
            continue
        out[key] = {"before": before, "after": after}
    return masked_changes(spec.resource, out) or {}


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _flush_context: Any) -> None:
    """Keeps the before/after values of every audited object this flush wrote (see the module's docstring)."""
    if _DISABLED.get():
        return
    found: list[tuple[Any, bool, bool]] = []
    for obj in session.new:
        found.append((obj, True, False))
    for obj in session.dirty:
        found.append((obj, False, False))
    for obj in session.deleted:
        found.append((obj, False, True))
    pending: Pending | None = None
    for obj, created, deleted in found:
        spec: AuditSpec | None = getattr(type(obj), "__audit__", None)
        if spec is None:
            continue
        state = inspect(obj)
        identity = state.identity
        object_id = identity[0] if identity else state.dict.get("id")
        if not isinstance(object_id, uuid.UUID):
            continue
        changes = _object_changes(state, spec, created, deleted)
        if not changes and not created and not deleted:
            continue
        if pending is None:
            pending = session.info.setdefault(_PENDING, {})
        key = (spec.resource, object_id)
        known = pending.get(key)
        if known is None:
            pending[key] = changes
            # Where it was flushed: a savepoint rolled back takes its objects' values with it.
            session.info.setdefault(_ORIGIN, {})[key] = session.get_nested_transaction()
        else:
            for name, change in changes.items():
                if name in known:
                    known[name] = {"before": known[name]["before"], "after": change["after"]}
                else:
                    known[name] = change


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    """What the flushes kept and no explicit call took: written before the transaction commits (not at a
    savepoint's release: the transaction may still record them explicitly, or roll back)."""
    if session.in_nested_transaction():
        return
    if _DISABLED.get():
        session.info.pop(_PENDING, None)
        return
    if session.new or session.dirty or session.deleted:
        session.flush()
    pending: Pending | None = session.info.pop(_PENDING, None)
    session.info.pop(_ORIGIN, None)
    if not pending:
        return
    context = _context(None)
    now = utcnow()
    rows = [
        _row(WRITE, resource, object_id, changes, None, context, now)
        for (resource, object_id), changes in pending.items()
    ]
    session.connection().execute(_insert(), rows)


@event.listens_for(Session, "after_soft_rollback")
def _forget_pending(session: Session, previous: Any) -> None:
    """A rollback drops the values kept for the objects it undid: all of them, or a savepoint's own."""
    origins: dict[Key, Any] = session.info.get(_ORIGIN, {})
    if not previous.nested:
        session.info.pop(_PENDING, None)
        session.info.pop(_ORIGIN, None)
        return
    pending: Pending = session.info.get(_PENDING, {})
    for key in [key for key, origin in origins.items() if origin is previous]:
        pending.pop(key, None)
        origins.pop(key, None)


# --- the purge ------------------------------------------------------------------------------------------


async def purge_journal(session: AsyncSession, before: datetime) -> int:
    """Deletes the journal lines (`kind='read'`) that occurred before `before`; returns how many. Runs the
    one audited way to delete (PostgreSQL: `audit_purge`; SQLite: the same steps), which records its own
    event (`action` from the context: `cli_purge` under `cnfs-api purge`)."""
    actor, action, request_id = _context(None)
    if session.get_bind().dialect.name == "postgresql":
        result = await session.execute(
            text(
                "SELECT audit_purge(:before, CAST(:event_id AS uuid), CAST(:action AS text), "
                "CAST(:role AS text), CAST(:key_id AS uuid), CAST(:name AS text), CAST(:request_id AS text))"
            ),
            {
                "before": before,
                "event_id": new_id(),
                "action": action,
                "role": actor.role,
                "key_id": actor.key_id,
                "name": actor.name,
                "request_id": request_id,
            },
        )
        return int(result.scalar_one())
    await session.execute(text("INSERT INTO audit_purge_flag (flag) VALUES (1)"))
    try:
        result = await session.execute(
            delete(AuditEvent).where(AuditEvent.kind == READ, AuditEvent.occurred_at < before)
        )
    finally:
        await session.execute(text("DELETE FROM audit_purge_flag"))
    count = int(getattr(result, "rowcount", 0) or 0)
    changes = {
        "purged": {"before": None, "after": count},
        "occurred_before": {"before": None, "after": plain(before)},
    }
    await session.execute(
        _insert(), _row(WRITE, "audit_events", None, changes, None, (actor, action, request_id), utcnow())
    )
    return count


def subject_clause(subject_id: uuid.UUID, postgres: bool) -> Any:
    """Read events whose `subject_ids` hold this id."""
    if postgres:
        return AuditEvent.subject_ids.op("@>")(func.jsonb_build_array(str(subject_id)))
    return text(
        "EXISTS (SELECT 1 FROM json_each(audit_events.subject_ids) AS subject WHERE subject.value = :subject)"
    ).bindparams(subject=str(subject_id))
