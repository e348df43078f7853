"""Rejects query parameters that the route does not declare (a typo must not silently widen a list)."""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app.core.problems import AppError, FieldError

# Keyed by id(route) (routes are unhashable); the route itself is kept in the value so that its id cannot be
# recycled by another route (tests build many apps) while the entry exists.
_allowed_cache: dict[int, tuple[APIRoute, frozenset[str]]] = {}


def _query_names(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _allowed(route: APIRoute) -> frozenset[str]:
    cached = _allowed_cache.get(id(route))
    if cached is None or cached[0] is not route:
        cached = (route, frozenset(_query_names(route.dependant)))
        _allowed_cache[id(route)] = cached
    return cached[1]


def reject_unknown_query(request: Request) -> None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    unknown = sorted(set(request.query_params.keys()) - _allowed(route))
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise AppError(
            f"unknown query parameter(s): {shown}",
            status=422,
            code="validation_error",
            title="Invalid request",
            errors=[
                FieldError(pointer=f"/query/{name}", detail="unknown query parameter") for name in unknown
            ],
        )
