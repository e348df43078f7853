"""The OpenAPI document is the contract: it validates, and docs/openapi.json is its reviewed copy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from openapi_spec_validator import validate

from app.cli import openapi_text

SNAPSHOT = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


async def test_the_document_validates(client: httpx.AsyncClient) -> None:
    validate(json.loads((await client.get("/openapi.json")).text))


async def test_the_committed_copy_is_current(client: httpx.AsyncClient) -> None:
    served = openapi_text((await client.get("/openapi.json")).json())
    assert SNAPSHOT.read_text(encoding="utf-8") == served, (
        "the API contract changed: review the change, then run "
        "`.venv/bin/cnfs-api openapi --output docs/openapi.json` and commit docs/openapi.json"
    )


async def test_operation_ids_are_stable_names(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    operations = [op for item in paths.values() for op in item.values() if isinstance(op, dict)]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    for op in operations:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", op["operationId"])
        assert op.get("tags"), op["operationId"]
        assert op.get("summary"), op["operationId"]
    expected = {"territories_list", "territories_get_by_code", "agreements_sign", "api_keys_create", "me_get"}
    assert expected <= set(ids)


async def test_problem_types_resolve(client: httpx.AsyncClient) -> None:
    problem = (await client.get("/api/v1/territories/region/99")).json()
    assert problem["type"] == "/problems/not_found"
    page = await client.get(problem["type"])
    assert page.status_code == 200
    assert page.json()["code"] == "not_found"
    assert page.json()["status"] == 404
    catalogue = {p["code"]: p for p in (await client.get("/problems")).json()["items"]}
    for code in ("validation_error", "territory_exists", "programme_positions_exceeded", "invalid_cursor"):
        assert catalogue[code]["description"] != catalogue[code]["title"]
    missing = await client.get("/problems/no_such_problem")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"


async def test_swagger_ui_needs_no_network(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets
    assert all(a.startswith("/") for a in assets), assets
    assert "cdn." not in page.text
    for asset in assets:
        if asset.endswith((".js", ".css")):
            assert (await client.get(asset)).status_code == 200, asset
