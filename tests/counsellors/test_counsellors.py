"""Counsellors: creation, changes, anonymisation, and who may read personal data."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.agreements.helpers import merge_patch
from tests.conftest import KeyMaker, bearer
from tests.helpers import assert_problem, ids
from tests.positions.helpers import (
    COUNSELLORS,
    PERSON,
    POSITIONS,
    World,
    assign,
    create_counsellor,
    create_position,
    day,
)


async def test_create_and_read(client: httpx.AsyncClient, world: World) -> None:
    response = await client.post(
        COUNSELLORS,
        json={**PERSON, "territory_id": str(world.tree.lyon_metro.id), "external_ref": "M-1"},
        headers=world.lyon_manager,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"{COUNSELLORS}/{body['id']}"
    assert response.headers["etag"] == '"1"'
    assert {k: body[k] for k in PERSON} == PERSON
    assert (body["external_ref"], body["current_assignment"], body["anonymized_at"]) == ("M-1", None, None)
    assert (await client.get(f"{COUNSELLORS}/{body['id']}", headers=world.lyon_manager)).json() == body
    minimal = await client.post(
        COUNSELLORS,
        json={"territory_id": str(world.tree.lyon.id), "first_name": "Dominique", "last_name": "Fictif"},
        headers=world.lyon_manager,
    )
    assert minimal.status_code == 201, minimal.text
    assert minimal.json()["training"] == {
        "label": None,
        "hours": None,
        "certified_on": None,
        "pix_level": None,
    }


async def test_input_rules(client: httpx.AsyncClient, world: World) -> None:
    base = {**PERSON, "territory_id": str(world.tree.lyon_metro.id)}
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({"first_name": "Cam\x00ille"}, 422, "validation_error", "/first_name"),
        ({"last_name": "A\nB"}, 422, "validation_error", "/last_name"),
        ({"first_name": ""}, 422, "validation_error", "/first_name"),
        ({"email": "not-an-email"}, 422, "validation_error", "/email"),
        ({"email": "a@b\x00.org"}, 422, "validation_error", "/email"),
        ({"phone": "call me"}, 422, "validation_error", "/phone"),
        ({"external_ref": "R\x00"}, 422, "validation_error", "/external_ref"),
        ({"training": {"pix_level": 4}}, 422, "validation_error", "/training/pix_level"),
        ({"training": {"pix_level": "2"}}, 422, "validation_error", "/training/pix_level"),
        ({"training": {"hours": 12}}, 422, "validation_error", "/training/hours"),
        ({"training": {"label": "CAP"}}, 422, "validation_error", "/training/label"),
        ({"nickname": "Cam"}, 422, "validation_error", "/nickname"),
        ({"territory_id": str(world.tree.rhone.id)}, 422, "unknown_reference", "/territory_id"),
        ({"territory_id": str(uuid.uuid4())}, 422, "unknown_reference", "/territory_id"),
    ]
    for changes, status, code, pointer in cases:
        response = await client.post(COUNSELLORS, json={**base, **changes}, headers=world.lyon_manager)
        assert_problem(response, status, code, pointer)
    await create_counsellor(client, world.lyon_manager, world.tree.lyon_metro.id, external_ref="DUP")
    assert_problem(
        await client.post(COUNSELLORS, json={**base, "external_ref": "DUP"}, headers=world.lyon_manager),
        409,
        "external_ref_exists",
    )
    # The same reference at another employer is another person.
    await create_counsellor(client, world.lyon_manager, world.tree.lyon.id, external_ref="DUP")


async def test_patch_merges_training(client: httpx.AsyncClient, world: World) -> None:
    counsellor = await create_counsellor(client, world.admin, world.tree.lyon_metro.id, external_ref="A")
    await create_counsellor(client, world.admin, world.tree.lyon_metro.id, external_ref="B")
    url = f"{COUNSELLORS}/{counsellor['id']}"
    response = await merge_patch(
        client, world.lyon_manager, url, {"phone": None, "training": {"pix_level": 3}}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["phone"] is None
    assert body["training"] == {**PERSON["training"], "pix_level": 3}
    assert body["version"] == 2
    cleared = await merge_patch(client, world.lyon_manager, url, {"training": None}, if_match='"2"')
    assert cleared.json()["training"] == {
        "label": None,
        "hours": None,
        "certified_on": None,
        "pix_level": None,
    }
    assert_problem(
        await merge_patch(client, world.admin, url, {"first_name": None}, if_match='"3"'),
        422,
        "validation_error",
    )
    assert_problem(
        await merge_patch(client, world.admin, url, {"external_ref": "B"}, if_match='"3"'),
        409,
        "external_ref_exists",
    )
    assert_problem(
        await merge_patch(client, world.admin, url, {"email": "x"}, if_match='"1"'), 422, "validation_error"
    )
    assert_problem(
        await merge_patch(client, world.admin, url, {"last_name": "Autre"}, if_match='"1"'),
        412,
        "precondition_failed",
    )
    assert_problem(
        await merge_patch(client, world.admin, url, {"last_name": "Autre"}, if_match=None),
        428,
        "precondition_required",
    )


async def test_who_reads_a_counsellor(client: httpx.AsyncClient, world: World, make_key: KeyMaker) -> None:
    lyon = await create_counsellor(client, world.admin, world.tree.lyon_metro.id, external_ref="L")
    rhone = await create_counsellor(client, world.admin, world.tree.rhone.id, external_ref="R")
    url = f"{COUNSELLORS}/{lyon['id']}"
    assert (await client.get(url, headers=world.lyon_manager)).status_code == 200
    # A viewer of Lyon sees that the counsellor exists in its territories, but may not read the person.
    assert_problem(await client.get(url, headers=world.lyon_viewer), 403, "forbidden")
    assert_problem(await client.get(COUNSELLORS, headers=world.lyon_viewer), 403, "forbidden")
    assert_problem(
        await client.get(f"{COUNSELLORS}/{rhone['id']}", headers=world.lyon_viewer), 404, "not_found"
    )
    assert_problem(
        await client.get(f"{COUNSELLORS}/{rhone['id']}", headers=world.lyon_manager), 404, "not_found"
    )
    assert_problem(await client.get(url), 401, "unauthenticated")
    # A counsellor key reads its own record, nothing else.
    own = bearer(await make_key("counsellor", [world.tree.lyon_metro], counsellor_id=uuid.UUID(lyon["id"])))
    assert (await client.get(url, headers=own)).json()["id"] == lyon["id"]
    other = await create_counsellor(client, world.admin, world.tree.lyon_metro.id, external_ref="L2")
    assert_problem(await client.get(f"{COUNSELLORS}/{other['id']}", headers=own), 403, "forbidden")
    assert_problem(await client.get(f"{COUNSELLORS}/{rhone['id']}", headers=own), 404, "not_found")
    assert_problem(await client.get(COUNSELLORS, headers=own), 403, "forbidden")
    assert_problem(await merge_patch(client, own, url, {"phone": None}), 403, "forbidden")
    assert_problem(
        await client.post(
            COUNSELLORS,
            json={**PERSON, "territory_id": str(world.tree.lyon_metro.id)},
            headers=world.lyon_viewer,
        ),
        403,
        "forbidden",
    )


async def test_lists_are_scoped(client: httpx.AsyncClient, world: World) -> None:
    lyon = await create_counsellor(client, world.admin, world.tree.lyon.id, external_ref="L")
    rhone = await create_counsellor(client, world.admin, world.tree.rhone.id, external_ref="R")
    assert ids(await client.get(COUNSELLORS, headers=world.lyon_manager)) == [lyon["id"]]
    assert ids(await client.get(COUNSELLORS, headers=world.rhone_manager)) == [rhone["id"]]
    assert ids(await client.get(COUNSELLORS, headers=world.admin)) == [lyon["id"], rhone["id"]]
    for params in (
        {"external_ref": "R"},
        {"territory_id": str(world.tree.rhone.id)},
        {"within": str(world.tree.ara.id)},
    ):
        assert rhone["id"] not in ids(
            await client.get(COUNSELLORS, params=params, headers=world.lyon_manager)
        )
    assert ids(await client.get(COUNSELLORS, params={"external_ref": "L"}, headers=world.admin)) == [
        lyon["id"]
    ]
    assert ids(
        await client.get(COUNSELLORS, params={"updated_since": rhone["updated_at"]}, headers=world.admin)
    ) == [rhone["id"]]


async def test_anonymize_keeps_the_counts(client: httpx.AsyncClient, world: World) -> None:
    counsellor = await create_counsellor(client, world.admin, world.tree.lyon_metro.id, external_ref="M-9")
    position = await create_position(client, world.admin, world.lyon["id"])
    held = await assign(client, world.admin, position["id"], counsellor["id"], started_on=day(-3))
    url = f"{COUNSELLORS}/{counsellor['id']}/anonymize"
    assert_problem(await client.post(url, headers=world.lyon_manager), 403, "forbidden")
    response = await client.post(url, headers=world.admin)
    assert response.status_code == 200, response.text
    body = response.json()
    for name in ("first_name", "last_name", "email", "phone", "external_ref"):
        assert body[name] is None, name
    assert body["anonymized_at"]
    assert body["training"] == PERSON["training"]
    assert body["current_assignment"]["id"] == held["id"]
    again = await client.post(url, headers=world.admin)
    assert again.json()["version"] == body["version"]
    position_now = (await client.get(f"{POSITIONS}/{position['id']}", headers=world.admin)).json()
    assert position_now["status"] == "occupied"
    assert_problem(
        await merge_patch(
            client,
            world.admin,
            f"{COUNSELLORS}/{counsellor['id']}",
            {"first_name": "X"},
            if_match=f'"{body["version"]}"',
        ),
        409,
        "counsellor_anonymized",
    )
    # The reference is free again: the HR system may create a new record under it.
    assert (
        await client.put(
            f"{COUNSELLORS}/by-ref/M-9",
            json={**PERSON, "territory_id": str(world.tree.lyon_metro.id)},
            headers=world.admin,
        )
    ).status_code == 201
