"""HTTP handlers of /referentials: public, static and cacheable."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request, Response

from app.core.csv import csv_model_response, csv_responses, vary_accept
from app.core.media import Separator, SepQuery, scope_accepts_csv
from app.core.problems import NotFound, problem_responses
from app.core.routers import api_router
from app.referentials.data import REFERENTIALS
from app.referentials.schemas import Referential, ReferentialIndex, ReferentialItem, ReferentialSummary

router = api_router("/referentials", tags=["referentials"])

# The lists only change with a deployment, so clients and shared caches may keep them for an hour.
CACHE_CONTROL = "public, max-age=3600"

# Built once: the lists are constants.
_INDEX = ReferentialIndex(
    items=[ReferentialSummary(name=r.name, description=r.description) for r in REFERENTIALS.values()]
)
_LISTS = {
    r.name: Referential(
        name=r.name,
        items=[ReferentialItem(value=i.value, label=i.label, description=i.description) for i in r.items],
    )
    for r in REFERENTIALS.values()
}


@router.get(
    "",
    summary="List the reference lists",
    description="Public. The name and purpose of each reference list; fetch one with "
    "`GET /referentials/{name}`. "
    "Answers `Cache-Control: " + CACHE_CONTROL + "`.",
    response_model=ReferentialIndex,
    responses=csv_responses(ReferentialSummary) | problem_responses(422),
)
async def referentials_list(
    request: Request, response: Response, sep: SepQuery = Separator.comma
) -> ReferentialIndex | Response:
    if scope_accepts_csv(request.scope["headers"]):
        answer = csv_model_response(request, ReferentialSummary, _INDEX.items, sep)
        answer.headers["Cache-Control"] = CACHE_CONTROL
        return answer
    response.headers["Cache-Control"] = CACHE_CONTROL
    vary_accept(response)
    return _INDEX


@router.get(
    "/{name}",
    summary="Get a reference list",
    description="Public. The values a field accepts, in order, with their French label and a one-sentence "
    "description (e.g. `themes`, `age_brackets`). An unknown name → 404 `not_found`. "
    "Answers `Cache-Control: " + CACHE_CONTROL + "`. With `Accept: text/csv`, its items as CSV.",
    response_model=Referential,
    responses=csv_responses(ReferentialItem) | problem_responses(404, 422),
)
async def referentials_get(
    request: Request,
    response: Response,
    name: Annotated[str, Path(max_length=64, examples=["themes"])],
    sep: SepQuery = Separator.comma,
) -> Referential | Response:
    referential = _LISTS.get(name)
    if referential is None:
        raise NotFound(f"no reference list named {name!r}; valid names: {', '.join(_LISTS)}")
    if scope_accepts_csv(request.scope["headers"]):
        answer = csv_model_response(request, ReferentialItem, referential.items, sep, filename=name)
        answer.headers["Cache-Control"] = CACHE_CONTROL
        return answer
    response.headers["Cache-Control"] = CACHE_CONTROL
    vary_accept(response)
    return referential
