"""`Cache-Control` on every response: public reference data is cacheable for a short while, anything else is
`private, no-store`.

`cache_control_for()` is the rule; the request middleware (`app.core.middleware.RequestMiddleware`) applies it
to every response that does not set its own header."""

from __future__ import annotations

# Reference data, the same for every caller with or without a key, and the documentation. A new domain is
# private unless it is added here.
PUBLIC_PREFIXES = (
    "/api/v1/territories",
    "/api/v1/referentials",
    # Public workshops as anyone without a key sees them (no personal data): seats may be a minute stale in
    # a cache, the registration's answer is authoritative.
    "/api/v1/workshops",
    # Statistics as anyone without a key sees them (aggregates, small cells suppressed): a national answer
    # reads some 100 000 rollup rows, which a shared cache may spare for a minute.
    "/api/v1/stats",
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
