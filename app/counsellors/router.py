"""HTTP handlers of /counsellors, including the HR sync (by-ref upsert and bulk)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends, Header, Path, Query, Request, Response
from pydantic import ValidationError
from starlette.convertors import Convertor, register_url_convertor

from app.core import audit
from app.core.auth import AdminDep, Principal, Role, check_roles, require_roles, resolve_principal
from app.core.csv import batch_column, csv_responses, list_response
from app.core.direct import (
    DirectSession,
    as_session,
    direct,
    json_body,
)
from app.core.idempotency import IdempotencyDep
from app.core.listing import PageDep, direct_page_request
from app.core.media import Separator
from app.core.metrics import Metrics, on_commit_tally
from app.core.problems import problem_responses
from app.core.responses import created, model_response, object_response, page_response
from app.core.routers import api_router
from app.core.schemas import Timestamp
from app.core.types import FreeText
from app.core.versioning import IF_MATCH_DOC, IfMatchHeader, not_modified, require_if_match
from app.counsellors import service
from app.counsellors.errors import BulkRejected
from app.counsellors.schemas import (
    BulkRequest,
    BulkResponse,
    CounsellorCreate,
    CounsellorPage,
    CounsellorRead,
    CounsellorUpdate,
    CounsellorUpsert,
)
from app.db import SessionDep

router = api_router("/counsellors", tags=["counsellors"])
JOURNAL = audit.Journal(service.RESOURCE)

# Who may call at all; which record each may see is the service's business (404 / 403, API.md).
READERS = (Role.admin, Role.territory_manager, Role.viewer, Role.counsellor)
ReaderDep = Annotated[Principal, Depends(require_roles(*READERS))]
WriterDep = Annotated[Principal, Depends(require_roles(Role.admin, Role.territory_manager))]

PERSONAL_DOC = (
    "Counsellors are personal data. Roles: `admin` (everywhere), `territory_manager` (counsellors employed "
    "by its territories and their descendants)"
)
WRITE_DOC = PERSONAL_DOC + ". Viewers and counsellor keys → 403, no key → 401."
GET_DOC = (
    PERSONAL_DOC + ", and a `counsellor` key for its own record. Another counsellor, or a viewer, on a "
    "counsellor of its territories → 403; outside them → 404."
)
ERASED_DOC = (
    "Its response, stored for an `Idempotency-Key`, goes when a counsellor it shows is anonymised: a retry "
    "with the key then answers 410 `idempotency_key_erased` (neither the erased data nor a second run)."
)
ExternalRefPath = Annotated[
    FreeText,
    Path(
        min_length=1,
        max_length=64,
        description="The person's id in the employer's HR system.",
        examples=["MATRICULE-000123"],
    ),
]
OptionalIfMatchHeader = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description='Optional: the ETag of the version being replaced, e.g. `"3"` (stale → 412).',
        examples=['"1"'],
    ),
]


class _CounsellorIdConvertor(Convertor[str]):
    """`{counsellor_id}` never matches `bulk`: `/counsellors/bulk` is a resource of its own, so that GET or
    PATCH there answer 405 with `Allow: POST` rather than 422 for an id that is not one. Any other value
    reaches the handler, which answers 422 for one that is not a UUID."""

    regex = "(?!bulk$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("counsellor_id", _CounsellorIdConvertor())


async def _row_response(request: Request, session: SessionDep, row: dict[str, Any]) -> Response:
    """A read row with `ETag`, or 304 (without reading the current assignment) when it is unchanged."""
    unchanged = not_modified(request, row["version"])
    if unchanged is not None:
        return unchanged
    await service.fill_current(session, [row])
    await audit.record_read(session, resource=service.RESOURCE, subject_ids=[row["id"]])
    return object_response(None, row)


def _statuses(results: Any) -> Counter[str]:
    """How many items of a bulk's results have each status (`201`, `200`, `422`, `424`)."""
    return Counter(str(result["status"]) for result in results)


def bulk_tally(metrics: Metrics, results: Any) -> None:
    for status, amount in _statuses(results).items():
        metrics.bulk_items.labels(status).inc(amount)


def _respond(read: CounsellorRead, status_code: int = 200) -> Response:
    return model_response(read, version=read.version, status_code=status_code)


@router.get(
    "",
    response_model=CounsellorPage,
    summary="List counsellors",
    description=PERSONAL_DOC + ". Viewers and counsellor keys → 403 (a viewer never lists personal data, "
    "and a counsellor reads its own record with `GET /counsellors/{id}`); no key → 401.",
    responses=csv_responses(CounsellorRead) | problem_responses(401, 403, 422),
)
@audit.journaled
async def counsellors_list(
    request: Request,
    session: SessionDep,
    principal: WriterDep,
    page: PageDep,
    territory_id: Annotated[
        uuid.UUID | None, Query(description="Counsellors employed by this territory.")
    ] = None,
    within: Annotated[
        uuid.UUID | None, Query(description="A territory id: employers in its whole subtree.")
    ] = None,
    external_ref: Annotated[
        FreeText | None, Query(min_length=1, max_length=64, examples=["MATRICULE-000123"])
    ] = None,
    updated_since: Annotated[
        Timestamp | None, Query(description="Changed at or after this instant (RFC 3339 with an offset).")
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
        CounsellorRead,
        lambda db, p: service.list_counsellors(
            db,
            principal,
            p,
            territory_id=territory_id,
            within=within,
            external_ref=external_ref,
            updated_since=updated_since,
            sort=sort,
        ),
        journal=JOURNAL,
    )


# The page, its current assignments, its total, and the page's journal line in the answer's transaction.
@direct("counsellors_list", snapshot=True, journal=True)
async def counsellors_list_direct(
    request: Request,
    session: DirectSession,
    *,
    territory_id: uuid.UUID | None,
    within: uuid.UUID | None,
    external_ref: str | None,
    updated_since: datetime | None,
    sort: str | None,
    limit: int,
    cursor: str | None,
    include_total: bool,
    sep: Separator,
) -> Response | None:
    page = await direct_page_request(request, session, limit, cursor, include_total, sep)
    principal = check_roles(await resolve_principal(request, session), (Role.admin, Role.territory_manager))
    direct_session = as_session(session)
    rows, next_cursor, total = await service.list_counsellors(
        direct_session,
        principal,
        page,
        territory_id=territory_id,
        within=within,
        external_ref=external_ref,
        updated_since=updated_since,
        sort=sort,
    )
    await audit.record_read(
        direct_session, resource=JOURNAL.resource, subject_ids=batch_column(rows, JOURNAL.subject)
    )
    return page_response(request, rows, next_cursor, total)


@router.get(
    "/by-ref/{external_ref}",
    response_model=CounsellorRead,
    summary="Get a counsellor by HR reference",
    description=WRITE_DOC
    + " The counsellor `external_ref` of the employer `territory_id` (which may be left "
    "out when the key has exactly one territory); none, or an employer outside the caller's territories → "
    "404. Answers `ETag`.",
    responses=problem_responses(401, 403, 404, 422),
)
@audit.journaled
async def counsellors_get_by_ref(
    request: Request,
    session: SessionDep,
    principal: WriterDep,
    external_ref: ExternalRefPath,
    territory_id: Annotated[
        uuid.UUID | None, Query(description="The employer; optional when the key has exactly one territory.")
    ] = None,
) -> Response:
    return await _row_response(
        request, session, await service.row_by_ref(session, external_ref, territory_id, principal)
    )


@router.get(
    "/{counsellor_id:counsellor_id}",
    response_model=CounsellorRead,
    summary="Get a counsellor",
    description=GET_DOC + " Answers `ETag`; `If-None-Match` with the current ETag gives 304.",
    responses=problem_responses(401, 403, 404, 422),
)
@audit.journaled
async def counsellors_get(
    request: Request, session: SessionDep, principal: ReaderDep, counsellor_id: uuid.UUID
) -> Response:
    return await _row_response(request, session, await service.visible_row(session, counsellor_id, principal))


# The counsellor and its current assignment, in one snapshot, and the answer's journal line.
@direct("counsellors_get", snapshot=True, journal=True)
async def counsellors_get_direct(
    request: Request, session: DirectSession, *, counsellor_id: uuid.UUID
) -> Response | None:
    principal = check_roles(await resolve_principal(request, session), READERS)
    direct_session = as_session(session)
    row = await service.visible_row(direct_session, counsellor_id, principal)
    return await _row_response(request, direct_session, row)


@router.post(
    "",
    status_code=201,
    response_model=CounsellorRead,
    summary="Create a counsellor",
    description=WRITE_DOC + " `territory_id` (the employer) outside the caller's territories → 422 "
    "`unknown_reference`; `external_ref` taken within the employer → 409 `external_ref_exists`. HR systems "
    "rather use `PUT /counsellors/by-ref/{external_ref}` or the bulk upsert. " + ERASED_DOC,
    responses=problem_responses(401, 403, 409, 410, 422),
)
async def counsellors_create(
    request: Request, session: SessionDep, principal: WriterDep, idem: IdempotencyDep, body: CounsellorCreate
) -> Response:
    async def produce() -> Response:
        counsellor = await service.create(session, body, principal)
        idem.shows(service.RESOURCE, counsellor.id)
        return created(
            request,
            await service.read(session, counsellor),
            "counsellors_get",
            version=counsellor.version,
            counsellor_id=str(counsellor.id),
        )

    return await idem.run(produce)


@router.patch(
    "/{counsellor_id:counsellor_id}",
    response_model=CounsellorRead,
    summary="Change a counsellor",
    description=WRITE_DOC + " JSON Merge Patch; `training` merges field by field (`null` clears it). An "
    "anonymised counsellor → 409 `counsellor_anonymized`. " + IF_MATCH_DOC,
    responses=problem_responses(401, 403, 404, 409, 412, 422, 428),
)
async def counsellors_update(
    session: SessionDep,
    principal: WriterDep,
    counsellor_id: uuid.UUID,
    body: CounsellorUpdate,
    if_match: IfMatchHeader = None,
) -> Response:
    counsellor = await service.get_for_change(session, counsellor_id, principal)
    require_if_match(if_match, counsellor.version)
    if not await service.update(session, counsellor, body, principal):
        # Nothing written, so no write event: the answer shows the person, and the journal has its line.
        await audit.record_read(session, resource=service.RESOURCE, subject_ids=[counsellor.id])
    return _respond(await service.read(session, counsellor))


@router.post(
    "/{counsellor_id}/anonymize",
    response_model=CounsellorRead,
    summary="Anonymise a counsellor",
    description="Admin. Erases the personal fields (names, email, phone and the HR `external_ref`) for good "
    "and sets `anonymized_at`; keeps the employer, the training figures and the assignments with their "
    "dates, so that positions and statistics keep counting, and, in the same transaction, every response "
    "stored for an `Idempotency-Key` that showed the person (a creation, a bulk upsert): a retry with such a "
    "key answers 410 `idempotency_key_erased`; and every API key bound to the counsellor is revoked, "
    "each revocation in the audit trail. Anonymising again changes nothing. "
    "Answers 200 with the counsellor.",
    responses=problem_responses(401, 403, 404, 422),
)
async def counsellors_anonymize(
    session: SessionDep, principal: AdminDep, idem: IdempotencyDep, counsellor_id: uuid.UUID
) -> Response:
    async def produce() -> Response:
        counsellor = await service.get_for_change(session, counsellor_id, principal)
        counsellor = await service.anonymize(session, counsellor)
        return _respond(await service.read(session, counsellor))

    return await idem.run(produce)


@router.put(
    "/by-ref/{external_ref}",
    response_model=CounsellorRead,
    status_code=200,
    summary="Create or update a counsellor by HR reference",
    description=WRITE_DOC
    + " Idempotent upsert keyed by (employer, `external_ref`): 201 with `Location` when "
    "it creates, 200 when it updates or finds nothing to change (the `version` then stays, and the answer, "
    "which shows the person, has its line in the personal-data journal). The body is "
    "the whole record: an optional field left out becomes null. `territory_id` (the employer) may be left "
    "out when the key has exactly one territory; one outside the caller's territories → 422 "
    "`unknown_reference`. `If-Match` is optional here (an HR system syncs without reading first); when "
    "sent, it must name the current version (412 otherwise, and on a counsellor that does not exist yet).",
    responses={
        201: {"model": CounsellorRead, "description": "Created."},
        **problem_responses(401, 403, 412, 422),
    },
)
async def counsellors_upsert_by_ref(
    request: Request,
    session: SessionDep,
    principal: WriterDep,
    external_ref: ExternalRefPath,
    body: CounsellorUpsert,
    if_match: OptionalIfMatchHeader = None,
) -> Response:
    counsellor, upserted = await service.upsert_by_ref(session, external_ref, body, principal, if_match)
    read = await service.read(session, counsellor)
    if upserted == "created":
        return created(
            request, read, "counsellors_get", version=counsellor.version, counsellor_id=str(counsellor.id)
        )
    if upserted == "unchanged":
        # Nothing written, so no write event: the answer shows the person (its current assignment too),
        # and the journal has its line, as for a read.
        await audit.record_read(session, resource=service.RESOURCE, subject_ids=[counsellor.id])
    return _respond(read)


# --- the HR sync's replay on the direct path (app/core/direct.py) -------------------------------------------

_WRITERS = (Role.admin, Role.territory_manager)


async def _writer(request: Request, session: DirectSession) -> Principal:
    """The route's checks before its parameters and body: the caller (401, 429, 422 for an unknown query
    parameter), then its role (401, 403)."""
    return check_roles(await resolve_principal(request, session), _WRITERS)


@direct("counsellors_upsert_by_ref")
async def counsellors_upsert_by_ref_direct(
    request: Request, session: DirectSession, *, external_ref: str
) -> Response | None:
    """An unchanged counsellor (an HR system's replay) answered without changing it (its answer's journal
    line is all it writes); the route creates or changes one, and answers `If-Match` and every invalid
    request."""
    if "if-match" in request.headers:
        return None
    body = await json_body(request)
    # It reads as a reading request does (no write lock), on a session of its own; the writing request's
    # `session` only writes the answer's journal line. Its answer is one statement
    # (`repository.sync_state_by_ref`: the employer, the counsellor and its current assignment): one
    # snapshot without BEGIN and COMMIT (behind PgBouncer, in a transaction all the same, for the timeouts
    # it sets).
    async with DirectSession(request.app.state.sessionmaker.kw["bind"]) as reads:
        principal = await _writer(request, reads)
        reads.begin_answer()
        try:
            data = CounsellorUpsert.model_validate(body)
        except ValidationError:
            return None
        read = await service.unchanged_by_ref(as_session(reads), external_ref, data, principal)
    if read is None:
        return None
    # The answer's journal line (the route's), in the request's write transaction, committed before the
    # answer is sent: a transaction of its own after the read, which took no lock.
    await audit.record_read(session, resource=service.RESOURCE, subject_ids=[read.id])
    return _respond(read)


@router.post(
    "/bulk",
    status_code=207,
    response_model=BulkResponse,
    summary="Create or update counsellors in bulk",
    description=WRITE_DOC + " 1 to 1 000 items keyed by `external_ref` (more → 422), each shaped like the "
    "body of `PUT /counsellors/by-ref/{external_ref}` plus its `external_ref`. Answers 207 with one result "
    "per item, in the order of the request: `201` created, `200` updated or unchanged (a replay changes "
    "nothing and keeps every `version`), `422` refused (`validation_error`, or `unknown_reference` for an "
    "employer outside the caller's territories, with pointers into `items`). Items are applied "
    "independently; with `atomic=true`, any refused item refuses them all: 422 `bulk_rejected`, whose "
    "`items` lists each item's result (`424` for the items that were valid but not applied). " + ERASED_DOC,
    responses=problem_responses(401, 403, 410, 413, 422),
)
async def counsellors_bulk(
    request: Request,
    session: SessionDep,
    principal: WriterDep,
    idem: IdempotencyDep,
    body: BulkRequest,
    atomic: Annotated[bool, Query(description="All or none.")] = False,
) -> Response:
    metrics = request.app.state.metrics

    async def produce() -> Response:
        try:
            results = await service.bulk_upsert(session, body.items, principal, atomic=atomic)
        except BulkRejected as rejected:
            # Nothing applied: the items are counted by the result each was given.
            bulk_tally(metrics, rejected.extra.get("items", ()))
            raise
        on_commit_tally(session, metrics.bulk_items, _statuses(results))
        idem.shows(service.RESOURCE, *service.shown(results))
        return Response(
            content=orjson.dumps({"items": results}), status_code=207, media_type="application/json"
        )

    return await idem.run(produce)


@direct("counsellors_bulk")
async def counsellors_bulk_direct(
    request: Request, session: DirectSession, *, atomic: bool
) -> Response | None:
    """A replay that writes nothing (every valid item unchanged, or refused before any write) answered with
    the same column SELECTs; the route writes, and answers `Idempotency-Key` and every invalid request."""
    if "idempotency-key" in request.headers:
        return None
    body = await json_body(request)
    principal = await _writer(request, session)
    try:
        items = BulkRequest.model_validate(body).items
    except ValidationError:
        return None
    metrics = request.app.state.metrics
    try:
        results = await service.bulk_replay(as_session(session), items, principal, atomic=atomic)
    except BulkRejected as rejected:
        bulk_tally(metrics, rejected.extra.get("items", ()))
        raise
    if results is None:
        return None
    on_commit_tally(session, metrics.bulk_items, _statuses(results))
    return Response(content=orjson.dumps({"items": results}), status_code=207, media_type="application/json")
