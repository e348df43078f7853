"""CORS with refusals answered as problems: Starlette's middleware refuses a preflight in plain text."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.core.problems import AppError, problem_response


class CorsRefused(AppError):
    """A CORS preflight asked for an origin, a method or a header that the service does not allow."""

    status, code, title = 400, "cors_refused", "Cross-origin request refused"


class ProblemCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, whose preflight refusal (400 `Disallowed CORS origin`) becomes a problem
    with the same status and CORS headers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            headers = Headers(scope=scope)
            if "origin" in headers and "access-control-request-method" in headers:
                response = self.preflight_response(request_headers=headers)
                if response.status_code == 400:
                    response = self._as_problem(scope, response)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    @staticmethod
    def _as_problem(scope: Scope, refusal: Response) -> Response:
        refused = bytes(refusal.body).decode().removeprefix("Disallowed CORS ")
        problem = problem_response(
            Request(scope),
            status=CorsRefused.status,
            code=CorsRefused.code,
            title=CorsRefused.title,
            detail=f"this cross-origin request is not allowed ({refused}); see CORS_ALLOW_ORIGINS",
        )
        for name, value in refusal.headers.items():
            if name.startswith("access-control-") or name == "vary":
                problem.headers[name] = value
        return problem
