"""The minimal FastAPI app of the load benchmark: the floor that FastAPI itself sets.

One route per scenario, the database through one `Depends`, typed path, query, header and body parameters,
an orjson `Response`, no middleware. It runs the reference app's code for the SQL, the key check and the JSON
(`bench.shared`), so that the two differ only in the web layer. Run it like the service:

    DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/cnfs_bench \\
        .venv/bin/uvicorn bench.minimal_fastapi_app:create_app --factory --workers 2 --port 8002"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from bench import shared
from bench.shared import Reply


class Kind(StrEnum):
    region = "region"
    departement = "departement"
    metropole = "metropole"
    epci = "epci"
    commune = "commune"


class PositionGroup(StrEnum):
    none = "none"
    territory = "territory"
    kind = "kind"


class WorkshopGroup(StrEnum):
    none = "none"
    theme = "theme"
    month = "month"
    territory = "territory"
    level = "level"


class AgreementKind(StrEnum):
    preliminary = "preliminary"
    convention = "convention"


class AgreementIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    programme_id: uuid.UUID
    territory_id: uuid.UUID
    kind: AgreementKind
    reference: str = Field(min_length=1, max_length=64)
    positions_granted: int = Field(strict=True, ge=0, le=100_000)
    subsidy_per_position_cents: int | None = Field(default=None, strict=True, ge=0, le=10**9)
    starts_on: date
    ends_on: date | None = None


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signed_on: date


class TrainingLabel(StrEnum):
    CCP1 = "CCP1"
    CCP2 = "CCP2"
    CCP2_CCP3 = "CCP2_CCP3"


Printable = Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]*$")]


class TrainingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: TrainingLabel | None = None
    hours: Literal[70, 105, 175, 280, 315, 350, 420] | None = None
    certified_on: date | None = None
    pix_level: int | None = Field(default=None, strict=True, ge=1, le=3)


class CounsellorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    territory_id: uuid.UUID | None = None
    first_name: Annotated[Printable, Field(min_length=1, max_length=100)]
    last_name: Annotated[Printable, Field(min_length=1, max_length=100)]
    email: Annotated[
        str | None,
        Field(
            min_length=3,
            max_length=254,
            pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$",
        ),
    ] = None
    phone: Annotated[
        str | None, Field(min_length=6, max_length=32, pattern=r"^\+?[0-9][0-9 .()-]{4,30}$")
    ] = None
    training: TrainingIn | None = None


Theme = StrEnum("Theme", {name: name for name in shared.THEME_BITS})  # type: ignore[misc]
AgeBracket = StrEnum("AgeBracket", {name: name for name in sorted(shared.AGE_BRACKETS)})  # type: ignore[misc]
SocialStatus = StrEnum("SocialStatus", {name: name for name in sorted(shared.SOCIAL_STATUSES)})  # type: ignore[misc]
Text100 = Annotated[Printable, Field(min_length=1, max_length=100)]


class RegistrationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    first_name: Text100
    last_name: Text100
    email: Annotated[Printable, Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
    phone: Annotated[
        Printable | None, Field(min_length=3, max_length=32, pattern=r"^\+?[0-9 .()-]{3,32}$")
    ] = None
    age_bracket: AgeBracket | None = None
    social_status: SocialStatus | None = None


def database(request: Request) -> Any:
    return request.app.state.db


DatabaseDep = Annotated[Any, Depends(database)]
Limit = Annotated[int, Query(ge=1, le=shared.MAX_LIMIT)]


def respond(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, headers=reply.headers)


def _list_request(request: Request, limit: int) -> shared.ListRequest:
    return shared.ListRequest(
        limit=limit,
        caller="public",
        path=request.url.path,
        params=request.query_params.multi_items(),
        base_url=f"{request.url.scheme}://{request.url.netloc}",
        secret=request.app.state.secret,
    )


def create_app(database_url: str | None = None, secret_key: str | None = None) -> FastAPI:
    url = database_url or os.environ["DATABASE_URL"]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = await shared.open_database(url)
        try:
            yield
        finally:
            await app.state.db.close()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.secret = (secret_key or os.environ.get("SECRET_KEY", "dev-only-change-me")).encode()

    @app.get("/api/v1/territories/{kind}/{code}")
    async def territory_by_code(
        db: DatabaseDep,
        kind: Kind,
        code: str,
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        return respond(await shared.territory_by_code(db, kind.value, code, if_none_match))

    @app.get("/api/v1/territories")
    async def territories_list(
        request: Request,
        db: DatabaseDep,
        kind: Kind | None = None,
        within: uuid.UUID | None = None,
        q: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
        limit: Limit = shared.DEFAULT_LIMIT,
    ) -> Response:
        return respond(
            await shared.territories_list(
                db,
                _list_request(request, limit),
                kind=kind.value if kind is not None else None,
                within=within,
                q=q,
            )
        )

    @app.get("/api/v1/agreements")
    async def agreements_list(
        request: Request,
        db: DatabaseDep,
        limit: Limit = shared.DEFAULT_LIMIT,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        return respond(await shared.agreements_list(db, _list_request(request, limit), authorization))

    @app.get("/api/v1/agreements/{agreement_id}")
    async def agreement_get(
        db: DatabaseDep,
        agreement_id: uuid.UUID,
        authorization: Annotated[str | None, Header()] = None,
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        return respond(await shared.agreement_get(db, agreement_id, authorization, if_none_match))

    @app.post("/api/v1/agreements")
    async def agreement_create(
        db: DatabaseDep, body: AgreementIn, authorization: Annotated[str | None, Header()] = None
    ) -> Response:
        data = shared.AgreementInput(
            body.programme_id,
            body.territory_id,
            body.kind.value,
            body.reference,
            body.positions_granted,
            body.subsidy_per_position_cents,
            body.starts_on,
            body.ends_on,
        )
        return respond(await shared.agreement_create(db, data, authorization))

    @app.post("/api/v1/agreements/{agreement_id}/sign")
    async def agreement_sign(
        db: DatabaseDep,
        agreement_id: uuid.UUID,
        body: SignIn,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        return respond(await shared.agreement_sign(db, agreement_id, body.signed_on, authorization))

    @app.get("/api/v1/positions")
    async def positions_list(
        request: Request,
        db: DatabaseDep,
        limit: Limit = shared.DEFAULT_LIMIT,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        return respond(await shared.positions_list(db, _list_request(request, limit), authorization))

    @app.get("/api/v1/counsellors")
    async def counsellors_list(
        request: Request,
        db: DatabaseDep,
        limit: Limit = shared.DEFAULT_LIMIT,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        return respond(await shared.counsellors_list(db, _list_request(request, limit), authorization))

    @app.get("/api/v1/counsellors/{counsellor_id}")
    async def counsellor_get(
        db: DatabaseDep,
        counsellor_id: uuid.UUID,
        authorization: Annotated[str | None, Header()] = None,
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        return respond(await shared.counsellor_get(db, counsellor_id, authorization, if_none_match))

    @app.put("/api/v1/counsellors/by-ref/{external_ref}")
    async def counsellor_upsert(
        db: DatabaseDep,
        external_ref: Annotated[str, Path(min_length=1, max_length=64)],
        body: CounsellorIn,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        training = body.training
        columns = {
            "first_name": body.first_name,
            "last_name": body.last_name,
            "email": body.email,
            "phone": body.phone,
            "training_label": training.label.value if training and training.label else None,
            "training_hours": training.hours if training else None,
            "certified_on": training.certified_on if training else None,
            "pix_level": training.pix_level if training else None,
        }
        data = shared.CounsellorInput(body.territory_id, columns)
        return respond(await shared.counsellor_upsert(db, external_ref, data, authorization))

    @app.get("/api/v1/workshops")
    async def workshops_list(
        request: Request,
        db: DatabaseDep,
        department_code: Annotated[str | None, Query(pattern=r"^(\d{2}|2[AB]|97\d)$")] = None,
        commune_code: Annotated[str | None, Query(pattern=r"^([013-9]\d|2[AB1-9])\d{3}$")] = None,
        postcode: Annotated[str | None, Query(pattern=r"^\d{5}$")] = None,
        theme: Annotated[list[Theme] | None, Query()] = None,
        limit: Limit = shared.DEFAULT_LIMIT,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        error = shared.check_workshop_params(request.query_params.keys())
        if error is not None:
            return respond(error)
        search = shared.WorkshopSearch(
            department_code, commune_code, postcode, tuple(t.value for t in theme or ())
        )
        return respond(await shared.workshops_list(db, _list_request(request, limit), search, authorization))

    @app.get("/api/v1/workshops/{workshop_id}")
    async def workshop_get(
        db: DatabaseDep,
        workshop_id: uuid.UUID,
        authorization: Annotated[str | None, Header()] = None,
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        return respond(await shared.workshop_get(db, workshop_id, authorization, if_none_match))

    @app.post("/api/v1/workshops/{workshop_id}/registrations")
    async def workshop_register(
        db: DatabaseDep,
        workshop_id: uuid.UUID,
        body: RegistrationIn,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        data = shared.RegistrationInput(
            body.first_name,
            body.last_name,
            body.email,
            body.phone,
            body.age_bracket.value if body.age_bracket else None,
            body.social_status.value if body.social_status else None,
        )
        return respond(await shared.workshop_register(db, workshop_id, data, authorization))

    @app.get("/api/v1/open-data/lieux-mediation-numerique.json")
    async def open_data_lieux_json(
        request: Request, db: DatabaseDep, authorization: Annotated[str | None, Header()] = None
    ) -> Response:
        if request.query_params:
            return respond(shared.problem(422, "validation_error", "this route takes no query parameter"))
        return respond(await shared.open_data_lieux(db, authorization))

    @app.get("/api/v1/stats/positions")
    async def stats_positions(
        request: Request,
        db: DatabaseDep,
        programme_id: uuid.UUID | None = None,
        territory_id: uuid.UUID | None = None,
        within: uuid.UUID | None = None,
        group_by: PositionGroup = PositionGroup.none,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        return respond(await shared.position_stats(db, request.query_params.multi_items(), authorization))

    @app.get("/api/v1/stats/workshops")
    async def stats_workshops(
        request: Request,
        db: DatabaseDep,
        territory_id: uuid.UUID | None = None,
        within: uuid.UUID | None = None,
        starts: Annotated[date | None, Query(alias="from")] = None,
        ends: Annotated[date | None, Query(alias="to")] = None,
        group_by: WorkshopGroup = WorkshopGroup.none,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        # The values are validated here, as FastAPI does; `bench.shared` reads them again from the query.
        return respond(await shared.workshop_stats(db, request.query_params.multi_items(), authorization))

    return app
