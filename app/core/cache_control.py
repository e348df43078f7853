"""`Cache-Control` on every response: public reference data is cacheable for a short while, anything else is
`private, no-store`.

`cache_control_for()` is the rule (a pure function, callable from any middleware); `CacheControlMiddleware`
is a pure ASGI middleware applying it to every response that does not set its own header."""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.problems import route_path

# Reference data, the same for every caller with or without a key, and the documentation. A new domain is
# private unless it is added here.
PUBLIC_PREFIXES = (
    "/api/v1/territories",
    "/api/v1/referentials",
    "/problems",
    "/openapi.json",
    "/docs",
    "/redoc",
    "/static-offline-docs",
)
PUBLIC_MAX_AGE_SECONDS = 60
PUBLIC = f"public, max-age={PUBLIC_MAX_AGE_SECONDS}"
PRIVATE = "private, no-store"
_CACHEABLE_STATUSES = frozenset({200, 304})


def cache_control_for(method: str, path: str, status: int, authorized: bool) -> str:
    """`public, max-age=60` for an anonymous, successful read of public reference data; else
    `private, no-store` (what a key reads may be scoped or personal, and errors must not be kept)."""
    if (
        method in ("GET", "HEAD")
        and not authorized
        and status in _CACHEABLE_STATUSES
        and path.startswith(PUBLIC_PREFIXES)
    ):
        return PUBLIC
    return PRIVATE


class CacheControlMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorized = "authorization" in Headers(scope=scope)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "cache-control" not in headers:
                    headers["Cache-Control"] = cache_control_for(
                        scope["method"], route_path(scope), message["status"], authorized
                    )
            await send(message)

        await self.app(scope, receive, send_wrapper)
