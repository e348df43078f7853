"""Rejects query parameters that the route does not declare (a typo must not silently widen a list)."""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app.core.problems import AppError, FieldError

_allowed_cache: dict[int, frozenset[str]] = {}


def _query_names(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _allowed(route: APIRoute) -> frozenset[str]:
    key = id(route)
    if key not in _allowed_cache:
        _allowed_cache[key] = frozenset(_query_names(route.dependant))
    return _allowed_cache[key]


async def reject_unknown_query(request: Request) -> None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    unknown = sorted(set(request.query_params.keys()) - _allowed(route))
    if unknown:
        raise AppError(
            f"unknown query parameter(s): {', '.join(unknown)}",
            status=422,
            code="validation_error",
            title="Invalid request",
            errors=[FieldError(pointer=f"/query/{name}", detail="unknown query parameter") for name in unknown],
        )
