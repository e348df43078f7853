"""The ASGI middleware of every request: request id, body limit, CORS, last-resort 500, access log, metrics.

Doing all of it in one pure ASGI layer keeps the cost per request constant and small: one wrapper around
`send`, no second route matching (the route template comes from a cache keyed by the matched route), and
CORS only for requests that carry an `Origin` header."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

import uuid_utils
from asgi_correlation_id import correlation_id
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import audit
from app.core.cache_control import cache_control_for
from app.core.logging import ACCESS_LOGGER
from app.core.metrics import Metrics
from app.core.problems import AnswerCutShort, FieldError, problem_response, route_path, route_template

# isort: split
# After app.core.logging, which imports structlog without rich (see there).
from structlog.contextvars import bind_contextvars, reset_contextvars

logger = logging.getLogger(ACCESS_LOGGER)
errors = logging.getLogger("app.problems")
MAX_REQUEST_ID_LENGTH = 128
# The logger of uvicorn's line for an exception that an application raised.
SERVER_ERROR_LOGGER = "uvicorn.error"


def valid_request_id(value: str) -> bool:
    """Any printable ASCII value up to 128 characters (not only UUIDs) is kept; others are replaced.

    Printable ASCII includes the space (`trace 42`); control characters and non-ASCII are refused, since the
    value is echoed in a header and written to the logs."""
    return 0 < len(value) <= MAX_REQUEST_ID_LENGTH and value.isascii() and value.isprintable()


UNDECODABLE_PATH = "must be UTF-8: the path has percent-encoded bytes that are not UTF-8"


def undecodable_path(scope: Scope) -> list[str] | None:
    """The pointers of the path parameters that hold bytes which are not UTF-8, or None when the path is
    UTF-8 (the usual case, found without decoding anything when it has no `%` and no byte over 0x7F).

    The server decodes such bytes into U+FFFD, so that `%FF%FE` and `%FE%FF` would become the same
    value: they are refused instead, at the parameter that holds them (`/path/<name>`), or at `/path`
    when no route's parameter does."""
    raw = scope.get("raw_path")
    if not raw:
        return None
    raw = bytes(raw).partition(b"?")[0]
    if b"%" not in raw and raw.isascii():
        return None
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return None
    path = route_path(scope)
    for context in iter_route_contexts(getattr(scope.get("app"), "routes", ())):
        regex = getattr(context, "path_regex", None)
        match = regex.match(path) if regex is not None else None
        if match is None:
            continue
        names = [name for name, value in match.groupdict().items() if "\ufffd" in value]
        if names:
            return [f"/path/{name}" for name in names]
    return ["/path"]


class PayloadTooLarge(HTTPException):
    """Raised while reading a streamed body; FastAPI lets HTTPExceptions from `receive` through to the
    problem handler."""

    def __init__(self) -> None:
        super().__init__(status_code=413)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _vary_by_origin(headers: list[tuple[bytes, bytes]]) -> None:
    """A response a shared cache may keep (`public`) says that it varies by `Origin`, also when the request
    had none: the same URL asked with an allowed Origin carries CORS headers, and a cache must not hand
    the answer without them to a browser that needs them."""
    cache_control = next((value for name, value in headers if name.lower() == b"cache-control"), b"")
    if b"public" not in cache_control.lower():
        return
    for index, (name, value) in enumerate(headers):
        if name.lower() == b"vary":
            fields = [field.strip().lower() for field in value.split(b",")]
            if b"origin" not in fields and b"*" not in fields:
                headers[index] = (name, value + b", Origin")
            return
    headers.append((b"vary", b"Origin"))


class AlreadyLogged(logging.Filter):
    """Drops the server's line for an answer cut short (`AnswerCutShort`): `RequestMiddleware` logged it
    already, with its request id and route template, and the server's copy (its traceback again, without
    either) would count one failure twice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], AnswerCutShort))


class RequestMiddleware:
    """Everything each request needs around the application, in one layer.

    - `X-Request-ID`: kept when valid (`valid_request_id`), generated otherwise; echoed on every response,
      available to problems through `correlation_id`, and bound to every log line written while the
      request runs (structlog's context variables, which the formatter merges into each line).
    - A path with percent-encoded bytes that are not UTF-8 is refused: 422 `validation_error` at the
      pointer of the path parameter that holds it (`undecodable_path`).
    - Body limit: a declared `Content-Length` over the limit is refused before the app runs; a streamed
      body is counted as it is read. Both answer 413 `payload_too_large` as a problem (Starlette's own
      limit answers plain text).
    - CORS: requests with an `Origin` header go through `cors` (Starlette's CORSMiddleware around the
      rest); the others skip it.
    - An unhandled exception becomes a 500 problem without internals; a request that the server cancels
      as it stops (its shutdown deadline) a 503 `service_unavailable`, so that the server's own plain-text
      500 is never what a client gets. An exception after the answer started (`AnswerCutShort`) is
      logged once and counted as a 500.
    - `Cache-Control` on every response that does not set its own (`cache_control_for`).
    - One access log line (route template, status, duration: never the path's values nor the query
      string, which may carry personal data) and the Prometheus metrics, per request, CORS preflights
      included."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_size: int,
        metrics: Metrics,
        cors: Callable[[ASGIApp], ASGIApp] | None = None,
    ) -> None:
        self.app = app
        self.max_body_size = max_body_size
        self.metrics = metrics
        self._cors = cors(self._handle) if cors is not None else None
        server = logging.getLogger(SERVER_ERROR_LOGGER)
        if not any(isinstance(existing, AlreadyLogged) for existing in server.filters):
            server.addFilter(AlreadyLogged())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = route_path(scope)
        raw_id = _header(scope, b"x-request-id")
        request_id = raw_id.decode("latin-1") if raw_id is not None else ""
        if not valid_request_id(request_id):
            request_id = uuid_utils.uuid4().hex
        id_header = (b"x-request-id", request_id.encode("latin-1"))
        authorized = _header(scope, b"authorization") is not None
        keyed = scope["method"] == "POST" and _header(scope, b"idempotency-key") is not None
        # What the client was answered (a CORS preflight's answer too); 500 when nothing was.
        status = 500
        replayed = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, replayed
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers") or ())
                if keyed:
                    replayed = any(name.lower() == b"idempotent-replayed" for name, _ in headers)
                headers.append(id_header)
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    rule = cache_control_for(
                        scope["method"], route_path(scope), message["status"], authorized
                    )
                    headers.append((b"cache-control", rule.encode("latin-1")))
                _vary_by_origin(headers)
                message["headers"] = headers
            await send(message)

        token = correlation_id.set(request_id)
        bound = bind_contextvars(request_id=request_id)
        try:
            with audit.bind_request(scope):
                if self._cors is not None and _header(scope, b"origin") is not None:
                    await self._cors(scope, receive, send_with_id)
                else:
                    await self._handle(scope, receive, send_with_id)
        except AnswerCutShort:
            status = 500
            raise
        finally:
            self._observe(scope, path, status, replayed, time.perf_counter() - started, request_id)
            reset_contextvars(**bound)
            correlation_id.reset(token)

    def _observe(
        self, scope: Scope, path: str, status: int, replayed: bool, elapsed: float, request_id: str
    ) -> None:
        template = route_template(scope, path)
        method = scope["method"]
        self.metrics.observe(method, template, status, elapsed)
        if replayed:
            self.metrics.replayed(template)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "%s %s %s",
                method,
                template,
                status,
                extra={
                    "request_id": request_id,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            pointers = undecodable_path(scope)
            declared = _header(scope, b"content-length")
            if pointers is not None:
                await self._refuse_path(scope, receive, send_wrapper, pointers)
            elif declared is not None and declared.strip().isdigit() and int(declared) > self.max_body_size:
                await self._refuse_body(scope, receive, send_wrapper)
            else:
                await self._with_body_limit(scope, receive, send_wrapper, lambda: response_started)
        except Exception as error:
            where = f"{scope['method']} {route_template(scope)}"
            if response_started:
                # Nothing more can be said to the client: the server closes the connection, and the
                # client sees the body without its end (a chunked answer's last chunk, or short of its
                # Content-Length). One line, here, where the request id and the route are known.
                cause = type(error).__name__
                errors.error("the answer to %s was cut short: %s", where, cause, exc_info=error)
                raise AnswerCutShort(where) from error
            errors.exception("unhandled error on %s", where)
            response = problem_response(
                Request(scope),
                status=500,
                code="internal_error",
                title="Internal error",
                detail="an unexpected error occurred; quote the request_id when reporting it",
            )
            await response(scope, receive, send_wrapper)
        except asyncio.CancelledError:
            # The server cancels a request still running at its shutdown deadline (SHUTDOWN_TIMEOUT_SECONDS:
            # uvicorn's graceful timeout, app.core.workers under gunicorn); its transaction rolls back, unless
            # it was cancelled while its COMMIT was under way. Unanswered, the server's own answer to the
            # cancellation would be a plain-text 500: the client is told to retry instead, if the answer
            # leaves before the process ends (otherwise it sees the connection cut).
            if not response_started:
                response = problem_response(
                    Request(scope),
                    status=503,
                    code="service_unavailable",
                    title="Service unavailable",
                    detail="the service stopped before this request ended; retry (a POST with the same "
                    "Idempotency-Key)",
                    headers={"Retry-After": "5"},
                )
                with contextlib.suppress(Exception):
                    await response(scope, receive, send_wrapper)
            raise

    async def _with_body_limit(
        self, scope: Scope, receive: Receive, send: Send, response_started: Callable[[], bool]
    ) -> None:
        received = 0
        limit = self.max_body_size

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except PayloadTooLarge:
            # Read outside a route (the route's own reading goes through the problem handler).
            if response_started():
                raise
            await self._refuse_body(scope, receive, send)

    async def _refuse_path(self, scope: Scope, receive: Receive, send: Send, pointers: list[str]) -> None:
        response = problem_response(
            Request(scope),
            status=422,
            code="validation_error",
            title="Invalid request",
            detail=f"The request has {len(pointers)} invalid field(s).",
            errors=[FieldError(pointer=pointer, detail=UNDECODABLE_PATH) for pointer in pointers],
        )
        await response(scope, receive, send)

    async def _refuse_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            Request(scope),
            status=413,
            code="payload_too_large",
            title="Request body too large",
            detail=f"the request body is larger than the limit of {self.max_body_size} bytes",
        )
        await response(scope, receive, send)
