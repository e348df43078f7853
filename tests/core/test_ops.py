"""Operations endpoints and the OpenAPI document."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from app.core.problems import PROBLEM_MEDIA_TYPE
from app.ops.router import expected_head

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_when_the_schema_is_at_head(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "status": "ok",
        "database": "ok",
        "schema_revision": expected_head(),
        "expected_revision": expected_head(),
    }
    assert "retry-after" not in response.headers


async def test_readyz_when_the_schema_is_behind(client: httpx.AsyncClient, session: Any) -> None:
    from sqlalchemy import text

    # A revision this release knows, other than its latest.
    await session.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    await session.flush()
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert response.json()["status"] == "unavailable"
    assert response.json()["database"] == "ok"
    assert response.json()["schema_revision"] == "0001"


async def test_readyz_when_a_newer_release_migrated_the_schema(
    client: httpx.AsyncClient, session: Any
) -> None:
    """A rolling deploy migrates first: the previous release's processes stay ready until they are
    replaced (the migrations keep them working), rather than all leaving the load balancer at once."""
    from sqlalchemy import text

    await session.execute(text("UPDATE alembic_version SET version_num = '9999_from_a_newer_release'"))
    await session.flush()
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "schema_revision": "9999_from_a_newer_release",
        "expected_revision": expected_head(),
    }
    assert "retry-after" not in response.headers


async def test_metrics_are_prometheus_text_with_route_templates(client: httpx.AsyncClient) -> None:
    await client.get("/api/v1/territories/019abc3e-5f6a-7b8c-9d0e-1f2a3b4c5d6e")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE http_requests_total counter" in text
    assert "http_request_duration_seconds" in text
    # Route templates, not raw paths: ids never become label values.
    assert 'handler="/api/v1/territories/{territory_id}"' in text
    assert "019abc3e-5f6a-7b8c-9d0e-1f2a3b4c5d6e" not in text


@pytest.fixture
async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    return spec


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    ]


def test_openapi_is_valid(openapi: dict[str, Any]) -> None:
    validate(openapi)
    assert openapi["openapi"].startswith("3.1")
    assert openapi["info"]["title"] == "cnfs-api"


def test_openapi_has_the_bearer_scheme(openapi: dict[str, Any]) -> None:
    scheme = openapi["components"]["securitySchemes"]["ApiKey"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    me = openapi["paths"]["/api/v1/me"]["get"]
    assert me["security"] == [{"ApiKey": []}]


def test_operation_ids_are_stable_and_unique(openapi: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in _operations(openapi)]
    assert len(ids) == len(set(ids))
    by_id = {op["operationId"]: (method, path) for method, path, op in _operations(openapi)}
    assert by_id["territories_list"] == ("GET", "/api/v1/territories")
    assert by_id["territories_create"] == ("POST", "/api/v1/territories")
    assert by_id["api_keys_create"] == ("POST", "/api/v1/api-keys")
    assert by_id["api_keys_list"] == ("GET", "/api/v1/api-keys")
    assert by_id["api_keys_delete"] == ("DELETE", "/api/v1/api-keys/{key_id}")
    assert by_id["me_get"] == ("GET", "/api/v1/me")
    assert by_id["ops_healthz"] == ("GET", "/healthz")
    assert by_id["ops_readyz"] == ("GET", "/readyz")


def test_every_operation_is_tagged_summarised_and_named(openapi: dict[str, Any]) -> None:
    declared_tags = {t["name"] for t in openapi["tags"]}
    for method, path, op in _operations(openapi):
        where = f"{method} {path}"
        assert op.get("tags"), where
        assert set(op["tags"]) <= declared_tags, where
        assert op.get("summary"), where
        assert op.get("operationId"), where


def test_errors_are_documented_as_problems(openapi: dict[str, Any]) -> None:
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for method, path, op in _operations(openapi):
        for status, response in op["responses"].items():
            if not status.startswith(("4", "5")) or path == "/readyz":
                continue
            content = response.get("content", {})
            where = f"{method} {path} {status}"
            assert content.get(PROBLEM_MEDIA_TYPE, {}).get("schema") == problem_ref, where
            assert "application/json" not in content, where
    # FastAPI's own validation error shape is never what the API answers.
    assert "HTTPValidationError" not in openapi["components"]["schemas"]
    assert "ValidationError" not in openapi["components"]["schemas"]


def test_every_api_operation_documents_422(openapi: dict[str, Any]) -> None:
    # Every /api/v1 operation refuses unknown query parameters.
    for method, path, op in _operations(openapi):
        if path.startswith("/api/v1"):
            assert "422" in op["responses"], f"{method} {path}"


def test_problem_schema(openapi: dict[str, Any]) -> None:
    problem = openapi["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "instance", "code", "request_id", "errors"} <= set(
        problem["properties"]
    )
    assert {"type", "title", "status", "code"} <= set(problem["required"])


async def test_docs_serve_swagger_ui(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in response.text
    assert "/openapi.json" in response.text
    # A pasted key is not kept in the browser's storage.
    assert "persistAuthorization" not in response.text
