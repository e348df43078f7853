"""HTTP handlers of /programmes."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, Request, Response

from app.core.auth import AdminDep, PrincipalDep
from app.core.csv import csv_list_response, csv_responses, vary_accept
from app.core.idempotency import IdempotencyDep
from app.core.listing import PageDep
from app.core.pagination import set_link_header
from app.core.problems import problem_responses
from app.core.responses import created, model_response
from app.core.routers import api_router
from app.core.versioning import IF_MATCH_DOC, IfMatchHeader, not_modified, require_if_match
from app.db import SessionDep
from app.programmes import service
from app.programmes.schemas import ProgrammeCreate, ProgrammePage, ProgrammeRead, ProgrammeUpdate

router = api_router("/programmes", tags=["programmes"])

TOTALS_DOC = (
    " `positions_granted` and `subsidy_committed_cents` sum the programme's draft and signed agreements "
    "(a draft reserves; a terminated agreement frees its positions)."
)


@router.get(
    "",
    response_model=ProgrammePage,
    summary="List programmes",
    description="Public." + TOTALS_DOC,
    responses=csv_responses(ProgrammeRead) | problem_responses(401, 422),
)
async def programmes_list(
    request: Request,
    response: Response,
    session: SessionDep,
    page: PageDep,
    sort: Annotated[
        str | None,
        Query(description="`code` or `starts_on`, `-` to reverse; default `code`.", examples=["-starts_on"]),
    ] = None,
) -> ProgrammePage | Response:
    if page.csv is not None:
        return await csv_list_response(
            request, session, page, ProgrammeRead, lambda db, p: service.list_programmes(db, p, sort=sort)
        )
    items, next_cursor, total = await service.list_programmes(session, page, sort=sort)
    set_link_header(request, response, next_cursor)
    vary_accept(response)
    return ProgrammePage(items=items, next_cursor=next_cursor, total=total)


@router.get(
    "/{programme_id}",
    response_model=ProgrammeRead,
    summary="Get a programme",
    description="Public. Answers `ETag`; `If-None-Match` with the current ETag gives 304. The version also "
    "moves when the programme's agreements change its totals." + TOTALS_DOC,
    responses=problem_responses(401, 404, 422),
)
async def programmes_get(
    request: Request, session: SessionDep, _principal: PrincipalDep, programme_id: uuid.UUID
) -> Response:
    programme = await service.get(session, programme_id)
    return not_modified(request, programme.version) or model_response(
        await service.read(session, programme), version=programme.version
    )


@router.post(
    "",
    status_code=201,
    response_model=ProgrammeRead,
    summary="Create a programme",
    description="Admin. `code` is unique (409 `programme_exists`); `ends_on`, when given, is on or after "
    "`starts_on` (422). Money in integer euro cents.",
    responses=problem_responses(401, 403, 409, 422),
)
async def programmes_create(
    request: Request, session: SessionDep, _admin: AdminDep, idem: IdempotencyDep, body: ProgrammeCreate
) -> Response:
    async def produce() -> Response:
        programme = await service.create(session, body)
        return created(
            request,
            await service.read(session, programme),
            "programmes_get",
            version=programme.version,
            programme_id=str(programme.id),
        )

    return await idem.run(produce)


@router.patch(
    "/{programme_id}",
    response_model=ProgrammeRead,
    summary="Change a programme",
    description="Admin. JSON Merge Patch (`application/merge-patch+json` or `application/json`). Lowering "
    "`positions_target` or `budget_cents` below what the agreements commit → 409 "
    "`programme_below_committed`; "
    "another programme's `code` → 409 `programme_exists`. " + IF_MATCH_DOC,
    responses=problem_responses(401, 403, 404, 409, 412, 422, 428),
)
async def programmes_update(
    session: SessionDep,
    _admin: AdminDep,
    programme_id: uuid.UUID,
    body: ProgrammeUpdate,
    if_match: IfMatchHeader = None,
) -> Response:
    programme = await service.get_for_update(session, programme_id)
    require_if_match(if_match, programme.version)
    programme = await service.update(session, programme, body)
    return model_response(await service.read(session, programme), version=programme.version)
