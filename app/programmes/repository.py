"""Every query of the programmes domain, including the sums of what live agreements commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import Select, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.agreements.models import LIVE_STATUSES, Agreement
from app.core.pagination import PageRequest, SortKey, fetch_page, parse_date, parse_sort, parse_uuid
from app.programmes.models import Programme

_ID_KEY = SortKey("id", Programme.id, parse=parse_uuid)
_SORTS = {
    "code": SortKey("code", Programme.code),
    "starts_on": SortKey("starts_on", Programme.starts_on, parse=parse_date),
}


async def get(
    session: AsyncSession, programme_id: uuid.UUID, *, for_update: bool = False
) -> Programme | None:
    stmt = select(Programme).where(Programme.id == programme_id)
    if for_update:
        # populate_existing: a row already in the session is refreshed with what the lock returns.
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def exists_with_code(session: AsyncSession, code: str, exclude_id: uuid.UUID | None) -> bool:
    clause = Programme.code == code
    if exclude_id is not None:
        clause = clause & (Programme.id != exclude_id)
    return bool((await session.execute(select(exists().where(clause)))).scalar())


def list_query() -> Select[Programme]:
    return select(Programme)


async def list_page(
    session: AsyncSession, page: PageRequest, *, sort: str | None = None
) -> tuple[Sequence[Programme], str | None, int | None]:
    """One page of programmes (one query, and one more for the total when asked); `sort` is `code`
    (the default) or `starts_on`, `-` to reverse, then the id; 422 for any other value."""
    keys = parse_sort(sort, _SORTS, "code", _ID_KEY)

    def values(p: Programme) -> list[object]:
        return [getattr(p, keys[0].name), p.id]

    return await fetch_page(session, list_query(), keys, page, row_values=values)


async def committed_totals(
    session: AsyncSession, programme_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[int, int]]:
    """(positions, subsidy cents) committed per programme, in one grouped query; absent when nothing is."""
    if not programme_ids:
        return {}
    stmt = (
        select(
            Agreement.programme_id,
            func.sum(Agreement.positions_granted),
            func.sum(Agreement.positions_granted * Agreement.subsidy_per_position_cents),
        )
        .where(Agreement.programme_id.in_(programme_ids), Agreement.status.in_(LIVE_STATUSES))
        .group_by(Agreement.programme_id)
    )
    # PostgreSQL sums bigints as numeric (Decimal): int() keeps the cents exact.
    return {row[0]: (int(row[1]), int(row[2])) for row in (await session.execute(stmt)).all()}


def add(session: AsyncSession, programme: Programme) -> None:
    session.add(programme)
