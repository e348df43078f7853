"""The direct twins of `GET /positions` and `GET /positions/{id}` answer exactly as the routes do
(`same_answers`, tests/conftest.py): every role (a viewer without the current assignment), the filters,
pages, 404, 304, and what they hand over."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.agreements.helpers import terminate
from tests.conftest import KeyMaker, SameAnswers, bearer
from tests.positions.helpers import POSITIONS, World, assign, create_counsellor, create_position, day


@pytest.fixture
async def positions(client: httpx.AsyncClient, world: World, make_key: KeyMaker) -> dict[str, Any]:
    admin, tree = world.admin, world.tree
    occupied = await create_position(
        client, admin, world.lyon["id"], external_ref="LYON-1", territory_id=str(tree.lyon.id)
    )
    vacant = await create_position(client, admin, world.lyon["id"], external_ref="LYON-2")
    rhone = await create_position(client, admin, world.rhone["id"], external_ref="RHONE-1")
    counsellor = await create_counsellor(client, admin, tree.lyon_metro.id, external_ref="C-1")
    await assign(client, admin, occupied["id"], counsellor["id"], started_on=day(-1))
    return {
        "occupied": occupied,
        "vacant": vacant,
        "rhone": rhone,
        "counsellor_key": bearer(await make_key("counsellor", [tree.lyon_metro])),
    }


async def test_one_position(same_answers: SameAnswers, world: World, positions: dict[str, Any]) -> None:
    occupied, rhone = positions["occupied"]["id"], positions["rhone"]["id"]
    url = f"{POSITIONS}/{{}}".format

    first = await same_answers(url(occupied), headers=world.admin)
    assert first.json()["current_assignment"] is not None
    assert (await same_answers(url(occupied), headers=world.lyon_manager)).json()["current_assignment"]
    seen = await same_answers(url(occupied), headers=world.lyon_viewer)
    assert (seen.json()["status"], seen.json()["current_assignment"]) == ("occupied", None)
    await same_answers(url(positions["vacant"]["id"]), headers=world.lyon_manager)
    assert (await same_answers(url(rhone), headers=world.lyon_manager)).status_code == 404
    assert (await same_answers(url(rhone), headers=world.rhone_manager)).status_code == 200
    assert (await same_answers(url(uuid.uuid4()), headers=world.admin)).status_code == 404
    assert (await same_answers(url(rhone), headers=positions["counsellor_key"])).status_code == 403
    assert (await same_answers(url(rhone))).status_code == 401
    assert (await same_answers(url(rhone), headers=bearer("cnfs_unknown"))).status_code == 401
    unknown = await same_answers(url(rhone), params={"x": "1"}, headers=world.admin, direct=False)
    assert unknown.status_code == 422
    etag = first.headers["etag"]
    not_modified = await same_answers(url(occupied), headers={**world.admin, "If-None-Match": etag})
    assert not_modified.status_code == 304
    await same_answers(url(occupied), headers={**world.lyon_viewer, "If-None-Match": etag})
    await same_answers(url(occupied), headers={**world.admin, "If-None-Match": '"7", "8"'})
    for odd in ("not-a-uuid", occupied.replace("-", ""), occupied.upper()):
        await same_answers(url(odd), headers=world.admin, direct=None)
    await same_answers(url("not-a-uuid"), headers=positions["counsellor_key"], direct=False)  # 403 first
    await same_answers(url("not-a-uuid"), direct=False)  # 401 first


async def test_position_lists(
    client: httpx.AsyncClient, same_answers: SameAnswers, world: World, positions: dict[str, Any]
) -> None:
    admin, tree = world.admin, world.tree
    assert len((await same_answers(POSITIONS, headers=admin)).json()["items"]) == 3
    managed = await same_answers(POSITIONS, headers=world.lyon_manager)
    assert [p["current_assignment"] is not None for p in managed.json()["items"]] == [True, False]
    viewed = await same_answers(POSITIONS, headers=world.lyon_viewer)
    assert [p["current_assignment"] for p in viewed.json()["items"]] == [None, None]
    assert (await same_answers(POSITIONS, headers=positions["counsellor_key"])).status_code == 403
    assert (await same_answers(POSITIONS)).status_code == 401
    assert (await same_answers(POSITIONS, headers=bearer("cnfs_unknown"))).status_code == 401

    first = {"limit": "1", "include_total": "true"}
    page = await same_answers(POSITIONS, params=first, headers=world.lyon_manager)
    cursor = page.json()["next_cursor"]
    assert cursor
    assert page.json()["total"] == 2
    following = await same_answers(POSITIONS, params={**first, "cursor": cursor}, headers=world.lyon_manager)
    assert following.status_code == 200
    assert following.json()["next_cursor"] is None
    await same_answers(POSITIONS, params={**first, "cursor": cursor}, headers=world.lyon_viewer)  # 422
    await same_answers(POSITIONS, params={"cursor": "garbage"}, headers=admin)

    updated_at = positions["rhone"]["updated_at"]
    for params in (
        {"agreement_id": world.rhone["id"]},
        {"territory_id": str(tree.lyon.id)},
        {"within": str(tree.lyon_metro.id)},
        {"within": str(tree.ara.id), "status": "occupied"},
        {"within": str(uuid.uuid4())},  # 422: no such territory
        {"status": "vacant"},
        {"status": "closed"},
        {"external_ref": "LYON-2"},
        {"external_ref": "nothing like it"},
        {"updated_since": updated_at},
        {"updated_since": "2021-01-01T00:00:00Z", "sort": "-updated_at"},
        {"updated_since": "2021-01-01T02:00:00+02:00"},
        {"sort": "updated_at", "limit": "2"},
        {"sort": "-created_at", "include_total": "true"},
        {"sort": "name"},  # 422 from the service
    ):
        for headers in (admin, world.lyon_manager, world.lyon_viewer):
            await same_answers(POSITIONS, params=params, headers=headers)
    await same_answers(POSITIONS, params={"unknown": "1"}, headers=admin, direct=False)  # 422
    await same_answers(POSITIONS, params={"unknown": "1"}, direct=False)  # 422 before the 401

    for params in (
        {"status": "busy"},
        {"agreement_id": "x"},
        {"within": "not-a-uuid"},
        {"external_ref": ""},
        {"external_ref": "x" * 65},
        {"external_ref": "a\x00b"},
        {"updated_since": "2021-01-01T00:00:00"},  # no offset
        {"updated_since": "1700000000"},  # a number
        {"updated_since": "yesterday"},
        {"limit": "0"},
    ):
        await same_answers(POSITIONS, params=params, headers=admin, direct=False)
        await same_answers(POSITIONS, params=params, headers=positions["counsellor_key"], direct=False)
        await same_answers(POSITIONS, params=params, direct=False)

    # A spelling the route accepts is read alike by the twin (the route's own declarations parse it).
    await same_answers(POSITIONS, params={"include_total": "1"}, headers=admin)

    # A closed position (its agreement terminated) reads the same both ways.
    response = await terminate(client, admin, world.rhone["id"])
    assert response.status_code == 200, response.text
    await same_answers(f"{POSITIONS}/{positions['rhone']['id']}", headers=world.rhone_manager)
    await same_answers(POSITIONS, params={"status": "closed"}, headers=admin)
