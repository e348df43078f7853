"""HTTP handlers of /agreements and their amendments."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Header, Query, Request, Response
from pydantic import TypeAdapter

from app.agreements import service
from app.agreements.models import AgreementKind, AgreementStatus
from app.agreements.schemas import (
    AgreementCreate,
    AgreementPage,
    AgreementRead,
    AgreementSign,
    AgreementTerminate,
    AgreementUpdate,
    AmendmentCreate,
    AmendmentPage,
    AmendmentRead,
)
from app.core.auth import AdminDep, Principal, Role, check_roles, require_roles, resolve_principal
from app.core.csv import csv_list_response, csv_responses, list_response, vary_accept
from app.core.direct import DirectSession, as_session, direct, json_body, validated
from app.core.idempotency import IdempotencyDep
from app.core.listing import PageDep, direct_page_request
from app.core.media import Separator
from app.core.pagination import set_link_header
from app.core.problems import problem_responses
from app.core.responses import created, model_response, object_response, page_response, path_for
from app.core.routers import api_router
from app.core.versioning import IF_MATCH_DOC, IfMatchHeader, require_if_match
from app.db import SessionDep

router = api_router("/agreements", tags=["agreements"])

READERS = (Role.admin, Role.territory_manager, Role.viewer)
ReaderDep = Annotated[Principal, Depends(require_roles(*READERS))]
ActionIfMatchHeader = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description='Optional: when sent, the action applies only to that version (stale → 412), e.g. `"2"`.',
        examples=['"1"'],
    ),
]

READERS_DOC = (
    "Roles: `admin` (everywhere), `territory_manager` and `viewer` (agreements of their territories "
    "and their descendants; any other is 404). `counsellor` → 403, no key → 401."
)


def _respond(read: AgreementRead) -> Response:
    return model_response(read, version=read.version)


async def _create(
    request: Request, session: SessionDep, principal: Principal, body: AgreementCreate
) -> Response:
    row = await service.create(session, body, principal)
    location = path_for(request, "agreements_get", agreement_id=str(row["id"]))
    return object_response(None, row, status_code=201, location=location)


async def _sign(
    session: SessionDep,
    principal: Principal,
    agreement_id: uuid.UUID,
    body: AgreementSign,
    if_match: str | None,
) -> Response:
    agreement = await service.lock_for_signature(session, agreement_id, principal)
    if if_match is not None:
        require_if_match(if_match, agreement.version)
    return object_response(None, await service.sign(session, agreement, body))


_CREATE = TypeAdapter(AgreementCreate)
_SIGN = TypeAdapter(AgreementSign)


@direct("agreements_create")
async def agreements_create_direct(request: Request, session: DirectSession) -> Response | None:
    """Without an Idempotency-Key (which the route answers)."""
    if "idempotency-key" in request.headers:
        return None
    body = validated(_CREATE, await json_body(request))
    principal = check_roles(await resolve_principal(request, session), (Role.admin,))
    return await _create(request, as_session(session), principal, body)


@direct("agreements_sign")
async def agreements_sign_direct(
    request: Request, session: DirectSession, *, agreement_id: uuid.UUID
) -> Response | None:
    """Without an Idempotency-Key (which the route answers)."""
    if "idempotency-key" in request.headers:
        return None
    body = validated(_SIGN, await json_body(request))
    principal = check_roles(await resolve_principal(request, session), (Role.admin,))
    return await _sign(as_session(session), principal, agreement_id, body, request.headers.get("if-match"))


@router.get(
    "",
    response_model=AgreementPage,
    summary="List agreements",
    description=READERS_DOC,
    responses=csv_responses(AgreementRead) | problem_responses(401, 403, 422),
)
async def agreements_list(
    request: Request,
    session: SessionDep,
    principal: ReaderDep,
    page: PageDep,
    programme_id: uuid.UUID | None = None,
    territory_id: Annotated[
        uuid.UUID | None, Query(description="Agreements signed with this territory.")
    ] = None,
    within: Annotated[
        uuid.UUID | None, Query(description="A territory id: agreements of it and of its whole subtree.")
    ] = None,
    status: AgreementStatus | None = None,
    kind: AgreementKind | None = None,
    sort: Annotated[
        str | None,
        Query(
            description="`created_at` or `reference`, `-` to reverse; default `created_at`.",
            examples=["reference"],
        ),
    ] = None,
) -> Response:
    return await list_response(
        request,
        session,
        page,
        AgreementRead,
        lambda db, p: service.list_agreements(
            db,
            principal,
            p,
            programme_id=programme_id,
            territory_id=territory_id,
            within=within,
            status=status,
            kind=kind,
            sort=sort,
        ),
    )


@direct(
    "agreements_list",
    # The subtree's path, then the page; the page, then its total.
    snapshot=lambda params: params["include_total"] or params["within"] is not None,
)
async def agreements_list_direct(
    request: Request,
    session: DirectSession,
    *,
    programme_id: uuid.UUID | None,
    territory_id: uuid.UUID | None,
    within: uuid.UUID | None,
    status: AgreementStatus | None,
    kind: AgreementKind | None,
    sort: str | None,
    limit: int,
    cursor: str | None,
    include_total: bool,
    sep: Separator,
) -> Response | None:
    page = await direct_page_request(request, session, limit, cursor, include_total, sep)
    principal = check_roles(await resolve_principal(request, session), READERS)
    items, next_cursor, total = await service.list_agreements(
        as_session(session),
        principal,
        page,
        programme_id=programme_id,
        territory_id=territory_id,
        within=within,
        status=status,
        kind=kind,
        sort=sort,
    )
    return page_response(request, items, next_cursor, total)


@router.get(
    "/{agreement_id}",
    response_model=AgreementRead,
    summary="Get an agreement",
    description=READERS_DOC + " Answers `ETag`; `If-None-Match` with the current ETag gives 304.",
    responses=problem_responses(401, 403, 404, 422),
)
async def agreements_get(
    request: Request, session: SessionDep, principal: ReaderDep, agreement_id: uuid.UUID
) -> Response:
    return object_response(request, await service.read_visible(session, agreement_id, principal))


@direct("agreements_get")
async def agreements_get_direct(
    request: Request, session: DirectSession, *, agreement_id: uuid.UUID
) -> Response | None:
    principal = check_roles(await resolve_principal(request, session), READERS)
    return object_response(request, await service.read_visible(as_session(session), agreement_id, principal))


@router.post(
    "",
    status_code=201,
    response_model=AgreementRead,
    summary="Create an agreement (draft)",
    description="Admin. The agreement starts as a `draft`, which already reserves its positions and "
    "subsidy in the programme: past the programme's `positions_target` → 409 "
    "`programme_positions_exceeded`, past its `budget_cents` → 409 `programme_budget_exceeded`. "
    "`subsidy_per_position_cents` defaults to the programme's. `reference` is unique within the "
    "programme (409 `agreement_reference_exists`). An unknown `programme_id` or `territory_id` → 422 "
    "`unknown_reference`.",
    responses=problem_responses(401, 403, 409, 422),
)
async def agreements_create(
    request: Request, session: SessionDep, principal: AdminDep, idem: IdempotencyDep, body: AgreementCreate
) -> Response:
    async def produce() -> Response:
        return await _create(request, session, principal, body)

    return await idem.run(produce)


@router.patch(
    "/{agreement_id}",
    response_model=AgreementRead,
    summary="Change a draft agreement",
    description="Admin. JSON Merge Patch (`application/merge-patch+json` or `application/json`), only "
    "while the agreement is a `draft` (else 409 `agreement_not_editable`: amend a signed agreement "
    "instead). The programme cannot change. The programme invariants apply as on creation. " + IF_MATCH_DOC,
    responses=problem_responses(401, 403, 404, 409, 412, 422, 428),
)
async def agreements_update(
    session: SessionDep,
    principal: AdminDep,
    agreement_id: uuid.UUID,
    body: AgreementUpdate,
    if_match: IfMatchHeader = None,
) -> Response:
    agreement, programme = await service.get_for_change(session, agreement_id, principal)
    require_if_match(if_match, agreement.version)
    agreement = await service.update(session, agreement, programme, body, principal)
    return _respond(await service.read(session, agreement))


@router.post(
    "/{agreement_id}/sign",
    response_model=AgreementRead,
    summary="Sign an agreement",
    description="Admin. `draft` → `signed`; from any other status → 409 `invalid_transition`. "
    "Answers 200 with the agreement.",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def agreements_sign(
    session: SessionDep,
    principal: AdminDep,
    idem: IdempotencyDep,
    agreement_id: uuid.UUID,
    body: AgreementSign,
    if_match: ActionIfMatchHeader = None,
) -> Response:
    async def produce() -> Response:
        return await _sign(session, principal, agreement_id, body, if_match)

    return await idem.run(produce)


@router.post(
    "/{agreement_id}/terminate",
    response_model=AgreementRead,
    summary="Terminate an agreement",
    description="Admin. `draft` or `signed` → `terminated`: its positions and subsidy no longer count in the "
    "programme. Already terminated → 409 `invalid_transition`; with an occupied position → 409 "
    "`agreement_has_occupied_positions`; `terminated_on` before `signed_on` → 422. "
    "Answers 200 with the agreement.",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def agreements_terminate(
    session: SessionDep,
    principal: AdminDep,
    idem: IdempotencyDep,
    agreement_id: uuid.UUID,
    body: AgreementTerminate,
    if_match: ActionIfMatchHeader = None,
) -> Response:
    async def produce() -> Response:
        agreement, programme = await service.get_for_change(session, agreement_id, principal)
        if if_match is not None:
            require_if_match(if_match, agreement.version)
        agreement = await service.terminate(session, agreement, programme, body)
        return _respond(await service.read(session, agreement))

    return await idem.run(produce)


@router.get(
    "/{agreement_id}/amendments",
    response_model=AmendmentPage,
    summary="List an agreement's amendments",
    description=READERS_DOC + " The history, oldest first.",
    responses=csv_responses(AmendmentRead) | problem_responses(401, 403, 404, 422),
)
async def agreements_amendments_list(
    request: Request,
    response: Response,
    session: SessionDep,
    principal: ReaderDep,
    page: PageDep,
    agreement_id: uuid.UUID,
) -> AmendmentPage | Response:
    if page.csv is not None:
        return await csv_list_response(
            request,
            session,
            page,
            AmendmentRead,
            lambda db, p: service.list_amendments(db, agreement_id, principal, p),
        )
    items, next_cursor, total = await service.list_amendments(session, agreement_id, principal, page)
    set_link_header(request, response, next_cursor)
    vary_accept(response)
    return AmendmentPage(items=items, next_cursor=next_cursor, total=total)


@router.post(
    "/{agreement_id}/amendments",
    status_code=201,
    response_model=AmendmentRead,
    summary="Amend a signed agreement",
    description="Admin. Adds or withdraws positions of a `signed` agreement "
    "(else 409 `agreement_not_signed`), "
    "atomically with its `positions_granted` and subsidy, and keeps the record with the figures before and "
    "after. Adding past the programme's target or budget → 409 `programme_positions_exceeded` / "
    "`programme_budget_exceeded`; withdrawing below the open positions → 409 `positions_below_allocated`. "
    "`reason` is a value of the `amendment_reasons` referential; `autre` needs `reason_detail`.",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def agreements_amendments_create(
    request: Request,
    session: SessionDep,
    principal: AdminDep,
    idem: IdempotencyDep,
    agreement_id: uuid.UUID,
    body: AmendmentCreate,
) -> Response:
    async def produce() -> Response:
        agreement, programme = await service.get_for_change(session, agreement_id, principal)
        amendment = await service.amend(session, agreement, programme, body)
        return created(
            request,
            AmendmentRead.model_validate(amendment),
            "agreements_amendments_get",
            agreement_id=str(agreement.id),
            amendment_id=str(amendment.id),
        )

    return await idem.run(produce)


@router.get(
    "/{agreement_id}/amendments/{amendment_id}",
    response_model=AmendmentRead,
    summary="Get an amendment",
    description=READERS_DOC + " Amendments are immutable.",
    responses=problem_responses(401, 403, 404, 422),
)
async def agreements_amendments_get(
    session: SessionDep, principal: ReaderDep, agreement_id: uuid.UUID, amendment_id: uuid.UUID
) -> AmendmentRead:
    return AmendmentRead.model_validate(
        await service.get_amendment(session, agreement_id, amendment_id, principal)
    )
