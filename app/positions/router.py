"""HTTP handlers of /positions and of assignments (/positions/{id}/assignments, /assignments)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Header, Query, Request, Response

from app.core import audit
from app.core.auth import Principal, Role, check_roles, require_roles, resolve_principal
from app.core.csv import csv_responses, list_response
from app.core.direct import DirectSession, as_session, direct
from app.core.idempotency import IdempotencyDep
from app.core.listing import PageDep, direct_page_request
from app.core.media import Separator
from app.core.problems import problem_responses
from app.core.responses import created, model_response, object_response, page_response
from app.core.routers import api_router
from app.core.schemas import Timestamp
from app.core.types import FreeText
from app.core.versioning import IF_MATCH_DOC, IfMatchHeader, not_modified, require_if_match
from app.db import SessionDep
from app.positions import service
from app.positions.models import PositionStatus
from app.positions.schemas import (
    AssignmentCreate,
    AssignmentEnd,
    AssignmentPage,
    AssignmentRead,
    PositionClose,
    PositionCreate,
    PositionPage,
    PositionRead,
    PositionUpdate,
)

router = api_router("/positions", tags=["positions"])
assignments_router = api_router("/assignments", tags=["assignments"])
# Assignments are personal data: the people a list of them shows are their counsellors.
ASSIGNMENTS_JOURNAL = audit.Journal(service.ASSIGNMENTS, "counsellor_id")

READERS = (Role.admin, Role.territory_manager, Role.viewer)
ReaderDep = Annotated[Principal, Depends(require_roles(*READERS))]
WriterDep = Annotated[Principal, Depends(require_roles(Role.admin, Role.territory_manager))]
ActionIfMatchHeader = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description='Optional: when sent, the action applies only to that version (stale → 412), e.g. `"2"`.',
        examples=['"1"'],
    ),
]

READERS_DOC = (
    "Roles: `admin` (everywhere), `territory_manager` and `viewer` (positions of their territories and "
    "their descendants; any other is 404). Viewers get `current_assignment: null` (personal data). "
    "`counsellor` → 403, no key → 401."
)
WRITERS_DOC = "Roles: `admin`, `territory_manager` (positions of its territories and their descendants)."
PERSONAL_DOC = (
    "Assignments are personal data. Roles: `admin`, `territory_manager` (positions of its territories and "
    "their descendants). A viewer → 403 (404 when the object is outside its territories too)."
)


def _respond(read: PositionRead, status_code: int = 200) -> Response:
    return model_response(read, version=read.version, status_code=status_code)


@router.get(
    "",
    response_model=PositionPage,
    summary="List positions",
    description=READERS_DOC,
    responses=csv_responses(PositionRead) | problem_responses(401, 403, 422),
)
async def positions_list(
    request: Request,
    session: SessionDep,
    principal: ReaderDep,
    page: PageDep,
    agreement_id: uuid.UUID | None = None,
    territory_id: Annotated[uuid.UUID | None, Query(description="Positions in this territory.")] = None,
    within: Annotated[
        uuid.UUID | None, Query(description="A territory id: positions of it and of its whole subtree.")
    ] = None,
    status: Annotated[
        PositionStatus | None, Query(description="Derived status as of today (UTC), filtered in SQL.")
    ] = None,
    external_ref: Annotated[
        FreeText | None, Query(min_length=1, max_length=64, examples=["LYON-CNFS-001"])
    ] = None,
    updated_since: Annotated[
        Timestamp | None,
        Query(description="Positions changed at or after this instant (RFC 3339 with an offset)."),
    ] = None,
    sort: Annotated[
        str | None,
        Query(
            description="`created_at` or `updated_at`, `-` to reverse; default `created_at`.",
            examples=["-updated_at"],
        ),
    ] = None,
) -> Response:
    return await list_response(
        request,
        session,
        page,
        PositionRead,
        lambda db, p: service.list_positions(
            db,
            principal,
            p,
            agreement_id=agreement_id,
            territory_id=territory_id,
            within=within,
            status=status,
            external_ref=external_ref,
            updated_since=updated_since,
            sort=sort,
        ),
    )


@direct("positions_list", snapshot=True)  # the page, its current assignments, its total
async def positions_list_direct(
    request: Request,
    session: DirectSession,
    *,
    agreement_id: uuid.UUID | None,
    territory_id: uuid.UUID | None,
    within: uuid.UUID | None,
    status: PositionStatus | None,
    external_ref: str | None,
    updated_since: datetime | None,
    sort: str | None,
    limit: int,
    cursor: str | None,
    include_total: bool,
    sep: Separator,
) -> Response | None:
    page = await direct_page_request(request, session, limit, cursor, include_total, sep)
    principal = check_roles(await resolve_principal(request, session), READERS)
    rows, next_cursor, total = await service.list_positions(
        as_session(session),
        principal,
        page,
        agreement_id=agreement_id,
        territory_id=territory_id,
        within=within,
        status=status,
        external_ref=external_ref,
        updated_since=updated_since,
        sort=sort,
    )
    return page_response(request, rows, next_cursor, total)


@router.get(
    "/{position_id}",
    response_model=PositionRead,
    summary="Get a position",
    description=READERS_DOC + " Answers `ETag`; `If-None-Match` with the current ETag gives 304.",
    responses=problem_responses(401, 403, 404, 422),
)
async def positions_get(
    request: Request, session: SessionDep, principal: ReaderDep, position_id: uuid.UUID
) -> Response:
    return await _position_response(request, session, position_id, principal)


async def _position_response(
    request: Request, session: SessionDep, position_id: uuid.UUID, principal: Principal
) -> Response:
    """A position with `ETag`, or 304 (without reading its current assignment) when it is unchanged."""
    row = await service.visible_row(session, position_id, principal)
    unchanged = not_modified(request, row["version"])
    if unchanged is not None:
        return unchanged
    await service.fill_current(session, [row], principal)
    return object_response(None, row)


@direct("positions_get", snapshot=True)  # the position and its current assignment
async def positions_get_direct(
    request: Request, session: DirectSession, *, position_id: uuid.UUID
) -> Response | None:
    principal = check_roles(await resolve_principal(request, session), READERS)
    return await _position_response(request, as_session(session), position_id, principal)


@router.post(
    "",
    status_code=201,
    response_model=PositionRead,
    summary="Open a position",
    description=WRITERS_DOC + " Under a `signed` agreement (else 409 `agreement_not_signed`) that has a free "
    "position (else 409 `agreement_positions_exhausted`, with `positions_granted` and `positions_open`). "
    "`territory_id` defaults to the agreement's; another must lie in the agreement's subtree (422 "
    "`territory_outside_agreement`). An agreement or territory outside the caller's territories → 422 "
    "`unknown_reference`. `opened_on` lies within the agreement's period, `starts_on` to `ends_on` "
    "included (else 422 `validation_error` at `/opened_on`). `external_ref` is unique within the "
    "agreement's territory (409 `external_ref_exists`).",
    responses=problem_responses(401, 403, 409, 422),
)
async def positions_create(
    request: Request, session: SessionDep, principal: WriterDep, idem: IdempotencyDep, body: PositionCreate
) -> Response:
    async def produce() -> Response:
        position = await service.create(session, body, principal)
        return created(
            request,
            await service.read(session, position, principal),
            "positions_get",
            version=position.version,
            position_id=str(position.id),
        )

    return await idem.run(produce)


@router.patch(
    "/{position_id}",
    response_model=PositionRead,
    summary="Change a position",
    description=WRITERS_DOC + " JSON Merge Patch of `territory_id`, `external_ref`, `typology`, `opened_on`; "
    "a closed position → 409 `position_closed`. A new `opened_on` stays within the agreement's period "
    "and on or before the first assignment's `started_on` (else 422 `validation_error` at `/opened_on`). "
    + IF_MATCH_DOC,
    responses=problem_responses(401, 403, 404, 409, 412, 422, 428),
)
async def positions_update(
    session: SessionDep,
    principal: WriterDep,
    position_id: uuid.UUID,
    body: PositionUpdate,
    if_match: IfMatchHeader = None,
) -> Response:
    position = await service.get_for_change(session, position_id, principal)
    require_if_match(if_match, position.version)
    position = await service.update(session, position, body, principal)
    return _respond(await service.read(session, position, principal))


@router.post(
    "/{position_id}/close",
    response_model=PositionRead,
    summary="Close a position",
    description=WRITERS_DOC + " `closed_on` on or after `opened_on` (422); already closed → 409 "
    "`position_closed`; an assignment running past `closed_on` → 409 `position_occupied` (end it first). "
    "Answers 200 with the position.",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def positions_close(
    session: SessionDep,
    principal: WriterDep,
    idem: IdempotencyDep,
    position_id: uuid.UUID,
    body: PositionClose,
    if_match: ActionIfMatchHeader = None,
) -> Response:
    async def produce() -> Response:
        position = await service.get_for_change(session, position_id, principal)
        if if_match is not None:
            require_if_match(if_match, position.version)
        position = await service.close(session, position, body)
        return _respond(await service.read(session, position, principal))

    return await idem.run(produce)


@router.get(
    "/{position_id}/assignments",
    response_model=AssignmentPage,
    summary="List a position's assignments",
    description=PERSONAL_DOC + " The position's history, by `started_on`.",
    responses=csv_responses(AssignmentRead) | problem_responses(401, 403, 404, 422),
)
@audit.journaled
async def positions_assignments_list(
    request: Request,
    session: SessionDep,
    principal: ReaderDep,
    page: PageDep,
    position_id: uuid.UUID,
) -> Response:
    return await list_response(
        request,
        session,
        page,
        AssignmentRead,
        lambda db, p: service.list_position_assignments(db, position_id, principal, p),
        journal=ASSIGNMENTS_JOURNAL,
    )


@router.post(
    "/{position_id}/assignments",
    status_code=201,
    response_model=AssignmentRead,
    summary="Assign a counsellor to a position",
    description=WRITERS_DOC + " The counsellor holds the position from `started_on` until the assignment "
    "is ended. A closed position → 409 `position_closed`; another assignment of the position covering one "
    "of these days → 409 `position_occupied`; the counsellor holding another position on one of these days "
    "→ 409 `counsellor_already_assigned`; a counsellor outside the caller's territories → 422 "
    "`unknown_reference`; `started_on` before the position's `opened_on` or after its agreement's "
    "`ends_on` → 422 `validation_error` at `/started_on`.",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def positions_assignments_create(
    request: Request,
    session: SessionDep,
    principal: WriterDep,
    idem: IdempotencyDep,
    position_id: uuid.UUID,
    body: AssignmentCreate,
) -> Response:
    async def produce() -> Response:
        assignment = await service.assign(session, position_id, body, principal)
        return created(
            request,
            service.assignment_read(assignment),
            "assignments_get",
            version=assignment.version,
            assignment_id=str(assignment.id),
        )

    return await idem.run(produce)


@assignments_router.get(
    "",
    response_model=AssignmentPage,
    summary="List assignments",
    description=PERSONAL_DOC.replace(" (404 when the object is outside its territories too)", ""),
    responses=csv_responses(AssignmentRead) | problem_responses(401, 403, 422),
)
@audit.journaled
async def assignments_list(
    request: Request,
    session: SessionDep,
    principal: WriterDep,
    page: PageDep,
    counsellor_id: uuid.UUID | None = None,
    territory_id: Annotated[
        uuid.UUID | None, Query(description="Assignments to positions of this territory.")
    ] = None,
    within: Annotated[
        uuid.UUID | None, Query(description="A territory id: assignments to positions of its whole subtree.")
    ] = None,
    active: Annotated[
        bool | None, Query(description="`true`: those covering today (UTC); `false`: the others.")
    ] = None,
    sort: Annotated[
        str | None,
        Query(
            description="`started_on` (default) or `created_at`, `-` to reverse.", examples=["-started_on"]
        ),
    ] = None,
) -> Response:
    return await list_response(
        request,
        session,
        page,
        AssignmentRead,
        lambda db, p: service.list_assignments(
            db,
            principal,
            p,
            counsellor_id=counsellor_id,
            territory_id=territory_id,
            within=within,
            active=active,
            sort=sort,
        ),
        journal=ASSIGNMENTS_JOURNAL,
    )


@assignments_router.get(
    "/{assignment_id}",
    response_model=AssignmentRead,
    summary="Get an assignment",
    description=PERSONAL_DOC + " Answers `ETag`.",
    responses=problem_responses(401, 403, 404, 422),
)
@audit.journaled
async def assignments_get(
    request: Request, session: SessionDep, principal: ReaderDep, assignment_id: uuid.UUID
) -> Response:
    row = await service.assignment_row(session, assignment_id, principal)
    response = object_response(request, row)
    if response.status_code == 200:
        await audit.record_read(
            session, resource=service.ASSIGNMENTS, subject_ids=ASSIGNMENTS_JOURNAL.ids([row])
        )
    return response


@assignments_router.post(
    "/{assignment_id}/end",
    response_model=AssignmentRead,
    summary="End an assignment",
    description=WRITERS_DOC + " `ended_on` is the last day (inclusive: the next assignment may start the "
    "day after), on or after `started_on` (422); `end_reason` from the `end_reasons` referential. Already "
    "ended → 409 `assignment_already_ended`. Answers 200 with the assignment.",
    responses=problem_responses(401, 403, 404, 409, 412, 422),
)
async def assignments_end(
    session: SessionDep,
    principal: WriterDep,
    idem: IdempotencyDep,
    assignment_id: uuid.UUID,
    body: AssignmentEnd,
    if_match: ActionIfMatchHeader = None,
) -> Response:
    async def produce() -> Response:
        assignment = await service.end(session, assignment_id, body, principal, if_match)
        return model_response(service.assignment_read(assignment), version=assignment.version)

    return await idem.run(produce)
