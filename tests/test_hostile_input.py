"""Hostile or odd input through the HTTP API: a problem every time, never a 500 nor a partial write."""

from __future__ import annotations

import httpx

from tests.agreements.helpers import (
    AGREEMENTS,
    PROGRAMME,
    PROGRAMMES,
    amend,
    create_agreement,
    create_programme,
    create_signed,
    merge_patch,
    post_agreement,
    terminate,
)
from tests.conftest import Tree
from tests.helpers import assert_problem

NUL = "a\u0000b"


async def test_nul_in_every_free_text_field(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    response = await client.post(PROGRAMMES, json={**PROGRAMME, "name": NUL}, headers=admin)
    assert_problem(response, 422, "validation_error", pointer="/name")
    response = await client.post(PROGRAMMES, json={**PROGRAMME, "code": "A\u0000B"}, headers=admin)
    assert_problem(response, 422, "validation_error", pointer="/code")
    programme = await create_programme(client, admin)
    url = f"{PROGRAMMES}/{programme['id']}"
    assert_problem(await merge_patch(client, admin, url, {"name": NUL}), 422, "validation_error", "/name")

    response = await post_agreement(client, admin, programme["id"], tree.lyon_metro.id, reference=NUL)
    assert_problem(response, 422, "validation_error", pointer="/reference")
    draft = await create_agreement(client, admin, programme["id"], tree.lyon_metro.id)
    response = await merge_patch(client, admin, f"{AGREEMENTS}/{draft['id']}", {"reference": NUL})
    assert_problem(response, 422, "validation_error", pointer="/reference")
    assert_problem(
        await terminate(client, admin, draft["id"], reason=NUL), 422, "validation_error", "/reason"
    )

    signed = await create_signed(client, admin, programme["id"], tree.rhone.id, reference="CONV-2")
    response = await amend(client, admin, signed["id"], "add_positions", 2, reason_detail=NUL)
    assert_problem(response, 422, "validation_error", pointer="/reason_detail")

    response = await client.post("/api/v1/api-keys", json={"name": NUL, "role": "admin"}, headers=admin)
    assert_problem(response, 422, "validation_error", pointer="/name")
    response = await client.post(
        "/api/v1/territories", json={"kind": "region", "code": "8\u00004", "name": "x"}, headers=admin
    )
    assert_problem(response, 422, "validation_error", pointer="/code")
    # Nothing was written on the way.
    stored = await client.get(f"{AGREEMENTS}/{draft['id']}", headers=admin)
    assert stored.json()["reference"] == draft["reference"]


async def test_an_amendment_may_take_effect_on_the_day_of_signature(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    """The bound is inclusive: `effective_on == signed_on` is accepted (a `<=` would refuse it)."""
    programme = await create_programme(client, admin)
    signed = await create_signed(client, admin, programme["id"], tree.lyon_metro.id)
    response = await amend(client, admin, signed["id"], "add_positions", 1, effective_on=signed["signed_on"])
    assert response.status_code == 201, response.text
    response = await amend(client, admin, signed["id"], "add_positions", 1, effective_on="2021-03-14")
    assert_problem(response, 422, "validation_error", pointer="/effective_on")


def _deep(depth: int) -> bytes:
    return b'{"name":' + b"[" * depth + b"]" * depth + b"}"


async def test_bodies_that_cannot_be_decoded_are_422(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    bodies = {
        "nested too deeply": _deep(5000),
        "not valid UTF-8": b'{"name": "\\xff\xfe\xff"}',
        "too many digits": b'{"name": "x", "positions_target": ' + b"9" * 5000 + b"}",
    }
    for reason, body in bodies.items():
        response = await client.post(
            PROGRAMMES, content=body, headers={**admin, "Content-Type": "application/json"}
        )
        problem = assert_problem(response, 422, "validation_error", pointer="")
        assert reason in problem["detail"], problem
        # Sent as text, with an Idempotency-Key (whose fingerprint reads the body too): still a 422.
        for content_type in ("text/plain", "application/merge-patch+json"):
            response = await client.post(
                PROGRAMMES,
                content=body,
                headers={**admin, "Content-Type": content_type, "Idempotency-Key": f"k-{len(body)}"},
            )
            assert_problem(response, 422, "validation_error")


async def test_422_bodies_list_a_bounded_number_of_errors(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    body = {**PROGRAMME, **{f"unknown_{n}": n for n in range(40_000)}}
    response = await client.post(PROGRAMMES, json=body, headers=admin)
    problem = assert_problem(response, 422, "validation_error")
    assert len(problem["errors"]) == 50
    assert problem["errors_total"] == 40_000
    assert "40000 invalid" in problem["detail"]
    assert len(response.content) < 20_000

    params = {f"p{n}": "1" for n in range(3000)}
    response = await client.get("/api/v1/territories", params=params)
    problem = assert_problem(response, 422, "validation_error")
    assert len(problem["errors"]) == 50
    assert problem["errors_total"] == 3000
    assert len(response.content) < 20_000


async def test_dates_and_numbers_at_their_limits(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    """Year 1 and 9999, offsets at ±23:59, integers past 2^63: a 201 or a 422, never an exception."""
    response = await client.post(
        PROGRAMMES,
        json={**PROGRAMME, "code": "LIMITS", "starts_on": "0001-01-01", "ends_on": "9999-12-31"},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    programme = response.json()
    assert (programme["starts_on"], programme["ends_on"]) == ("0001-01-01", "9999-12-31")
    agreement = await post_agreement(
        client, admin, programme["id"], tree.lyon_metro.id, starts_on="0001-01-01", ends_on="9999-12-31"
    )
    assert agreement.status_code == 201, agreement.text
    for field, value in (
        ("positions_target", 2**64),
        ("budget_cents", -(2**70)),
        ("subsidy_per_position_cents", 10**30),
        ("starts_on", "10000-01-01"),
        ("starts_on", "0000-12-31"),
    ):
        response = await client.post(PROGRAMMES, json={**PROGRAMME, field: value}, headers=admin)
        assert_problem(response, 422, "validation_error", pointer=f"/{field}")
    response = await client.post(
        "/api/v1/territories",
        json={"kind": "region", "code": "01", "name": "x", "population": 10**40},
        headers=admin,
    )
    assert_problem(response, 422, "validation_error", pointer="/population")
    for expires_at in ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59Z"):
        response = await client.post(
            "/api/v1/api-keys", json={"name": "k", "role": "admin", "expires_at": expires_at}, headers=admin
        )
        assert response.status_code in (201, 422), response.text
        if response.status_code == 422:
            assert_problem(response, 422, "validation_error", pointer="/expires_at")


# Percent-encoded bytes that are not UTF-8: a server decodes them into U+FFFD, so that distinct byte strings
# would collapse into one value.
UNDECODABLE_PATHS = [
    ("PUT", "/api/v1/counsellors/by-ref/%FF%FE", "/path/external_ref"),
    ("GET", "/api/v1/counsellors/by-ref/A%C3%28", "/path/external_ref"),
    ("GET", "/api/v1/counsellors/%FF", "/path/counsellor_id"),
    ("PATCH", "/api/v1/territories/%E9t%E9", "/path/territory_id"),
    ("GET", "/api/v1/workshops/%80.ics", "/path/workshop_id"),
    ("DELETE", "/api/v1/api-keys/%ED%A0%80", "/path/key_id"),
    ("GET", "/api/v1/nowhere/%FF", "/path"),
]


async def test_undecodable_paths_are_422_on_every_route(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    person = {"first_name": "Camille", "last_name": "Exemple", "territory_id": str(tree.lyon_metro.id)}
    for method, path, pointer in UNDECODABLE_PATHS:
        response = await client.request(method, path, json=person, headers=admin)
        body = assert_problem(response, 422, "validation_error", pointer=pointer)
        assert [e["pointer"] for e in body["errors"]] == [pointer], (path, body)
        assert "UTF-8" in body["errors"][0]["detail"]
    listed = await client.get("/api/v1/counsellors", headers=admin)
    assert listed.json()["items"] == []
    # Encoded UTF-8 is read as such, U+FFFD included, and each reference stays itself.
    for encoded, ref in (("%C3%A9t%C3%A9", "été"), ("%EF%BF%BD%EF%BF%BD", "\ufffd\ufffd")):
        created = await client.put(f"/api/v1/counsellors/by-ref/{encoded}", json=person, headers=admin)
        assert created.status_code == 201, created.text
        assert created.json()["external_ref"] == ref
