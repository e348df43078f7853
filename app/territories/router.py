"""HTTP handlers of /territories."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Path, Query, Request, Response

from app.core.auth import AdminDep, resolve_principal
from app.core.csv import csv_responses, list_response
from app.core.direct import DirectSession, as_session, direct
from app.core.idempotency import IdempotencyDep
from app.core.listing import PageDep, direct_page_request
from app.core.media import Separator
from app.core.problems import problem_responses
from app.core.responses import created, model_response, object_response, page_response
from app.core.routers import api_router
from app.core.types import NO_CONTROL_CHARACTERS
from app.core.versioning import IF_MATCH_DOC, IfMatchHeader, require_if_match
from app.db import SessionDep
from app.territories import service
from app.territories.codes import TerritoryKind
from app.territories.schemas import TerritoryCreate, TerritoryPage, TerritoryRead, TerritoryUpdate

router = api_router("/territories", tags=["territories"])


@router.get(
    "",
    summary="List territories",
    description="Public. `q` searches word by word, in any order, each word the start of a word of the "
    "name (case, accents, hyphens and apostrophes ignored; `st`/`ste` for saint/sainte), of the official "
    "code, of the SIREN or of a postcode: `villefranche saone`, `st etienne`, `69123`, `69003`. Without "
    "`sort`, the best matches come first (the code, the whole name, the first words of the name, whole "
    "words, the start of the name, then other matches), then the most populated. `within` keeps one "
    "territory and its whole subtree.",
    response_model=TerritoryPage,
    responses=csv_responses(TerritoryRead) | problem_responses(401, 422),
)
async def territories_list(
    request: Request,
    session: SessionDep,
    page: PageDep,
    kind: TerritoryKind | None = None,
    code: Annotated[str | None, Query(max_length=16, examples=["69"]), NO_CONTROL_CHARACTERS] = None,
    parent_id: uuid.UUID | None = None,
    within: Annotated[
        uuid.UUID | None, Query(description="A territory id: it and all its descendants.")
    ] = None,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=100, examples=["metropole de lyon"]),
        NO_CONTROL_CHARACTERS,
    ] = None,
    sort: Annotated[
        str | None, Query(description="`name` or `-name`; default: relevance with `q`, else `name`.")
    ] = None,
) -> Response:
    return await list_response(
        request,
        session,
        page,
        TerritoryRead,
        lambda db, p: service.list_territories(
            db, p, kind=kind, code=code, parent_id=parent_id, within=within, q=q, sort=sort
        ),
    )


@direct(
    "territories_list",
    # The subtree's path, then the page; the page, then its total.
    snapshot=lambda params: params["include_total"] or params["within"] is not None,
)
async def territories_list_direct(
    request: Request,
    session: DirectSession,
    *,
    kind: TerritoryKind | None,
    code: str | None,
    parent_id: uuid.UUID | None,
    within: uuid.UUID | None,
    q: str | None,
    sort: str | None,
    limit: int,
    cursor: str | None,
    include_total: bool,
    sep: Separator,
) -> Response | None:
    page = await direct_page_request(request, session, limit, cursor, include_total, sep)
    rows, next_cursor, total = await service.list_territories(
        as_session(session),
        page,
        kind=kind,
        code=code,
        parent_id=parent_id,
        within=within,
        q=q,
        sort=sort,
    )
    return page_response(request, rows, next_cursor, total)


@router.get(
    "/{kind}/{code}",
    response_model=TerritoryRead,
    summary="Get a territory by its official code",
    description="E.g. `/territories/departement/69` or `/territories/metropole/200046977`. A former "
    "commune code (a commune merged into another, a delegated or associated commune, a municipal "
    "arrondissement of Paris, Lyon or Marseille) answers the current commune, with its own URL in "
    "`Content-Location`.",
    responses=problem_responses(401, 404, 422),
)
async def territories_get_by_code(
    request: Request,
    session: SessionDep,
    kind: TerritoryKind,
    code: Annotated[str, Path(max_length=16)],
) -> Response:
    return _by_code_response(request, await service.read_by_code(session, kind, code), code)


def _by_code_response(request: Request, row: Any, code: str) -> Response:
    response = object_response(request, row)
    if row.code != code:
        # A former code: the answer is the current commune, whose own URL is this one.
        response.headers["Content-Location"] = str(
            request.url_for("territories_get_by_code", kind=row.kind, code=row.code).path
        )
    return response


@direct("territories_get_by_code")
async def territories_get_by_code_direct(
    request: Request, session: DirectSession, *, kind: TerritoryKind, code: str
) -> Response | None:
    await resolve_principal(request, session)
    row = await service.read_by_code(as_session(session), kind, code)
    return _by_code_response(request, row, code)


@router.get(
    "/{territory_id}",
    response_model=TerritoryRead,
    summary="Get a territory",
    description="Public. Answers `ETag`; `If-None-Match` with the current ETag gives 304.",
    responses=problem_responses(401, 404, 422),
)
async def territories_get(request: Request, session: SessionDep, territory_id: uuid.UUID) -> Response:
    return object_response(request, await service.read(session, territory_id))


@router.post(
    "",
    status_code=201,
    response_model=TerritoryRead,
    summary="Create a territory",
    description="Admin. The code is checked per kind (INSEE codes; SIREN with its Luhn key for métropoles "
    "and EPCI); the parent must be of a strictly higher kind (else 422 `invalid_parent`; an unknown parent "
    "is 422 `unknown_reference`); `(kind, code)` is unique (409 `territory_exists`).",
    responses=problem_responses(401, 403, 409, 422),
)
async def territories_create(
    request: Request, session: SessionDep, _admin: AdminDep, idem: IdempotencyDep, body: TerritoryCreate
) -> Response:
    async def produce() -> Response:
        territory = await service.create(session, body)
        return created(
            request,
            TerritoryRead.model_validate(territory),
            "territories_get",
            version=territory.version,
            territory_id=str(territory.id),
        )

    return await idem.run(produce)


@router.patch(
    "/{territory_id}",
    response_model=TerritoryRead,
    summary="Change a territory",
    description="Admin. JSON Merge Patch (`application/merge-patch+json` or `application/json`). "
    + IF_MATCH_DOC,
    responses=problem_responses(401, 403, 404, 409, 412, 422, 428),
)
async def territories_update(
    session: SessionDep,
    _admin: AdminDep,
    territory_id: uuid.UUID,
    body: TerritoryUpdate,
    if_match: IfMatchHeader = None,
) -> Response:
    territory = await service.get(session, territory_id)
    require_if_match(if_match, territory.version)
    territory = await service.update(session, territory, body)
    return model_response(TerritoryRead.model_validate(territory), version=territory.version)


@router.delete(
    "/{territory_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a territory",
    description="Admin. Refused with 409 `territory_in_use` while anything refers to it. " + IF_MATCH_DOC,
    responses=problem_responses(401, 403, 404, 409, 412, 428),
)
async def territories_delete(
    session: SessionDep, _admin: AdminDep, territory_id: uuid.UUID, if_match: IfMatchHeader = None
) -> Response:
    territory = await service.get(session, territory_id)
    require_if_match(if_match, territory.version)
    await service.delete(session, territory)
    return Response(status_code=204)
