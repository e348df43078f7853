"""The OpenAPI document documents every operation: names, prose, error media type and examples.

Each test collects every offending operation before failing, so that one run lists all that is missing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from app.core.problems import PROBLEM_MEDIA_TYPE

API_PREFIX = "/api/v1"
PROBLEM_REF = "#/components/schemas/Problem"
# /metrics serves Prometheus' text exposition format, not JSON: it has no JSON example to check
# (test_metrics_is_text keeps that honest).
TEXT_OPERATIONS = {"ops_metrics"}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}

Document = dict[str, Any]


@pytest.fixture
async def document(client: httpx.AsyncClient) -> Document:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    body: Document = response.json()
    return body


def operations(document: Document) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def name(path: str, method: str, operation: dict[str, Any]) -> str:
    return operation.get("operationId") or f"{method.upper()} {path}"


def resolve(document: Document, schema: dict[str, Any]) -> dict[str, Any]:
    seen: set[str] = set()
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/components/schemas/"), ref
        assert ref not in seen, f"$ref cycle at {ref}"
        seen.add(ref)
        schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


def has_example(document: Document, schema: dict[str, Any]) -> bool:
    """`examples` (or `example`) on the schema itself, or on every one of its properties."""
    schema = resolve(document, schema)
    if schema.get("examples") or "example" in schema:
        return True
    properties: dict[str, Any] = schema.get("properties") or {}
    return bool(properties) and all(property_has_example(document, p) for p in properties.values())


def property_has_example(document: Document, prop: dict[str, Any]) -> bool:
    """A property's own example, or that of the schema it refers to (also as `X | None` or `list[X]`)."""
    if prop.get("examples") or "example" in prop:
        return True
    if "$ref" in prop:
        return has_example(document, prop)
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in prop:
            branches = [b for b in prop[combinator] if b.get("type") != "null"]
            return bool(branches) and all(property_has_example(document, b) for b in branches)
    if prop.get("type") == "array" and "$ref" in prop.get("items", {}):
        return has_example(document, prop["items"])
    return False


def json_successes(document: Document) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(operation name, status, schema) of every 2xx `application/json` answer, text operations aside."""
    for path, method, operation in operations(document):
        if operation.get("operationId") in TEXT_OPERATIONS:
            continue
        for status, response in operation["responses"].items():
            media = response.get("content", {}).get("application/json")
            if status.startswith("2") and media is not None:
                yield name(path, method, operation), status, media.get("schema", {})


def filled(value: Any) -> bool:
    """A non-blank string, or a non-empty list of them."""
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, str) and filled(v) for v in value)
    return False


async def test_every_operation_is_named_tagged_and_described(document: Document) -> None:
    declared_tags = {t["name"] for t in document.get("tags", [])}
    missing = []
    for path, method, operation in operations(document):
        lacks = [f for f in ("operationId", "tags", "summary", "description") if not filled(operation.get(f))]
        lacks += [f"undeclared tag {t!r}" for t in operation.get("tags", []) if t not in declared_tags]
        if lacks:
            missing.append(f"{name(path, method, operation)}: {', '.join(lacks)}")
    assert not missing, "operations missing documentation:\n" + "\n".join(missing)


async def test_api_errors_are_documented_as_problems(document: Document) -> None:
    wrong = []
    for path, method, operation in operations(document):
        if not path.startswith(API_PREFIX):
            continue
        for status, response in operation["responses"].items():
            if status.startswith("2"):
                continue
            content = response.get("content", {})
            if status == "304":
                # Not Modified has no body at all (RFC 9110 §15.4.5).
                if content:
                    wrong.append(f"{name(path, method, operation)} {status}: a 304 has no body")
                continue
            schema = content.get(PROBLEM_MEDIA_TYPE, {}).get("schema", {})
            if set(content) != {PROBLEM_MEDIA_TYPE} or schema.get("$ref") != PROBLEM_REF:
                wrong.append(f"{name(path, method, operation)} {status}: {sorted(content)} {schema}")
    assert not wrong, "error responses that are not application/problem+json Problems:\n" + "\n".join(wrong)


async def test_every_json_success_has_an_example(document: Document) -> None:
    missing = [
        f"{operation} {status}: {schema.get('$ref', schema)}"
        for operation, status, schema in json_successes(document)
        if not has_example(document, schema)
    ]
    assert not missing, "JSON success responses without an example:\n" + "\n".join(missing)


async def test_examples_are_valid_against_their_own_schema(document: Document) -> None:
    """Generated clients and Swagger's "Try it out" start from the examples: each must be a valid instance."""
    invalid = []
    for component, schema in document["components"]["schemas"].items():
        validator = Draft202012Validator(
            {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
        )
        for index, example in enumerate(schema.get("examples", [])):
            invalid.extend(
                f"{component} example {index}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validator.iter_errors(example)
            )
    assert not invalid, "examples their schema rejects:\n" + "\n".join(invalid)


async def test_metrics_is_text(client: httpx.AsyncClient, document: Document) -> None:
    operation_ids = {op.get("operationId") for _, _, op in operations(document)}
    assert operation_ids >= TEXT_OPERATIONS
    [metrics] = [op for _, _, op in operations(document) if op.get("operationId") == "ops_metrics"]
    assert set(metrics["responses"]["200"]["content"]) == {"text/plain"}
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")


async def test_readiness_documents_its_503(document: Document) -> None:
    responses = document["paths"]["/readyz"]["get"]["responses"]
    for status in ("200", "503"):
        assert responses[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Readiness"
        }
    assert "Retry-After" in responses["503"]["headers"]


# The writes API.md opens to the public: registering to a public workshop, cancelling with the cancel token.
PUBLIC_WRITES = {
    "workshops_register",
    "workshops_registrations_cancel",
    "workshops_registrations_erase_personal_data",
}


async def test_the_security_requirement_matches_what_answers_without_a_key(
    client: httpx.AsyncClient, document: Document
) -> None:
    """Public operations say that the key is optional (`security: [{}, ...]`), the others that it is
    required; a call without a key proves it wherever that needs no path parameter."""
    mismatched = []
    checked = 0
    for path, method, operation in operations(document):
        if not path.startswith(API_PREFIX):
            continue
        optional = {} in operation["security"]
        if method == "get" and "{" not in path:
            checked += 1
            anonymous = await client.get(path)
            if optional == (anonymous.status_code == 401):
                mismatched.append(f"{name(path, method, operation)}: {anonymous.status_code}")
        elif method != "get" and optional and operation["operationId"] not in PUBLIC_WRITES:
            mismatched.append(f"{name(path, method, operation)}: a write open to callers without a key")
    assert checked >= 5
    assert not mismatched, "\n".join(mismatched)


def test_each_problem_response_shows_its_own_example(document: Document) -> None:
    """Swagger UI used to show the 422 `validation_error` example for every 401, 403 and 409."""
    problem_schema = document["components"]["schemas"]["Problem"]
    validator = Draft202012Validator({**problem_schema, "components": document["components"]})
    wrong = []
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            problem = response.get("content", {}).get(PROBLEM_MEDIA_TYPE)
            if problem is None:
                continue
            example = problem.get("example") or {}
            mismatched = example.get("status") != int(status) or bool(list(validator.iter_errors(example)))
            borrowed = int(status) != 422 and example.get("code") == "validation_error"
            if mismatched or borrowed:
                wrong.append(f"{method.upper()} {path} {status}")
    assert not wrong, wrong
