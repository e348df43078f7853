"""The journal of personal data (`app.core.audit`, table `audit_events`) as this domain uses it: the events
it records, the lines about a person that an access request shows, and their retention."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, exists, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import audit
from app.core.audit import AuditEvent

record_read = audit.record_read
record_write = audit.record_write


async def record_erasures(
    session: AsyncSession, resource: str, ids: list[uuid.UUID], fields: tuple[str, ...]
) -> None:
    """One write event per person erased (one statement): `fields` went from a value (masked) to null."""
    changes = {name: {"before": audit.MASK, "after": None} for name in fields}
    await audit.record_writes(session, [(resource, id, changes) for id in ids])


async def purge(session: AsyncSession, before: datetime) -> int:
    """Deletes the journal's lines (the reads of personal data) older than `before`; how many. The trail
    of writes is kept (its personal values are masked)."""
    return await audit.purge_journal(session, before)


async def lines_about(session: AsyncSession, ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    """The journal's lines about these people, oldest first: the reads that returned them (`subject_ids`)
    and the writes of their records (`resource_id`)."""
    about = or_(AuditEvent.resource_id.in_(ids), _returned(session, ids))
    rows = (await session.execute(select(AuditEvent).where(about).order_by(AuditEvent.id))).scalars()
    return [
        {
            "id": row.id,
            "occurred_at": row.occurred_at,
            "kind": row.kind,
            "action": row.action,
            "resource": row.resource,
            "resource_id": row.resource_id,
            "actor": {"key_id": row.actor_key_id, "name": row.actor_name, "role": row.actor_role},
            "request_id": row.request_id,
            "changes": row.changes,
        }
        for row in rows
    ]


def _returned(session: AsyncSession, ids: list[uuid.UUID]) -> ColumnElement[bool]:
    """The read events whose `subject_ids` hold one of these ids (PostgreSQL: `@>`, which the GIN index
    serves, once per id)."""
    if session.get_bind().dialect.name == "postgresql":
        return or_(*(AuditEvent.subject_ids.op("@>")(func.jsonb_build_array(str(id))) for id in ids))
    subjects = func.json_each(AuditEvent.subject_ids).table_valued("value")
    return exists(
        select(literal(1)).select_from(subjects).where(subjects.c.value.in_([str(id) for id in ids]))
    )


@contextmanager
def command_context(action: str) -> Iterator[None]:
    """The journal's actor for a command of the command line (`system`), and its action."""
    with audit.acting(action):
        yield
