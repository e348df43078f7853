"""The reference app of the load benchmark: Starlette routing only, a raw asyncpg pool (or aiosqlite), orjson.

It answers the benchmark's scenarios with the service's SQL, JSON shape and key check (see `bench.shared`),
and nothing else: no middleware, no validation framework, no ORM. The service's fast path is measured against
it. Run it like the service, with `DATABASE_URL` (and `SECRET_KEY`) in the environment:

    DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/cnfs_bench \\
        .venv/bin/uvicorn bench.reference_app:create_app --factory --workers 2 --port 8001"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from bench import shared
from bench.shared import Reply


def respond(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, headers=reply.headers)


def _limit(request: Request) -> int | Reply:
    raw = request.query_params.get("limit")
    if raw is None:
        return shared.DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= shared.MAX_LIMIT:
        return shared.problem(422, "validation_error", "limit: 1 to 200")
    return int(raw)


def _unknown(request: Request, allowed: frozenset[str]) -> Reply | None:
    unknown = set(request.query_params) - allowed
    if unknown:
        return shared.problem(
            422, "validation_error", f"unknown query parameter(s): {', '.join(sorted(unknown))}"
        )
    return None


def _list_request(request: Request, limit: int) -> shared.ListRequest:
    return shared.ListRequest(
        limit=limit,
        caller="public",
        path=request.url.path,
        params=request.query_params.multi_items(),
        base_url=f"{request.url.scheme}://{request.url.netloc}",
        secret=request.app.state.secret,
    )


def _uuid_param(value: str | None) -> uuid.UUID | Reply | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return shared.problem(422, "validation_error", "not a UUID")


async def territory_by_code(request: Request) -> Response:
    params = request.path_params
    return respond(
        await shared.territory_by_code(
            request.app.state.db, params["kind"], params["code"], request.headers.get("if-none-match")
        )
    )


async def territories_list(request: Request) -> Response:
    error = _unknown(request, shared.TERRITORY_LIST_PARAMS)
    if error:
        return respond(error)
    if "cursor" in request.query_params or "sort" in request.query_params:
        return respond(shared.problem(422, "validation_error", "the reference serves first pages only"))
    limit = _limit(request)
    within = _uuid_param(request.query_params.get("within"))
    if isinstance(limit, Reply):
        return respond(limit)
    if isinstance(within, Reply):
        return respond(within)
    q = request.query_params.get("q")
    return respond(
        await shared.territories_list(
            request.app.state.db,
            _list_request(request, limit),
            kind=request.query_params.get("kind"),
            within=within,
            q=q,
        )
    )


async def agreements_list(request: Request) -> Response:
    error = _unknown(request, shared.AGREEMENT_LIST_PARAMS)
    if error:
        return respond(error)
    limit = _limit(request)
    if isinstance(limit, Reply):
        return respond(limit)
    return respond(
        await shared.agreements_list(
            request.app.state.db, _list_request(request, limit), request.headers.get("authorization")
        )
    )


async def agreement_get(request: Request) -> Response:
    agreement_id = _uuid_param(request.path_params["agreement_id"])
    if not isinstance(agreement_id, uuid.UUID):
        return respond(agreement_id or shared.problem(404, "not_found", "no agreement with this id"))
    return respond(
        await shared.agreement_get(
            request.app.state.db,
            agreement_id,
            request.headers.get("authorization"),
            request.headers.get("if-none-match"),
        )
    )


async def agreement_create(request: Request) -> Response:
    data = shared.parse_agreement(await request.body())
    if isinstance(data, Reply):
        return respond(data)
    return respond(
        await shared.agreement_create(request.app.state.db, data, request.headers.get("authorization"))
    )


async def agreement_sign(request: Request) -> Response:
    agreement_id = _uuid_param(request.path_params["agreement_id"])
    if not isinstance(agreement_id, uuid.UUID):
        return respond(agreement_id or shared.problem(404, "not_found", "no agreement with this id"))
    signed_on = shared.parse_sign(await request.body())
    if isinstance(signed_on, Reply):
        return respond(signed_on)
    return respond(
        await shared.agreement_sign(
            request.app.state.db, agreement_id, signed_on, request.headers.get("authorization")
        )
    )


async def positions_list(request: Request) -> Response:
    error = _unknown(request, shared.POSITION_LIST_PARAMS)
    if error:
        return respond(error)
    if set(request.query_params) - {"limit"}:
        return respond(shared.problem(422, "validation_error", "the reference serves first pages only"))
    limit = _limit(request)
    if isinstance(limit, Reply):
        return respond(limit)
    return respond(
        await shared.positions_list(
            request.app.state.db, _list_request(request, limit), request.headers.get("authorization")
        )
    )


async def counsellors_list(request: Request) -> Response:
    error = _unknown(request, shared.COUNSELLOR_LIST_PARAMS)
    if error:
        return respond(error)
    if set(request.query_params) - {"limit"}:
        return respond(shared.problem(422, "validation_error", "the reference serves first pages only"))
    limit = _limit(request)
    if isinstance(limit, Reply):
        return respond(limit)
    return respond(
        await shared.counsellors_list(
            request.app.state.db, _list_request(request, limit), request.headers.get("authorization")
        )
    )


async def counsellor_get(request: Request) -> Response:
    counsellor_id = _uuid_param(request.path_params["counsellor_id"])
    if not isinstance(counsellor_id, uuid.UUID):
        return respond(counsellor_id or shared.problem(404, "not_found", "no counsellor with this id"))
    return respond(
        await shared.counsellor_get(
            request.app.state.db,
            counsellor_id,
            request.headers.get("authorization"),
            request.headers.get("if-none-match"),
        )
    )


async def counsellor_upsert(request: Request) -> Response:
    data = shared.parse_counsellor(await request.body())
    if isinstance(data, Reply):
        return respond(data)
    return respond(
        await shared.counsellor_upsert(
            request.app.state.db,
            request.path_params["external_ref"],
            data,
            request.headers.get("authorization"),
        )
    )


async def workshops_list(request: Request) -> Response:
    if "text/csv" in request.headers.get("accept", ""):
        return await workshops_csv(request)
    search = shared.parse_workshop_search(request.query_params.multi_items())
    if isinstance(search, Reply):
        return respond(search)
    limit = _limit(request)
    if isinstance(limit, Reply):
        return respond(limit)
    return respond(
        await shared.workshops_list(
            request.app.state.db, _list_request(request, limit), search, request.headers.get("authorization")
        )
    )


async def workshops_csv(request: Request) -> Response:
    """The search as CSV (the export's reference): its filters and `from`, every row, streamed."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "from"]
    search = shared.parse_workshop_search(params)
    if isinstance(search, Reply):
        return respond(search)
    try:
        starts_from = datetime.fromisoformat(request.query_params.get("from", "").replace("Z", "+00:00"))
    except ValueError:
        return respond(shared.problem(422, "validation_error", "from: an instant (RFC 3339)"))
    db = request.app.state.db
    if not isinstance(db, shared.PgDatabase) or starts_from.tzinfo is None:
        return respond(shared.problem(422, "validation_error", "the reference exports from PostgreSQL"))
    found = await shared.workshops_csv(db, search, starts_from, request.headers.get("authorization"))
    if isinstance(found, Reply):
        return respond(found)
    return StreamingResponse(found, media_type="text/csv")


async def workshop_get(request: Request) -> Response:
    workshop_id = _uuid_param(request.path_params["workshop_id"])
    if not isinstance(workshop_id, uuid.UUID):
        return respond(workshop_id or shared.problem(404, "not_found", "no workshop with this id"))
    return respond(
        await shared.workshop_get(
            request.app.state.db,
            workshop_id,
            request.headers.get("authorization"),
            request.headers.get("if-none-match"),
        )
    )


async def workshop_register(request: Request) -> Response:
    workshop_id = _uuid_param(request.path_params["workshop_id"])
    if not isinstance(workshop_id, uuid.UUID):
        return respond(workshop_id or shared.problem(404, "not_found", "no workshop with this id"))
    data = shared.parse_registration(await request.body())
    if isinstance(data, Reply):
        return respond(data)
    return respond(
        await shared.workshop_register(
            request.app.state.db, workshop_id, data, request.headers.get("authorization")
        )
    )


async def open_data_lieux_json(request: Request) -> Response:
    error = _unknown(request, frozenset())
    if error:
        return respond(error)
    return respond(await shared.open_data_lieux(request.app.state.db, request.headers.get("authorization")))


async def stats_positions(request: Request) -> Response:
    return respond(
        await shared.position_stats(
            request.app.state.db, request.query_params.multi_items(), request.headers.get("authorization")
        )
    )


async def stats_workshops(request: Request) -> Response:
    return respond(
        await shared.workshop_stats(
            request.app.state.db, request.query_params.multi_items(), request.headers.get("authorization")
        )
    )


ROUTES = [
    Route("/api/v1/territories", territories_list),
    Route("/api/v1/territories/{kind}/{code}", territory_by_code),
    Route("/api/v1/agreements", agreements_list),
    Route("/api/v1/agreements", agreement_create, methods=["POST"]),
    Route("/api/v1/agreements/{agreement_id}", agreement_get),
    Route("/api/v1/agreements/{agreement_id}/sign", agreement_sign, methods=["POST"]),
    Route("/api/v1/positions", positions_list),
    Route("/api/v1/counsellors", counsellors_list),
    Route("/api/v1/counsellors/by-ref/{external_ref}", counsellor_upsert, methods=["PUT"]),
    Route("/api/v1/counsellors/{counsellor_id}", counsellor_get),
    Route("/api/v1/workshops", workshops_list),
    Route("/api/v1/workshops/{workshop_id}", workshop_get),
    Route("/api/v1/workshops/{workshop_id}/registrations", workshop_register, methods=["POST"]),
    Route("/api/v1/open-data/lieux-mediation-numerique.json", open_data_lieux_json),
    Route("/api/v1/stats/positions", stats_positions),
    Route("/api/v1/stats/workshops", stats_workshops),
]


def create_app(database_url: str | None = None, secret_key: str | None = None) -> Starlette:
    url = database_url or os.environ["DATABASE_URL"]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.db = await shared.open_database(url)
        try:
            yield
        finally:
            await app.state.db.close()

    app = Starlette(routes=ROUTES, lifespan=lifespan)
    app.state.secret = (secret_key or os.environ.get("SECRET_KEY", "dev-only-change-me")).encode()
    return app
