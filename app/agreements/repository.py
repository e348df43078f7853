"""Every query of the agreements domain (agreements and amendments)."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.agreements.models import Agreement, Amendment
from app.core.auth import Principal
from app.core.paths import path_startswith
from app.territories.models import Territory


async def get(
    session: AsyncSession, agreement_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> Agreement | None:
    stmt = select(Agreement).where(
        Agreement.id == agreement_id, principal.territory_clause(Agreement.territory_id)
    )
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
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
) -> Select[Agreement]:
    stmt = select(Agreement).where(principal.territory_clause(Agreement.territory_id))
    if programme_id is not None:
        stmt = stmt.where(Agreement.programme_id == programme_id)
    if territory_id is not None:
        stmt = stmt.where(Agreement.territory_id == territory_id)
    if within_path is not None:
        subtree = select(Territory.id).where(path_startswith(Territory.path, within_path))
        stmt = stmt.where(Agreement.territory_id.in_(subtree))
    if status is not None:
        stmt = stmt.where(Agreement.status == status)
    if kind is not None:
        stmt = stmt.where(Agreement.kind == kind)
    return stmt


def add(session: AsyncSession, row: Agreement | Amendment) -> None:
    session.add(row)


def amendments_query(agreement_id: uuid.UUID) -> Select[Amendment]:
    return select(Amendment).where(Amendment.agreement_id == agreement_id)


async def get_amendment(
    session: AsyncSession, agreement_id: uuid.UUID, amendment_id: uuid.UUID
) -> Amendment | None:
    stmt = select(Amendment).where(Amendment.id == amendment_id, Amendment.agreement_id == agreement_id)
    return (await session.execute(stmt)).scalar_one_or_none()
