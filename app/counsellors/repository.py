"""Every query of the counsellors domain, including the batched ones of the HR bulk upsert."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from functools import cache, lru_cache
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Executable,
    Select,
    String,
    Table,
    and_,
    bindparam,
    column,
    exists,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.models import ApiKey
from app.core.auth import Principal
from app.core.columns import ReadColumns
from app.core.direct import prepared
from app.core.pagination import PageRequest, SortKey, fetch_page, parse_datetime, parse_sort, parse_uuid
from app.core.paths import path_startswith
from app.counsellors.models import Counsellor
from app.counsellors.schemas import CounsellorRead
from app.positions.models import TODAY, Assignment, covers
from app.territories.models import Territory

_ID_KEY = SortKey("id", Counsellor.id, parse=parse_uuid)
_SORTS = {
    "created_at": SortKey("created_at", Counsellor.created_at, parse=parse_datetime),
    "updated_at": SortKey("updated_at", Counsellor.updated_at, parse=parse_datetime),
}
TABLE: Table = Counsellor.__table__  # type: ignore[assignment]
# The columns an HR sync writes, compared before writing so that a replay writes nothing.
SYNCED = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "training_label",
    "training_hours",
    "certified_on",
    "pix_level",
)

# What reads select: the read model's columns, with placeholders for the two objects: `training` is made of
# the training columns selected after them (`_nest`), `current_assignment` is filled by the service for a
# whole page at once (`current_assignments`).
READ = ReadColumns(
    CounsellorRead,
    TABLE,
    training=literal(None, String()),
    current_assignment=literal(None, String()),
)
_TRAINING = {
    "label": "training_label",
    "hours": "training_hours",
    "certified_on": "certified_on",
    "pix_level": "pix_level",
}
_READ_COLUMNS = [*READ.columns, *(TABLE.c[column] for column in _TRAINING.values())]


def _nest(row: dict[str, Any]) -> dict[str, Any]:
    row["training"] = {name: row.pop(column) for name, column in _TRAINING.items()}
    return row


@lru_cache(maxsize=256)
def _read_by_id(principal: Principal | None) -> Select[Any]:
    # Hot reads are built once per caller's scope: a statement object reused keeps its compiled form and
    # cache key.
    stmt = select(*_READ_COLUMNS).where(TABLE.c.id == bindparam("counsellor_id"))
    if principal is not None:
        stmt = stmt.where(principal.territory_clause(TABLE.c.territory_id))
    return prepared(stmt)


async def read_row(
    session: AsyncSession, counsellor_id: uuid.UUID, principal: Principal | None
) -> dict[str, Any] | None:
    """The read row of the counsellor if it lies in `principal`'s territories (`None`: anywhere), before
    its current assignment is filled in."""
    row = (await session.execute(_read_by_id(principal), {"counsellor_id": counsellor_id})).first()
    return None if row is None else _nest(row._asdict())


async def read_row_by_ref(
    session: AsyncSession, territory_id: uuid.UUID, external_ref: str, principal: Principal
) -> dict[str, Any] | None:
    """The read row of the employer's counsellor `external_ref`, if the employer lies in the caller's
    territories."""
    stmt = select(*_READ_COLUMNS).where(
        TABLE.c.territory_id == territory_id,
        TABLE.c.external_ref == external_ref,
        principal.territory_clause(TABLE.c.territory_id),
    )
    row = (await session.execute(stmt)).first()
    return None if row is None else _nest(row._asdict())


async def get(
    session: AsyncSession,
    counsellor_id: uuid.UUID,
    principal: Principal | None,
    *,
    for_update: bool = False,
) -> Counsellor | None:
    """The counsellor, if it lies in `principal`'s territories (`None`: anywhere)."""
    stmt = select(Counsellor).where(Counsellor.id == counsellor_id)
    if principal is not None:
        stmt = stmt.where(principal.territory_clause(Counsellor.territory_id))
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_by_ref(
    session: AsyncSession, territory_id: uuid.UUID, external_ref: str, *, for_update: bool = False
) -> Counsellor | None:
    stmt = select(Counsellor).where(
        Counsellor.territory_id == territory_id, Counsellor.external_ref == external_ref
    )
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


# An HR sync's replay in one statement: the employer's path (its scope is checked against the caller's), the
# counsellor of that employer and reference with every column (what `to_read` reads), and its assignment
# covering today; a template, compiled once.
_SYNC_STATE = prepared(
    select(
        Territory.path.label("employer_path"),
        *TABLE.c,
        Assignment.id.label("current_id"),
        Assignment.position_id.label("current_position_id"),
        Assignment.contract_type.label("current_contract_type"),
        Assignment.started_on.label("current_started_on"),
        Assignment.ends_on.label("current_ends_on"),
    )
    .select_from(Territory)
    .outerjoin(
        TABLE,
        and_(
            TABLE.c.territory_id == Territory.id,
            TABLE.c.external_ref == bindparam("external_ref", type_=String()),
        ),
    )
    .outerjoin(Assignment, and_(Assignment.counsellor_id == TABLE.c.id, covers(TODAY)))
    .where(Territory.id == bindparam("territory_id", type_=Territory.id.type))
)


async def sync_state_by_ref(session: AsyncSession, territory_id: uuid.UUID, external_ref: str) -> list[Any]:
    """The employer with its counsellor `external_ref` and that one's current assignment, unlocked (an HR
    sync's replay compares them and writes nothing): no row when there is no such territory; one row, whose
    counsellor columns are null when it has no such counsellor, and whose `current_*` columns are null
    when the counsellor has no assignment covering today."""
    result = await session.execute(_SYNC_STATE, {"territory_id": territory_id, "external_ref": external_ref})
    return list(result.all())


async def external_ref_taken(
    session: AsyncSession, territory_id: uuid.UUID, external_ref: str, exclude_id: uuid.UUID | None
) -> bool:
    clause = and_(Counsellor.territory_id == territory_id, Counsellor.external_ref == external_ref)
    if exclude_id is not None:
        clause = and_(clause, Counsellor.id != exclude_id)
    return bool((await session.execute(select(exists().where(clause)))).scalar())


def list_query(
    principal: Principal,
    *,
    territory_id: uuid.UUID | None = None,
    within_path: str | None = None,
    external_ref: str | None = None,
    updated_since: datetime | None = None,
) -> Select[Counsellor]:
    stmt = select(Counsellor).where(principal.territory_clause(Counsellor.territory_id))
    if territory_id is not None:
        stmt = stmt.where(Counsellor.territory_id == territory_id)
    if within_path is not None:
        subtree = select(Territory.id).where(path_startswith(Territory.path, within_path))
        stmt = stmt.where(Counsellor.territory_id.in_(subtree))
    if external_ref is not None:
        stmt = stmt.where(Counsellor.external_ref == external_ref)
    if updated_since is not None:
        stmt = stmt.where(Counsellor.updated_at >= updated_since)
    return stmt


def sort_keys(sort: str | None) -> list[SortKey]:
    return parse_sort(sort, _SORTS, "created_at", _ID_KEY)


async def list_page(
    session: AsyncSession, page: PageRequest, keys: list[SortKey], stmt: Select[Counsellor]
) -> tuple[Sequence[dict[str, Any]], str | None, int | None]:
    """One page of `stmt` (a `list_query`) as read rows, before their current assignments are filled in:
    one query, one more for the total when asked."""

    def values(c: Any) -> list[object]:
        return [getattr(c, keys[0].name), c.id]

    rows, next_cursor, total = await fetch_page(
        session, stmt.with_only_columns(*_READ_COLUMNS), keys, page, row_values=values, scalars=False
    )
    return [_nest(row) for row in rows], next_cursor, total


@cache
def _current_assignments() -> Executable:
    return prepared(
        select(
            Assignment.counsellor_id,
            Assignment.id,
            Assignment.position_id,
            Assignment.contract_type,
            Assignment.started_on,
            Assignment.ends_on,
        ).where(Assignment.counsellor_id.in_(bindparam("counsellor_ids", expanding=True)), covers(TODAY))
    )


async def current_assignments(
    session: AsyncSession, counsellor_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, Any]]:
    """The assignment covering today of each counsellor that has one, as dicts of
    `CounsellorCurrentAssignment`: one query for a whole page."""
    if not counsellor_ids:
        return {}
    found = {}
    for row in await session.execute(_current_assignments(), {"counsellor_ids": list(counsellor_ids)}):
        current = row._asdict()
        found[current.pop("counsellor_id")] = current
    return found


def add(session: AsyncSession, counsellor: Counsellor) -> None:
    session.add(counsellor)


# --- HR bulk upsert: a constant number of statements per request ----------------------------------------


async def territories_in_scope(
    session: AsyncSession, territory_ids: Iterable[uuid.UUID], principal: Principal
) -> set[uuid.UUID]:
    """Those of `territory_ids` that exist in the caller's scope, kept so until the transaction ends (on
    PostgreSQL, the `FOR KEY SHARE` a foreign key check takes): the inserts that follow cannot fail on a
    territory deleted meanwhile."""
    stmt = (
        select(Territory.id)
        .where(Territory.id.in_(list(territory_ids)), principal.path_clause(Territory.path))
        .with_for_update(read=True, key_share=True)
    )
    return set((await session.execute(stmt)).scalars())


_ROW_COLUMNS = ("id", "territory_id", "external_ref", "version", *SYNCED)


@cache
def _rows_by_ref(postgres: bool) -> Any:
    columns = [TABLE.c[name] for name in _ROW_COLUMNS]
    if postgres:
        # The pairs as two array parameters, joined to the (territory_id, external_ref) index: one
        # statement whatever the number of items, and one index probe per item, whatever the size of the
        # employer (a list of values in a generic plan was compared with each of the employer's rows).
        keys = func.unnest(
            bindparam("territory_ids", type_=ARRAY(TABLE.c.territory_id.type)),
            bindparam("refs", type_=ARRAY(TABLE.c.external_ref.type)),
        ).table_valued(
            column("territory_id", TABLE.c.territory_id.type),
            column("external_ref", TABLE.c.external_ref.type),
            name="keys",
        )
        keys = keys.render_derived()
        on = and_(TABLE.c.territory_id == keys.c.territory_id, TABLE.c.external_ref == keys.c.external_ref)
        return prepared(select(*columns).select_from(keys.join(TABLE, on)))
    return select(*columns).where(
        tuple_(TABLE.c.territory_id, TABLE.c.external_ref).in_(bindparam("keys", expanding=True))
    )


async def rows_by_ref(
    session: AsyncSession, keys: Iterable[tuple[uuid.UUID, str]]
) -> dict[tuple[uuid.UUID, str], dict[str, Any]]:
    """The existing counsellors with these (territory, external_ref) pairs, without a lock: a replay that
    changes nothing stays a pure read."""
    pairs = list(keys)
    if not pairs:
        return {}
    postgres = session.get_bind().dialect.name == "postgresql"
    params: dict[str, Any] = (
        {"territory_ids": [t for t, _ in pairs], "refs": [r for _, r in pairs]}
        if postgres
        else {"keys": pairs}
    )
    rows = await session.execute(_rows_by_ref(postgres), params)
    return {(row.territory_id, row.external_ref): row._asdict() for row in rows}


async def lock_rows(session: AsyncSession, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """These counsellors, locked until the transaction ends and read again (their latest committed state),
    in id order."""
    stmt = (
        select(*(TABLE.c[name] for name in _ROW_COLUMNS))
        .where(TABLE.c.id.in_(list(ids)))
        .order_by(TABLE.c.id)
        .with_for_update()
    )
    return {row.id: row._asdict() for row in await session.execute(stmt)}


async def insert_new(session: AsyncSession, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
    """Inserts the rows (ids given), skipping any whose (territory, external_ref) another transaction
    inserted meanwhile; returns the ids actually inserted."""
    if not rows:
        return set()
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    stmt = (
        module.insert(TABLE)
        .on_conflict_do_nothing(index_elements=["territory_id", "external_ref"])
        .returning(TABLE.c.id)
    )
    result = await session.execute(stmt, rows)
    return set(result.scalars())


async def update_many(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Updates rows by id (each dict has `b_id` and the new values of SYNCED, `version`, `updated_at`)."""
    if not rows:
        return
    stmt = (
        update(TABLE)
        .where(TABLE.c.id == bindparam("b_id"))
        .values({name: bindparam(f"b_{name}") for name in (*SYNCED, "version", "updated_at")})
    )
    await session.execute(stmt, [{f"b_{k}": v for k, v in row.items()} for row in rows])


# --- retention (app.personal_data) ---------------------------------------------------------------------


def _retention_due(ended_before: date, changed_before: datetime) -> ColumnElement[bool]:
    """Not anonymised; no assignment that lasts, is to come or ended on or after `ended_before`; and, never
    assigned, unchanged since before `changed_before`."""
    recent = exists().where(
        Assignment.counsellor_id == Counsellor.id,
        or_(Assignment.ended_on.is_(None), Assignment.ended_on >= ended_before),
    )
    assigned = exists().where(Assignment.counsellor_id == Counsellor.id)
    return and_(
        Counsellor.anonymized_at.is_(None),
        ~recent,
        or_(assigned, Counsellor.updated_at < changed_before),
    )


async def retention_due(
    session: AsyncSession, ended_before: date, changed_before: datetime, only: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """The counsellors past retention (`_retention_due`), or whether `only` is one of them."""
    stmt = select(Counsellor.id).where(_retention_due(ended_before, changed_before)).order_by(Counsellor.id)
    if only is not None:
        stmt = stmt.where(Counsellor.id == only)
    return list((await session.execute(stmt)).scalars())


async def assignments_of(session: AsyncSession, counsellor_id: uuid.UUID) -> list[Assignment]:
    stmt = (
        select(Assignment)
        .where(Assignment.counsellor_id == counsellor_id)
        .order_by(Assignment.started_on, Assignment.id)
    )
    return list((await session.execute(stmt)).scalars())


async def open_keys_of(session: AsyncSession, counsellor_id: uuid.UUID) -> list[ApiKey]:
    """The API keys bound to the counsellor that are not revoked, locked (their revocation is written in
    the caller's transaction, its audit events with it)."""
    stmt = (
        select(ApiKey)
        .where(ApiKey.counsellor_id == counsellor_id, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.created_at, ApiKey.id)
        .with_for_update()
    )
    return list((await session.execute(stmt)).scalars())
