"""How the service's routers are declared, so that each route is built once.

FastAPI (≥ 0.160) composes an included router lazily: `include_router` keeps the router as it was declared
and builds, for each route, an effective context with the prefixes, dependencies and operation id of every
level it was included through, its own dependant, parameter fields and response validators included. A route
declared in `/workshops` and included through `/api/v1` into the app was built three times (as declared,
once per level), and two of the three copies stayed in memory for the process's life.

The service's routes are declared instead as they are served: on routers whose prefix is the whole path
(`/api/v1/workshops`), with the caller's check and the operation ids the app documents, and `create_app`
hands them to the app as they are (`FastAPI(routes=...)`). `bench.memory` measures what this saves.

The routes are built once per process and shared by every app built in it (the tests build many), so no
route knows its app: `app.dependency_overrides` does not reach them (the direct path never read it either).
The tests change what they need through the settings instead."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from fastapi import APIRouter, Depends
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from app.core.auth import get_principal
from app.db import TransactionRoute

API_PREFIX = "/api/v1"


def operation_id(route: APIRoute) -> str:
    """A route's operation id in the OpenAPI document: its name (`list_workshops`), stable and readable by
    the clients generated from it."""
    return route.name


def api_router(prefix: str, tags: Sequence[str | Enum]) -> APIRouter:
    """A router of `/api/v1{prefix}`. Every route checks its query parameters and resolves the caller
    (`get_principal`), so that an invalid key is 401 even where no key is needed; every route runs in the
    request's transaction (`TransactionRoute`)."""
    return APIRouter(
        prefix=API_PREFIX + prefix,
        tags=list(tags),
        dependencies=[Depends(get_principal)],
        route_class=TransactionRoute,
        generate_unique_id_function=operation_id,
    )


def plain_router(prefix: str, tags: Sequence[str | Enum]) -> APIRouter:
    """A router outside `/api/v1` (the operations' endpoints, the problem types): no key, no transaction."""
    return APIRouter(prefix=prefix, tags=list(tags), generate_unique_id_function=operation_id)


def routes_of(routers: Sequence[APIRouter]) -> list[BaseRoute]:
    """The routes of `routers`, in order, as the app serves them. A router's start-up and shutdown handlers
    would be left behind, so a router that has some is refused (the app's lifespan does that work)."""
    for router in routers:
        if router.on_startup or router.on_shutdown:
            raise TypeError(
                f"a router of {router.prefix or '/'} has start-up or shutdown handlers, which the app would "
                "not run: move them into the app's lifespan (app.main)"
            )
    return [route for router in routers for route in router.routes]
