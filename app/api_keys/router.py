"""HTTP handlers of /api-keys and /me."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.api_keys import repository as repo
from app.api_keys import service
from app.api_keys.models import ApiKey
from app.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead, Me
from app.core.auth import AdminDep, KeyHolderDep, Role
from app.core.idempotency import IdempotencyDep
from app.core.listing import PageDep
from app.core.pagination import Page, SortKey, fetch_page, parse_uuid, set_link_header
from app.core.problems import problem_responses
from app.core.responses import created
from app.db import SessionDep

router = APIRouter(prefix="/api-keys", tags=["access"])
me_router = APIRouter(tags=["access"])


@router.post(
    "",
    status_code=201,
    response_model=ApiKeyCreated,
    summary="Create an API key",
    description="Admin. The secret (`cnfs_...`) is in `key`, shown only in this response; only its hash "
    "is kept.",
    responses=problem_responses(401, 403, 422),
)
async def api_keys_create(
    request: Request, session: SessionDep, _admin: AdminDep, idem: IdempotencyDep, body: ApiKeyCreate
) -> Response:
    async def produce() -> Response:
        key = await service.create(session, body)
        return created(request, key, "api_keys_get", key_id=str(key.id))

    return await idem.run(produce)


@router.get(
    "", summary="List API keys", description="Admin. Newest first.", responses=problem_responses(401, 403)
)
async def api_keys_list(
    request: Request,
    response: Response,
    session: SessionDep,
    _admin: AdminDep,
    page: PageDep,
    role: Role | None = None,
    include_revoked: Annotated[bool, Query(description="Also list revoked keys.")] = False,
) -> Page[ApiKeyRead]:
    keys = [SortKey("id", ApiKey.id, desc=True, parse=parse_uuid)]
    stmt = repo.list_query(role.value if role else None, include_revoked)
    rows, next_cursor, total = await fetch_page(session, stmt, keys, page, row_values=lambda k: [k.id])
    set_link_header(request, response, next_cursor)
    return Page[ApiKeyRead](items=[service.to_read(k) for k in rows], next_cursor=next_cursor, total=total)


@router.get("/{key_id}", summary="Get an API key", responses=problem_responses(401, 403, 404))
async def api_keys_get(session: SessionDep, _admin: AdminDep, key_id: uuid.UUID) -> ApiKeyRead:
    return service.to_read(await service.get(session, key_id))


@router.delete(
    "/{key_id}",
    status_code=204,
    response_class=Response,
    summary="Revoke an API key",
    description="Admin. The key is refused from now on (401); it stays listed with `include_revoked=true`.",
    responses=problem_responses(401, 403, 404),
)
async def api_keys_delete(session: SessionDep, _admin: AdminDep, key_id: uuid.UUID) -> Response:
    await service.revoke(session, key_id)
    return Response(status_code=204)


@me_router.get("/me", summary="Describe the caller", responses=problem_responses(401))
async def me_get(principal: KeyHolderDep) -> Me:
    return Me(
        key_id=principal.key_id,
        name=principal.name,
        role=principal.role,
        territory_ids=list(principal.territory_ids),
        counsellor_id=principal.counsellor_id,
        expires_at=principal.expires_at,
    )
