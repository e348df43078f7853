"""HTTP handlers of /workshops, their registrations, their attendance and their iCalendar feeds."""

from __future__ import annotations

import math
import re
import uuid
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends, Header, Query, Request, Response
from pydantic import TypeAdapter
from starlette.convertors import Convertor, register_url_convertor

from app.core import audit
from app.core.auth import Principal, PrincipalDep, require_roles, resolve_principal
from app.core.cache_control import PRIVATE
from app.core.csv import csv_responses, list_response
from app.core.direct import (
    DirectSession,
    as_session,
    direct,
    json_body,
    validated,
)
from app.core.idempotency import IdempotencyDep
from app.core.listing import PageDep, direct_page_request
from app.core.media import Separator
from app.core.metrics import on_commit
from app.core.pagination import PageRequest
from app.core.problems import AppError, ValidationFailed, problem_responses
from app.core.responses import object_response, path_for
from app.core.routers import api_router
from app.core.types import NO_CONTROL_CHARACTERS, QueryTimestamp
from app.core.versioning import IF_MATCH_DOC, IfMatchHeader, require_if_match
from app.db import SessionDep
from app.referentials.data import Level, Theme
from app.workshops import calendar, service
from app.workshops import repository as repo
from app.workshops.models import RegistrationStatus, WorkshopStatus
from app.workshops.schemas import (
    AttendanceReport,
    RegistrationCreate,
    RegistrationCreated,
    RegistrationPage,
    RegistrationRead,
    WorkshopCancel,
    WorkshopCreate,
    WorkshopPage,
    WorkshopRead,
    WorkshopUpdate,
    theme_mask,
)

router = api_router("/workshops", tags=["workshops"])


class _NoDot(Convertor[str]):
    """A path segment without a dot: `/workshops/{id}` then leaves `/workshops/<id>.ics` to its own route,
    so that another method there is a 405 rather than a 422 on an id ending in `.ics`. A malformed id
    without a dot still reaches validation (422)."""

    regex = "[^/.]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return str(value)


register_url_convertor("nodot", _NoDot())

WriterDep = Annotated[Principal, Depends(require_roles(*service.WRITERS))]
MAX_RADIUS_KM = 100.0
CALENDAR_LIMIT = 1000
_CALENDAR: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "An iCalendar document.",
        "content": {"text/calendar": {"schema": {"type": "string"}, "example": "BEGIN:VCALENDAR\r\n..."}},
    }
}
_NEAR = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*$")

READ_DOC = (
    "Public for `public=true` workshops (no key needed). With a key, also the workshops of the key's "
    "territories (and a counsellor's own). Any other → 404. `counsellor_id` (who runs it) is personal data, "
    "as a position's `current_assignment`: shown to `admin`, to a `territory_manager` of the workshop's "
    "territory and to the `counsellor` who runs it; null for everyone else (no key, `viewer`, another "
    "territory's manager, another counsellor)."
)
CALENDAR_DOC = (
    "`SEQUENCE` rises only when the start, the end or the place change, or on cancellation (a registration "
    "changes nothing a calendar shows); `DESCRIPTION` tells the workshop's description, where, its level and "
    "themes; `URL` is the workshop's public page (setting `WORKSHOP_PAGE_URL`), absent when unset."
)
ORGANISERS_DOC = (
    "Roles: `admin`, a `territory_manager` of the workshop's territory (or above), the `counsellor` who runs "
    "it. Another caller who can see the workshop → 403; one who cannot → 404."
)


def _near(near: str | None, radius_km: float | None) -> repo.Near | None:
    if near is None:
        if radius_km is not None:
            raise ValidationFailed("/query/radius_km", "radius_km goes with near=lat,lon")
        return None
    match = _NEAR.match(near)
    lat, lon = (float(match.group(1)), float(match.group(2))) if match else (math.nan, math.nan)
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValidationFailed("/query/near", "near=lat,lon in degrees, e.g. near=45.76,4.84")
    return repo.Near(lat, lon, radius_km if radius_km is not None else 10.0)


async def search_filters(
    session: SessionDep,
    territory_id: Annotated[uuid.UUID | None, Query(description="Workshops of this territory.")] = None,
    within: Annotated[
        uuid.UUID | None, Query(description="A territory id: workshops of it and of its whole subtree.")
    ] = None,
    department_code: Annotated[
        str | None,
        Query(pattern=r"^(\d{2}|2[AB]|97\d)$", description="The venue's département.", examples=["69"]),
    ] = None,
    commune_code: Annotated[
        str | None,
        Query(
            pattern=r"^([013-9]\d|2[AB1-9])\d{3}$",
            description="The venue's commune (INSEE).",
            examples=["69123"],
        ),
    ] = None,
    postcode: Annotated[
        str | None, Query(pattern=r"^\d{5}$", description="The venue's postcode.", examples=["69003"])
    ] = None,
    theme: Annotated[
        list[Theme] | None, Query(description="Repeatable: workshops with any of these themes.")
    ] = None,
    level: Level | None = None,
    starts_from: Annotated[
        QueryTimestamp | None,
        Query(alias="from", description="Earliest `starts_at` (RFC 3339); default now: upcoming workshops."),
    ] = None,
    starts_to: Annotated[
        QueryTimestamp | None, Query(alias="to", description="Latest `starts_at` (RFC 3339).")
    ] = None,
    has_seats: Annotated[
        bool, Query(description="`true`: scheduled workshops with `seats_left > 0` only.")
    ] = False,
    status: WorkshopStatus | None = None,
    near: Annotated[
        str | None,
        Query(
            max_length=64,
            description="`lat,lon` (degrees): workshops whose venue lies within `radius_km` "
            "(remote ones never).",
            examples=["45.7640,4.8357"],
        ),
        NO_CONTROL_CHARACTERS,
    ] = None,
    radius_km: Annotated[
        float | None, Query(gt=0, le=MAX_RADIUS_KM, description="With `near`: 0 to 100 km, default 10.")
    ] = None,
) -> repo.Filters:
    return await _filters(
        session,
        territory_id=territory_id,
        within=within,
        department_code=department_code,
        commune_code=commune_code,
        postcode=postcode,
        theme=theme,
        level=level,
        starts_from=starts_from,
        starts_to=starts_to,
        has_seats=has_seats,
        status=status,
        near=near,
        radius_km=radius_km,
    )


async def _filters(
    session: Any,
    *,
    territory_id: uuid.UUID | None,
    within: uuid.UUID | None,
    department_code: str | None,
    commune_code: str | None,
    postcode: str | None,
    theme: list[Theme] | None,
    level: Level | None,
    starts_from: datetime | None,
    starts_to: datetime | None,
    has_seats: bool,
    status: WorkshopStatus | None,
    near: str | None,
    radius_km: float | None,
) -> repo.Filters:
    return repo.Filters(
        territory_id=territory_id,
        within_path=await service.subtree_path(session, within),
        department_code=department_code,
        commune_code=commune_code,
        postcode=postcode,
        themes_mask=theme_mask(theme or []),
        level=level.value if level else None,
        starts_from=service.starts_window(starts_from),
        starts_to=starts_to,
        has_seats=has_seats,
        statuses=[status.value] if status else [],
        near=_near(near, radius_km),
    )


FiltersDep = Annotated[repo.Filters, Depends(search_filters)]


@router.get(
    "",
    response_model=WorkshopPage,
    summary="Search workshops",
    description=READ_DOC + " Upcoming by default (`from` defaults to now). Sorted by `starts_at` then id; "
    "`sort=distance` with `near` sorts by distance from that point.",
    responses=csv_responses(WorkshopRead) | problem_responses(401, 422),
)
async def workshops_list(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    page: PageDep,
    filters: FiltersDep,
    sort: Annotated[
        str | None,
        Query(
            description="`starts_at` (default), `-starts_at`, or `distance` (needs `near`).",
            examples=["distance"],
        ),
    ] = None,
) -> Response:
    return await _search(request, session, principal, page, filters, sort)


async def _search(
    request: Request,
    session: SessionDep,
    principal: Principal,
    page: PageRequest,
    filters: repo.Filters,
    sort: str | None,
) -> Response:
    if sort not in (None, "starts_at", "-starts_at", "distance"):
        raise ValidationFailed("/query/sort", "sort by one of: starts_at, -starts_at, distance")
    if sort == "distance" and filters.near is None:
        raise ValidationFailed("/query/sort", "sort=distance needs near=lat,lon")
    return await list_response(
        request,
        session,
        page,
        WorkshopRead,
        lambda db, p: service.list_workshops(db, principal, p, filters, sort),
    )


@direct(
    "workshops_list",
    refuses=("from", "to", "near", "radius_km", "sort"),
    # The subtree's path, then the page; the page, then its total.
    snapshot=lambda params: params["include_total"] or params["within"] is not None,
)
async def workshops_list_direct(
    request: Request,
    session: DirectSession,
    *,
    territory_id: uuid.UUID | None,
    within: uuid.UUID | None,
    department_code: str | None,
    commune_code: str | None,
    postcode: str | None,
    theme: list[Theme] | None,
    level: Level | None,
    has_seats: bool,
    status: WorkshopStatus | None,
    limit: int,
    cursor: str | None,
    include_total: bool,
    sep: Separator,
) -> Response | None:
    """The search's common case: the filters by territory, place, theme, level, seats and status; a date
    range, a distance or a sort go through the route."""
    page = await direct_page_request(request, session, limit, cursor, include_total, sep)
    principal = await resolve_principal(request, session)
    db = as_session(session)
    filters = await _filters(
        db,
        territory_id=territory_id,
        within=within,
        department_code=department_code,
        commune_code=commune_code,
        postcode=postcode,
        theme=theme,
        level=level,
        starts_from=None,
        starts_to=None,
        has_seats=has_seats,
        status=status,
        near=None,
        radius_km=None,
    )
    return await _search(request, db, principal, page, filters, None)


@router.get(
    ".ics",
    summary="Workshops as an iCalendar feed",
    description=READ_DOC + " The same filters as the search, in date order, at most "
    f"{CALENDAR_LIMIT} events (RFC 5545, `text/calendar`). " + CALENDAR_DOC,
    response_class=Response,
    responses=_CALENDAR | problem_responses(401, 422),
)
async def workshops_calendar(
    request: Request, session: SessionDep, principal: PrincipalDep, filters: FiltersDep
) -> Response:
    rows = await service.calendar_rows(session, principal, filters, CALENDAR_LIMIT)
    return calendar.response(request, rows)


# Declared before `/{workshop_id}`, which would otherwise take `<id>.ics` for an id (and answer 422).
@router.get(
    "/{workshop_id}.ics",
    summary="One workshop as iCalendar",
    description=READ_DOC + " One VEVENT (RFC 5545, `text/calendar`); `STATUS:CANCELLED` once cancelled; "
    "the calendar is named after the workshop. " + CALENDAR_DOC,
    response_class=Response,
    responses=_CALENDAR | problem_responses(401, 404, 422),
)
async def workshops_get_calendar(
    request: Request, session: SessionDep, principal: PrincipalDep, workshop_id: uuid.UUID
) -> Response:
    row = await service.read_visible(session, workshop_id, principal, calendar=True)
    return calendar.response(request, [row], name=row.title)


@router.get(
    "/{workshop_id:nodot}",
    response_model=WorkshopRead,
    summary="Get a workshop",
    description=READ_DOC + " Answers `ETag`; `If-None-Match` with the current ETag gives 304.",
    responses=problem_responses(401, 404, 422),
)
async def workshops_get(
    request: Request, session: SessionDep, principal: PrincipalDep, workshop_id: uuid.UUID
) -> Response:
    return object_response(request, await service.read_visible(session, workshop_id, principal))


@direct("workshops_get")
async def workshops_get_direct(
    request: Request, session: DirectSession, *, workshop_id: uuid.UUID
) -> Response | None:
    principal = await resolve_principal(request, session)
    return object_response(request, await service.read_visible(as_session(session), workshop_id, principal))


@router.post(
    "",
    status_code=201,
    response_model=WorkshopRead,
    summary="Schedule a workshop",
    description="Roles: `admin`, `territory_manager` (positions of its territories), `counsellor` (a "
    "position it holds today). `territory_id` is the position's; `counsellor_id` defaults to the position's "
    "current counsellor. `in_person` needs a `venue` whose `commune_code` and `postcode` are checked against "
    "the territorial referential (422 `unknown_commune`, `postcode_mismatch`); `remote` an `online_url`. "
    "A position out of reach → 422 `unknown_reference`; a closed one → 409 `position_closed`.",
    responses=problem_responses(401, 403, 409, 422),
)
async def workshops_create(
    request: Request, session: SessionDep, principal: WriterDep, idem: IdempotencyDep, body: WorkshopCreate
) -> Response:
    async def produce() -> Response:
        workshop = await service.create(session, body, principal)
        location = path_for(request, "workshops_get", workshop_id=str(workshop.id))
        return object_response(
            None, await service.reread(session, workshop), status_code=201, location=location
        )

    return await idem.run(produce)


@router.patch(
    "/{workshop_id:nodot}",
    response_model=WorkshopRead,
    summary="Change a workshop",
    description=ORGANISERS_DOC + " JSON Merge Patch of a `scheduled` workshop (else 409 "
    "`workshop_not_editable`). A capacity below the confirmed registrations, or a waitlist below the "
    "waitlisted ones → 409 `capacity_below_registrations`; a raised capacity promotes waitlisted people. "
    "Changes appear in the change feed (`resource=workshops`). " + IF_MATCH_DOC,
    responses=problem_responses(401, 403, 404, 409, 412, 422, 428),
)
async def workshops_update(
    session: SessionDep,
    principal: WriterDep,
    workshop_id: uuid.UUID,
    body: WorkshopUpdate,
    if_match: IfMatchHeader = None,
) -> Response:
    workshop = await service.get_for_change(session, workshop_id, principal)
    require_if_match(if_match, workshop.version)
    workshop = await service.update(session, workshop, body)
    return object_response(None, await service.reread(session, workshop))


@router.post(
    "/{workshop_id}/cancel",
    response_model=WorkshopRead,
    summary="Cancel a workshop",
    description=ORGANISERS_DOC + " `scheduled` → `cancelled`, with every registration; already cancelled or "
    "completed → 409 `workshop_not_editable`. Answers 200 with the workshop; the change feed tells.",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def workshops_cancel(
    session: SessionDep,
    principal: WriterDep,
    idem: IdempotencyDep,
    workshop_id: uuid.UUID,
    body: WorkshopCancel,
) -> Response:
    async def produce() -> Response:
        workshop = await service.get_for_change(session, workshop_id, principal)
        workshop = await service.cancel(session, workshop, body)
        return object_response(None, await service.reread(session, workshop))

    return await idem.run(produce)


@router.put(
    "/{workshop_id}/attendance",
    response_model=WorkshopRead,
    summary="Record attendance (activity report)",
    description=ORGANISERS_DOC + " Once the workshop has started (409 `workshop_not_started`): each "
    "registration's attendance, and the walk-ins whose `age_brackets` and `social_statuses` must each add up "
    "to `total` (422 `attendance_totals_mismatch`). The workshop becomes `completed`; sending it again "
    "replaces the report. A cancelled workshop → 409 `workshop_not_editable`.",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def workshops_attendance(
    session: SessionDep, principal: WriterDep, workshop_id: uuid.UUID, body: AttendanceReport
) -> Response:
    workshop = await service.get_for_change(session, workshop_id, principal)
    workshop = await service.record_attendance(session, workshop, body)
    return object_response(None, await service.reread(session, workshop))


@router.post(
    "/{workshop_id}/registrations",
    status_code=201,
    response_model=RegistrationCreated,
    summary="Register to a workshop",
    description="Public (rate-limited) for public workshops. Confirmed while seats are left, then "
    "waitlisted (with its `waitlist_rank`), then 409 `workshop_full`. A workshop that is not `scheduled` or "
    "has started → 409 `workshop_closed`; the same email twice → 409 `already_registered`. The answer "
    "carries a `cancel_token`, once.",
    responses=problem_responses(401, 404, 409, 422),
)
async def workshops_register(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    idem: IdempotencyDep,
    workshop_id: uuid.UUID,
    body: RegistrationCreate,
) -> Response:
    async def produce() -> Response:
        response = await _register(request, session, principal, workshop_id, body)
        if idem.key is not None:
            # The stored response shows the registrant: its replay journals them, its erasure erases it.
            idem.shows(service.REGISTRATIONS, uuid.UUID(orjson.loads(response.body)["id"]))
        return response

    return await idem.run(produce, secret_fields=("cancel_token",))


async def _register(
    request: Request,
    session: SessionDep,
    principal: Principal,
    workshop_id: uuid.UUID,
    body: RegistrationCreate,
) -> Response:
    metrics = request.app.state.metrics
    try:
        registration, token = await service.register(session, workshop_id, body, principal)
    except AppError as refusal:
        metrics.registrations_refused.labels(refusal.code).inc()
        raise
    row = registration._asdict()
    status = row["status"]
    on_commit(session, metrics.registrations.labels(str(getattr(status, "value", status))))
    row["cancel_token"] = token
    location = path_for(
        request, "workshops_registrations_get", workshop_id=str(workshop_id), registration_id=str(row["id"])
    )
    return object_response(None, row, status_code=201, location=location)


_REGISTRATION = TypeAdapter(RegistrationCreate)


@direct("workshops_register")
async def workshops_register_direct(
    request: Request, session: DirectSession, *, workshop_id: uuid.UUID
) -> Response | None:
    """A registration without an Idempotency-Key (which the route answers), with a valid JSON body."""
    if "idempotency-key" in request.headers:
        return None
    body = validated(_REGISTRATION, await json_body(request))
    principal = await resolve_principal(request, session)
    return await _register(request, as_session(session), principal, workshop_id, body)


@router.get(
    "/{workshop_id}/registrations",
    response_model=RegistrationPage,
    summary="List a workshop's registrations",
    description=ORGANISERS_DOC + " Personal data. In registration order.",
    responses=csv_responses(RegistrationRead) | problem_responses(401, 403, 404, 422),
)
@audit.journaled
async def workshops_registrations_list(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    page: PageDep,
    workshop_id: uuid.UUID,
    status: RegistrationStatus | None = None,
) -> Response:
    return await list_response(
        request,
        session,
        page,
        RegistrationRead,
        lambda db, p: service.list_registrations(db, workshop_id, principal, p, status),
        journal=audit.Journal(service.REGISTRATIONS),
    )


CancelTokenHeader = Annotated[
    str | None,
    Header(
        alias="X-Cancel-Token",
        max_length=128,
        description="The `cancel_token` given when registering.",
        examples=["ct_3q2Zb1kR9yW0mTfA7cXeVg"],
    ),
]


@router.get(
    "/{workshop_id}/registrations/{registration_id}",
    response_model=RegistrationRead,
    summary="Get a registration",
    description="Personal data. The registrant reads their own registration with its `X-Cancel-Token` (the "
    "token that cancels it; no key needed), e.g. to see that it went from `waitlisted` to `confirmed`: "
    "that registration only (another's token or a wrong one → 403, the token is checked before any key). "
    "Without a token: " + ORGANISERS_DOC + " No key and no token → 401. Never cached (`private, no-store`).",
    responses=problem_responses(401, 403, 404, 422),
)
@audit.journaled
async def workshops_registrations_get(
    session: SessionDep,
    principal: PrincipalDep,
    workshop_id: uuid.UUID,
    registration_id: uuid.UUID,
    cancel_token: CancelTokenHeader = None,
) -> Response:
    row = await service.read_registration(session, workshop_id, registration_id, principal, cancel_token)
    await audit.record_read(session, resource=service.REGISTRATIONS, subject_ids=[registration_id])
    response = object_response(None, row)
    response.headers["Cache-Control"] = PRIVATE
    return response


@router.delete(
    "/{workshop_id}/registrations/{registration_id}",
    status_code=204,
    summary="Cancel a registration",
    description="With the registration's `X-Cancel-Token` (no key needed; a wrong token → 403), or by the "
    "workshop's organisers (" + ORGANISERS_DOC + ") The first waitlisted registration takes the freed "
    "seat in the same transaction. Cancelling a cancelled registration changes nothing (204); one of a "
    "completed workshop → 409 `workshop_closed`.",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def workshops_registrations_cancel(
    session: SessionDep,
    principal: PrincipalDep,
    workshop_id: uuid.UUID,
    registration_id: uuid.UUID,
    cancel_token: CancelTokenHeader = None,
) -> Response:
    await service.cancel_registration(session, workshop_id, registration_id, principal, cancel_token)
    return Response(status_code=204)
