"""The journal of personal data (`app.core.audit`, table `audit_events`) as this domain uses it: the events
it records, the lines about a person that an access request shows, and their retention.

Until the journal's module is part of the release, every call here is a no-op and a person has no journal
line; this module is then the only place that changes."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession


def _audit() -> Any | None:
    try:
        return importlib.import_module("app.core.audit")
    except ModuleNotFoundError:
        return None


async def record_read(
    session: AsyncSession, *, resource: str, subject_ids: list[uuid.UUID], action: str | None = None
) -> None:
    audit = _audit()
    if audit is not None:
        await audit.record_read(session, resource=resource, subject_ids=subject_ids, action=action)


async def record_write(
    session: AsyncSession,
    *,
    resource: str,
    resource_id: uuid.UUID | None,
    changes: dict[str, Any] | None = None,
    action: str | None = None,
) -> None:
    audit = _audit()
    if audit is not None:
        await audit.record_write(
            session, resource=resource, resource_id=resource_id, changes=changes, action=action
        )


async def record_erasures(
    session: AsyncSession, resource: str, ids: list[uuid.UUID], fields: tuple[str, ...]
) -> None:
    """One write event per person erased: `fields` went from a (masked) value to null."""
    changes = {name: {"before": "***", "after": None} for name in fields}
    for id in ids:
        await record_write(session, resource=resource, resource_id=id, changes=changes)


async def purge(session: AsyncSession, before: datetime) -> int:
    """Deletes the journal's lines older than `before`; how many."""
    audit = _audit()
    if audit is None:
        return 0
    return int(await audit.purge_journal(session, before))


async def lines_about(session: AsyncSession, ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    """The journal's lines about these people (their records read, or written), oldest first."""
    return []


@contextmanager
def command_context(action: str) -> Iterator[None]:
    """The journal's actor for a command of the command line (`system`), and its action."""
    yield
