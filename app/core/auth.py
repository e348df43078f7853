"""Who is calling: the Principal resolved from the bearer key, role checks and territorial scoping."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from sqlalchemy import ColumnElement, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import QueryableAttribute

from app.core.paths import path_startswith
from app.core.problems import AppError, Forbidden, Unauthenticated
from app.core.query import reject_unknown_query
from app.core.ratelimit import RateLimiter, key_reference
from app.db import SessionDep, end_detached

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
    # What `GET /me` shows of the key's life, read with it.
    rotated_at: datetime | None = None
    previous_secret_expires_at: datetime | None = None
    last_used_at: datetime | None = None

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

    def covers_path(self, path: str) -> bool:
        """`path_clause` for one territory's path already read: inside one of the caller's subtrees."""
        return self.is_admin or any(path.startswith(prefix) for prefix in self.territory_paths)

    def territory_clause(
        self, territory_id_column: ColumnElement[uuid.UUID] | QueryableAttribute[uuid.UUID]
    ) -> ColumnElement[bool]:
        """True for rows whose territory is inside the caller's subtrees (everything for admin)."""
        if self.is_admin:
            return true()
        from app.territories.models import Territory

        return territory_id_column.in_(select(Territory.id).where(self.path_clause(Territory.path)))


ANONYMOUS = Principal(role=Role.public)

API_KEY_SCHEME = {
    "type": "http",
    "description": "An API key `cnfs_...`, sent as `Authorization: Bearer <key>`.",
    "scheme": "bearer",
}


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


KeyResolver = Callable[[AsyncSession, str], Awaitable[Principal | None]]
"""Turns a key secret into its Principal (None when unknown, revoked or expired). The api_keys domain
provides it; the application puts it in `app.state.key_resolver`, so that core imports no domain."""


KeyUsed = Callable[[Principal], None]
"""Told of each request's key once resolved (`app.state.key_used`, set by the api_keys domain): records
`last_used_at` without waiting, and without a write in the request's transaction."""

PRINCIPAL_SCOPE_KEY = "cnfs.principal"
# Set once the request has been counted against its rate limits (the direct path hands requests over).
LIMITED_SCOPE_KEY = "cnfs.limited"


async def check_caller(request: Request) -> None:
    """What every /api/v1 request is checked for before it touches the database: unknown query parameters
    (422), an Authorization header that is not `Bearer cnfs_...` (401), then the rate limits (429,
    `app.core.ratelimit`), once per request.

    The limits come before the key is looked up (a key is counted under a digest of its secret, which names
    one key), and before the request's session takes its database connection (`get_principal` depends on
    this first): no database connection is held while the limiter waits for Redis."""
    reject_unknown_query(request)
    scope = request.scope
    if scope.get(LIMITED_SCOPE_KEY) or scope.get(PRINCIPAL_SCOPE_KEY) is not None:
        return
    header = request.headers.get("authorization")
    secret = None if header is None else _secret(header)
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        if secret is None:
            await limiter.check(None, _address(request), _operation(request))
        else:
            await limiter.check(key_reference(secret), _address(request), None)
    scope[LIMITED_SCOPE_KEY] = True


async def resolve_principal(request: Request, session: Any) -> Principal:
    """The checks every /api/v1 request starts with (`check_caller`: query parameters, the header's form,
    the rate limits), then the caller: anonymous without a key; 401 for a key that is unknown, revoked or
    expired.

    `session` is the request's session, or the direct path's (`app.core.direct`), whose connection is taken
    on its first statement: after the rate limits. The caller is resolved once per request: when the direct
    path hands a request over to its route, the route finds it done."""
    await check_caller(request)
    return await _principal(request, session)


async def _principal(request: Request, session: Any) -> Principal:
    known: Principal | None = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if known is not None:
        return known
    header = request.headers.get("authorization")
    if header is None:
        request.scope[PRINCIPAL_SCOPE_KEY] = ANONYMOUS
        return ANONYMOUS
    resolve: KeyResolver = request.app.state.key_resolver
    principal = await resolve(session, _secret(header))
    if principal is None:
        raise Unauthenticated("invalid, revoked or expired API key", error="invalid_token")
    request.scope[PRINCIPAL_SCOPE_KEY] = principal
    used: KeyUsed | None = getattr(request.app.state, "key_used", None)
    if used is not None:
        used(principal)
    return principal


async def _look_up(request: Request) -> Principal:
    """`_principal` in a reading session of its own (no write lock on SQLite), ended as a detached session
    is: rolled back, and its connection thrown away if a cancellation or an error of the database left it
    in doubt."""
    session: AsyncSession = request.app.state.sessionmaker()
    in_doubt = True
    try:
        if isinstance(session.bind, AsyncEngine):
            await session.connection(execution_options=request.app.state.read_options)
        principal = await _principal(request, session)
        in_doubt = False
    except AppError:  # the key's 401: the lookup itself ended
        in_doubt = False
        raise
    finally:
        await end_detached(session, in_doubt)
    return principal


def _secret(header: str) -> str:
    """The key secret of an Authorization header; 401 when it is not `Bearer cnfs_...`."""
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise Unauthenticated("the Authorization header must be `Bearer <api key>`", error="invalid_request")
    if not secret.startswith(KEY_PREFIX):
        raise Unauthenticated("invalid API key", error="invalid_token")
    return secret


async def get_principal(
    request: Request, _checked: Annotated[None, Depends(check_caller)], session: SessionDep
) -> Principal:
    """`resolve_principal` as the one dependency of every /api/v1 route. FastAPI resolves `check_caller`
    before the session, whose GET transaction takes its connection as it opens: the rate limits are checked
    before any connection is taken."""
    return await _principal(request, session)


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _operation(request: Request) -> str | None:
    route = request.scope.get("route")
    name: str | None = getattr(route, "name", None)
    return name


def document_security(schema: dict[str, Any], api_prefix: str, public_operations: set[str]) -> None:
    """The bearer scheme in the OpenAPI document (Swagger UI's Authorize button), required by every
    operation under `api_prefix` and optional on the public ones (`security: [{}, ApiKey]`), so that
    generated clients do not demand a key there.

    The key is read by `get_principal` itself rather than by a FastAPI security dependency, which would
    cost a dependency resolution on every request: the document says it here instead."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {})["ApiKey"] = API_KEY_SCHEME
    for path, item in schema.get("paths", {}).items():
        if not path.startswith(api_prefix):
            continue
        for operation in item.values():
            if isinstance(operation, dict) and "operationId" in operation:
                required: dict[str, list[str]] = {"ApiKey": []}
                public = operation["operationId"] in public_operations
                operation["security"] = [{}, required] if public else [required]


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def check_roles(principal: Principal, roles: tuple[Role, ...]) -> Principal:
    """401 for the anonymous caller, 403 for a role outside `roles` (`require_roles`, and the direct
    handlers of its routes)."""
    if principal.is_anonymous:
        raise Unauthenticated()
    if principal.role not in roles:
        raise Forbidden(f"the {principal.role.value} role may not do this")
    return principal


_ROLES = "__cnfs_roles__"


def require_roles(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """401 for the anonymous caller, 403 for a role outside `roles`."""

    async def dependency(principal: PrincipalDep) -> Principal:
        return check_roles(principal, roles)

    setattr(dependency, _ROLES, roles)
    return dependency


def route_roles(dependant: Dependant) -> tuple[Role, ...] | None:
    """The roles a route's dependencies let through (`require_roles`: those of every check, when it has
    several); None when it has no role check."""
    checks: list[tuple[Role, ...]] = []

    def collect(node: Dependant) -> None:
        roles: tuple[Role, ...] | None = getattr(node.call, _ROLES, None)
        if roles is not None:
            checks.append(roles)
        for sub in node.dependencies:
            collect(sub)

    collect(dependant)
    if not checks:
        return None
    return tuple(role for role in checks[0] if all(role in other for other in checks[1:]))


def needs_key(dependant: Dependant) -> bool:
    """Whether a route's dependencies include a role check (so that it refuses callers without a key)."""
    return route_roles(dependant) is not None


async def check_caller_of_unread_body(request: Request) -> None:
    """The caller's checks for a request whose body FastAPI refused before it resolved the route's
    dependencies: a body that is not JSON (or not UTF-8, or nested too deeply) fails as FastAPI reads it,
    and its 422 would otherwise answer before the checks every other request meets first, the rate limits
    included. Here they run in the dependencies' order: unknown query parameters (422), the Authorization
    header's form (401), the rate limits (429), the key (401 unknown, revoked or expired; looked up in a
    session of its own), then the route's roles (401 without a key, 403 for another role). Raises the
    first that fails; returns when the caller may make the request, and the body's 422 stands."""
    await check_caller(request)
    principal: Principal | None = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if principal is None:
        principal = await _look_up(request)
    route = request.scope.get("route")
    dependant: Dependant | None = getattr(route, "dependant", None)
    roles = None if dependant is None else route_roles(dependant)
    if roles is not None:
        check_roles(principal, roles)


AdminDep = Annotated[Principal, Depends(require_roles(Role.admin))]
KeyHolderDep = Annotated[Principal, Depends(require_roles(*KEY_ROLES))]
