"""Every query of the agreements domain (agreements and amendments)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from functools import cache, lru_cache
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.agreements.models import LIVE_STATUSES, Agreement, Amendment
from app.agreements.schemas import AgreementRead
from app.core.auth import Principal
from app.core.columns import ReadColumns
from app.core.direct import prepared
from app.core.pagination import PageRequest, SortKey, fetch_page, parse_datetime, parse_sort, parse_uuid
from app.core.paths import bound_path_startswith, prefix_params
from app.positions.models import TODAY, Assignment, Position, covers
from app.programmes.models import Programme
from app.territories.models import Territory

_ID_KEY = SortKey("id", Agreement.id, parse=parse_uuid)
_SORTS = {
    "created_at": SortKey("created_at", Agreement.created_at, parse=parse_datetime),
    "reference": SortKey("reference", Agreement.reference),
}
# Amendments list in creation order, without a choice of sort.
_AMENDMENT_KEYS = [
    SortKey("created_at", Amendment.created_at, parse=parse_datetime),
    SortKey("id", Amendment.id, parse=parse_uuid),
]


# What reads select: the read model's columns, the position counts as correlated subqueries (one index
# range of `ix_positions_agreement_id_closed_on` per agreement) that count as `position_counts` does: open,
# not closed; occupied, open with an assignment covering today (UTC, bound when the statement runs).
_TABLE = Agreement.__table__
_OPEN = and_(Position.agreement_id == _TABLE.c.id, Position.closed_on.is_(None))
READ = ReadColumns(
    AgreementRead,
    _TABLE,
    subsidy_total_cents=_TABLE.c.positions_granted * _TABLE.c.subsidy_per_position_cents,
    positions_open=select(func.count()).where(_OPEN).scalar_subquery(),
    positions_occupied=select(func.count())
    .where(_OPEN, exists().where(Assignment.position_id == Position.id, covers(TODAY)))
    .scalar_subquery(),
)


@lru_cache(maxsize=256)
def _in_scope(principal: Principal) -> ColumnElement[bool]:
    """The caller's scope on agreements, built once per caller for the hot reads (a subquery of its
    territories)."""
    return principal.territory_clause(Agreement.territory_id)


@lru_cache(maxsize=256)
def _read_by_id(principal: Principal) -> Select[Any]:
    # Hot reads are built once per caller's scope: a statement object reused keeps its compiled form and
    # cache key.
    return prepared(
        select(*READ.columns).where(Agreement.id == bindparam("agreement_id"), _in_scope(principal))
    )


async def read_row(session: AsyncSession, agreement_id: uuid.UUID, principal: Principal) -> Any:
    """The read columns of one agreement the caller may read, or None."""
    return (await session.execute(_read_by_id(principal), {"agreement_id": agreement_id})).first()


async def get(
    session: AsyncSession, agreement_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> Agreement | None:
    stmt = select(Agreement).where(
        Agreement.id == agreement_id, principal.territory_clause(Agreement.territory_id)
    )
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_by_reference(session: AsyncSession, reference: str) -> Agreement | None:
    stmt = select(Agreement).where(Agreement.reference == reference).order_by(Agreement.created_at).limit(1)
    return (await session.execute(stmt)).scalar_one_or_none()


async def exists_with_reference(
    session: AsyncSession, programme_id: uuid.UUID, reference: str, exclude_id: uuid.UUID | None
) -> bool:
    clause = (Agreement.programme_id == programme_id) & (Agreement.reference == reference)
    if exclude_id is not None:
        clause = clause & (Agreement.id != exclude_id)
    return bool((await session.execute(select(exists().where(clause)))).scalar())


def list_query(
    principal: Principal,
    *,
    programme_id: uuid.UUID | None = None,
    territory_id: uuid.UUID | None = None,
    within_path: str | None = None,
    status: str | None = None,
    kind: str | None = None,
) -> Select[Any]:
    """The agreements the caller may read that match the filters, every filter's value a bound parameter
    (`list_params`): only which filters are given shapes the statement."""
    stmt = select(Agreement).where(_in_scope(principal))
    if programme_id is not None:
        stmt = stmt.where(Agreement.programme_id == bindparam("f_programme_id"))
    if territory_id is not None:
        stmt = stmt.where(Agreement.territory_id == bindparam("f_territory_id"))
    if within_path is not None:
        subtree = select(Territory.id).where(bound_path_startswith(Territory.path, "f_within"))
        stmt = stmt.where(Agreement.territory_id.in_(subtree))
    if status is not None:
        stmt = stmt.where(Agreement.status == bindparam("f_status"))
    if kind is not None:
        stmt = stmt.where(Agreement.kind == bindparam("f_kind"))
    return stmt


def list_params(
    *,
    programme_id: uuid.UUID | None = None,
    territory_id: uuid.UUID | None = None,
    within_path: str | None = None,
    status: str | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "f_programme_id": programme_id,
        "f_territory_id": territory_id,
        "f_status": status,
        "f_kind": kind,
    }
    if within_path is not None:
        params.update(prefix_params("f_within", within_path))
    return params


def sort_keys(sort: str | None) -> list[SortKey]:
    """`created_at` (the default) or `reference`, `-` to reverse, then the id; 422 for any other value."""
    return parse_sort(sort, _SORTS, "created_at", _ID_KEY)


async def list_page(
    session: AsyncSession,
    page: PageRequest,
    keys: list[SortKey],
    principal: Principal,
    *,
    programme_id: uuid.UUID | None = None,
    territory_id: uuid.UUID | None = None,
    within_path: str | None = None,
    status: str | None = None,
    kind: str | None = None,
) -> tuple[Sequence[dict[str, Any]], str | None, int | None]:
    """One page of the agreements the caller may read that match the filters (`list_query`), in the order
    of `keys` (from `sort_keys`), as dicts of `READ`: one query, and one more for the total when asked.

    The statement is a template per caller's scope, filters given and order, built once (`fetch_page`);
    the filters' values are bound parameters."""
    filters: dict[str, Any] = {
        "programme_id": programme_id,
        "territory_id": territory_id,
        "within_path": within_path,
        "status": status,
        "kind": kind,
    }
    template = (
        "agreements",
        principal,
        tuple(name for name, value in filters.items() if value is not None),
        tuple((k.name, k.desc) for k in keys),
    )

    def build() -> Select[Any]:
        return list_query(principal, **filters).with_only_columns(*READ.columns)

    def values(a: Any) -> list[object]:
        return [getattr(a, keys[0].name), a.id]

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


async def lock_territory(session: AsyncSession, territory_id: uuid.UUID) -> bool:
    """Whether the territory exists, and on PostgreSQL keeps it so until the transaction ends.

    `FOR KEY SHARE` is the lock a foreign key check takes: a DELETE of the territory waits for this
    transaction (then fails on the new reference) instead of slipping in between the check and the INSERT,
    while updates of the territory's other columns go on. SQLite ignores it: its writers already run one at
    a time."""
    stmt = select(Territory.id).where(Territory.id == territory_id).with_for_update(read=True, key_share=True)
    return (await session.execute(stmt)).scalar_one_or_none() is not None


def add(session: AsyncSession, row: Agreement | Amendment) -> None:
    session.add(row)


def amendments_query(agreement_id: uuid.UUID) -> Select[Amendment]:
    return select(Amendment).where(Amendment.agreement_id == agreement_id)


async def amendments_page(
    session: AsyncSession, agreement_id: uuid.UUID, page: PageRequest
) -> tuple[Sequence[Amendment], str | None, int | None]:
    """One page of an agreement's amendments, oldest first."""
    return await fetch_page(
        session,
        amendments_query(agreement_id),
        _AMENDMENT_KEYS,
        page,
        row_values=lambda a: [a.created_at, a.id],
    )


async def get_amendment(
    session: AsyncSession, agreement_id: uuid.UUID, amendment_id: uuid.UUID
) -> Amendment | None:
    stmt = select(Amendment).where(Amendment.id == amendment_id, Amendment.agreement_id == agreement_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def position_counts(
    session: AsyncSession, agreement_ids: Sequence[uuid.UUID], day: date
) -> dict[uuid.UUID, tuple[int, int]]:
    """(open, occupied) positions per agreement that has open positions, in one query."""
    if not agreement_ids:
        return {}
    covered = exists().where(Assignment.position_id == Position.id, covers(day))
    stmt = (
        select(Position.agreement_id, func.count(), func.sum(case((covered, 1), else_=0)))
        .where(Position.agreement_id.in_(list(agreement_ids)), Position.closed_on.is_(None))
        .group_by(Position.agreement_id)
    )
    return {row[0]: (int(row[1]), int(row[2] or 0)) for row in await session.execute(stmt)}


async def lock_open_positions(session: AsyncSession, agreement_id: uuid.UUID) -> list[Position]:
    """The agreement's open positions, locked (after the agreement, before any counsellor: the shared lock
    order), in id order."""
    stmt = (
        select(Position)
        .where(Position.agreement_id == agreement_id, Position.closed_on.is_(None))
        .order_by(Position.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(stmt)).scalars())


# --- creating and signing: Core statements built once (the direct path runs them on the driver) ----------

_AGREEMENTS = cast(Table, Agreement.__table__)
_PROGRAMMES = cast(Table, Programme.__table__)


@cache
def _reserve_programme() -> Any:
    p = _PROGRAMMES.c
    return prepared(
        update(_PROGRAMMES)
        .where(p.id == bindparam("programme_id", type_=p.id.type))
        .values(version=p.version + 1, updated_at=bindparam("updated_at", type_=p.updated_at.type))
        .returning(p.id, p.positions_target, p.budget_cents, p.subsidy_per_position_cents)
    )


async def reserve_programme(session: AsyncSession, programme_id: uuid.UUID, now: datetime) -> Any:
    """The programme's figures, its row locked until the end of the transaction and its version moved on
    (its committed totals are about to change, and so its representation); None if there is none.

    One UPDATE both locks and bumps: the lock is the first statement of every write that changes what a
    programme commits, so such writes run one at a time per programme, and the statements after it see
    every agreement committed before it."""
    params = {"programme_id": programme_id, "updated_at": now}
    return (await session.execute(_reserve_programme(), params)).first()


@lru_cache(maxsize=256)
def _creation_checks(principal: Principal) -> Any:
    a = _AGREEMENTS.c
    t = cast(Table, Territory.__table__).c
    programme_id = bindparam("programme_id", type_=a.programme_id.type)
    reference = bindparam("reference", type_=a.reference.type)
    live = and_(a.programme_id == programme_id, a.status.in_(LIVE_STATUSES))
    territory = (
        select(t.id)
        .where(t.id == bindparam("territory_id", type_=t.id.type), principal.path_clause(t.path))
        .with_for_update(read=True, key_share=True)
        .scalar_subquery()
    )
    return prepared(
        select(
            territory.label("territory_id"),
            exists().where(a.programme_id == programme_id, a.reference == reference).label("reference_taken"),
            select(func.coalesce(func.sum(a.positions_granted), 0))
            .where(live)
            .scalar_subquery()
            .label("positions"),
            select(func.coalesce(func.sum(a.positions_granted * a.subsidy_per_position_cents), 0))
            .where(live)
            .scalar_subquery()
            .label("subsidy_cents"),
        )
    )


async def creation_checks(
    session: AsyncSession,
    principal: Principal,
    programme_id: uuid.UUID,
    territory_id: uuid.UUID,
    reference: str,
) -> Any:
    """What creating an agreement checks, in one statement run under the programme's lock: the territory
    if it lies in the caller's scope (None otherwise), kept until the transaction ends (`FOR KEY SHARE`, the
    lock a foreign key check takes, so that a DELETE cannot slip in before the INSERT; SQLite ignores it, its
    writers already run one at a time); whether the programme already has this reference; and what the
    programme's live agreements commit (positions, subsidy cents)."""
    params = {"programme_id": programme_id, "territory_id": territory_id, "reference": reference}
    return (await session.execute(_creation_checks(principal), params)).one()


@cache
def _insert_agreement() -> Any:
    return prepared(
        insert(_AGREEMENTS).values({c.name: bindparam(c.name, type_=c.type) for c in _AGREEMENTS.columns})
    )


async def insert_agreement(session: AsyncSession, values: dict[str, Any]) -> None:
    """A new agreement, every column given."""
    await session.execute(_insert_agreement(), values)


@lru_cache(maxsize=256)
def _lock_agreement(principal: Principal) -> Any:
    a = _AGREEMENTS.c
    return prepared(
        select(a.id, a.territory_id, a.status, a.version)
        .where(a.id == bindparam("agreement_id", type_=a.id.type), _in_scope(principal))
        .with_for_update(of=_AGREEMENTS)
    )


async def lock_agreement(session: AsyncSession, agreement_id: uuid.UUID, principal: Principal) -> Any:
    """The state of an agreement the caller may see, its row locked until the end of the transaction."""
    return (await session.execute(_lock_agreement(principal), {"agreement_id": agreement_id})).first()


@cache
def _sign() -> Any:
    a = _AGREEMENTS.c
    return prepared(
        update(_AGREEMENTS)
        .where(a.id == bindparam("agreement_id", type_=a.id.type))
        .values(
            status="signed",
            signed_on=bindparam("signed_on", type_=a.signed_on.type),
            version=a.version + 1,
            updated_at=bindparam("updated_at", type_=a.updated_at.type),
        )
        .returning(*_AGREEMENTS.columns)
    )


async def sign(session: AsyncSession, agreement_id: uuid.UUID, signed_on: date, now: datetime) -> Any:
    """draft → signed; returns the agreement's row as it now is."""
    params = {"agreement_id": agreement_id, "signed_on": signed_on, "updated_at": now}
    return (await session.execute(_sign(), params)).one()
