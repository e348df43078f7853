"""Rules of the programmes domain: unique codes, date order, and never below what agreements commit."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.pagination import PageRequest
from app.core.problems import NotFound, ValidationFailed
from app.db import utcnow
from app.programmes import repository as repo
from app.programmes.errors import ProgrammeBelowCommitted, ProgrammeExists
from app.programmes.models import Programme
from app.programmes.schemas import ProgrammeCreate, ProgrammeRead, ProgrammeUpdate


@dataclass(frozen=True)
class Committed:
    """What a programme's draft and signed agreements hold: positions and subsidy cents."""

    positions: int = 0
    subsidy_cents: int = 0


def to_read(programme: Programme, committed: Committed) -> ProgrammeRead:
    return ProgrammeRead(
        id=programme.id,
        code=programme.code,
        name=programme.name,
        positions_target=programme.positions_target,
        budget_cents=programme.budget_cents,
        subsidy_per_position_cents=programme.subsidy_per_position_cents,
        starts_on=programme.starts_on,
        ends_on=programme.ends_on,
        positions_granted=committed.positions,
        subsidy_committed_cents=committed.subsidy_cents,
        created_at=programme.created_at,
        updated_at=programme.updated_at,
        version=programme.version,
    )


async def committed_many(
    session: AsyncSession, programme_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Committed]:
    totals = await repo.committed_totals(session, programme_ids)
    return {pid: Committed(*totals[pid]) if pid in totals else Committed() for pid in programme_ids}


async def committed(session: AsyncSession, programme_id: uuid.UUID) -> Committed:
    return (await committed_many(session, [programme_id]))[programme_id]


async def read(session: AsyncSession, programme: Programme) -> ProgrammeRead:
    return to_read(programme, await committed(session, programme.id))


async def read_many(session: AsyncSession, programmes: Sequence[Programme]) -> list[ProgrammeRead]:
    """A whole page with one query for the totals, whatever its size."""
    totals = await committed_many(session, [p.id for p in programmes])
    return [to_read(p, totals[p.id]) for p in programmes]


async def list_programmes(
    session: AsyncSession, page: PageRequest, *, sort: str | None = None
) -> tuple[Sequence[ProgrammeRead], str | None, int | None]:
    """A page of programmes, public like each of them, with their totals: (items, next_cursor, total).
    `sort` is `code` (the default) or `starts_on`, `-` to reverse."""
    rows, next_cursor, total = await repo.list_page(session, page, sort=sort)
    return await read_many(session, rows), next_cursor, total


async def get(session: AsyncSession, programme_id: uuid.UUID) -> Programme:
    """Programmes are public: anyone may read any of them."""
    programme = await repo.get(session, programme_id)
    if programme is None:
        raise NotFound("no programme with this id")
    return programme


async def get_for_update(session: AsyncSession, programme_id: uuid.UUID) -> Programme:
    """The programme, locked until the end of the transaction (PostgreSQL `FOR UPDATE`).

    Every write that changes or checks a programme's totals takes this lock first, so that two of them
    never both see the room that only one of them may take. SQLite needs no lock: BEGIN IMMEDIATE
    already runs writing transactions one at a time."""
    programme = await find_for_update(session, programme_id)
    if programme is None:
        raise NotFound("no programme with this id")
    return programme


async def find_for_update(session: AsyncSession, programme_id: uuid.UUID) -> Programme | None:
    return await repo.get(session, programme_id, for_update=True)


def totals_changed(programme: Programme) -> None:
    """Called when an agreement changes what the programme commits: the representation changed, so its
    version (the ETag) and `updated_at` move too, and a cached copy is never served as current."""
    programme.updated_at = utcnow()


def _check_dates(starts_on: date, ends_on: date | None) -> None:
    if ends_on is not None and ends_on < starts_on:
        raise ValidationFailed("/ends_on", "must be on or after starts_on")


@asynccontextmanager
async def _writing(session: AsyncSession, code: str, exclude_id: uuid.UUID | None) -> AsyncIterator[None]:
    """Applies the block's changes in a savepoint, so that a concurrent write of the same `code` that won
    the race between our check and our flush is still answered `programme_exists`, not a bare conflict.

    The savepoint keeps the transaction usable after the failed statement (PostgreSQL aborts a transaction
    on any error), so that the code can be looked up again; it opens before the block, since
    `begin_nested` flushes pending changes first, outside of it."""
    try:
        async with session.begin_nested():
            yield
            await session.flush()
    except IntegrityError:
        if await repo.exists_with_code(session, code, exclude_id):
            raise ProgrammeExists(f"a programme with code {code} already exists") from None
        raise


async def create(session: AsyncSession, data: ProgrammeCreate) -> Programme:
    programme = Programme(
        code=data.code,
        name=data.name,
        positions_target=data.positions_target,
        budget_cents=data.budget_cents,
        subsidy_per_position_cents=data.subsidy_per_position_cents,
        starts_on=data.starts_on,
        ends_on=data.ends_on,
    )
    _check_dates(data.starts_on, data.ends_on)
    if await repo.exists_with_code(session, data.code, None):
        raise ProgrammeExists(f"a programme with code {data.code} already exists")
    async with _writing(session, data.code, None):
        repo.add(session, programme)
    return programme


async def update(session: AsyncSession, programme: Programme, patch: ProgrammeUpdate) -> Programme:
    """`programme` must come from `get_for_update`: the totals it is checked against cannot move meanwhile."""
    changes = patch.changes()
    for field in (
        "code",
        "name",
        "positions_target",
        "budget_cents",
        "subsidy_per_position_cents",
        "starts_on",
    ):
        if field in changes and changes[field] is None:
            raise ValidationFailed(f"/{field}", "cannot be null")
    _check_dates(changes.get("starts_on", programme.starts_on), changes.get("ends_on", programme.ends_on))
    if (
        "code" in changes
        and changes["code"] != programme.code
        and await repo.exists_with_code(session, changes["code"], programme.id)
    ):
        raise ProgrammeExists(f"a programme with code {changes['code']} already exists")
    if "positions_target" in changes or "budget_cents" in changes:
        held = await committed(session, programme.id)
        target = changes.get("positions_target", programme.positions_target)
        budget = changes.get("budget_cents", programme.budget_cents)
        if target < held.positions:
            raise ProgrammeBelowCommitted(
                f"agreements already grant {held.positions} positions: positions_target cannot go below",
                extra={"positions_granted": held.positions},
            )
        if budget < held.subsidy_cents:
            raise ProgrammeBelowCommitted(
                f"agreements already commit {held.subsidy_cents} cents: budget_cents cannot go below",
                extra={"subsidy_committed_cents": held.subsidy_cents},
            )
    async with _writing(session, changes.get("code", programme.code), programme.id):
        for field, value in changes.items():
            setattr(programme, field, value)
    return programme
