"""The change feed: written with each change, scoped to the caller, paged by a cursor."""

from __future__ import annotations

import httpx

from tests.agreements.helpers import AGREEMENTS, amend
from tests.conftest import KeyMaker, bearer
from tests.helpers import assert_problem
from tests.positions.helpers import (
    CHANGES,
    World,
    assign,
    create_counsellor,
    create_position,
    day,
    end_assignment,
)


def summary(response: httpx.Response) -> list[tuple[str, str, int]]:
    assert response.status_code == 200, response.text
    return [(c["resource"], c["action"], c["version"]) for c in response.json()["items"]]


async def test_every_change_is_in_the_feed_in_order(client: httpx.AsyncClient, world: World) -> None:
    start = (await client.get(CHANGES, params={"limit": 200}, headers=world.admin)).json()["next_after"]
    position = await create_position(client, world.lyon_manager, world.lyon["id"])
    counsellor = await create_counsellor(client, world.lyon_manager, world.tree.lyon_metro.id)
    held = await assign(client, world.lyon_manager, position["id"], counsellor["id"], started_on=day(-1))
    await end_assignment(client, world.lyon_manager, held["id"], day(0))
    await amend(client, world.admin, world.lyon["id"], "add_positions", 1)
    feed = await client.get(CHANGES, params={"after": start}, headers=world.admin)
    assert summary(feed) == [
        ("positions", "created", 1),
        ("counsellors", "created", 1),
        ("assignments", "created", 1),
        ("positions", "updated", 2),
        ("counsellors", "updated", 2),
        ("assignments", "updated", 2),
        ("positions", "updated", 3),
        ("counsellors", "updated", 3),
        ("agreements", "updated", 3),
    ]
    first = feed.json()["items"][0]
    assert first["id"] == position["id"]
    assert first["territory_id"] == position["territory_id"]
    assert first["occurred_at"].endswith("Z")
    assert feed.json()["next_after"] == feed.json()["items"][-1]["cursor"]


async def test_agreements_are_in_the_feed(client: httpx.AsyncClient, world: World) -> None:
    feed = await client.get(CHANGES, params={"resource": "agreements"}, headers=world.admin)
    mine = [c for c in feed.json()["items"] if c["id"] == world.lyon["id"]]
    assert [(c["action"], c["version"]) for c in mine] == [("created", 1), ("updated", 2)]


async def test_paging_with_after_and_limit(client: httpx.AsyncClient, world: World) -> None:
    start = (await client.get(CHANGES, params={"limit": 200}, headers=world.admin)).json()["next_after"]
    created = [await create_position(client, world.admin, world.lyon["id"]) for _ in range(3)]
    seen = []
    after = start
    for _ in range(4):
        page = (await client.get(CHANGES, params={"after": after, "limit": 2}, headers=world.admin)).json()
        seen += [c["id"] for c in page["items"]]
        if not page["items"]:
            assert page["next_after"] == after
        after = page["next_after"]
    assert seen == [p["id"] for p in created]


async def test_the_feed_is_scoped(client: httpx.AsyncClient, world: World, make_key: KeyMaker) -> None:
    start = (await client.get(CHANGES, params={"limit": 200}, headers=world.admin)).json()["next_after"]
    lyon_position = await create_position(client, world.admin, world.lyon["id"])
    rhone_position = await create_position(client, world.admin, world.rhone["id"])
    counsellor = await create_counsellor(client, world.admin, world.tree.lyon_metro.id)

    def ids(response: httpx.Response) -> list[str]:
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["items"]]

    params = {"after": start}
    assert ids(await client.get(CHANGES, params=params, headers=world.lyon_manager)) == [
        lyon_position["id"],
        counsellor["id"],
    ]
    assert ids(await client.get(CHANGES, params=params, headers=world.rhone_manager)) == [
        rhone_position["id"]
    ]
    # Viewers see positions and agreements, never counsellors or assignments.
    assert ids(await client.get(CHANGES, params=params, headers=world.lyon_viewer)) == [lyon_position["id"]]
    asked = {**params, "resource": "counsellors"}
    assert ids(await client.get(CHANGES, params=asked, headers=world.lyon_viewer)) == []
    assert ids(await client.get(CHANGES, params=asked, headers=world.lyon_manager)) == [counsellor["id"]]
    counsellor_key = bearer(await make_key("counsellor", [world.tree.lyon_metro]))
    assert_problem(await client.get(CHANGES, headers=counsellor_key), 403, "forbidden")
    assert_problem(await client.get(CHANGES), 401, "unauthenticated")


async def test_bad_cursors_and_parameters(client: httpx.AsyncClient, world: World) -> None:
    for after in ("x", "1", "1.2.3", "-1.2", "1.-2", "99999999999999999999.1"):
        assert_problem(
            await client.get(CHANGES, params={"after": after}, headers=world.admin), 422, "invalid_cursor"
        )
    assert_problem(
        await client.get(CHANGES, params={"resource": "workshopz"}, headers=world.admin),
        422,
        "validation_error",
    )
    assert_problem(
        await client.get(CHANGES, params={"limit": 201}, headers=world.admin), 422, "validation_error"
    )
    assert_problem(
        await client.get(CHANGES, params={"cursor": "x"}, headers=world.admin), 422, "validation_error"
    )
    response = await client.get(f"{AGREEMENTS}", headers=world.admin)
    assert response.status_code == 200
