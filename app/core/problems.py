"""RFC 9457 problem details: the one error format of the API, and the handlers that produce it."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from asgi_correlation_id import correlation_id
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

PROBLEM_MEDIA_TYPE = "application/problem+json"
# Relative URI references (RFC 9457 §3.1.1): each resolves against the API host to the problem's page.
PROBLEM_BASE = "/problems/"

logger = logging.getLogger("app.problems")
# A 422 lists this many errors at most: 40 000 unknown fields must not make a 2 MB answer.
MAX_ERRORS = 50
# FastAPI's answer when it cannot decode a JSON body at all (too deep, not UTF-8, a number too long).
_UNPARSABLE_BODY = "There was an error parsing the body"


class FieldError(BaseModel):
    pointer: str = Field(examples=["/code"])
    detail: str = Field(examples=["must be 2 digits for a region"])


class Problem(BaseModel):
    """An error response (`application/problem+json`)."""

    type: str = Field(examples=[PROBLEM_BASE + "validation_error"])
    title: str = Field(examples=["Invalid request"])
    status: int = Field(examples=[422])
    detail: str | None = Field(default=None, examples=["The request has 1 invalid field."])
    instance: str | None = Field(default=None, examples=["/api/v1/territories"])
    code: str = Field(
        description="Stable machine-readable code: the contract.", examples=["validation_error"]
    )
    request_id: str | None = Field(default=None, examples=["3f1c1a52a1b54f4c9f3c5d3c2b1a0f9e"])
    errors: list[FieldError] | None = Field(
        default=None, description=f"The invalid fields, at most {MAX_ERRORS} (see `errors_total`)."
    )
    errors_total: int | None = Field(
        default=None, description="How many invalid fields there were, when `errors` lists only the first."
    )


class AppError(Exception):
    """A domain error rendered as a problem. Subclass per domain with fixed status/code/title."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Sequence[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        status: int | None = None,
        code: str | None = None,
        title: str | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = headers or {}
        self.extra = extra or {}
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        if title is not None:
            self.title = title


class ValidationFailed(AppError):
    """The request is malformed: `errors[]` points at each invalid field or query parameter."""

    status, code, title = 422, "validation_error", "Invalid request"

    def __init__(self, pointer: str, detail: str) -> None:
        super().__init__(detail, errors=[FieldError(pointer=pointer, detail=detail)])


class UnknownReference(AppError):
    """A field names an object that does not exist or lies outside the caller's territories."""

    status, code, title = 422, "unknown_reference", "Unknown reference"

    def __init__(self, pointer: str, detail: str = "no such object, or outside your territories") -> None:
        super().__init__(detail, errors=[FieldError(pointer=pointer, detail=detail)])


class NotFound(AppError):
    """No such route or object, or the object lies outside the caller's territories."""

    status, code, title = 404, "not_found", "Not found"


class Forbidden(AppError):
    """The caller's role may not do this, or may not see this object in this form."""

    status, code, title = 403, "forbidden", "Forbidden"


class Unauthenticated(AppError):
    """An API key is needed, or the one sent is malformed, unknown, revoked or expired."""

    status, code, title = 401, "unauthenticated", "Authentication required"

    def __init__(
        self,
        detail: str = "a valid API key is required: Authorization: Bearer <key>",
        *,
        error: str | None = None,
    ) -> None:
        # RFC 6750 §3: no error code when no credentials were sent; `invalid_token` or `invalid_request` else.
        challenge = 'Bearer realm="cnfs-api"' + (f', error="{error}"' if error else "")
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Conflict(AppError):
    """The change conflicts with another object (a uniqueness or reference rule)."""

    status, code, title = 409, "conflict", "Conflict"


class PreconditionRequired(AppError):
    """Changing this object needs If-Match with the ETag of the version being changed."""

    status, code, title = 428, "precondition_required", "If-Match required"


class PreconditionFailed(AppError):
    """The object changed since the ETag sent in If-Match: fetch it again and retry."""

    status, code, title = 412, "precondition_failed", "Version mismatch"


def problem_response(
    request: Request,
    *,
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    errors: Sequence[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail or title,
        "instance": request.url.path,
        "code": code,
        "request_id": correlation_id.get(),
    }
    if errors:
        body["errors"] = [e.model_dump() for e in errors[:MAX_ERRORS]]
        if len(errors) > MAX_ERRORS:
            body["errors_total"] = len(errors)
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _pointer(loc: Sequence[int | str]) -> str:
    """A JSON Pointer (RFC 6901) into the body, or `/query/<name>`, `/path/<name>`, `/header/<name>`.

    The whole body is "" (an error on the body itself: not an object, not JSON); "/" would name a member
    called ""."""
    parts = list(loc)
    prefix = ""
    if parts and parts[0] in ("body", "query", "path", "header"):
        where = parts.pop(0)
        if where != "body":
            prefix = f"/{where}"
    escaped = [str(p).replace("~", "~0").replace("/", "~1") for p in parts]
    return prefix + "".join("/" + p for p in escaped)


# What a 422 says about a field: one clear, stable sentence per rule, the same for every resource (a
# frontend may show it next to the field), never pydantic's wording of the moment nor a regular expression.
_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "unknown field",
    "string_type": "must be a string",
    "string_unicode": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "uuid_type": "must be a UUID, such as 019abc3e-0000-7000-8000-000000000002",
    "uuid_parsing": "must be a UUID, such as 019abc3e-0000-7000-8000-000000000002",
    "uuid_version": "must be a UUID, such as 019abc3e-0000-7000-8000-000000000002",
    "date_type": "must be a date: YYYY-MM-DD",
    "date_parsing": "must be a date: YYYY-MM-DD",
    "date_from_datetime_parsing": "must be a date: YYYY-MM-DD",
    "date_from_datetime_inexact": "must be a date: YYYY-MM-DD",
    "datetime_type": "must be an RFC 3339 date-time with an offset, e.g. 2026-11-26T09:30:00Z",
    "datetime_parsing": "must be an RFC 3339 date-time with an offset, e.g. 2026-11-26T09:30:00Z",
    "datetime_from_date_parsing": "must be an RFC 3339 date-time with an offset, e.g. 2026-11-26T09:30:00Z",
    "datetime_object_invalid": "must be an RFC 3339 date-time with an offset, e.g. 2026-11-26T09:30:00Z",
    "timezone_aware": "must be an RFC 3339 date-time with an offset, e.g. 2026-11-26T09:30:00Z",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be an array",
    "none_required": "must be null",
}
# A pattern is a rule the documentation shows; the message names the kind of value instead.
_PATTERN_MESSAGES = {
    "email": "must be an email address, such as camille@example.org",
    "phone": "must be a phone number: digits, spaces and . ( ) -, with an optional leading +",
}
_FORMAT_MESSAGE = "does not have the expected format (see the field's description in the API documentation)"


def _length(err: Mapping[str, Any], bound: str, at: str) -> str:
    ctx = err.get("ctx") or {}
    limit = ctx.get(bound)
    # A length checked after another rule ("too_short") is still a string's when the value is one.
    unit = "character" if err["type"].startswith("string") or isinstance(err.get("input"), str) else "item"
    if limit == 1 and bound == "min_length":
        return "must not be empty" if unit == "character" else "must have at least 1 item"
    return f"must have {at} {limit} {unit}{'' if limit == 1 else 's'}"


def field_message(err: Mapping[str, Any]) -> str:
    """The `detail` of one field's error in a 422, from a pydantic error (`ValidationError.errors()`)."""
    kind = str(err.get("type", ""))
    ctx = err.get("ctx") or {}
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind in ("string_too_short", "too_short"):
        return _length(err, "min_length", "at least")
    if kind in ("string_too_long", "too_long"):
        return _length(err, "max_length", "at most")
    if kind == "string_pattern_mismatch":
        loc = list(err.get("loc", ()))
        name = loc[-1] if loc else ""
        return _PATTERN_MESSAGES.get(str(name), _FORMAT_MESSAGE)
    if kind in ("enum", "literal_error") and "expected" in ctx:
        return f"must be one of {ctx['expected']}"
    bounds = {
        "greater_than_equal": ("ge", "must be at least"),
        "greater_than": ("gt", "must be greater than"),
        "less_than_equal": ("le", "must be at most"),
        "less_than": ("lt", "must be less than"),
    }
    if kind in bounds and bounds[kind][0] in ctx:
        key, text = bounds[kind]
        return f"{text} {ctx[key]}"
    msg = str(err.get("msg", "invalid"))
    if kind in ("value_error", "assertion_error"):
        # The application's own validators word their messages as this table does.
        return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return msg


def refused_before_dependencies(error: BaseException) -> bool:
    """Whether FastAPI refused a request's body as it read it, before it resolved the route's dependencies
    (`app.core.auth.check_caller_of_unread_body`): a body that is not JSON (FastAPI's `json_invalid`), or
    one its JSON decoder cannot read (a 400 that `unparsable_body` answers)."""
    if isinstance(error, RequestValidationError):
        return any(err.get("type") == "json_invalid" for err in error.errors())
    return (
        isinstance(error, StarletteHTTPException)
        and error.status_code == 400
        and error.detail == _UNPARSABLE_BODY
    )


def validation_errors(exc: RequestValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            # FastAPI's loc is ("body", <character offset>): as a pointer it would name a field "/19".
            # The empty pointer designates the whole document (RFC 6901).
            reason = (err.get("ctx") or {}).get("error", "invalid JSON")
            offset = list(err.get("loc", ()))[-1:]
            where = f" at character {offset[0]}" if offset and isinstance(offset[0], int) else ""
            out.append(FieldError(pointer="", detail=f"the body is not valid JSON: {reason}{where}"))
            continue
        out.append(FieldError(pointer=_pointer(err.get("loc", ())), detail=field_message(err)))
    return out


def route_path(scope: Scope) -> str:
    """The path that routes match: the request path without the application's `root_path`."""
    path: str = scope.get("path", "")
    root_path: str = scope.get("root_path", "")
    return path[len(root_path) :] if root_path and path.startswith(root_path) else path


class RouteTemplates:
    """The full path template of a request's route (`/api/v1/territories/{territory_id}`), computed once:
    what the logs and the metrics name a request by, never its path's values.

    The service's routes are declared with their whole path (`app.core.routers`), but FastAPI (≥ 0.160)
    composes an included router lazily: for a route served through one, `scope["route"]` is the route as
    declared in its own router (`/{territory_id}`), and the prefixes live in its effective context. Walking
    those contexts on every request costs as much as routing again, so the walk is done once per set of
    routes."""

    def __init__(self) -> None:
        self._routes_id: int | None = None
        self._count = -1
        self._templates: dict[int, list[tuple[Any, re.Pattern[str] | None, str]]] = {}
        self._paths: list[tuple[re.Pattern[str], frozenset[str] | None, str]] = []

    def _build(self, routes: list[Any]) -> None:
        templates: dict[int, list[tuple[Any, re.Pattern[str] | None, str]]] = {}
        paths: list[tuple[re.Pattern[str], frozenset[str] | None, str]] = []
        for context in iter_route_contexts(routes):
            template = str(context.path_format or context.path)
            regex = getattr(context, "path_regex", None)
            templates.setdefault(id(context.original_route), []).append(
                (context.original_route, regex, template)
            )
            if regex is not None:
                methods = getattr(context.original_route, "methods", None)
                paths.append((regex, frozenset(methods) if methods else None, template))
        self._templates = templates
        self._paths = paths
        self._routes_id = id(routes)
        self._count = len(routes)

    def lookup(self, scope: Scope, path: str | None = None) -> str:
        """`path`: the request's `route_path` before routing, when a mount (the documentation's files) may
        have moved the scope's `root_path` since."""
        route = scope.get("route")
        routes = getattr(scope.get("app"), "routes", None)
        if routes is None:
            return str(getattr(route, "path", "-"))
        if id(routes) != self._routes_id or len(routes) != self._count:
            self._build(routes)
        if route is None:
            return self._by_path(scope, route_path(scope) if path is None else path)
        candidates = self._templates.get(id(route), ())
        if len(candidates) == 1 and candidates[0][0] is route:
            return candidates[0][2]
        # The same route included twice (under two prefixes): the path tells which.
        path = route_path(scope)
        for original, regex, template in candidates:
            if original is route and (regex is None or regex.match(path)):
                return template
        return str(getattr(route, "path", "-"))

    def _by_path(self, scope: Scope, path: str) -> str:
        """The template of a request that no API route took: answered before routing (a CORS preflight, a
        body or a path refused, an unknown host), served by a route that is not the API's (the OpenAPI
        document, the documentation's files), or matching nothing (a 404: `-`, never the path itself)."""
        method = scope.get("method", "")
        if method == "OPTIONS":
            # A preflight names the method that it asks for.
            for name, value in scope.get("headers", ()):
                if name == b"access-control-request-method":
                    method = bytes(value).decode("latin-1").strip().upper()
                    break
        found = "-"
        for regex, methods, template in self._paths:
            if regex.match(path):
                if methods is None or method in methods:
                    return template
                if found == "-":
                    found = template
        return found


_TEMPLATES = RouteTemplates()


def route_template(scope: Scope, path: str | None = None) -> str:
    """The template of the request's route (`RouteTemplates.lookup`), `-` when it matches none."""
    return _TEMPLATES.lookup(scope, path)


class AnswerCutShort(Exception):
    """An answer failed after its status was sent (a CSV export whose database failed mid-stream):
    `app.core.middleware` logs it once, with its request id and route template, counts it as a 500, and
    raises this on to the server, which closes the connection so that the client sees an incomplete body.
    The server's own line for it is dropped (`app.core.middleware.AlreadyLogged`)."""


def _allowed_methods(request: Request) -> str:
    """Every method of the resource: Starlette's 405 names only the first route whose path matched
    (GET /territories), although another route serves POST on the same path."""
    path = route_path(request.scope)
    methods: set[str] = set()
    # Through the effective routes of an included router too (FastAPI ≥ 0.160 composes them lazily).
    for route in iter_route_contexts(request.app.router.routes):
        regex = getattr(route, "path_regex", None)
        if route.methods and regex is not None and regex.match(path):
            methods |= route.methods
    return ", ".join(sorted(methods))


_STATUS_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "Request body too large"),
}


def install_problem_handlers(app: FastAPI) -> None:
    async def app_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AppError)
        return problem_response(
            request,
            status=exc.status,
            code=exc.code,
            title=exc.title,
            detail=exc.detail,
            errors=exc.errors,
            headers=exc.headers,
            extra=exc.extra,
        )

    async def request_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = validation_errors(exc)
        return problem_response(
            request,
            status=422,
            code="validation_error",
            title="Invalid request",
            detail=(
                "the body must be a JSON object (Content-Type: application/json)"
                if any(e.pointer == "" for e in errors)
                else f"The request has {len(errors)} invalid field(s)."
                + (f" The first {MAX_ERRORS} are listed." if len(errors) > MAX_ERRORS else "")
            ),
            errors=errors,
        )

    def unparsable_body(request: Request, cause: BaseException | None) -> JSONResponse:
        if isinstance(cause, RecursionError):
            reason = "it is nested too deeply"
        elif isinstance(cause, UnicodeDecodeError):
            reason = "it is not valid UTF-8"
        elif isinstance(cause, ValueError):
            reason = "a number in it has too many digits"
        else:
            reason = "it cannot be decoded"
        detail = f"the body is not valid JSON: {reason}"
        return problem_response(
            request,
            status=422,
            code="validation_error",
            title="Invalid request",
            detail=detail,
            errors=[FieldError(pointer="", detail=detail)],
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
            return unparsable_body(request, exc.__cause__)
        code, title = _STATUS_CODES.get(exc.status_code, ("http_error", "HTTP error"))
        detail = None
        if exc.status_code == 404:
            detail = "no such resource"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed here"
        elif exc.status_code == 413:
            detail = "the request body is larger than the limit"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
        return problem_response(
            request, status=exc.status_code, code=code, title=title, detail=detail, headers=headers
        )

    async def integrity_error(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("integrity error on %s %s", request.method, route_template(request.scope))
        return problem_response(
            request,
            status=409,
            code="conflict",
            title="Conflict",
            detail="the change conflicts with the current state of another object",
        )

    async def stale_data(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(
            request,
            status=412,
            code="precondition_failed",
            title="Version mismatch",
            detail="the object changed meanwhile: fetch it again and retry with its new ETag",
        )

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        if is_read_only(exc):
            logger.error(
                "the SQLite database file is read-only (permissions, a full or read-only disk): writes "
                "answer 503 until it is writable again"
            )
        else:
            settings = getattr(request.app.state, "settings", None)
            pgbouncer = bool(getattr(settings, "database_pgbouncer", False))
            logger.error("database unavailable: %s", unavailable_reason(exc, pgbouncer))
        return problem_response(
            request,
            status=503,
            code="service_unavailable",
            title="Service unavailable",
            detail="the database is not reachable right now; retry later",
            headers={"Retry-After": "5"},
        )

    async def dbapi_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DBAPIError)
        if exc.connection_invalidated or is_transient(exc) or is_read_only(exc):
            return await unavailable(request, exc)
        return await server_error(request, exc)

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, AnswerCutShort):
            # An answer cut short was logged by `RequestMiddleware`; Starlette's outermost layer still calls
            # this handler for it, but its answer has started: the problem below is never sent.
            logger.exception(
                "unhandled error on %s %s", request.method, route_template(request.scope), exc_info=exc
            )
        return problem_response(
            request,
            status=500,
            code="internal_error",
            title="Internal error",
            detail="an unexpected error occurred; quote the request_id when reporting it",
        )

    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(IntegrityError, integrity_error)
    app.add_exception_handler(StaleDataError, stale_data)
    app.add_exception_handler(PoolTimeoutError, unavailable)
    app.add_exception_handler(OperationalError, dbapi_error)
    app.add_exception_handler(DBAPIError, dbapi_error)
    # Reaching the database failed before any driver error could wrap it (refused, DNS, a connect or command
    # timeout, a connection lost in the driver): OSError covers ConnectionError and socket.gaierror.
    app.add_exception_handler(OSError, unavailable)
    app.add_exception_handler(TimeoutError, unavailable)
    for driver_error in _driver_connection_errors():
        app.add_exception_handler(driver_error, unavailable)
    app.add_exception_handler(Exception, server_error)


# SQLSTATEs after which the same request may well succeed later: connection failures (class 08), too many
# connections or no resources (53), lock or statement timeouts, deadlocks, serialisation failures, a server
# shutting down or starting up (57P01-57P03), and a database that does not accept connections now
# (55000 object_not_in_prerequisite_state: `ALTER DATABASE ... ALLOW_CONNECTIONS false`, a template).
_TRANSIENT_SQLSTATES = ("08", "53", "40001", "40P01", "55P03", "55000", "57014", "57P01", "57P02", "57P03")
# A prepared statement that already exists (42P05) or no longer does (26000). Without DATABASE_PGBOUNCER the
# driver names every statement it prepares (`__asyncpg_stmt_N__`, N counted in each process) and keeps it
# on its connection's server session; the service itself runs no PREPARE, DEALLOCATE or DISCARD. Such names
# only meet another's, or go missing, when server sessions pass from client to client: behind a pooler in
# transaction mode that the setting was not told of (the start-up check refuses one it sees). A
# configuration to fix, not the request's error: 503, and the log line says what to set.
_POOLER_SQLSTATES = ("42P05", "26000")
_PGBOUNCER_HINT = (
    "; the database URL seems to lead to PgBouncer in transaction mode: set DATABASE_PGBOUNCER=true "
    "(docs/operations.md, PgBouncer)"
)
_UNEXPECTED_WITH_PGBOUNCER = "; unexpected with DATABASE_PGBOUNCER=true (unnamed statements only): report it"


def _driver_connection_errors() -> list[type[Exception]]:
    """asyncpg's own connection errors, when one escapes SQLAlchemy's wrapping (raised while connecting)."""
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        return []
    return [
        asyncpg.exceptions.PostgresConnectionError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.ObjectNotInPrerequisiteStateError,
        asyncpg.exceptions.ConnectionDoesNotExistError,
    ]


def unavailable_reason(exc: BaseException, pgbouncer: bool = False) -> str:
    """What the log line says: the exception's class and its SQLSTATE, never its message (bound values).
    A cancelled statement (57014) also says which of PostgreSQL's fixed causes it was: its own
    `statement_timeout`, or a cancel request (a client that stopped waiting for an earlier statement).
    A pooler's refusals (`_POOLER_SQLSTATES`, a start-up parameter refused) say what to set, unless
    DATABASE_PGBOUNCER (`pgbouncer`) is set already."""
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(exc, "sqlstate", None)
    name = type(orig).__name__ if orig is not None else type(exc).__name__
    if sqlstate == "57014":
        cause = "statement_timeout" if "statement timeout" in str(orig or exc) else "a cancel request"
        return f"{name} (SQLSTATE 57014, {cause})"
    hint = _UNEXPECTED_WITH_PGBOUNCER if pgbouncer else _PGBOUNCER_HINT
    if sqlstate in _POOLER_SQLSTATES:
        return f"{name} (SQLSTATE {sqlstate}){hint}"
    if sqlstate == "08P01" and "unsupported startup parameter" in str(orig or exc):
        # PgBouncer's refusal of the timeouts the service sends when connecting (its text has no data).
        return f"{name} (SQLSTATE 08P01, PgBouncer refused a start-up parameter){hint}"
    return f"{name} (SQLSTATE {sqlstate})" if sqlstate else name


def is_read_only(exc: BaseException) -> bool:
    """SQLite refuses to write: the file (or its directory, or the disk) is read-only."""
    name = getattr(getattr(exc, "orig", None), "sqlite_errorname", None)
    return isinstance(name, str) and name.startswith("SQLITE_READONLY")


# SQLite result codes of the same kind: the file is locked by a writer, cannot be opened or read right now.
_TRANSIENT_SQLITE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR")


def is_transient(exc: DBAPIError) -> bool:
    """A database error that says "not now" (503 with Retry-After) rather than "never" (500).

    A missing table or column (a schema not migrated, or a bug) is not transient: retrying cannot help."""
    sqlite_name = getattr(exc.orig, "sqlite_errorname", None)
    if isinstance(sqlite_name, str):
        return sqlite_name.startswith(_TRANSIENT_SQLITE)
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if isinstance(sqlstate, str):
        return sqlstate.startswith(_TRANSIENT_SQLSTATES) or sqlstate in _POOLER_SQLSTATES
    # No answer from a server at all: the connection failed or was lost.
    return isinstance(exc, OperationalError)


_PROBLEM_REF = "#/components/schemas/Problem"
_FASTAPI_422_REF = "#/components/schemas/HTTPValidationError"
_VALIDATION_DESCRIPTION = "Invalid input (`validation_error`, `invalid_cursor`, `unknown_reference`, ...)"


def document_problems(schema: dict[str, Any], api_prefix: str) -> None:
    """Rewrites the generated OpenAPI so that errors are documented as they are answered.

    FastAPI files a `responses=` model under `application/json` and adds its own 422 shape
    (`HTTPValidationError`) to any operation with parameters; every error is in fact a Problem in
    `application/problem+json`, and every operation under `api_prefix` may answer 422 (unknown query
    parameters are refused)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if "Problem" not in components:
        problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(problem_schema.pop("$defs", {}))
        components["Problem"] = problem_schema
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for response in responses.values():
                content = response.get("content", {})
                json_ref = content.get("application/json", {}).get("schema", {}).get("$ref")
                if json_ref not in (_PROBLEM_REF, _FASTAPI_422_REF):
                    continue
                if json_ref == _FASTAPI_422_REF:
                    response["description"] = _VALIDATION_DESCRIPTION
                content.pop("application/json")
                content[PROBLEM_MEDIA_TYPE] = {"schema": {"$ref": _PROBLEM_REF}}
            if path.startswith(api_prefix) and "422" not in responses:
                responses["422"] = {
                    "description": _VALIDATION_DESCRIPTION,
                    "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": _PROBLEM_REF}}},
                }
            if path.startswith(api_prefix) and "429" not in responses:
                responses["429"] = {
                    "description": _RATE_LIMITED_DESCRIPTION,
                    "headers": {
                        "Retry-After": _RETRY_AFTER_HEADER,
                        **dict.fromkeys(_RATE_LIMIT_HEADERS, _RATE_LIMIT_HEADER),
                    },
                    "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": _PROBLEM_REF}}},
                }
            if path.startswith(api_prefix) and "503" not in responses:
                responses["503"] = {
                    "description": _UNAVAILABLE_DESCRIPTION,
                    "headers": {"Retry-After": _RETRY_AFTER_HEADER},
                    "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": _PROBLEM_REF}}},
                }
            # Swagger UI shows the schema's own example (a 422) for every problem unless each has its own.
            for status, response in responses.items():
                problem = response.get("content", {}).get(PROBLEM_MEDIA_TYPE)
                if problem is not None and status.isdigit():
                    problem["example"] = problem_example(
                        int(status), path, example_field_error(operation, components)
                    )
    if f'"{_FASTAPI_422_REF}"' not in json.dumps(schema.get("paths", {})):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)


_UNAVAILABLE_DESCRIPTION = "The database cannot be reached right now (`service_unavailable`): retry later"
_RETRY_AFTER_HEADER = {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
_RATE_LIMITED_DESCRIPTION = "Too many requests from this key or address (`rate_limited`): wait `Retry-After`"
_RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
_RATE_LIMIT_HEADER = {
    "description": "The limit, what is left of it (0), seconds until it resets.",
    "schema": {"type": "integer"},
}

# One example per status: (code, title, detail). 409 and 422 have several codes; the description lists them.
_EXAMPLES: dict[int, tuple[str, str, str]] = {
    400: ("invalid_host", "Invalid host", "this service does not answer for that Host header"),
    401: (
        "unauthenticated",
        "Authentication required",
        "a valid API key is required: Authorization: Bearer <key>",
    ),
    403: ("forbidden", "Forbidden", "your role may not do this"),
    404: ("not_found", "Not found", "no such object, or outside your territories"),
    405: ("method_not_allowed", "Method not allowed", "DELETE is not allowed here"),
    409: ("conflict", "Conflict", "the change conflicts with the current state of another object"),
    410: (
        "idempotency_key_erased",
        "Idempotency key erased",
        "the response of this Idempotency-Key showed personal data that has since been erased, so it cannot "
        "be replayed; use a new key for a new request",
    ),
    412: (
        "precondition_failed",
        "Version mismatch",
        "the object changed meanwhile: fetch it again and retry with its new ETag",
    ),
    413: ("payload_too_large", "Request body too large", "the request body is larger than the limit"),
    422: ("validation_error", "Invalid request", "The request has 1 invalid field(s)."),
    429: ("rate_limited", "Too many requests", "at most 10 requests per 60 s here: retry in 42 s"),
    428: (
        "precondition_required",
        "If-Match required",
        'send If-Match: "<version>" (the ETag of your last GET)',
    ),
    500: (
        "internal_error",
        "Internal error",
        "an unexpected error occurred; quote the request_id when reporting it",
    ),
    503: (
        "service_unavailable",
        "Service unavailable",
        "the database is not reachable right now; retry later",
    ),
}


_UUID_EXAMPLE_ERROR = "must be a UUID, such as 019abc3e-0000-7000-8000-000000000002"


def example_field_error(operation: dict[str, Any], components: dict[str, Any]) -> dict[str, str]:
    """An error that the operation may really answer in a 422: its body's first required field left out,
    else its first UUID path parameter malformed, else an unknown query parameter (every operation refuses
    those)."""
    for media in operation.get("requestBody", {}).get("content", {}).values():
        ref = media.get("schema", {}).get("$ref", "")
        body = components.get(ref.rsplit("/", 1)[-1], {}) if ref.startswith("#/components/schemas/") else {}
        required = body.get("required") or []
        if required:
            return {"pointer": _pointer([required[0]]), "detail": _MESSAGES["missing"]}
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "path" and parameter.get("schema", {}).get("format") == "uuid":
            return {"pointer": f"/path/{parameter['name']}", "detail": _UUID_EXAMPLE_ERROR}
    return {"pointer": "/query/sort_by", "detail": "unknown query parameter"}


def problem_example(status: int, path: str, field_error: dict[str, str] | None = None) -> dict[str, Any]:
    """The example of a problem answered with `status` on `path`, as documented in the OpenAPI; a 422 shows
    `field_error` (`example_field_error`)."""
    code, title, detail = _EXAMPLES.get(status, ("http_error", "HTTP error", "HTTP error"))
    example: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": path,
        "code": code,
        "request_id": "3f1c1a52a1b54f4c9f3c5d3c2b1a0f9e",
    }
    if status == 422:
        example["errors"] = [
            field_error or {"pointer": "/query/sort_by", "detail": "unknown query parameter"}
        ]
    return example


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting problem answers."""
    described = {
        400: "Bad request",
        401: "Missing or invalid API key (`unauthenticated`)",
        403: "The caller's role may not do this (`forbidden`)",
        404: "No such object, or outside the caller's territories (`not_found`)",
        409: "Conflict with the current state (see `code`)",
        410: "The stored response of this `Idempotency-Key` showed personal data since erased "
        "(`idempotency_key_erased`): use a new key",
        412: "The `If-Match` version is stale (`precondition_failed`)",
        413: "Body larger than the limit (`payload_too_large`)",
        422: _VALIDATION_DESCRIPTION,
        428: "`If-Match` header required (`precondition_required`)",
    }
    return {
        s: {"model": Problem, "description": described.get(s, "Problem"), "content": {PROBLEM_MEDIA_TYPE: {}}}
        for s in statuses
    }
