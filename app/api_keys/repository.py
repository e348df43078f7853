"""Every query of the API keys domain."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import BindParameter, Executable, Select, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.api_keys.models import ApiKey, api_key_territories
from app.core.direct import prepared
from app.core.pagination import PageRequest, SortKey, fetch_page, parse_uuid
from app.territories.models import Territory

# Ids are UUID v7, time-ordered: descending id is newest first.
_NEWEST_FIRST = [SortKey("id", ApiKey.id, desc=True, parse=parse_uuid)]


def list_query(role: str | None, include_revoked: bool) -> Select[ApiKey]:
    stmt = select(ApiKey).options(selectinload(ApiKey.territories))
    if role is not None:
        stmt = stmt.where(ApiKey.role == role)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return stmt


async def list_page(
    session: AsyncSession, page: PageRequest, *, role: str | None, include_revoked: bool
) -> tuple[Sequence[ApiKey], str | None, int | None]:
    """One page of keys, newest first, with their territories (a constant number of queries)."""
    return await fetch_page(
        session, list_query(role, include_revoked), _NEWEST_FIRST, page, row_values=lambda k: [k.id]
    )


async def get(session: AsyncSession, key_id: uuid.UUID, *, lock: bool = False) -> ApiKey | None:
    """The key; with `lock`, its row locked until the transaction ends (PostgreSQL: two rotations of one
    key run one after the other, so that neither hands out a secret the other replaced unseen)."""
    stmt = select(ApiKey).where(ApiKey.id == key_id).options(selectinload(ApiKey.territories))
    if lock:
        stmt = stmt.with_for_update(of=ApiKey)
    return (await session.execute(stmt)).scalar_one_or_none()


@cache
def _by_secret_hash() -> Executable:
    # Run on every authenticated request: built once, and `prepared` so that the direct path finds its
    # compiled form by the object itself, without computing its cache key on every request. A key is found by
    # its secret or, during a rotation's grace period, by the secret it replaced (both columns unique).
    secret_hash: BindParameter[str] = bindparam("secret_hash")
    return prepared(
        select(
            ApiKey.id,
            ApiKey.name,
            ApiKey.role,
            ApiKey.counsellor_id,
            ApiKey.expires_at,
            ApiKey.revoked_at,
            ApiKey.secret_hash,
            ApiKey.previous_secret_expires_at,
            ApiKey.rotated_at,
            ApiKey.last_used_at,
            Territory.id.label("territory_id"),
            Territory.path.label("territory_path"),
        )
        .select_from(ApiKey)
        .outerjoin(api_key_territories, api_key_territories.c.api_key_id == ApiKey.id)
        .outerjoin(Territory, Territory.id == api_key_territories.c.territory_id)
        .where(or_(ApiKey.secret_hash == secret_hash, ApiKey.previous_secret_hash == secret_hash))
    )


async def find_by_secret_hash(session: AsyncSession, secret_hash: str) -> list[Any]:
    """The key (found by its secret, or by the one its last rotation replaced: `secret_hash` tells which)
    and its territories in one round trip: one row per territory (one row, with null territory
    columns, for a key without territories); no row for an unknown key."""
    return list((await session.execute(_by_secret_hash(), {"secret_hash": secret_hash})).all())


async def any_admin(session: AsyncSession) -> bool:
    stmt = select(ApiKey.id).where(ApiKey.role == "admin", ApiKey.revoked_at.is_(None)).limit(1)
    return (await session.execute(stmt)).first() is not None


def add(session: AsyncSession, key: ApiKey) -> None:
    session.add(key)


async def of_counsellor(session: AsyncSession, counsellor_id: uuid.UUID) -> list[ApiKey]:
    """The keys bound to a counsellor (revoked ones too), oldest first, with their territories."""
    stmt = (
        select(ApiKey)
        .where(ApiKey.counsellor_id == counsellor_id)
        .options(selectinload(ApiKey.territories))
        .order_by(ApiKey.created_at, ApiKey.id)
    )
    return list((await session.execute(stmt)).scalars())


async def touch(session: AsyncSession, key_id: uuid.UUID, now: datetime, older_than: datetime) -> None:
    """`last_used_at = now` unless another request (another worker's) already set it after `older_than`."""
    await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < older_than))
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
