"""HTTP handlers of /open-data: the venues of public workshops in the national standard, as CSV and JSON."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.problems import problem_responses
from app.core.routers import api_router
from app.db import SessionDep
from app.opendata import service
from app.opendata.schemas import EXAMPLE, LieuxMediationNumerique

router = api_router("/open-data", tags=["open data"])

# The records change when a workshop does, and a map reloads them a few times a day at most: an hour in
# clients and shared caches spares the database the repeated aggregation.
CACHE_CONTROL = "public, max-age=3600"

DOC = (
    "Public. One record per place where public in-person workshops are held (not cancelled, from "
    f"{service.WINDOW_DAYS} days ago onwards, upcoming ones included), in the national standard of *lieux de "
    f"médiation numérique* (schema {service.SCHEMA_VERSION}, licence etalab-2.0). Spellings of one place "
    "(same commune code, same address once case, accents, spaces and punctuation are set aside) make one "
    "record; its `id` is a UUID v5 of that address and the commune code, stable across exports. `pivot` is "
    "the SIREN of the counsellors' employer; `services` maps the workshops' themes (docs/open-data.md). A "
    "place whose required fields cannot be filled is left out. Answers `Cache-Control: "
    + CACHE_CONTROL
    + "`. Each worker process builds the files at most once per `OPEN_DATA_CACHE_SECONDS` (300 by "
    "default) and serves them meanwhile; requests arriving during a build wait for it."
)
_EXAMPLE_CSV = service.to_csv([EXAMPLE]).decode()
_CSV: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The venues, one CSV row each.",
        "content": {"text/csv": {"schema": {"type": "string"}, "example": _EXAMPLE_CSV}},
    }
}


async def _release(session: AsyncSession) -> None:
    """Gives back the connection every /api/v1 request takes to resolve its caller (`get_principal`):
    nothing was written, and the files are served from the worker's copy or built in a session of their
    own, so a request waiting for a build holds none."""
    await session.rollback()


async def _lieux(request: Request) -> service.Export:
    """The records, read by the one request that builds the files, in a session of its own (see
    `_release`)."""
    state = request.app.state
    async with state.sessionmaker() as session:
        # A session bound to one connection (the tests' rolled-back transaction) keeps its transaction.
        if isinstance(session.bind, AsyncEngine):
            await session.connection(execution_options=state.read_options)
        return await service.lieux(session)


def _published(request: Request) -> service.Published:
    """The worker's open-data files (`OPEN_DATA_CACHE_SECONDS`), made at the first request for them."""
    state = request.app.state
    published: service.Published | None = getattr(state, "open_data_published", None)
    if published is None:
        published = state.open_data_published = service.Published(state.settings.open_data_cache_seconds)
    return published


def _answer(content: bytes, media_type: str, name: str) -> Response:
    return Response(
        content=content,
        media_type=media_type,
        headers={"Cache-Control": CACHE_CONTROL, "Content-Disposition": f'inline; filename="{name}"'},
    )


@router.get(
    "/lieux-mediation-numerique.csv",
    summary="Venues as the standard's CSV",
    description=DOC + " RFC 4180, comma-separated, UTF-8, every column of the standard in its order; several "
    "values in one cell are joined with `|`; a text cell that starts with `=`, `+`, `-` or `@` starts "
    "with an apostrophe, so that no spreadsheet runs it as a formula.",
    response_class=Response,
    responses=_CSV | problem_responses(401, 422),
)
async def open_data_lieux_csv(request: Request, session: SessionDep) -> Response:
    await _release(session)

    async def build() -> bytes:
        return service.to_csv((await _lieux(request)).records)

    content = await _published(request).get("csv", build)
    return _answer(content, "text/csv; charset=utf-8", "lieux-mediation-numerique.csv")


@router.get(
    "/lieux-mediation-numerique.json",
    summary="Venues as the standard's JSON",
    description=DOC + " The same records as the CSV, as an array of objects; an empty cell of the CSV is a "
    "field left out.",
    response_model=LieuxMediationNumerique,
    responses=problem_responses(401, 422),
)
async def open_data_lieux_json(request: Request, session: SessionDep) -> Response:
    await _release(session)

    async def build() -> bytes:
        return service.to_json((await _lieux(request)).records)

    content = await _published(request).get("json", build)
    return _answer(content, "application/json", "lieux-mediation-numerique.json")
