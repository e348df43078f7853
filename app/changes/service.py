"""Who reads which part of the change feed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core import changes
from app.core import csv as csv_export
from app.core.auth import Principal, Role
from app.core.problems import Forbidden


class Resource(StrEnum):
    agreements = "agreements"
    positions = "positions"
    counsellors = "counsellors"
    assignments = "assignments"
    workshops = "workshops"


# Personal data: never in a viewer's feed (not even the fact that a counsellor changed).
PERSONAL = frozenset({Resource.counsellors, Resource.assignments})


async def read_feed(
    session: AsyncSession,
    principal: Principal,
    *,
    after: str | None,
    resources: list[Resource] | None,
    limit: int,
) -> dict[str, Any]:
    """A page of the feed as a dict of `ChangePage`, ready to serialise."""
    if principal.role is Role.counsellor:
        raise Forbidden("the change feed is for HR systems, managers and viewers")
    wanted = set(resources) if resources else set(Resource)
    if principal.role is Role.viewer:
        wanted -= PERSONAL
    rows, next_after = await changes.read(
        session, principal, after=after, resources=sorted(r.value for r in wanted), limit=limit
    )
    items = [
        {
            "cursor": changes.encode_cursor(row.xid, row.seq),
            "resource": row.resource,
            "id": row.object_id,
            "action": row.action,
            "version": row.version,
            "territory_id": row.territory_id,
            "occurred_at": row.occurred_at,
        }
        for row in rows
    ]
    return {"items": items, "next_after": next_after}


def feed_batches(
    principal: Principal, resources: list[Resource] | None
) -> Callable[[AsyncSession, str | None], Awaitable[tuple[Sequence[Any], str | None]]]:
    """The feed in batches for a CSV export (`app.core.csv.csv_stream_response`): the items after a cursor
    and the cursor to go on from, None once a batch comes back short (the end of the feed as visible now)."""

    async def batch(session: AsyncSession, after: str | None) -> tuple[Sequence[Any], str | None]:
        size = csv_export.BATCH_ROWS
        body = await read_feed(session, principal, after=after, resources=resources, limit=size)
        items: list[dict[str, Any]] = body["items"]
        return items, body["next_after"] if len(items) == size else None

    return batch
