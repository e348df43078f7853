"""The HR sync: PUT by reference (idempotent upsert) and the bulk upsert (independent items, atomic mode,
replays that change nothing), and an HR key that only ever touches its own territories."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from fastapi import FastAPI

from tests.conftest import KeyMaker, bearer
from tests.helpers import assert_problem, ids, items
from tests.positions.helpers import CHANGES, COUNSELLORS, PERSON, World, create_counsellor

BULK = f"{COUNSELLORS}/bulk"


def person(ref: str, **changes: Any) -> dict[str, Any]:
    return {"external_ref": ref, **PERSON, "email": f"{ref.lower()}@example.org", **changes}


async def test_put_by_ref_creates_then_updates(client: httpx.AsyncClient, world: World) -> None:
    url = f"{COUNSELLORS}/by-ref/M-1"
    body = {**PERSON}  # the key has one territory: the employer can be left out
    created = await client.put(url, json=body, headers=world.lyon_manager)
    assert created.status_code == 201, created.text
    counsellor = created.json()
    assert created.headers["location"] == f"{COUNSELLORS}/{counsellor['id']}"
    assert (counsellor["territory_id"], counsellor["external_ref"], counsellor["version"]) == (
        str(world.tree.lyon_metro.id),
        "M-1",
        1,
    )
    same = await client.put(url, json=body, headers=world.lyon_manager)
    assert same.status_code == 200
    assert same.json() == counsellor
    changed = await client.put(
        url, json={**body, "phone": None}, headers={**world.lyon_manager, "If-Match": '"1"'}
    )
    assert changed.status_code == 200
    assert (changed.json()["phone"], changed.json()["version"], changed.json()["id"]) == (
        None,
        2,
        counsellor["id"],
    )
    assert_problem(
        await client.put(url, json=body, headers={**world.lyon_manager, "If-Match": '"1"'}),
        412,
        "precondition_failed",
    )
    assert_problem(
        await client.put(
            f"{COUNSELLORS}/by-ref/M-2", json=body, headers={**world.lyon_manager, "If-Match": "*"}
        ),
        412,
        "precondition_failed",
    )


async def test_put_by_ref_employer_rules(client: httpx.AsyncClient, world: World, make_key: KeyMaker) -> None:
    two = bearer(await make_key("territory_manager", [world.tree.lyon_metro, world.tree.rhone]))
    url = f"{COUNSELLORS}/by-ref/M-1"
    assert_problem(await client.put(url, json=PERSON, headers=two), 422, "validation_error", "/territory_id")
    assert_problem(
        await client.put(url, json=PERSON, headers=world.admin), 422, "validation_error", "/territory_id"
    )
    assert (
        await client.put(url, json={**PERSON, "territory_id": str(world.tree.rhone.id)}, headers=two)
    ).status_code == 201
    assert_problem(
        await client.put(
            url, json={**PERSON, "territory_id": str(world.tree.rhone.id)}, headers=world.lyon_manager
        ),
        422,
        "unknown_reference",
        "/territory_id",
    )
    assert_problem(
        await client.put(f"{COUNSELLORS}/by-ref/M%001", json=PERSON, headers=world.lyon_manager),
        422,
        "validation_error",
    )
    assert_problem(
        await client.put(url, json={**PERSON, "email": "x"}, headers=world.lyon_manager),
        422,
        "validation_error",
        "/email",
    )
    assert_problem(await client.put(url, json=PERSON, headers=world.lyon_viewer), 403, "forbidden")
    assert_problem(await client.get(url, headers=two), 422, "validation_error", "/query/territory_id")
    assert_problem(await client.get(url, headers=world.lyon_viewer), 403, "forbidden")
    assert_problem(
        await client.get(f"{COUNSELLORS}/by-ref/NOBODY", headers=world.lyon_manager), 404, "not_found"
    )
    found = await client.get(url, params={"territory_id": str(world.tree.rhone.id)}, headers=two)
    assert (found.json()["external_ref"], found.headers["etag"]) == ("M-1", '"1"')


async def test_bulk_mixes_valid_and_invalid_items(client: httpx.AsyncClient, world: World) -> None:
    existing = await create_counsellor(
        client, world.lyon_manager, world.tree.lyon_metro.id, external_ref="OLD"
    )
    payload = {
        "items": [
            person("A"),
            person("B", email="broken"),
            person("OLD", first_name="Maxime"),
            {"first_name": "Sans", "last_name": "Référence"},
            person("C", territory_id=str(world.tree.rhone.id)),
            person("A", last_name="Doublon"),
            "not an object",
            person("D\x00"),
            person("E", territory_id=str(world.tree.lyon.id)),
        ]
    }
    response = await client.post(BULK, json=payload, headers=world.lyon_manager)
    assert response.status_code == 207, response.text
    results = response.json()["items"]
    assert [r["index"] for r in results] == list(range(9))
    assert [r["status"] for r in results] == [201, 422, 200, 422, 422, 422, 422, 422, 201]
    assert [r["external_ref"] for r in results] == ["A", "B", "OLD", None, "C", "A", None, None, "E"]
    assert results[1]["problem"]["code"] == "validation_error"
    assert results[1]["problem"]["errors"][0]["pointer"] == "/items/1/email"
    assert results[3]["problem"]["errors"][0]["pointer"] == "/items/3/external_ref"
    assert results[4]["problem"]["code"] == "unknown_reference"
    assert results[4]["problem"]["errors"][0]["pointer"] == "/items/4/territory_id"
    assert results[5]["problem"]["errors"][0]["pointer"] == "/items/5/external_ref"
    assert results[6]["problem"]["code"] == "validation_error"
    assert results[2]["id"] == existing["id"]
    assert results[2]["version"] == 2
    for ok in (results[0], results[8]):
        assert ok["problem"] is None
        assert ok["version"] == 1
    renamed = (await client.get(f"{COUNSELLORS}/{existing['id']}", headers=world.lyon_manager)).json()
    assert (renamed["first_name"], renamed["version"]) == ("Maxime", 2)
    listed = await client.get(COUNSELLORS, params={"external_ref": "E"}, headers=world.lyon_manager)
    assert items(listed)[0]["territory_id"] == str(world.tree.lyon.id)


async def test_a_replayed_bulk_changes_nothing(client: httpx.AsyncClient, world: World) -> None:
    payload = {"items": [person(f"R-{i}", training={"label": "CCP1", "hours": 70}) for i in range(20)]}
    first = await client.post(BULK, json=payload, headers=world.lyon_manager)
    assert [r["status"] for r in first.json()["items"]] == [201] * 20
    feed = await client.get(CHANGES, params={"resource": "counsellors", "limit": 200}, headers=world.admin)
    cursor = feed.json()["next_after"]
    again = await client.post(BULK, json=payload, headers=world.lyon_manager)
    assert [r["status"] for r in again.json()["items"]] == [200] * 20
    assert [(r["id"], r["version"]) for r in again.json()["items"]] == [
        (r["id"], r["version"]) for r in first.json()["items"]
    ]
    quiet = await client.get(CHANGES, params={"after": cursor}, headers=world.admin)
    assert quiet.json() == {"items": [], "next_after": cursor}
    # One change: one update, one new version, one change in the feed.
    payload["items"][3]["phone"] = None
    third = await client.post(BULK, json=payload, headers=world.lyon_manager)
    assert [r["status"] for r in third.json()["items"]] == [200] * 20
    assert [r["version"] for r in third.json()["items"]] == [1, 1, 1, 2] + [1] * 16
    feed = await client.get(CHANGES, params={"after": cursor}, headers=world.admin)
    assert [(c["id"], c["action"], c["version"]) for c in feed.json()["items"]] == [
        (third.json()["items"][3]["id"], "updated", 2)
    ]


async def test_atomic_bulk_is_all_or_none(client: httpx.AsyncClient, world: World) -> None:
    payload = {"items": [person("A"), person("B", email="broken"), person("C")]}
    response = await client.post(BULK, params={"atomic": "true"}, json=payload, headers=world.lyon_manager)
    body = assert_problem(response, 422, "bulk_rejected")
    assert [(r["index"], r["status"]) for r in body["items"]] == [(0, 424), (1, 422), (2, 424)]
    assert body["items"][1]["problem"]["errors"][0]["pointer"] == "/items/1/email"
    assert ids(await client.get(COUNSELLORS, headers=world.lyon_manager)) == []
    payload["items"][1]["email"] = "b@example.org"
    applied = await client.post(BULK, params={"atomic": "true"}, json=payload, headers=world.lyon_manager)
    assert [r["status"] for r in applied.json()["items"]] == [201, 201, 201]


async def test_bulk_limits(client: httpx.AsyncClient, world: World) -> None:
    too_many = {"items": [person(f"X-{i}") for i in range(1001)]}
    assert_problem(
        await client.post(BULK, json=too_many, headers=world.lyon_manager), 422, "validation_error", "/items"
    )
    assert_problem(
        await client.post(BULK, json={"items": []}, headers=world.lyon_manager), 422, "validation_error"
    )
    assert_problem(
        await client.post(BULK, json=[person("A")], headers=world.lyon_manager), 422, "validation_error"
    )
    assert_problem(
        await client.post(BULK, json={"items": [person("A")]}, headers=world.lyon_viewer), 403, "forbidden"
    )
    full = await client.post(
        BULK, json={"items": [person(f"X-{i}") for i in range(1000)]}, headers=world.lyon_manager
    )
    assert [r["status"] for r in full.json()["items"]] == [201] * 1000


async def test_a_territory_key_never_reaches_another_territorys_counsellors(
    client: httpx.AsyncClient, world: World
) -> None:
    """By id, by external_ref, in bulk, in lists and in the change feed."""
    rhone = await create_counsellor(client, world.rhone_manager, world.tree.rhone.id, external_ref="SHARED")
    lyon = world.lyon_manager
    assert_problem(await client.get(f"{COUNSELLORS}/{rhone['id']}", headers=lyon), 404, "not_found")
    patched = await client.patch(
        f"{COUNSELLORS}/{rhone['id']}", json={"first_name": "X"}, headers={**lyon, "If-Match": '"1"'}
    )
    assert_problem(patched, 404, "not_found")
    # By reference: the Lyon key's own namespace, never the Rhône's row.
    body = {**PERSON, "first_name": "Lyon"}
    assert_problem(
        await client.put(
            f"{COUNSELLORS}/by-ref/SHARED",
            json={**body, "territory_id": str(world.tree.rhone.id)},
            headers=lyon,
        ),
        422,
        "unknown_reference",
    )
    mine = await client.put(f"{COUNSELLORS}/by-ref/SHARED", json=body, headers=lyon)
    assert mine.status_code == 201
    assert mine.json()["id"] != rhone["id"]
    bulk = await client.post(
        BULK, json={"items": [person("SHARED", territory_id=str(world.tree.rhone.id))]}, headers=lyon
    )
    assert bulk.json()["items"][0]["status"] == 422
    assert bulk.json()["items"][0]["problem"]["code"] == "unknown_reference"
    assert rhone["id"] not in ids(
        await client.get(COUNSELLORS, params={"external_ref": "SHARED"}, headers=lyon)
    )
    feed = await client.get(CHANGES, params={"limit": 200}, headers=lyon)
    assert rhone["id"] not in [c["id"] for c in feed.json()["items"]]
    assert_problem(
        await client.post(f"{COUNSELLORS}/{rhone['id']}/anonymize", headers=lyon), 403, "forbidden"
    )
    untouched = (await client.get(f"{COUNSELLORS}/{rhone['id']}", headers=world.rhone_manager)).json()
    assert (untouched["first_name"], untouched["version"]) == (PERSON["first_name"], 1)


async def test_a_bulk_retried_with_its_idempotency_key_is_replayed(
    client: httpx.AsyncClient, world: World
) -> None:
    headers = {**world.lyon_manager, "Idempotency-Key": "hr-import-2026-11-29"}
    payload = {"items": [person("K-1"), person("K-2")]}
    first = await client.post(BULK, json=payload, headers=headers)
    replay = await client.post(BULK, json=payload, headers=headers)
    assert replay.status_code == 207
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()
    assert [r["status"] for r in replay.json()["items"]] == [201, 201]
    reused = await client.post(BULK, json={"items": [person("K-3")]}, headers=headers)
    assert_problem(reused, 422, "idempotency_key_reused")


async def test_the_bulk_resource_allows_only_post(client: httpx.AsyncClient, world: World) -> None:
    """`/counsellors/bulk` is not a counsellor id: another method there is 405, not a 422 on the id."""
    for method in ("GET", "PATCH", "DELETE"):
        refused = await client.request(method, f"{BULK}?atomic=true", headers=world.lyon_manager)
        assert_problem(refused, 405, "method_not_allowed")
        assert refused.headers["allow"] == "POST"
    assert_problem(
        await client.get(f"{COUNSELLORS}/bulky", headers=world.lyon_manager),
        422,
        "validation_error",
        "/path/counsellor_id",
    )


async def test_reading_by_reference_stays_within_the_callers_territories(
    client: httpx.AsyncClient, world: World
) -> None:
    """Another territory's counsellor, named by its employer and reference, is 404 with no personal field."""
    rhone = await create_counsellor(client, world.rhone_manager, world.tree.rhone.id, external_ref="R-77")
    url = f"{COUNSELLORS}/by-ref/R-77"
    params = {"territory_id": str(world.tree.rhone.id)}
    own = await client.get(url, params=params, headers=world.rhone_manager)
    assert (own.status_code, own.json()["id"]) == (200, rhone["id"])
    outside = await client.get(url, params=params, headers=world.lyon_manager)
    assert_problem(outside, 404, "not_found")
    assert PERSON["email"] not in outside.text
    assert PERSON["phone"] not in outside.text


async def test_an_atomic_bulk_with_an_item_outside_the_callers_territories_writes_nothing(
    client: httpx.AsyncClient, world: World
) -> None:
    """An item valid in itself but refused for its employer refuses the atomic request as a whole."""
    payload = {"items": [person("IN-1"), person("OUT-1", territory_id=str(world.tree.rhone.id))]}
    response = await client.post(BULK, params={"atomic": "true"}, json=payload, headers=world.lyon_manager)
    body = assert_problem(response, 422, "bulk_rejected")
    assert [(r["index"], r["status"]) for r in body["items"]] == [(0, 424), (1, 422)]
    assert body["items"][1]["problem"]["code"] == "unknown_reference"
    assert ids(await client.get(COUNSELLORS, headers=world.lyon_manager)) == []


async def test_an_idempotency_key_tells_the_atomic_call_from_the_other(
    client: httpx.AsyncClient, world: World
) -> None:
    """The query string is part of the request: `?atomic=true` with the key of a non-atomic call is another
    request (422 `idempotency_key_reused`), never the replay of a partial write."""
    headers = {**world.lyon_manager, "Idempotency-Key": "hr-import-query"}
    payload = {"items": [person("Q-1"), person("Q-2", email="broken")]}
    partial = await client.post(BULK, json=payload, headers=headers)
    assert [r["status"] for r in partial.json()["items"]] == [201, 422]
    atomic = await client.post(BULK, params={"atomic": "true"}, json=payload, headers=headers)
    assert_problem(atomic, 422, "idempotency_key_reused")
    assert "idempotent-replayed" not in atomic.headers


def test_every_bulk_item_has_its_schema_in_the_document(app: FastAPI) -> None:
    """A generated client types `items` as `BulkItem`s (a schema of the components, with its required
    fields), and the 422 example names a field the request has."""
    document = app.openapi()
    schemas = document["components"]["schemas"]
    operation = document["paths"][BULK]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    request = schemas[body["$ref"].removeprefix("#/components/schemas/")]
    items_schema = request["properties"]["items"]
    assert items_schema["type"] == "array"
    assert (items_schema["minItems"], items_schema["maxItems"]) == (1, 1000)
    assert items_schema["items"] == {"$ref": "#/components/schemas/BulkItem"}
    item = schemas["BulkItem"]
    assert set(item["required"]) == {"external_ref", "first_name", "last_name"}
    assert item["additionalProperties"] is False
    assert "external_ref" in item["properties"]
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(document)))
    assert refs <= schemas.keys()
    example = operation["responses"]["422"]["content"]["application/problem+json"]["example"]
    pointers = [e["pointer"] for e in example["errors"]]
    assert pointers == ["/items"]
    assert all(p.split("/")[1] in request["properties"] for p in pointers)


async def test_an_item_that_is_not_a_bulk_item_is_refused_alone(
    client: httpx.AsyncClient, world: World
) -> None:
    payload = {"items": [person("ALONE-1"), "not an object", {"first_name": "No reference"}]}
    response = await client.post(BULK, json=payload, headers=world.lyon_manager)
    results = response.json()["items"]
    assert [r["status"] for r in results] == [201, 422, 422]
    assert results[1]["problem"]["errors"] == [{"pointer": "/items/1", "detail": "must be an object"}]
    assert {"pointer": "/items/2/external_ref", "detail": "is required"} in results[2]["problem"]["errors"]
