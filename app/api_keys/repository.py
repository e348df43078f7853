"""Every query of the API keys domain."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.api_keys.models import ApiKey


def list_query(role: str | None, include_revoked: bool) -> Select[ApiKey]:
    stmt = select(ApiKey).options(selectinload(ApiKey.territories))
    if role is not None:
        stmt = stmt.where(ApiKey.role == role)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return stmt


async def get(session: AsyncSession, key_id: uuid.UUID) -> ApiKey | None:
    stmt = select(ApiKey).where(ApiKey.id == key_id).options(selectinload(ApiKey.territories))
    return (await session.execute(stmt)).scalar_one_or_none()


async def any_admin(session: AsyncSession) -> bool:
    stmt = select(ApiKey.id).where(ApiKey.role == "admin", ApiKey.revoked_at.is_(None)).limit(1)
    return (await session.execute(stmt)).first() is not None


def add(session: AsyncSession, key: ApiKey) -> None:
    session.add(key)
