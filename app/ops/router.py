"""/healthz and /readyz, outside /api/v1."""

from __future__ import annotations

import asyncio
from functools import lru_cache
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

router = APIRouter(tags=["operations"])
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    schema_revision: str | None
    expected_revision: str


@lru_cache
def expected_head() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    return head or "base"


@router.get("/healthz", operation_id="ops_healthz", summary="The process is alive")
async def ops_healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    operation_id="ops_readyz",
    summary="The database answers and its schema is at the latest migration",
    responses={503: {"model": Readiness, "description": "Not ready"}},
)
async def ops_readyz(request: Request) -> JSONResponse:
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    expected = expected_head()
    revision: str | None = None
    database = "ok"
    try:
        async with asyncio.timeout(3), sessionmaker() as session:
            await session.execute(text("SELECT 1"))
            try:
                revision = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            except DBAPIError:
                # The database answers but was never migrated: say so rather than "unreachable".
                revision = None
    except Exception:
        database = "unreachable"
    ready = database == "ok" and revision == expected
    body = Readiness(
        status="ok" if ready else "unavailable",
        database=database,
        schema_revision=revision,
        expected_revision=expected,
    )
    return JSONResponse(
        body.model_dump(), status_code=200 if ready else 503, headers={} if ready else {"Retry-After": "5"}
    )
