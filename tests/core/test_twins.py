"""A direct twin cannot drift from its route: it takes exactly its route's parameters, parsed by the route's
own declarations, uses every one of them, and leaves any other request to the route."""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.dependencies.utils import request_params_to_args
from starlette.datastructures import QueryParams
from starlette.responses import JSONResponse, Response

from app.core import direct as direct_module
from app.core.direct import DirectSession, TwinParameters, direct, twins
from app.core.listing import PageDep
from app.core.media import Separator
from app.db import TransactionRoute
from app.main import create_app

SAMPLES = [
    "",
    "1",
    "0",
    "-3",
    "true",
    "off",
    "abc",
    "commune",
    "69",
    "69123",
    "01a24eea-cc81-7096-ac57-a318971739a3",
    "01A24EEACC817096AC57A318971739A3",
    "2021-01-01T00:00:00Z",
    "2021-01-01",
    "a\x00b",
    "x" * 3000,
]


def _unused_parameters(handler: Any) -> list[str]:
    """The twin's keyword parameters that its body never reads."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(handler)))
    function = tree.body[0]
    assert isinstance(function, ast.AsyncFunctionDef | ast.FunctionDef)
    read = {
        node.id
        for node in ast.walk(function)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
    }
    return [arg.arg for arg in function.args.kwonlyargs if arg.arg not in read]


def _every_twin() -> list[TwinParameters]:
    return twins(create_app().routes)


def test_every_twin_takes_and_uses_every_parameter_of_its_route() -> None:
    """For each twin: its route's path and query parameters (its dependencies' included) are the twin's
    keyword parameters, but for those it refuses (sent, they take the request to the route), and its body
    reads each one. A filter added to a route only stops the service at start-up."""
    found = _every_twin()
    assert {twin.route.name for twin in found} == set(direct_module._HANDLERS)
    assert len(found) >= 14
    for twin in found:
        fields = [field for _where, field in direct_module._route_fields(twin.route)]
        refused = {field.name for field in fields if field.alias in twin.refused}
        taken = set(inspect.signature(twin.handler).parameters) - {"request", "session"}
        assert taken == {field.name for field in fields} - refused, twin.route.name
        assert _unused_parameters(twin.handler) == [], twin.route.name


def test_every_twin_reads_its_parameters_as_fastapi_reads_them_for_the_route() -> None:
    """For each twin, each of its route's parameters, each sample value (alone, repeated, or with
    another): the twin's parsing declines exactly what FastAPI's own `request_params_to_args` refuses, and
    reads the same values otherwise."""
    compared = 0
    for twin in _every_twin():
        path_fields = [field for where, field in direct_module._route_fields(twin.route) if where == "path"]
        query_fields = [param.field for param in twin.query]
        base_path = {field.alias: "1" for field in path_fields}
        for field in path_fields:
            for sample in SAMPLES:
                path = {**base_path, field.alias: sample}
                expected, errors = request_params_to_args(path_fields, path)
                expected_query, query_errors = request_params_to_args(query_fields, QueryParams(""))
                _same(
                    twin,
                    path,
                    QueryParams(""),
                    None if errors or query_errors else {**expected, **expected_query},
                )
                compared += 1
        for param in twin.query:
            for sample in SAMPLES:
                for query_string in (
                    urlencode({param.alias: sample}),
                    urlencode([(param.alias, sample), (param.alias, "2")]),
                ):
                    query = QueryParams(query_string)
                    path_values, path_errors = request_params_to_args(path_fields, base_path)
                    expected, errors = request_params_to_args(query_fields, query)
                    _same(
                        twin, base_path, query, None if errors or path_errors else {**path_values, **expected}
                    )
                    compared += 1
    assert compared > 500


def _same(
    twin: TwinParameters, path: dict[str, str], query: QueryParams, expected: dict[str, Any] | None
) -> None:
    try:
        read = twin.parse(path, query)
    except direct_module.Fallback:
        read = None
    assert read == expected, (twin.route.name, path, str(query))


def test_a_parameter_added_to_a_route_only_stops_the_start_up() -> None:
    """The drift the twins used to allow: a filter added to the route, not to its twin."""
    router = APIRouter(route_class=TransactionRoute)

    @router.get("/things", name="things_list_for_drift")
    async def things_list(
        page: PageDep, colour: Annotated[str | None, Query(max_length=10)] = None
    ) -> Response:  # pragma: no cover - never called
        return JSONResponse([colour, page.limit])

    @direct("things_list_for_drift")
    async def things_list_direct(
        request: Request,
        session: DirectSession,
        *,
        limit: int,
        cursor: str | None,
        include_total: bool,
        sep: Separator,
    ) -> Response | None:  # pragma: no cover - never called
        return JSONResponse([limit, cursor, include_total, sep])

    app = FastAPI()
    app.include_router(router)
    try:
        with pytest.raises(TypeError, match=r"missing \['colour'\]"):
            twins(app.routes)
    finally:
        del direct_module._HANDLERS["things_list_for_drift"]


def test_an_unused_parameter_is_found() -> None:
    async def careless(request: Request, session: DirectSession, *, colour: str | None, limit: int) -> None:
        assert limit

    assert _unused_parameters(careless) == ["colour"]


@pytest.mark.parametrize(
    ("params", "direct"),
    [
        ({"kind": "commune", "limit": "2"}, True),
        ({"kind": "commune", "limit": "2", "include_total": "1"}, True),  # the route reads "1" as true
        ({"kind": "commune", "colour": "red"}, False),  # not the route's: its 422
        ({"kind": "planet"}, False),  # a value the route refuses: its 422
        ({"limit": "2", "limit ": "3"}, False),
    ],
)
async def test_the_twin_answers_what_its_route_reads_and_nothing_else(
    client: httpx.AsyncClient, params: dict[str, str], direct: bool
) -> None:
    seen: list[str] = []
    direct_module.answer_observers.append(seen.append)
    try:
        response = await client.get("/api/v1/territories", params=params)
    finally:
        direct_module.answer_observers.remove(seen.append)
    assert bool(seen) is direct, (params, response.status_code)
    assert response.status_code == (200 if direct else 422), response.text


def test_a_twin_answers_only_what_the_router_gives_its_route() -> None:
    """The router takes the first route that matches the path and the method: a twin does not answer a
    path an earlier route takes, and reads its path with its route's convertors."""
    router = APIRouter(route_class=TransactionRoute)

    @router.get("/things/special", name="things_special_for_order")
    async def special() -> Response:  # pragma: no cover - never called
        return JSONResponse("special")

    @router.get("/things/{thing_key}", name="things_get_for_order")
    async def thing(thing_key: str) -> Response:  # pragma: no cover - never called
        return JSONResponse(thing_key)

    @direct("things_get_for_order")
    async def thing_direct(
        request: Request, session: DirectSession, *, thing_key: str
    ) -> Response | None:  # pragma: no cover - never called
        return JSONResponse(thing_key)

    app = FastAPI()
    app.include_router(router)
    routes = direct_module.DirectRoutes()
    try:

        def matched(path: str, method: str = "GET") -> Any:
            found = routes.match({"type": "http", "app": app, "method": method, "path": path})
            return None if found is None else found[1]

        assert matched("/things/12") == {"thing_key": "12"}
        assert matched("/things/special") is None  # the earlier route's
        assert matched("/things/12", "POST") is None
    finally:
        del direct_module._HANDLERS["things_get_for_order"]
    # The service's own convertors: a workshop's calendar (`{workshop_id:nodot}.ics`) is not the twin's.
    service = create_app()
    found = direct_module.DirectRoutes().match(
        {
            "type": "http",
            "app": service,
            "method": "GET",
            "path": "/api/v1/workshops/01a24eea-cc81-7096-ac57-a318971739a3.ics",
        }
    )
    assert found is None
