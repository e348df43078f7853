"""Rules of API keys: role and scope consistency, hashing, revocation."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys import repository as repo
from app.api_keys.errors import ApiKeyRevoked
from app.api_keys.models import ApiKey
from app.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from app.core.auth import KEY_PREFIX, Principal, Role, hash_secret
from app.core.pagination import PageRequest
from app.core.problems import NotFound, UnknownReference, ValidationFailed
from app.counsellors import service as counsellors
from app.db import utcnow
from app.territories import service as territories


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def to_read(key: ApiKey) -> ApiKeyRead:
    return ApiKeyRead(
        id=key.id,
        name=key.name,
        role=Role(key.role),
        prefix=key.prefix,
        territory_ids=[t.id for t in key.territories],
        counsellor_id=key.counsellor_id,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        created_at=key.created_at,
        rotated_at=key.rotated_at,
        previous_secret_expires_at=key.previous_secret_expires_at,
        last_used_at=key.last_used_at,
    )


async def principal_for_secret(session: AsyncSession, secret: str) -> Principal | None:
    """The caller a key secret stands for; None when the key is unknown, revoked or expired, or when the
    secret is one a rotation replaced and its grace period is over (one query)."""
    secret_hash = hash_secret(secret)
    rows = await repo.find_by_secret_hash(session, secret_hash)
    if not rows:
        return None
    key = rows[0]
    now = utcnow()
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        return None
    if key.secret_hash != secret_hash and (
        key.previous_secret_expires_at is None or key.previous_secret_expires_at <= now
    ):
        return None
    territories = [(row.territory_id, row.territory_path) for row in rows if row.territory_id is not None]
    return Principal(
        role=Role(key.role),
        key_id=key.id,
        name=key.name,
        territory_ids=tuple(t[0] for t in territories),
        territory_paths=tuple(t[1] for t in territories),
        counsellor_id=key.counsellor_id,
        expires_at=key.expires_at,
        rotated_at=key.rotated_at,
        previous_secret_expires_at=key.previous_secret_expires_at,
        last_used_at=key.last_used_at,
    )


async def create(session: AsyncSession, data: ApiKeyCreate) -> ApiKeyCreated:
    if data.role is Role.public:
        raise ValidationFailed("/role", "public is the role of callers without a key")
    if data.role is not Role.admin and not data.territory_ids:
        raise ValidationFailed("/territory_ids", "a key other than admin needs at least one territory")
    if data.role is Role.admin and data.territory_ids:
        raise ValidationFailed("/territory_ids", "an admin key covers everything: leave territory_ids empty")
    if data.role is Role.counsellor and data.counsellor_id is None:
        raise ValidationFailed("/counsellor_id", "a counsellor key is bound to one counsellor")
    if data.role is not Role.counsellor and data.counsellor_id is not None:
        raise ValidationFailed("/counsellor_id", "only a counsellor key names a counsellor")
    if data.expires_at is not None and data.expires_at <= utcnow():
        raise ValidationFailed("/expires_at", "must be in the future")
    wanted = list(dict.fromkeys(data.territory_ids))
    found_territories = await territories.get_many(session, wanted)
    found = {t.id for t in found_territories}
    for index, territory_id in enumerate(data.territory_ids):
        if territory_id not in found:
            raise UnknownReference(f"/territory_ids/{index}", "no territory with this id")
    if data.counsellor_id is not None:
        await counsellors.lock_for_key(session, data.counsellor_id)
    secret = new_secret()
    key = ApiKey(
        name=data.name,
        role=data.role.value,
        prefix=secret[:12],
        secret_hash=hash_secret(secret),
        counsellor_id=data.counsellor_id,
        expires_at=data.expires_at,
        created_at=utcnow(),
    )
    key.territories = found_territories
    repo.add(session, key)
    await session.flush()
    return ApiKeyCreated(**to_read(key).model_dump(), key=secret)


async def list_api_keys(
    session: AsyncSession,
    page: PageRequest,
    *,
    role: Role | None = None,
    include_revoked: bool = False,
) -> tuple[Sequence[ApiKeyRead], str | None, int | None]:
    """A page of keys, newest first (admin only, checked by the route): (items, next_cursor, total)."""
    rows, next_cursor, total = await repo.list_page(
        session, page, role=role.value if role is not None else None, include_revoked=include_revoked
    )
    return [to_read(k) for k in rows], next_cursor, total


async def get(session: AsyncSession, key_id: uuid.UUID, *, lock: bool = False) -> ApiKey:
    key = await repo.get(session, key_id, lock=lock)
    if key is None:
        raise NotFound("no API key with this id")
    return key


async def revoke(session: AsyncSession, key_id: uuid.UUID) -> None:
    # Locked: a revocation that waited on another (an anonymisation's) finds it revoked and keeps its time.
    key = await get(session, key_id, lock=True)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()


async def of_counsellor(session: AsyncSession, counsellor_id: uuid.UUID) -> list[ApiKeyRead]:
    """The keys bound to a counsellor (a counsellor's right of access shows them), revoked ones too."""
    return [to_read(k) for k in await repo.of_counsellor(session, counsellor_id)]


async def rotate(session: AsyncSession, key_id: uuid.UUID, grace_seconds: int) -> ApiKeyCreated:
    """A new secret for the same key (same id, role and scope). The secret it replaces stays valid for
    `grace_seconds` (0: refused at once); one rotated earlier, still in its grace period, is refused from
    now on (only the last replaced secret is kept). A revoked key is not rotated (409)."""
    key = await get(session, key_id, lock=True)
    if key.revoked_at is not None:
        raise ApiKeyRevoked()
    now = utcnow()
    secret = new_secret()
    if grace_seconds > 0:
        key.previous_secret_hash = key.secret_hash
        key.previous_secret_expires_at = now + timedelta(seconds=grace_seconds)
    else:
        key.previous_secret_hash = None
        key.previous_secret_expires_at = None
    # The unique constraints are checked at each statement: the old secret leaves `secret_hash` and enters
    # `previous_secret_hash` in one UPDATE.
    key.secret_hash = hash_secret(secret)
    key.prefix = secret[:12]
    key.rotated_at = now
    await session.flush()
    return ApiKeyCreated(**to_read(key).model_dump(), key=secret)
