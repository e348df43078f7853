"""OpenAPI of programmes and agreements: stable operation ids, documentation, examples."""

from __future__ import annotations

from typing import Any

import httpx

OPERATIONS = {
    ("get", "/api/v1/programmes"): "programmes_list",
    ("post", "/api/v1/programmes"): "programmes_create",
    ("get", "/api/v1/programmes/{programme_id}"): "programmes_get",
    ("patch", "/api/v1/programmes/{programme_id}"): "programmes_update",
    ("get", "/api/v1/agreements"): "agreements_list",
    ("post", "/api/v1/agreements"): "agreements_create",
    ("get", "/api/v1/agreements/{agreement_id}"): "agreements_get",
    ("patch", "/api/v1/agreements/{agreement_id}"): "agreements_update",
    ("post", "/api/v1/agreements/{agreement_id}/sign"): "agreements_sign",
    ("post", "/api/v1/agreements/{agreement_id}/terminate"): "agreements_terminate",
    ("get", "/api/v1/agreements/{agreement_id}/amendments"): "agreements_amendments_list",
    ("post", "/api/v1/agreements/{agreement_id}/amendments"): "agreements_amendments_create",
    ("get", "/api/v1/agreements/{agreement_id}/amendments/{amendment_id}"): "agreements_amendments_get",
}


async def test_operations_are_named_documented_and_tagged(client: httpx.AsyncClient) -> None:
    schema: dict[str, Any] = (await client.get("/openapi.json")).json()
    for (method, path), operation_id in OPERATIONS.items():
        operation = schema["paths"][path][method]
        assert operation["operationId"] == operation_id
        assert operation["summary"]
        assert operation["description"]
        assert operation["tags"] in (["programmes"], ["agreements"])
        problems = [code for code in operation["responses"] if code.startswith("4")]
        assert problems, operation_id
        for code in problems:
            assert "application/problem+json" in operation["responses"][code]["content"], (operation_id, code)


async def test_every_response_model_has_an_example(client: httpx.AsyncClient) -> None:
    schema: dict[str, Any] = (await client.get("/openapi.json")).json()
    schemas = schema["components"]["schemas"]
    for (method, path), operation_id in OPERATIONS.items():
        responses = schema["paths"][path][method]["responses"]
        models = [
            r["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
            for status, r in responses.items()
            if status.startswith("2") and "application/json" in r.get("content", {})
        ]
        assert models, operation_id
        for name in models:
            assert schemas[name].get("examples"), (operation_id, name)
    # A page's example is a page: items of the listed model, and the cursor.
    for page, item in (
        ("ProgrammePage", "ProgrammeRead"),
        ("AgreementPage", "AgreementRead"),
        ("AmendmentPage", "AmendmentRead"),
    ):
        example = schemas[page]["examples"][0]
        assert example["items"] == schemas[item]["examples"]
        assert "next_cursor" in example


async def test_models_carry_the_launch_figures_as_examples(client: httpx.AsyncClient) -> None:
    schemas: dict[str, Any] = (await client.get("/openapi.json")).json()["components"]["schemas"]
    assert schemas["ProgrammeRead"]["examples"][0]["positions_granted"] == 65
    assert schemas["ProgrammeCreate"]["examples"][0]["budget_cents"] == 25_000_000_000
    assert schemas["AgreementRead"]["examples"][0]["subsidy_total_cents"] == 250_000_000
    for name in (
        "AgreementCreate",
        "AgreementUpdate",
        "AgreementSign",
        "AgreementTerminate",
        "AmendmentCreate",
        "AmendmentRead",
        "ProgrammeUpdate",
    ):
        assert schemas[name]["examples"], name
    reasons = schemas["AmendmentReason"]["enum"]
    assert "difficultes_de_recrutement" in reasons
