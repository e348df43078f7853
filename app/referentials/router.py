"""HTTP handlers of /referentials: public, static and cacheable."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from app.core.problems import NotFound, problem_responses
from app.db import TransactionRoute
from app.referentials.data import REFERENTIALS
from app.referentials.schemas import Referential, ReferentialIndex, ReferentialItem, ReferentialSummary

router = APIRouter(prefix="/referentials", tags=["referentials"], route_class=TransactionRoute)

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
)
async def referentials_list(response: Response) -> ReferentialIndex:
    response.headers["Cache-Control"] = CACHE_CONTROL
    return _INDEX


@router.get(
    "/{name}",
    summary="Get a reference list",
    description="Public. The values a field accepts, in order, with their French label and a one-sentence "
    "description (e.g. `themes`, `age_brackets`). An unknown name → 404 `not_found`. "
    "Answers `Cache-Control: " + CACHE_CONTROL + "`.",
    responses=problem_responses(404),
)
async def referentials_get(
    response: Response, name: Annotated[str, Path(max_length=64, examples=["themes"])]
) -> Referential:
    referential = _LISTS.get(name)
    if referential is None:
        raise NotFound(f"no reference list named {name!r}; valid names: {', '.join(_LISTS)}")
    response.headers["Cache-Control"] = CACHE_CONTROL
    return referential
