"""HTTP handlers of /api-keys and /me."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, Request, Response

from app.api_keys import service
from app.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPage, ApiKeyRead, ApiKeyRotate, Me
from app.core.auth import AdminDep, KeyHolderDep, Role
from app.core.csv import csv_list_response, csv_responses, vary_accept
from app.core.idempotency import IdempotencyDep
from app.core.listing import PageDep
from app.core.pagination import set_link_header
from app.core.problems import problem_responses
from app.core.responses import created, model_response
from app.core.routers import api_router
from app.db import SessionDep

router = api_router("/api-keys", tags=["access"])
me_router = api_router("", tags=["access"])


@router.post(
    "",
    status_code=201,
    response_model=ApiKeyCreated,
    summary="Create an API key",
    description="Admin. The secret (`cnfs_...`) is in `key`, shown only in this response; only its hash "
    "is kept. A retry under the same `Idempotency-Key` replays this answer with `key: null`: if the secret "
    "was lost, revoke the key and create another. A counsellor key for an anonymised counsellor → 409 "
    "`counsellor_anonymized`.",
    responses=problem_responses(401, 403, 409, 422),
)
async def api_keys_create(
    request: Request, session: SessionDep, _admin: AdminDep, idem: IdempotencyDep, body: ApiKeyCreate
) -> Response:
    async def produce() -> Response:
        key = await service.create(session, body)
        return created(request, key, "api_keys_get", key_id=str(key.id))

    return await idem.run(produce, secret_fields=("key",))


@router.get(
    "",
    response_model=ApiKeyPage,
    summary="List API keys",
    description="Admin. Newest first.",
    responses=csv_responses(ApiKeyRead) | problem_responses(401, 403, 422),
)
async def api_keys_list(
    request: Request,
    response: Response,
    session: SessionDep,
    admin: AdminDep,
    page: PageDep,
    role: Role | None = None,
    include_revoked: Annotated[bool, Query(description="Also list revoked keys.")] = False,
) -> ApiKeyPage | Response:
    if page.csv is not None:
        return await csv_list_response(
            request,
            session,
            page,
            ApiKeyRead,
            lambda db, p: service.list_api_keys(db, p, role=role, include_revoked=include_revoked),
        )
    items, next_cursor, total = await service.list_api_keys(
        session, page, role=role, include_revoked=include_revoked
    )
    set_link_header(request, response, next_cursor)
    vary_accept(response)
    return ApiKeyPage(items=items, next_cursor=next_cursor, total=total)


@router.get(
    "/{key_id}",
    summary="Get an API key",
    description="Admin. The key's role, scope, expiry and revocation; never its secret (only its `prefix`). "
    "A revoked key is still found here.",
    responses=problem_responses(401, 403, 404),
)
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


# No body: the setting's grace period (a body is optional; its schema stays the model itself).
_NO_ROTATE_BODY = ApiKeyRotate()


@router.post(
    "/{key_id}/rotate",
    response_model=ApiKeyCreated,
    summary="Rotate an API key's secret",
    description="Admin. A new secret for the same key (same id, role, scope and expiry), in `key`, "
    "shown only in this response. The secret it replaces stays valid for `grace_seconds` (optional "
    "body; default: the `API_KEY_ROTATION_GRACE_SECONDS` setting, 24 h; 0: refused at once), so that "
    "the systems using it can switch without downtime; a secret replaced earlier is refused from now "
    "on. `previous_secret_expires_at` says until when the replaced one is accepted. A revoked key → "
    "409 `api_key_revoked`. A retry under the same `Idempotency-Key` replays this answer with `key: null`.",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def api_keys_rotate(
    request: Request,
    session: SessionDep,
    _admin: AdminDep,
    idem: IdempotencyDep,
    key_id: uuid.UUID,
    body: ApiKeyRotate = _NO_ROTATE_BODY,
) -> Response:
    grace = body.grace_seconds
    if grace is None:
        grace = request.app.state.settings.api_key_rotation_grace_seconds

    async def produce() -> Response:
        return model_response(await service.rotate(session, key_id, grace))

    return await idem.run(produce, secret_fields=("key",))


@me_router.get(
    "/me",
    summary="Describe the caller",
    description="Any key holder. The key's id, name, role and scope: `territory_ids` lists the territories "
    "whose subtrees the key covers (`[]` for admin, meaning everywhere); `counsellor_id` is set for the "
    "counsellor role. `rotated_at`, `previous_secret_expires_at` and `last_used_at` (the last use recorded "
    "before this request, to the minute) describe the key's life; never its secret. Without a key → 401.",
    responses=problem_responses(401),
)
async def me_get(principal: KeyHolderDep) -> Me:
    return Me(
        key_id=principal.key_id,
        name=principal.name,
        role=principal.role,
        territory_ids=list(principal.territory_ids),
        counsellor_id=principal.counsellor_id,
        expires_at=principal.expires_at,
        rotated_at=principal.rotated_at,
        previous_secret_expires_at=principal.previous_secret_expires_at,
        last_used_at=principal.last_used_at,
    )
