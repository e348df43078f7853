"""Refuses requests whose Host header is not one of ALLOWED_HOSTS (when set), as a problem."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.problems import AppError, problem_response


class InvalidHost(AppError):
    """The request's Host header is not one of the hosts this service answers for (ALLOWED_HOSTS)."""

    status, code, title = 400, "invalid_host", "Invalid host"


class TrustedHostMiddleware:
    """Starlette's TrustedHostMiddleware answers in plain text and redirects `example.fr` to `www.`; this one
    answers a problem. `*.example.fr` allows the subdomains; `localhost`-style names without a port match
    any port."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self.app = app
        self.exact = {h.lower() for h in allowed_hosts if not h.startswith("*.")}
        self.suffixes = tuple(h.lower()[1:] for h in allowed_hosts if h.startswith("*."))

    def allowed(self, host: str) -> bool:
        host = host.lower()
        # `[::1]:8000` → `[::1]`; `api.example.fr:443` → `api.example.fr`.
        name = host[: host.find("]") + 1] if host.startswith("[") else host.split(":", 1)[0]
        if name in self.exact or host in self.exact:
            return True
        return bool(self.suffixes) and name.endswith(self.suffixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host", "")
        if self.allowed(host):
            await self.app(scope, receive, send)
            return
        response = problem_response(
            Request(scope),
            status=InvalidHost.status,
            code=InvalidHost.code,
            title=InvalidHost.title,
            detail="this service does not answer for that Host header",
        )
        await response(scope, receive, send)
