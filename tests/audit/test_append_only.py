"""The audit table is append-only: UPDATE and DELETE are refused, except by the journal's purge."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core import audit
from app.db import utcnow
from tests.audit.helpers import events


async def _journal_line(session: AsyncSession, subject: uuid.UUID) -> None:
    await audit.record_read(session, resource="counsellors", subject_ids=[subject])
    await session.flush()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET action = 'forged'",
        "DELETE FROM audit_events",
        "DELETE FROM audit_events WHERE kind = 'read'",
    ],
)
async def test_update_and_delete_are_refused(
    session: AsyncSession, connection: AsyncConnection, statement: str
) -> None:
    await _journal_line(session, uuid.uuid4())
    savepoint = await connection.begin_nested()
    with pytest.raises(DBAPIError, match="append-only"):
        await connection.execute(text(statement))
    await savepoint.rollback()
    assert [e["action"] for e in await events(connection, kind="read")] == ["system"]


async def test_purge_deletes_old_journal_lines_only_and_is_audited(
    session: AsyncSession, connection: AsyncConnection
) -> None:
    old, recent = uuid.uuid4(), uuid.uuid4()
    await _journal_line(session, old)
    await audit.record_write(
        session,
        resource="counsellors",
        resource_id=old,
        changes={"email": {"before": "a@b.fr", "after": None}},
    )
    await asyncio.sleep(0.01)
    cutoff = utcnow()
    await asyncio.sleep(0.01)
    await _journal_line(session, recent)
    with audit.acting("cli_purge"):
        purged = await audit.purge_journal(session, cutoff)
    # (Other tests' committed journal lines may be older than the cut-off too.)
    assert purged >= 1
    subjects = [r["subject_ids"] for r in await events(connection, kind="read")]
    assert [str(recent)] in subjects
    assert [str(old)] not in subjects
    # Other tests may have committed write events too (a served process's, say): this test's own are read.
    kept = [e for e in await events(connection, kind="write") if str(e["resource_id"]) == str(old)]
    # Write events are kept, their personal values masked.
    assert [e["resource"] for e in kept] == ["counsellors"]
    assert kept[0]["changes"] == {"email": {"before": "***", "after": None}}
    purge = (await events(connection, kind="write", resource="audit_events"))[-1]
    assert purge["resource"] == "audit_events"
    assert purge["action"] == "cli_purge"
    assert purge["actor_role"] == "system"
    assert purge["changes"]["purged"] == {"before": None, "after": purged}
    assert purge["changes"]["occurred_before"]["after"].startswith(cutoff.strftime("%Y-%m-%dT%H:%M:%S"))
    # Outside the purge, DELETE is refused again (the flag lasted for the purge only).
    savepoint = await connection.begin_nested()
    with pytest.raises(DBAPIError, match="append-only"):
        await connection.execute(text("DELETE FROM audit_events"))
    await savepoint.rollback()
