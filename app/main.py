"""Application factory: create_app(settings) builds the FastAPI app; the lifespan owns the engine."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import configure_mappers

from app.api import API_ROUTERS
from app.api_keys import service as api_keys
from app.api_keys.usage import KeyUsage
from app.config import DEFAULT_SECRET_KEY, Settings, get_settings
from app.core.auth import document_security, needs_key
from app.core.cors import ProblemCORSMiddleware
from app.core.direct import DirectMiddleware, twins
from app.core.hosts import TrustedHostMiddleware
from app.core.idempotency import purge_expired
from app.core.logging import configure_logging, stopping
from app.core.metrics import Metrics, multiprocess_dir, sample_pool
from app.core.middleware import RequestMiddleware
from app.core.pagination import Cursors
from app.core.problems import document_problems, install_problem_handlers
from app.core.ratelimit import RateLimiter
from app.core.replica import ReadRouting
from app.core.routers import API_PREFIX, operation_id, routes_of
from app.db import journal_execution_options, make_engine, make_sessionmaker, read_execution_options
from app.ops.problems import router as problems_router
from app.ops.router import router as ops_router

logger = logging.getLogger("app")

# The package's licence (pyproject.toml; the text is LICENSE). OpenAPI 3.1: an SPDX identifier, which
# excludes a `url`.
LICENSE_INFO = {"name": "European Union Public Licence 1.2", "identifier": "EUPL-1.2"}

EXPOSED_HEADERS = [
    "ETag",
    "Link",
    "Location",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "X-Request-ID",
    "Idempotent-Replayed",
]

DESCRIPTION = """
Backend of the **Conseillers numériques France Services** programme: territories (the official
referential), programmes, agreements and amendments, positions and their assignments, counsellors (with the
HR sync), workshops and their registrations, and a feed of the changes.

* Authenticate with an API key: click **Authorize** and paste `cnfs_...` (sent as `Authorization: Bearer`).
* Errors are `application/problem+json` with a stable `code`.
* Lists are cursor-paginated: `{"items": [...], "next_cursor": ...}` plus a `Link: rel="next"` header.
* Changes need `If-Match: "<version>"` (the `ETag` of your last GET).
* POSTs accept `Idempotency-Key` so that a retry never creates twice.
"""

TAGS = [
    {
        "name": "territories",
        "description": "Régions, départements, métropoles, EPCI and communes, as one tree.",
    },
    {
        "name": "programmes",
        "description": "Funding envelopes: positions target, budget, subsidy per position.",
    },
    {"name": "agreements", "description": "State ↔ territory agreements and their amendments (avenants)."},
    {
        "name": "positions",
        "description": "Funded posts under signed agreements; their status is derived from assignments.",
    },
    {
        "name": "counsellors",
        "description": "Counsellors (personal data) and the HR sync: upsert by reference, bulk upsert.",
    },
    {
        "name": "assignments",
        "description": "A counsellor holding a position between two dates (personal data).",
    },
    {
        "name": "workshops",
        "description": "Workshops people find and book: search, registrations with capacity and waitlist, "
        "attendance, iCalendar feeds.",
    },
    {
        "name": "changes",
        "description": "The change feed: what changed, in an order that never skips a change.",
    },
    {
        "name": "statistics",
        "description": "Public aggregates of positions and workshops, with statistical confidentiality.",
    },
    {"name": "referentials", "description": "Reference lists with French labels."},
    {
        "name": "open data",
        "description": "The venues of public workshops in the national standard of lieux de médiation "
        "numérique (CSV and JSON, licence etalab-2.0).",
    },
    {
        "name": "personal data",
        "description": "The GDPR rights through the API: access (a counsellor's, a registrant's) and a "
        "registrant's erasure; retention is `cnfs-api purge` (docs/personal-data.md).",
    },
    {"name": "access", "description": "API keys and the caller's identity."},
    {
        "name": "audit",
        "description": "The audit trail (every write) and the personal-data journal (every answer that "
        "showed people).",
    },
    {
        "name": "webhooks",
        "description": "Subscriptions to the change feed, delivered to your URL under the Standard Webhooks "
        "specification (signed, retried, in order per object).",
    },
    {"name": "operations", "description": "Liveness, readiness and metrics."},
]


def contact_info(settings: Settings) -> dict[str, str]:
    """OpenAPI `info.contact`, from CONTACT_NAME, CONTACT_URL and CONTACT_EMAIL."""
    contact = {"name": settings.contact_name}
    if settings.contact_url:
        contact["url"] = settings.contact_url
    if settings.contact_email:
        contact["email"] = settings.contact_email
    return contact


def _app_models(base: type[BaseModel] = BaseModel) -> dict[str, type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}
    for sub in base.__subclasses__():
        if sub.__module__.startswith("app."):
            found[sub.__name__] = sub
        found.update(_app_models(sub))
    return found


def restore_null_examples(schema: dict[str, Any]) -> None:
    """FastAPI drops every null from the document, example values included, which leaves examples that
    their own schema rejects (a required nullable field missing). Put the models' examples back whole."""
    models = _app_models()
    for name, component in schema.get("components", {}).get("schemas", {}).items():
        model = models.get(name.removesuffix("-Input").removesuffix("-Output"))
        extra = model.model_config.get("json_schema_extra") if model else None
        if isinstance(extra, dict) and "examples" in extra:
            component["examples"] = to_jsonable_python(extra["examples"])


def restore_null_response_examples(schema: dict[str, Any], app: FastAPI) -> None:
    """The same for the examples of the routes' documented responses (`responses={...: {"content": ...}}`):
    an example body whose field is null keeps it."""
    paths = schema.get("paths", {})
    for context in iter_route_contexts(app.router.routes):
        route = context.route
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        operations = paths.get(str(context.path_format or context.path), {})
        for method in route.methods or ():
            operation = operations.get(method.lower())
            if operation is None:
                continue
            for status, response in route.responses.items():
                documented = operation.get("responses", {}).get(str(status), {}).get("content", {})
                for media_type, body in response.get("content", {}).items():
                    for key in ("example", "examples"):
                        if key in body and media_type in documented:
                            documented[media_type][key] = to_jsonable_python(body[key])


def public_operations(app: FastAPI) -> set[str]:
    """Operations that answer without a key (no role check among their dependencies)."""
    return {
        str(context.name)
        for context in iter_route_contexts(app.router.routes)
        if isinstance(context.route, APIRoute) and not needs_key(context.route.dependant)
    }


async def _purge_idempotency_records(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """Start-up housekeeping; a database that is down or not migrated yet must not stop the process."""
    try:
        async with sessionmaker() as session:
            purged = await purge_expired(session, timedelta(hours=settings.idempotency_ttl_hours))
            await session.commit()
        logger.info("purged %d expired idempotency records", purged)
    except Exception as exc:
        logger.warning("idempotency purge skipped: %s", type(exc).__name__)


# How long a stopping process waits for the webhook round under way (an HTTP call at most twice the timeout).
WEBHOOK_STOP_SECONDS = 15.0


def _start_webhook_worker(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> tuple[asyncio.Task[None], asyncio.Event] | None:
    """The webhook delivery worker inside this process, when WEBHOOKS_DELIVER_IN_SERVE asks for it."""
    if not settings.webhooks_deliver_in_serve:
        return None
    from app.webhooks.delivery import run_worker

    stop = asyncio.Event()
    return asyncio.create_task(run_worker(sessionmaker, settings, stop)), stop


async def _stop_webhook_worker(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    """Lets the round under way finish (its outcomes recorded), a bounded time, then cancels it: a
    delivery whose outcome is lost is sent again once its lease expires."""
    stop.set()
    try:
        await asyncio.wait_for(task, timeout=WEBHOOK_STOP_SECONDS)
    except (TimeoutError, asyncio.CancelledError):
        pass
    except Exception as exc:
        logger.warning("webhook delivery worker failed: %s", type(exc).__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)
    secret_problem = settings.secret_key_problem()
    if secret_problem:
        # `cnfs-api serve` says so in one line before this; this guards other ways of starting the app.
        raise RuntimeError(f"SECRET_KEY {secret_problem}")
    database_problem = settings.pgbouncer_problem() or settings.replica_problem()
    if database_problem:
        raise RuntimeError(database_problem)
    if settings.secret_key == DEFAULT_SECRET_KEY:
        logger.warning(
            "SECRET_KEY is the development default (fine on a development machine): set a long random value "
            "wherever others can reach the service"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(
            settings.database_url,
            pool_size=settings.database_pool_size,
            pool_timeout=settings.database_pool_timeout_seconds,
            sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
            sqlite_cache_kib=settings.sqlite_cache_kib,
            lock_timeout_ms=settings.database_lock_timeout_ms,
            statement_timeout_ms=settings.database_statement_timeout_ms,
            connect_timeout=settings.database_connect_timeout_seconds,
            command_timeout=settings.database_command_timeout_seconds,
            pgbouncer=settings.database_pgbouncer,
        )
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.read_options = read_execution_options(engine)
        app.state.journal_options = journal_execution_options(engine)
        app.state.replica = None
        if settings.database_read_url:
            read_engine = make_engine(
                settings.database_read_url,
                pool_size=settings.database_pool_size,
                pool_timeout=settings.database_pool_timeout_seconds,
                lock_timeout_ms=settings.database_lock_timeout_ms,
                statement_timeout_ms=settings.database_statement_timeout_ms,
                connect_timeout=settings.database_connect_timeout_seconds,
                command_timeout=settings.database_command_timeout_seconds,
                pgbouncer=settings.database_pgbouncer,
            )
            # The primary's position is asked on a connection of its own (app.core.replica).
            position_engine = make_engine(
                settings.database_url,
                pool_size=1,
                pool_timeout=settings.database_pool_timeout_seconds,
                lock_timeout_ms=settings.database_lock_timeout_ms,
                statement_timeout_ms=settings.database_statement_timeout_ms,
                connect_timeout=settings.database_connect_timeout_seconds,
                command_timeout=settings.database_command_timeout_seconds,
                pgbouncer=settings.database_pgbouncer,
            )
            app.state.replica = ReadRouting(
                read_engine,
                make_sessionmaker(read_engine),
                primary=position_engine,
                wait_seconds=settings.database_read_wait_seconds,
                retry_seconds=settings.database_read_retry_seconds,
                count=app.state.metrics.read_on,
            )
        metrics: Metrics = app.state.metrics
        replica = app.state.replica
        metrics.watch_pool(engine, replica.engine if replica is not None else None)
        await _purge_idempotency_records(app.state.sessionmaker, settings)
        app.state.key_used.start(engine)
        # With several workers, each writes its pool's gauges for the others' scrapes.
        sampler = asyncio.create_task(sample_pool(metrics)) if multiprocess_dir() else None
        deliveries = _start_webhook_worker(app.state.sessionmaker, settings)
        try:
            yield
        finally:
            if deliveries is not None:
                await _stop_webhook_worker(*deliveries)
            stopping()
            if sampler is not None:
                sampler.cancel()
            metrics.watch_pool(None)
            metrics.sample_pool()
            try:
                await app.state.key_used.stop()
            finally:
                # The pools are closed whatever came before.
                if app.state.replica is not None:
                    await app.state.replica.close()
                    await app.state.replica.engine.dispose()
                    await app.state.replica.primary.dispose()
                await engine.dispose()

    # FastAPIOffline serves Swagger UI and ReDoc from the package's own files: no CDN at run time.
    app = FastAPIOffline(
        title="cnfs-api",
        version="1.0.0",
        summary="Conseillers numériques France Services",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        # The routes as they are served, each built once (app.core.routers).
        routes=routes_of([ops_router, problems_router, *API_ROUTERS]),
        # `/territories/` is a 404 rather than a redirect whose Location would be built from the Host header.
        redirect_slashes=False,
        # No persistAuthorization: a pasted admin key must not stay in the browser's storage.
        swagger_ui_parameters={"displayRequestDuration": True},
    )
    app.state.settings = settings
    app.state.cursors = Cursors(settings.secret_key)
    app.state.metrics = Metrics()
    app.state.key_resolver = api_keys.principal_for_secret
    app.state.key_used = KeyUsage(settings.api_key_last_used_interval_seconds)
    app.state.rate_limiter = (
        RateLimiter(
            per_key=settings.rate_limit_per_key,
            per_address=settings.rate_limit_per_address,
            registration=settings.rate_limit_registration,
            redis_url=settings.redis_url,
            timeout=settings.rate_limit_redis_timeout_seconds,
            registry=app.state.metrics.registry,
        )
        if settings.rate_limits_enabled
        else None
    )

    install_problem_handlers(app)

    # One layer does the request id, the body limit, CORS (for requests with an Origin), the last-resort 500,
    # the access log, Cache-Control and the metrics: see RequestMiddleware. Trusted hosts, when set, are
    # checked inside it, so that a refusal carries X-Request-ID too.
    if settings.direct_path:
        # A twin whose parameters differ from its route's stops the start-up here (TypeError).
        twins(app.routes)
        # Innermost: behind the host check, CORS and the access log like every route.
        app.add_middleware(DirectMiddleware)
    if settings.allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    cors_options: dict[str, Any] = {
        "allow_origins": settings.cors_allow_origins,
        "allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        "allow_headers": [
            "Authorization",
            "Content-Type",
            "If-Match",
            "If-None-Match",
            "Idempotency-Key",
            "X-Request-ID",
            "X-Cancel-Token",
        ],
        "expose_headers": EXPOSED_HEADERS,
    }
    app.add_middleware(
        RequestMiddleware,
        max_body_size=settings.max_body_bytes,
        metrics=app.state.metrics,
        cors=lambda inner: ProblemCORSMiddleware(inner, **cors_options),
    )
    if settings.trusted_proxies:
        # Outermost: the client address that the rate limits, the logs and every layer see is the one the
        # listed proxies forwarded. Only these addresses are believed (none by default); `cnfs-api serve`
        # turns the servers' own handling off, so that uvicorn and gunicorn apply the same rule.
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
            contact=contact_info(settings),
            license_info=LICENSE_INFO,
        )
        schema["servers"] = [{"url": "/"}]
        document_problems(schema, api_prefix=API_PREFIX)
        restore_null_examples(schema)
        restore_null_response_examples(schema, app)
        document_security(schema, API_PREFIX, public_operations(app))
        app.openapi_schema = schema
        return schema

    app.openapi = custom_openapi  # type: ignore[method-assign]
    return app


def preloaded_app() -> FastAPI:
    """The application as `cnfs-api serve` runs it: built once, its ORM's mappers configured, then every
    object made so far moved out of the garbage collector's reach (`gc.freeze`).

    Those objects (modules, routes, models and validators, mappers: most of a worker's heap) live as long
    as the process. Left in the collector's reach, each of its full passes walks all of them, and a
    request that allocates a lot (a CSV export of 100 000 rows) triggers several: frozen, the passes walk
    only what requests made (a fifth of a large export's CPU time, `bench.csv_export`). With several
    workers (gunicorn `--preload`) it is also what keeps the pages the forked workers share from being
    written to, and so copied, by the collector. One worker is served by the same function, as uvicorn's
    factory.

    The ORM's mappers (their relationships and loaders), which each worker would otherwise configure for
    itself at its first query, are configured here once and shared. `bench.soak`'s memory table measures
    the result."""
    app = create_app()
    configure_mappers()
    gc.collect()
    gc.freeze()
    return app
