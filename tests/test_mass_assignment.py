"""No server-managed field can be written: every POST, PUT and PATCH refuses each field of the resource it
answers that its input does not take (`id`, `version`, `created_at`, computed totals, `status`, derived
`territory_id`, `registered_count`...) with 422 `validation_error` pointing at it.

The fields come from the OpenAPI document: the properties of the 2xx answer's model less those of the
request body's. The requests carry an admin key, so that the role checks pass and the body is what is
judged; with the direct path on, a twin that reads bodies must hand such a body to its route."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import FastAPI

from app.core.direct import answer_observers
from tests.helpers import assert_problem

# Bodies whose answer is not the resource itself: (the resource's schema, where an item sits in the body).
# A bulk item is refused on its own, in the 207 answer (API.md, HR sync).
RESOURCE_OF = {"counsellors_bulk": ("CounsellorRead", "/items/0")}


def _schema(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        for option in schema.get("anyOf", []):
            if "$ref" in option:
                return _schema(document, option)
        return schema
    resolved: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return resolved


def _cases(app: FastAPI) -> list[tuple[str, str, str, list[str], str]]:
    """(operation id, method, path, server-managed fields, pointer prefix) of every body-taking operation."""
    document = app.openapi()
    cases = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in ("post", "put", "patch") or "requestBody" not in operation:
                continue
            content = operation["requestBody"]["content"]
            body = _schema(document, next(iter(content.values()))["schema"])
            name = operation["operationId"]
            if name in RESOURCE_OF:
                schema_name, prefix = RESOURCE_OF[name]
                body = _schema(document, body["properties"]["items"]["items"])
                read = document["components"]["schemas"][schema_name]
            else:
                prefix = ""
                success = next(
                    (
                        r
                        for code, r in operation["responses"].items()
                        if code.startswith("2") and "content" in r
                    ),
                    None,
                )
                if success is None or "application/json" not in success["content"]:
                    continue
                read = _schema(document, success["content"]["application/json"]["schema"])
            managed = sorted(set(read.get("properties", {})) - set(body.get("properties", {})))
            if managed:
                cases.append((name, method.upper(), path, managed, prefix))
    return cases


def _path(path: str) -> str:
    """Any id: the body is refused before the object is looked up."""
    parts = path.split("/")
    return "/".join(
        str(uuid.uuid4()) if p.startswith("{") and p.endswith("}") else p.replace("{workshop_id}", "x")
        for p in parts
    )


async def test_server_managed_fields_are_refused(
    app: FastAPI, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    cases = _cases(app)
    names = {name for name, *_ in cases}
    # The operations this guards, at least (a change of the document that loses them fails here).
    assert {
        "territories_create",
        "programmes_update",
        "agreements_create",
        "agreements_sign",
        "positions_create",
        "counsellors_upsert_by_ref",
        "counsellors_bulk",
        "workshops_create",
        "workshops_update",
        "workshops_register",
        "api_keys_create",
        "api_keys_rotate",
    } <= names, sorted(names)
    tried = 0
    for name, method, path, managed, prefix in cases:
        for field in managed:
            pointer = f"{prefix}/{field}"
            value: Any = {"id": str(uuid.uuid4())} if field != "version" else 1
            body: Any = {field: value}
            if prefix:
                body = {"items": [body]}
            seen: list[str] = []
            answer_observers.append(seen.append)
            try:
                response = await client.request(
                    method, _path(path), json=body, headers={**admin, "If-Match": '"1"'}
                )
            finally:
                answer_observers.remove(seen.append)
            if prefix:
                # Items are judged one by one (207): the item is refused, with the same problem.
                assert response.status_code == 207, response.text
                problem = response.json()["items"][0]["problem"]
                assert problem["code"] == "validation_error", problem
            else:
                problem = assert_problem(response, 422, "validation_error", pointer)
            error = next(e for e in problem["errors"] if e["pointer"] == pointer)
            assert error["detail"] == "unknown field", (name, field, error)
            # A twin answers only valid bodies; the bulk's twin answers refused items as its route does (a
            # replay that writes nothing: tests/counsellors/test_hr_sync_direct_path.py compares them).
            assert not seen or prefix, (name, "answered by the direct path")
            tried += 1
    assert tried >= 100, tried
