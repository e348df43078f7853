"""Reading the audit table in the tests (in the test's transaction)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.audit import AuditEvent


async def events(connection: AsyncConnection, **filters: Any) -> list[dict[str, Any]]:
    """The audit events matching `filters` (column=value), oldest first, as dicts."""
    stmt = select(AuditEvent.__table__).order_by(AuditEvent.id)
    for name, value in filters.items():
        stmt = stmt.where(AuditEvent.__table__.c[name] == value)
    return [dict(row._mapping) for row in (await connection.execute(stmt)).all()]
