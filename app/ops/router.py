"""/healthz and /readyz, outside /api/v1."""

from __future__ import annotations

import asyncio
import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.problems import is_read_only, problem_responses
from app.core.routers import plain_router

router = plain_router("", tags=["operations"])
logger = logging.getLogger("app.ops")
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


class Health(BaseModel):
    status: Literal["ok"] = Field(examples=["ok"])

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"] = Field(
        description="`ok` when the database answers and its schema is at the expected revision, or at a "
        "later one that a newer release applied.",
        examples=["ok"],
    )
    database: Literal["ok", "unreachable", "read_only"] = Field(
        description="`read_only`: the SQLite file cannot be written (reads work, writes answer 503).",
        examples=["ok"],
    )
    schema_revision: str | None = Field(
        description="The database's migration revision; null when it was never migrated or is unreachable.",
        examples=["0002"],
    )
    expected_revision: str = Field(description="The latest migration this release ships.", examples=["0002"])

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ok", "database": "ok", "schema_revision": "0002", "expected_revision": "0002"},
                {
                    "status": "unavailable",
                    "database": "ok",
                    "schema_revision": "0001",
                    "expected_revision": "0002",
                },
            ]
        }
    )


_REVISION = re.compile(r"^revision(?:: str)? = [\"']([^\"']+)[\"']", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision(?:: [^=]+)? = [\"']([^\"']+)[\"']", re.MULTILINE)


@lru_cache
def _shipped_revisions() -> tuple[str, frozenset[str]]:
    """The latest revision of the shipped migrations and every revision they know, read from their files.

    Importing Alembic to ask it would cost every worker some 15 MB of memory for these strings; a test
    checks that this agrees with Alembic's own answer."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        revision = _REVISION.search(source)
        if revision:
            revisions.add(revision.group(1))
            parents.update(_DOWN_REVISION.findall(source))
    heads = sorted(revisions - parents)
    return (heads[-1] if heads else "base"), frozenset(revisions)


def expected_head() -> str:
    """The latest revision of the shipped migrations."""
    return _shipped_revisions()[0]


def schema_is_current(revision: str | None) -> bool:
    """The schema serves this release: at its latest migration, or at one it does not know, which a newer
    release applied. During a rolling deploy the migrations run first and this release's processes go on
    serving until they are replaced: the migrations keep the previous release working (expand, then
    contract: docs/operations.md), so they stay ready. A revision this release knows, other than its
    latest, is behind: not ready."""
    return revision is not None and (revision == expected_head() or revision not in _shipped_revisions()[1])


async def _sqlite_writable(session: AsyncSession) -> Literal["ok", "read_only"]:
    """A write that changes nothing, rolled back: a read-only file answers reads but refuses it."""
    try:
        await session.execute(text("UPDATE alembic_version SET version_num = version_num"))
    except DBAPIError as exc:
        if not is_read_only(exc):
            raise
        logger.error("readiness: the SQLite database file is read-only; writes answer 503")
        return "read_only"
    finally:
        await session.rollback()
    return "ok"


@router.get(
    "/healthz",
    operation_id="ops_healthz",
    summary="The process is alive",
    description="Liveness: answers 200 as long as the process serves requests, without touching the "
    "database (a database outage must not get the process restarted). For probes; no key needed.",
)
async def ops_healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    operation_id="ops_readyz",
    summary="The database answers and its schema is at the latest migration",
    description="Readiness: 200 when the database answers within 3 seconds and its schema is at the "
    "migration this release expects, or at a later one (a newer release migrated it during a rolling "
    "deploy: this release goes on serving until it is replaced); otherwise 503 with the same body saying "
    "what is missing, and `Retry-After`. For probes and load balancers; no key needed.",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": "Not ready: the database is unreachable or its schema is not at the expected "
            "revision.",
            "content": {
                "application/json": {
                    "examples": {
                        "not_migrated": {
                            "summary": "The database answers, its schema is one migration behind",
                            "value": {
                                "status": "unavailable",
                                "database": "ok",
                                "schema_revision": "0001",
                                "expected_revision": "0002",
                            },
                        },
                        "unreachable": {
                            "summary": "The database does not answer within 3 seconds",
                            "value": {
                                "status": "unavailable",
                                "database": "unreachable",
                                "schema_revision": None,
                                "expected_revision": "0002",
                            },
                        },
                        "read_only": {
                            "summary": "The SQLite file cannot be written",
                            "value": {
                                "status": "unavailable",
                                "database": "read_only",
                                "schema_revision": "0002",
                                "expected_revision": "0002",
                            },
                        },
                    }
                }
            },
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before probing again.",
                    "schema": {"type": "integer"},
                }
            },
        }
    },
)
async def ops_readyz(request: Request) -> JSONResponse:
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    expected = expected_head()
    revision: str | None = None
    database: Literal["ok", "unreachable", "read_only"] = "ok"
    try:
        async with asyncio.timeout(3), sessionmaker() as session:
            await session.execute(text("SELECT 1"))
            try:
                revision = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            except DBAPIError:
                # The database answers but was never migrated: say so rather than "unreachable".
                revision = None
            if revision is not None and session.get_bind().dialect.name == "sqlite":
                database = await _sqlite_writable(session)
    except Exception:
        database = "unreachable"
    ready = database == "ok" and schema_is_current(revision)
    body = Readiness(
        status="ok" if ready else "unavailable",
        database=database,
        schema_revision=revision,
        expected_revision=expected,
    )
    return JSONResponse(
        body.model_dump(), status_code=200 if ready else 503, headers={} if ready else {"Retry-After": "5"}
    )


@router.get(
    "/metrics",
    operation_id="ops_metrics",
    summary="Prometheus metrics",
    description="Request counts and latencies per route template, domain events (registrations, "
    "idempotent replays, 412/428, bulk items, rate limits, change feed reads) and the database pool's "
    "gauges, in the Prometheus text format, summed over every worker. `METRICS_ENABLED=false` → 404; with "
    "`METRICS_TOKEN` set, `Authorization: Bearer <METRICS_TOKEN>` is needed (401 otherwise).",
    response_class=Response,
    responses={
        200: {
            "description": "The Prometheus text format.",
            "content": {"text/plain": {"schema": {"type": "string"}, "example": "cnfs_db_pool_size 10.0"}},
        },
        **problem_responses(401, 404),
    },
)
async def ops_metrics(request: Request) -> Response:
    return request.app.state.metrics.response(request)  # type: ignore[no-any-return]
