"""ASGI middleware: request ids, a last-resort 500 problem, access logs without personal data."""

from __future__ import annotations

import logging
import time

from asgi_correlation_id import correlation_id
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.problems import problem_response

logger = logging.getLogger("app.access")
MAX_REQUEST_ID_LENGTH = 128


def valid_request_id(value: str) -> bool:
    """Any printable ASCII value up to 128 characters (not only UUIDs) is kept; others are replaced."""
    return 0 < len(value) <= MAX_REQUEST_ID_LENGTH and all(33 <= ord(c) <= 126 for c in value)


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
            route = scope.get("route")
            logger.info(
                "%s %s %s",
                scope.get("method"),
                getattr(route, "path", "-"),
                status,
                extra={
                    "request_id": correlation_id.get(),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
