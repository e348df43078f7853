"""Every query of the positions domain (positions and assignments)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from functools import cache, lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Executable,
    Select,
    String,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.agreements.models import Agreement
from app.core.auth import Principal
from app.core.columns import ReadColumns
from app.core.direct import prepared
from app.core.pagination import (
    PageRequest,
    SortKey,
    fetch_page,
    parse_date,
    parse_datetime,
    parse_sort,
    parse_uuid,
)
from app.core.paths import bound_path_startswith, path_startswith, prefix_params
from app.positions.models import TODAY, Assignment, Position, PositionStatus, covers, overlaps
from app.positions.schemas import AssignmentRead, PositionRead
from app.territories.models import Territory

_ID_KEY = SortKey("id", Position.id, parse=parse_uuid)
_SORTS = {
    "created_at": SortKey("created_at", Position.created_at, parse=parse_datetime),
    "updated_at": SortKey("updated_at", Position.updated_at, parse=parse_datetime),
}
_ASSIGNMENT_ID_KEY = SortKey("id", Assignment.id, parse=parse_uuid)
_ASSIGNMENT_SORTS = {
    "started_on": SortKey("started_on", Assignment.started_on, parse=parse_date),
    "created_at": SortKey("created_at", Assignment.created_at, parse=parse_datetime),
}


# What reads select: the read models' columns, the derived ones as SQL. A position's `current_assignment`
# is a placeholder that the service fills for a whole page at once (`current_assignments`), for the roles
# that may read it.
READ = ReadColumns(
    PositionRead,
    Position.__table__,
    status=case(
        (Position.closed_on.is_not(None), literal(PositionStatus.closed.value)),
        (
            exists().where(Assignment.position_id == Position.id, covers(TODAY)),
            literal(PositionStatus.occupied.value),
        ),
        else_=literal(PositionStatus.vacant.value),
    ),
    current_assignment=literal(None, String()),
)
ASSIGNMENT_READ = ReadColumns(
    AssignmentRead, Assignment.__table__, active=case((covers(TODAY), literal(True)), else_=literal(False))
)
_CURRENT_COLUMNS = (
    Assignment.id,
    Assignment.counsellor_id,
    Assignment.contract_type,
    Assignment.started_on,
    Assignment.ends_on,
)


def occupied(day: date | ColumnElement[date]) -> ColumnElement[bool]:
    """The position is open and an assignment covers `day`: one EXISTS on (position_id, started_on)."""
    return and_(
        Position.closed_on.is_(None),
        exists().where(Assignment.position_id == Position.id, covers(day)),
    )


def status_clause(status: PositionStatus, day: date | ColumnElement[date]) -> ColumnElement[bool]:
    if status is PositionStatus.closed:
        return Position.closed_on.is_not(None)
    if status is PositionStatus.occupied:
        return occupied(day)
    return and_(
        Position.closed_on.is_(None),
        ~exists().where(Assignment.position_id == Position.id, covers(day)),
    )


@lru_cache(maxsize=256)
def _in_scope(principal: Principal) -> ColumnElement[bool]:
    """The caller's scope on positions, built once per caller for the hot reads (a subquery of its
    territories)."""
    return principal.territory_clause(Position.territory_id)


async def get(
    session: AsyncSession, position_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> Position | None:
    stmt = select(Position).where(
        Position.id == position_id, principal.territory_clause(Position.territory_id)
    )
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


def list_query(
    principal: Principal,
    *,
    agreement_id: uuid.UUID | None = None,
    territory_id: uuid.UUID | None = None,
    within_path: str | None = None,
    status: PositionStatus | None = None,
    external_ref: str | None = None,
    updated_since: datetime | None = None,
) -> Select[Any]:
    """The positions the caller may read that match the filters, the status as of today (UTC, bound when
    the statement runs), every other filter's value a bound parameter (`list_params`): only which filters
    are given, and the status asked, shape the statement."""
    stmt = select(Position).where(_in_scope(principal))
    if agreement_id is not None:
        stmt = stmt.where(Position.agreement_id == bindparam("f_agreement_id"))
    if territory_id is not None:
        stmt = stmt.where(Position.territory_id == bindparam("f_territory_id"))
    if within_path is not None:
        subtree = select(Territory.id).where(bound_path_startswith(Territory.path, "f_within"))
        stmt = stmt.where(Position.territory_id.in_(subtree))
    if status is not None:
        stmt = stmt.where(status_clause(status, TODAY))
    if external_ref is not None:
        stmt = stmt.where(Position.external_ref == bindparam("f_external_ref"))
    if updated_since is not None:
        stmt = stmt.where(Position.updated_at >= bindparam("f_updated_since"))
    return stmt


def list_params(
    *,
    agreement_id: uuid.UUID | None = None,
    territory_id: uuid.UUID | None = None,
    within_path: str | None = None,
    status: PositionStatus | None = None,
    external_ref: str | None = None,
    updated_since: datetime | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "f_agreement_id": agreement_id,
        "f_territory_id": territory_id,
        "f_external_ref": external_ref,
        "f_updated_since": updated_since,
    }
    if within_path is not None:
        params.update(prefix_params("f_within", within_path))
    return params


def sort_keys(sort: str | None) -> list[SortKey]:
    return parse_sort(sort, _SORTS, "created_at", _ID_KEY)


async def is_visible(session: AsyncSession, position_id: uuid.UUID, principal: Principal) -> bool:
    stmt = select(Position.id).where(
        Position.id == position_id, principal.territory_clause(Position.territory_id)
    )
    return (await session.execute(stmt)).first() is not None


@lru_cache(maxsize=256)
def _read_by_id(principal: Principal) -> Select[Any]:
    # Hot reads are built once per caller's scope: a statement object reused keeps its compiled form and
    # cache key.
    return prepared(
        select(*READ.columns).where(Position.id == bindparam("position_id"), _in_scope(principal))
    )


async def read_row(session: AsyncSession, position_id: uuid.UUID, principal: Principal) -> Any:
    """The read columns of one position the caller may read, or None."""
    return (await session.execute(_read_by_id(principal), {"position_id": position_id})).first()


async def list_page(
    session: AsyncSession,
    page: PageRequest,
    keys: list[SortKey],
    principal: Principal,
    *,
    agreement_id: uuid.UUID | None = None,
    territory_id: uuid.UUID | None = None,
    within_path: str | None = None,
    status: PositionStatus | None = None,
    external_ref: str | None = None,
    updated_since: datetime | None = None,
) -> tuple[Sequence[dict[str, Any]], str | None, int | None]:
    """One page of the positions the caller may read that match the filters (`list_query`), as dicts of
    `READ`: one query, one more for the total.

    The statement is a template per caller's scope, filters given, status and order, built once
    (`fetch_page`); the filters' values are bound parameters."""
    filters: dict[str, Any] = {
        "agreement_id": agreement_id,
        "territory_id": territory_id,
        "within_path": within_path,
        "status": status,
        "external_ref": external_ref,
        "updated_since": updated_since,
    }
    template = (
        "positions",
        principal,
        tuple(name for name, value in filters.items() if value is not None),
        status,
        tuple((k.name, k.desc) for k in keys),
    )

    def build() -> Select[Any]:
        return list_query(principal, **filters).with_only_columns(*READ.columns)

    def values(p: Any) -> list[object]:
        return [getattr(p, keys[0].name), p.id]

    return await fetch_page(
        session,
        build,
        keys,
        page,
        row_values=values,
        scalars=False,
        template=template,
        params=list_params(**filters),
    )


@cache
def _current_assignments() -> Executable:
    return prepared(
        select(Assignment.position_id, *_CURRENT_COLUMNS).where(
            Assignment.position_id.in_(bindparam("position_ids", expanding=True)), covers(TODAY)
        )
    )


async def current_assignments(
    session: AsyncSession, position_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, Any]]:
    """The assignment covering today of each position that has one (at most one by the rules), as dicts of
    `PositionCurrentAssignment`: one query for a whole page."""
    if not position_ids:
        return {}
    found = {}
    for row in await session.execute(_current_assignments(), {"position_ids": list(position_ids)}):
        current = row._asdict()
        found[current.pop("position_id")] = current
    return found


async def count_open(session: AsyncSession, agreement_id: uuid.UUID) -> int:
    stmt = select(func.count()).where(Position.agreement_id == agreement_id, Position.closed_on.is_(None))
    return int((await session.execute(stmt)).scalar_one())


async def external_ref_taken(
    session: AsyncSession, agreement_territory_id: uuid.UUID, external_ref: str, exclude_id: uuid.UUID | None
) -> bool:
    clause = and_(
        Position.agreement_territory_id == agreement_territory_id, Position.external_ref == external_ref
    )
    if exclude_id is not None:
        clause = and_(clause, Position.id != exclude_id)
    return bool((await session.execute(select(exists().where(clause)))).scalar())


async def position_has_overlap(
    session: AsyncSession,
    position_id: uuid.UUID,
    started_on: date,
    ended_on: date | None,
    exclude_id: uuid.UUID | None = None,
) -> bool:
    clause = and_(Assignment.position_id == position_id, overlaps(started_on, ended_on))
    if exclude_id is not None:
        clause = and_(clause, Assignment.id != exclude_id)
    return bool((await session.execute(select(exists().where(clause)))).scalar())


async def counsellor_has_overlap(
    session: AsyncSession, counsellor_id: uuid.UUID, started_on: date, ended_on: date | None
) -> bool:
    clause = and_(Assignment.counsellor_id == counsellor_id, overlaps(started_on, ended_on))
    return bool((await session.execute(select(exists().where(clause)))).scalar())


async def agreement_period(session: AsyncSession, agreement_id: uuid.UUID) -> tuple[date, date | None]:
    """The agreement's `starts_on` and `ends_on` (fixed once it is signed: read without a lock)."""
    stmt = select(Agreement.starts_on, Agreement.ends_on).where(Agreement.id == agreement_id)
    starts_on, ends_on = (await session.execute(stmt)).one()
    return starts_on, ends_on


async def first_started_on(session: AsyncSession, position_id: uuid.UUID) -> date | None:
    """The earliest `started_on` of the position's assignments (None when it never had one)."""
    stmt = select(func.min(Assignment.started_on)).where(Assignment.position_id == position_id)
    first: date | None = (await session.execute(stmt)).scalar_one()
    return first


async def runs_past(session: AsyncSession, position_id: uuid.UUID, day: date) -> bool:
    """Whether an assignment of the position covers a day after `day`."""
    clause = and_(
        Assignment.position_id == position_id,
        (Assignment.ended_on.is_(None)) | (Assignment.ended_on > day),
    )
    return bool((await session.execute(select(exists().where(clause)))).scalar())


def add(session: AsyncSession, row: Position | Assignment) -> None:
    session.add(row)


# --- assignments ---------------------------------------------------------------------------------------


async def get_assignment(
    session: AsyncSession, assignment_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> Assignment | None:
    """The assignment if its position lies in the caller's territories."""
    stmt = (
        select(Assignment)
        .join(Position, Position.id == Assignment.position_id)
        .where(Assignment.id == assignment_id, principal.territory_clause(Position.territory_id))
    )
    if for_update:
        stmt = stmt.with_for_update(of=Assignment).execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


def assignments_query(
    principal: Principal,
    day: date,
    *,
    position_id: uuid.UUID | None = None,
    counsellor_id: uuid.UUID | None = None,
    territory_id: uuid.UUID | None = None,
    within_path: str | None = None,
    active: bool | None = None,
) -> Select[Assignment]:
    stmt = select(Assignment)
    if not principal.is_admin or territory_id is not None or within_path is not None:
        stmt = stmt.join(Position, Position.id == Assignment.position_id).where(
            principal.territory_clause(Position.territory_id)
        )
        if territory_id is not None:
            stmt = stmt.where(Position.territory_id == territory_id)
        if within_path is not None:
            subtree = select(Territory.id).where(path_startswith(Territory.path, within_path))
            stmt = stmt.where(Position.territory_id.in_(subtree))
    if position_id is not None:
        stmt = stmt.where(Assignment.position_id == position_id)
    if counsellor_id is not None:
        stmt = stmt.where(Assignment.counsellor_id == counsellor_id)
    if active is True:
        stmt = stmt.where(covers(day))
    elif active is False:
        stmt = stmt.where(~covers(day))
    return stmt


def assignment_sort_keys(sort: str | None) -> list[SortKey]:
    return parse_sort(sort, _ASSIGNMENT_SORTS, "started_on", _ASSIGNMENT_ID_KEY)


async def read_assignment_row(session: AsyncSession, assignment_id: uuid.UUID, principal: Principal) -> Any:
    """The read columns of the assignment if its position lies in the caller's territories, or None."""
    stmt = (
        select(*ASSIGNMENT_READ.columns)
        .join(Position, Position.id == Assignment.position_id)
        .where(Assignment.id == assignment_id, principal.territory_clause(Position.territory_id))
    )
    return (await session.execute(stmt)).first()


async def assignments_page(
    session: AsyncSession, page: PageRequest, keys: list[SortKey], stmt: Select[Assignment]
) -> tuple[Sequence[dict[str, Any]], str | None, int | None]:
    """One page of `stmt` (an `assignments_query`) as dicts of `ASSIGNMENT_READ`."""

    def values(a: Any) -> list[object]:
        return [getattr(a, keys[0].name), a.id]

    return await fetch_page(
        session,
        stmt.with_only_columns(*ASSIGNMENT_READ.columns),
        keys,
        page,
        row_values=values,
        scalars=False,
    )
