"""ASGI middleware: request ids, body limit, a last-resort 500 problem, access logs without personal data."""

from __future__ import annotations

import logging
import time

from asgi_correlation_id import correlation_id
from fastapi.routing import iter_route_contexts
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.problems import problem_response, route_path

logger = logging.getLogger("app.access")
MAX_REQUEST_ID_LENGTH = 128


def valid_request_id(value: str) -> bool:
    """Any printable ASCII value up to 128 characters (not only UUIDs) is kept; others are replaced.

    Printable ASCII includes the space (`trace 42`); control characters and non-ASCII are refused, since the
    value is echoed in a header and written to the logs."""
    return 0 < len(value) <= MAX_REQUEST_ID_LENGTH and value.isascii() and value.isprintable()


def route_template(scope: Scope) -> str:
    """The matched route's full path template (`/api/v1/territories/{territory_id}`), or `-`.

    Since FastAPI 0.160 included routers are composed lazily: `scope["route"]` is the route as declared
    in its own router (`/{territory_id}`), and the prefixes live in its effective context."""
    route = scope.get("route")
    if route is None:
        return "-"
    path = route_path(scope)
    app = scope.get("app")
    for context in iter_route_contexts(getattr(app, "routes", [])):
        if context.original_route is route:
            regex = getattr(context, "path_regex", None)
            if regex is None or regex.match(path):
                return str(context.path_format or context.path)
    return str(getattr(route, "path", "-"))


class ErrorAndAccessLogMiddleware:
    """Turns an unhandled exception into a 500 problem (no internals) and logs one line per request.

    It sits inside the request-id middleware so that even a 500 carries X-Request-ID. The log line holds
    the route template, never the query string, which may carry personal data."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            logger.exception("unhandled error", extra={"request_id": correlation_id.get()})
            if response_started:
                raise
            request = Request(scope)
            response = problem_response(
                request,
                status=500,
                code="internal_error",
                title="Internal error",
                detail="an unexpected error occurred; quote the request_id when reporting it",
            )
            await response(scope, receive, send)
            status = 500
        finally:
            logger.info(
                "%s %s %s",
                scope.get("method"),
                route_template(scope),
                status,
                extra={
                    "request_id": correlation_id.get(),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )


class PayloadTooLarge(HTTPException):
    """Raised while reading a streamed body; FastAPI lets HTTPExceptions from `receive` through to the
    problem handler."""

    def __init__(self) -> None:
        super().__init__(status_code=413)


class BodyLimitMiddleware:
    """413 `payload_too_large` as a problem for any body over the limit.

    Starlette's RequestBodyLimitMiddleware answers in plain text whenever Content-Length is over the limit
    (it replaces even the problem the app rendered), so the limit is enforced here: a declared length over
    the limit is refused before the app runs; a streamed body is counted as it is read."""

    def __init__(self, app: ASGIApp, max_body_size: int) -> None:
        self.app = app
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_body_size:
            await self._refuse(scope, receive, send)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_size:
                    raise PayloadTooLarge()
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, send_wrapper)
        except PayloadTooLarge:
            # Read outside a route (the route's own reading goes through the problem handler).
            if response_started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            Request(scope),
            status=413,
            code="payload_too_large",
            title="Request body too large",
            detail=f"the request body is larger than the limit of {self.max_body_size} bytes",
        )
        await response(scope, receive, send)
