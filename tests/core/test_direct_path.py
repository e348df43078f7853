"""The direct path (app/core/direct.py) answers exactly as the FastAPI routes do.

Every request below goes to two apps on the same test transaction: the test app (direct path on) and one
with `direct_path=False`, and the answers must be the same: status, headers (but the request id) and body.
The requests cover what the direct handlers answer themselves (the common case) and what they hand over to
the route (invalid or unusual parameters, a bad key). Domains add their own requests in
`tests/<domain>/test_direct_path.py` with the `same_answers` fixture."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core.direct import answer_observers
from app.main import create_app
from tests.conftest import KeyMaker, Tree, bearer

SameAnswers = Callable[..., Awaitable[httpx.Response]]


@pytest.fixture(scope="session")
async def route_app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings.model_copy(update={"direct_path": False}))
    async with LifespanManager(app):
        yield app


@pytest.fixture
async def route_client(
    route_app: FastAPI, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[httpx.AsyncClient]:
    original = route_app.state.sessionmaker
    route_app.state.sessionmaker = sessionmaker
    transport = httpx.ASGITransport(app=route_app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
    finally:
        route_app.state.sessionmaker = original


def _comparable(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """Everything but the request id (in a header, and in a problem's body)."""
    headers = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "content-length")}
    if headers.get("content-type") == "application/problem+json":
        body = response.json()
        assert body.pop("request_id") == response.headers["x-request-id"]
        return response.status_code, headers, body
    return response.status_code, headers, response.content


@pytest.fixture
def same_answers(client: httpx.AsyncClient, route_client: httpx.AsyncClient) -> SameAnswers:
    """`await same_answers(path, params=..., headers=..., direct=True|False)`: GETs `path` through both
    apps, asserts the answers are equal, and that the direct path answered it itself (`direct=True`) or
    handed it over to the route (`direct=False`; None: not checked)."""

    async def check(
        path: str,
        params: Any = None,
        headers: dict[str, str] | None = None,
        direct: bool | None = True,
    ) -> httpx.Response:
        seen: list[str] = []
        answer_observers.append(seen.append)
        try:
            answer = await client.get(path, params=params, headers=headers)
        finally:
            answer_observers.remove(seen.append)
        expected = await route_client.get(path, params=params, headers=headers)
        assert _comparable(answer) == _comparable(expected), (path, params)
        if direct is not None:
            assert bool(seen) is direct, (path, params, "direct" if seen else "route")
        return answer

    return check


async def test_territories_answer_the_same(
    same_answers: SameAnswers, tree: Tree, make_key: KeyMaker
) -> None:
    scoped = bearer(await make_key("territory_manager", [tree.rhone]))
    base = "/api/v1/territories"
    await same_answers(f"{base}/departement/69")
    await same_answers(f"{base}/commune/69123", headers=scoped)
    await same_answers(f"{base}/commune/99999")  # 404
    await same_answers(f"{base}/commune/6912")  # not a commune code: 404
    await same_answers(f"{base}/planet/69", direct=False)  # not a kind: the route's 422
    await same_answers(f"{base}/departement/{'9' * 17}", direct=False)  # too long
    await same_answers(f"{base}/departement/69", params={"x": "1"})  # unknown parameter: 422
    await same_answers(f"{base}/departement/69", headers=bearer("cnfs_unknown"))  # 401
    await same_answers(f"{base}/departement/69", headers={"Authorization": "Basic x"})  # 401
    first = await same_answers(f"{base}/departement/69")
    await same_answers(f"{base}/departement/69", headers={"If-None-Match": first.headers["etag"]})  # 304

    await same_answers(base)
    await same_answers(base, params={"kind": "commune", "limit": "2"})
    page = await same_answers(base, params={"kind": "commune", "limit": "2", "include_total": "true"})
    cursor = page.json()["next_cursor"]
    assert cursor
    await same_answers(base, params={"kind": "commune", "limit": "2", "cursor": cursor})
    await same_answers(base, params={"kind": "commune", "limit": "3", "cursor": cursor})  # 422 invalid_cursor
    await same_answers(base, params={"kind": "commune", "limit": "2", "cursor": "garbage"})
    await same_answers(base, params={"within": str(tree.rhone.id)})
    await same_answers(base, params={"within": str(uuid.uuid4())})  # 422 unknown territory
    await same_answers(base, params={"parent_id": str(tree.lyon_metro.id), "sort": "-name"})
    await same_answers(base, params={"q": "villefranche saone"})
    await same_answers(base, params={"q": "69123"})
    await same_answers(base, params={"q": "st etienne", "kind": "commune"})
    await same_answers(base, params={"code": "69"})
    await same_answers(base, params={"sort": "population"})  # 422 from the service
    await same_answers(base, headers=scoped)
    for params in (
        {"kind": "planet"},
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "x"},
        {"limit": "+5"},
        {"include_total": "yes"},
        {"within": "not-a-uuid"},
        {"within": str(tree.rhone.id).replace("-", "")},
        {"q": ""},
        {"q": "x" * 101},
        {"q": "a\x00b"},
        {"code": "1" * 17},
        {"unknown": "1"},
    ):
        await same_answers(base, params=params, direct=None)
    # Repeated parameters: the last one counts, both ways.
    await same_answers(base, params=[("kind", "commune"), ("kind", "departement")])
