"""The SELECTs of the audit events (the rows are written by `app.core.audit`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.audit import AuditEvent, subject_clause
from app.core.pagination import PageRequest, SortKey, fetch_page, parse_uuid

# Ids are UUID v7, time-ordered: descending id is newest first.
_NEWEST_FIRST = [SortKey("id", AuditEvent.id, desc=True, parse=parse_uuid)]

_COLUMNS = (
    AuditEvent.id,
    AuditEvent.occurred_at,
    AuditEvent.kind,
    AuditEvent.action,
    AuditEvent.resource,
    AuditEvent.resource_id,
    AuditEvent.actor_key_id,
    AuditEvent.actor_name,
    AuditEvent.actor_role,
    AuditEvent.request_id,
    AuditEvent.changes,
    AuditEvent.subject_ids,
)


@dataclass(frozen=True)
class Filters:
    resource: str | None = None
    resource_id: uuid.UUID | None = None
    actor: uuid.UUID | None = None
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None
    kind: str | None = None


def list_query(filters: Filters, postgres: bool) -> Select[Any]:
    stmt = select(*_COLUMNS)
    if filters.resource is not None:
        stmt = stmt.where(AuditEvent.resource == filters.resource)
    if filters.resource_id is not None:
        # The object's writes, and the journal lines of the answers that returned that person.
        stmt = stmt.where(
            or_(AuditEvent.resource_id == filters.resource_id, subject_clause(filters.resource_id, postgres))
        )
    if filters.actor is not None:
        stmt = stmt.where(AuditEvent.actor_key_id == filters.actor)
    if filters.occurred_from is not None:
        stmt = stmt.where(AuditEvent.occurred_at >= filters.occurred_from)
    if filters.occurred_to is not None:
        stmt = stmt.where(AuditEvent.occurred_at < filters.occurred_to)
    if filters.kind is not None:
        stmt = stmt.where(AuditEvent.kind == filters.kind)
    return stmt


def _shaped(row: dict[str, Any]) -> dict[str, Any]:
    row["actor"] = {
        "key_id": row.pop("actor_key_id"),
        "name": row.pop("actor_name"),
        "role": row.pop("actor_role"),
    }
    return row


async def list_page(
    session: AsyncSession, page: PageRequest, filters: Filters
) -> tuple[list[dict[str, Any]], str | None, int | None]:
    """One page of events, newest first (a query, and one for the total when asked)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    rows, next_cursor, total = await fetch_page(
        session,
        list_query(filters, postgres),
        _NEWEST_FIRST,
        page,
        row_values=lambda row: [row.id],
        scalars=False,
    )
    return [_shaped(row) for row in rows], next_cursor, total
