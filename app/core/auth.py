"""Who is calling: the Principal resolved from the bearer key, role checks and territorial scoping."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import ColumnElement, false, or_, select, true
from sqlalchemy.orm import QueryableAttribute, selectinload

from app.core.paths import path_startswith
from app.core.problems import Forbidden, Unauthenticated
from app.db import SessionDep, utcnow

KEY_PREFIX = "cnfs_"


class Role(StrEnum):
    public = "public"
    admin = "admin"
    territory_manager = "territory_manager"
    counsellor = "counsellor"
    viewer = "viewer"


KEY_ROLES = (Role.admin, Role.territory_manager, Role.counsellor, Role.viewer)


@dataclass(frozen=True)
class Principal:
    """The caller. Every repository query of a scoped resource receives one."""

    role: Role
    key_id: uuid.UUID | None = None
    name: str | None = None
    territory_ids: tuple[uuid.UUID, ...] = ()
    # Materialised paths of the key's territories: their subtrees are the caller's scope.
    territory_paths: tuple[str, ...] = ()
    counsellor_id: uuid.UUID | None = None
    expires_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.admin

    @property
    def is_anonymous(self) -> bool:
        return self.role is Role.public

    @property
    def caller(self) -> str:
        """A stable name for the caller, for cursors and idempotency keys."""
        return str(self.key_id) if self.key_id else "public"

    def path_clause(self, path_column: ColumnElement[str] | QueryableAttribute[str]) -> ColumnElement[bool]:
        """True for territory rows inside the caller's subtrees (everything for admin)."""
        if self.is_admin:
            return true()
        if not self.territory_paths:
            return false()
        return or_(*(path_startswith(path_column, p) for p in self.territory_paths))

    def territory_clause(
        self, territory_id_column: ColumnElement[uuid.UUID] | QueryableAttribute[uuid.UUID]
    ) -> ColumnElement[bool]:
        """True for rows whose territory is inside the caller's subtrees (everything for admin)."""
        if self.is_admin:
            return true()
        from app.territories.models import Territory

        return territory_id_column.in_(select(Territory.id).where(self.path_clause(Territory.path)))


ANONYMOUS = Principal(role=Role.public)

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key `cnfs_...`, sent as `Authorization: Bearer <key>`.",
)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def get_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """Anonymous without a key; 401 for a key that is malformed, unknown, revoked or expired."""
    if "authorization" in request.headers and credentials is None:
        raise Unauthenticated("the Authorization header must be `Bearer <api key>`", error="invalid_request")
    if credentials is None:
        return ANONYMOUS
    from app.api_keys.models import ApiKey

    secret = credentials.credentials.strip()
    if not secret.startswith(KEY_PREFIX):
        raise Unauthenticated("invalid API key", error="invalid_token")
    key = (
        await session.execute(
            select(ApiKey)
            .where(ApiKey.secret_hash == hash_secret(secret))
            .options(selectinload(ApiKey.territories))
        )
    ).scalar_one_or_none()
    now = utcnow()
    if key is None or key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        raise Unauthenticated("invalid, revoked or expired API key", error="invalid_token")
    principal = Principal(
        role=Role(key.role),
        key_id=key.id,
        name=key.name,
        territory_ids=tuple(t.id for t in key.territories),
        territory_paths=tuple(t.path for t in key.territories),
        counsellor_id=key.counsellor_id,
        expires_at=key.expires_at,
    )
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_roles(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """401 for the anonymous caller, 403 for a role outside `roles`."""

    async def dependency(principal: PrincipalDep) -> Principal:
        if principal.is_anonymous:
            raise Unauthenticated()
        if principal.role not in roles:
            raise Forbidden(f"the {principal.role.value} role may not do this")
        return principal

    return dependency


def needs_key(dependant: Dependant) -> bool:
    """Whether a route's dependencies include a role check (so that it refuses callers without a key)."""
    call = dependant.call
    if call is not None and getattr(call, "__qualname__", "").startswith(require_roles.__qualname__ + "."):
        return True
    return any(needs_key(sub) for sub in dependant.dependencies)


AdminDep = Annotated[Principal, Depends(require_roles(Role.admin))]
KeyHolderDep = Annotated[Principal, Depends(require_roles(*KEY_ROLES))]
