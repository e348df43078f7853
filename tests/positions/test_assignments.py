"""Assignments: the date rules (inclusive end, no overlap on a position or for a counsellor), ending with a
reason, the history, and who may read them (personal data)."""

from __future__ import annotations

import uuid

import httpx

from tests.helpers import assert_problem, ids, items
from tests.positions.helpers import (
    ASSIGNMENTS,
    COUNSELLORS,
    POSITIONS,
    World,
    assign,
    create_counsellor,
    create_position,
    day,
    end_assignment,
    post_assignment,
)


async def test_assign_then_end(client: httpx.AsyncClient, world: World) -> None:
    headers = world.lyon_manager
    position = await create_position(client, headers, world.lyon["id"])
    counsellor = await create_counsellor(client, headers, world.tree.lyon_metro.id)
    response = await post_assignment(
        client,
        headers,
        position["id"],
        counsellor["id"],
        started_on=day(-5),
        ends_on=day(360),
        contract_type="CDI",
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"{ASSIGNMENTS}/{body['id']}"
    assert body["contract_type"] == "CDI"
    assert (body["ended_on"], body["end_reason"], body["active"], body["version"]) == (None, None, True, 1)
    assert (await client.get(response.headers["location"], headers=headers)).json() == body

    held = (await client.get(f"{COUNSELLORS}/{counsellor['id']}", headers=headers)).json()
    assert held["current_assignment"]["id"] == body["id"]
    assert held["current_assignment"]["position_id"] == position["id"]
    assert held["version"] == 2
    assert (await client.get(f"{POSITIONS}/{position['id']}", headers=headers)).json()["version"] == 2

    ended = await end_assignment(client, headers, body["id"], day(-1), "fin_de_contrat")
    assert ended.status_code == 200, ended.text
    assert (ended.json()["ended_on"], ended.json()["end_reason"], ended.json()["active"]) == (
        day(-1),
        "fin_de_contrat",
        False,
    )
    assert (await client.get(f"{POSITIONS}/{position['id']}", headers=headers)).json()["status"] == "vacant"
    assert (await client.get(f"{COUNSELLORS}/{counsellor['id']}", headers=headers)).json()[
        "current_assignment"
    ] is None
    assert_problem(await end_assignment(client, headers, body["id"], day(0)), 409, "assignment_already_ended")


async def test_no_two_assignments_on_a_position_on_the_same_day(
    client: httpx.AsyncClient, world: World
) -> None:
    headers = world.admin
    position = await create_position(client, headers, world.lyon["id"])
    first = await create_counsellor(client, headers, world.tree.lyon_metro.id, external_ref="1")
    second = await create_counsellor(client, headers, world.tree.lyon_metro.id, external_ref="2")
    held = await assign(client, headers, position["id"], first["id"], started_on="2021-05-03")
    # Open-ended: any later start overlaps, and so does an earlier one.
    for started_on in ("2021-05-03", "2022-01-01", "2021-04-15"):
        assert_problem(
            await post_assignment(client, headers, position["id"], second["id"], started_on),
            409,
            "position_occupied",
        )
    assert (await end_assignment(client, headers, held["id"], "2021-12-31")).status_code == 200
    # `ended_on` is inclusive: the same day is still taken, the next one is free.
    assert_problem(
        await post_assignment(client, headers, position["id"], second["id"], "2021-12-31"),
        409,
        "position_occupied",
    )
    await assign(client, headers, position["id"], second["id"], "2022-01-01")
    history = await client.get(f"{POSITIONS}/{position['id']}/assignments", headers=headers)
    assert [a["counsellor_id"] for a in items(history)] == [first["id"], second["id"]]


async def test_no_counsellor_in_two_positions_on_the_same_day(
    client: httpx.AsyncClient, world: World
) -> None:
    headers = world.admin
    one = await create_position(client, headers, world.lyon["id"])
    two = await create_position(client, headers, world.lyon["id"])
    counsellor = await create_counsellor(client, headers, world.tree.lyon_metro.id)
    held = await assign(client, headers, one["id"], counsellor["id"], "2021-05-03")
    assert_problem(
        await post_assignment(client, headers, two["id"], counsellor["id"], "2021-06-01"),
        409,
        "counsellor_already_assigned",
    )
    assert (await end_assignment(client, headers, held["id"], "2021-05-31")).status_code == 200
    await assign(client, headers, two["id"], counsellor["id"], "2021-06-01")


async def test_assignment_validation(client: httpx.AsyncClient, world: World) -> None:
    headers = world.lyon_manager
    position = await create_position(client, headers, world.lyon["id"])
    counsellor = await create_counsellor(client, headers, world.tree.lyon_metro.id)
    rhone_counsellor = await create_counsellor(client, world.admin, world.tree.rhone.id)
    cases = [
        ({"started_on": "2021-03-01"}, 422, "validation_error", "/started_on"),
        ({"ends_on": "2021-05-01"}, 422, "validation_error", "/ends_on"),
        ({"contract_type": "INTERIM"}, 422, "validation_error", "/contract_type"),
        ({"counsellor_id": rhone_counsellor["id"]}, 422, "unknown_reference", "/counsellor_id"),
        ({"counsellor_id": str(uuid.uuid4())}, 422, "unknown_reference", "/counsellor_id"),
    ]
    for changes, status, code, pointer in cases:
        body = {
            "counsellor_id": counsellor["id"],
            "contract_type": "CDD",
            "started_on": "2021-05-03",
            **changes,
        }
        response = await client.post(f"{POSITIONS}/{position['id']}/assignments", json=body, headers=headers)
        assert_problem(response, status, code, pointer)
    held = await assign(client, headers, position["id"], counsellor["id"], "2021-05-03")
    assert_problem(
        await end_assignment(client, headers, held["id"], "2021-05-02"), 422, "validation_error", "/ended_on"
    )
    assert_problem(
        await end_assignment(client, headers, held["id"], "2021-06-01", "lassitude"), 422, "validation_error"
    )


async def test_assignments_list_filters(client: httpx.AsyncClient, world: World) -> None:
    headers = world.admin
    one = await create_position(client, headers, world.lyon["id"], territory_id=str(world.tree.lyon.id))
    two = await create_position(client, headers, world.rhone["id"])
    a = await create_counsellor(client, headers, world.tree.lyon_metro.id, external_ref="A")
    b = await create_counsellor(client, headers, world.tree.rhone.id, external_ref="B")
    current = await assign(client, headers, one["id"], a["id"], day(-3))
    past = await assign(client, headers, two["id"], b["id"], "2021-05-03")
    assert (await end_assignment(client, headers, past["id"], "2021-12-31")).status_code == 200
    get = client.get
    assert ids(await get(ASSIGNMENTS, headers=headers)) == [past["id"], current["id"]]
    assert ids(await get(ASSIGNMENTS, params={"active": "true"}, headers=headers)) == [current["id"]]
    assert ids(await get(ASSIGNMENTS, params={"active": "false"}, headers=headers)) == [past["id"]]
    assert ids(await get(ASSIGNMENTS, params={"counsellor_id": b["id"]}, headers=headers)) == [past["id"]]
    assert ids(await get(ASSIGNMENTS, params={"territory_id": str(world.tree.lyon.id)}, headers=headers)) == [
        current["id"]
    ]
    assert ids(await get(ASSIGNMENTS, params={"within": str(world.tree.ara.id)}, headers=headers)) == [
        past["id"],
        current["id"],
    ]
    assert ids(await get(ASSIGNMENTS, params={"sort": "-started_on"}, headers=headers)) == [
        current["id"],
        past["id"],
    ]
    assert ids(await get(ASSIGNMENTS, headers=world.lyon_manager)) == [current["id"]]
    assert ids(await get(ASSIGNMENTS, headers=world.rhone_manager)) == [past["id"]]


async def test_assignments_are_personal_data(client: httpx.AsyncClient, world: World) -> None:
    position = await create_position(client, world.admin, world.lyon["id"])
    rhone_position = await create_position(client, world.admin, world.rhone["id"])
    counsellor = await create_counsellor(client, world.admin, world.tree.lyon_metro.id)
    held = await assign(client, world.admin, position["id"], counsellor["id"])
    viewer = world.lyon_viewer
    assert_problem(await client.get(ASSIGNMENTS, headers=viewer), 403, "forbidden")
    assert_problem(await client.get(f"{ASSIGNMENTS}/{held['id']}", headers=viewer), 403, "forbidden")
    assert_problem(
        await client.get(f"{POSITIONS}/{position['id']}/assignments", headers=viewer), 403, "forbidden"
    )
    # Outside the viewer's territories: not even there.
    assert_problem(
        await client.get(f"{POSITIONS}/{rhone_position['id']}/assignments", headers=viewer), 404, "not_found"
    )
    assert_problem(
        await client.get(f"{ASSIGNMENTS}/{held['id']}", headers=world.rhone_manager), 404, "not_found"
    )
    assert_problem(await end_assignment(client, world.rhone_manager, held["id"], day(0)), 404, "not_found")
    assert_problem(await end_assignment(client, viewer, held["id"], day(0)), 403, "forbidden")
    assert_problem(await client.get(ASSIGNMENTS), 401, "unauthenticated")


async def test_an_assignment_ending_today_is_still_active(client: httpx.AsyncClient, world: World) -> None:
    """`ended_on` is inclusive: on its last day the assignment covers today, in the answer to the end itself
    (built in Python) as in every read (built in SQL)."""
    headers = world.lyon_manager
    position = await create_position(client, headers, world.lyon["id"])
    counsellor = await create_counsellor(client, headers, world.tree.lyon_metro.id)
    held = await assign(client, headers, position["id"], counsellor["id"], started_on=day(-5))
    ended = await end_assignment(client, headers, held["id"], day(0), "fin_de_contrat")
    assert ended.status_code == 200, ended.text
    assert (ended.json()["ended_on"], ended.json()["active"]) == (day(0), True)
    assert (await client.get(f"{ASSIGNMENTS}/{held['id']}", headers=headers)).json()["active"] is True
    assert ids(await client.get(ASSIGNMENTS, params={"active": "true"}, headers=headers)) == [held["id"]]
    got = (await client.get(f"{POSITIONS}/{position['id']}", headers=headers)).json()
    assert (got["status"], got["current_assignment"]["id"]) == ("occupied", held["id"])


async def test_a_counsellor_handed_over_starts_the_day_after_the_last_day(
    client: httpx.AsyncClient, world: World
) -> None:
    """The boundary of the counsellor's overlap: the old assignment's last day is taken, the next is free."""
    headers = world.admin
    one = await create_position(client, headers, world.lyon["id"])
    two = await create_position(client, headers, world.lyon["id"])
    counsellor = await create_counsellor(client, headers, world.tree.lyon_metro.id)
    held = await assign(client, headers, one["id"], counsellor["id"], "2021-05-03")
    assert (await end_assignment(client, headers, held["id"], "2021-05-31")).status_code == 200
    for started_on in ("2021-05-31", "2021-05-03", "2021-04-30"):
        assert_problem(
            await post_assignment(client, headers, two["id"], counsellor["id"], started_on),
            409,
            "counsellor_already_assigned",
        )
    moved = await assign(client, headers, two["id"], counsellor["id"], "2021-06-01")
    assert moved["started_on"] == "2021-06-01"
    history = await client.get(ASSIGNMENTS, params={"counsellor_id": counsellor["id"]}, headers=headers)
    assert ids(history) == [held["id"], moved["id"]]


async def test_an_assignment_may_start_on_the_day_the_position_opens(
    client: httpx.AsyncClient, world: World
) -> None:
    headers = world.lyon_manager
    position = await create_position(client, headers, world.lyon["id"], opened_on="2021-04-01")
    counsellor = await create_counsellor(client, headers, world.tree.lyon_metro.id)
    assert_problem(
        await post_assignment(client, headers, position["id"], counsellor["id"], "2021-03-31"),
        422,
        "validation_error",
        "/started_on",
    )
    held = await assign(client, headers, position["id"], counsellor["id"], "2021-04-01")
    assert held["started_on"] == "2021-04-01"


async def test_an_anonymised_counsellor_takes_no_position(client: httpx.AsyncClient, world: World) -> None:
    position = await create_position(client, world.admin, world.lyon["id"])
    counsellor = await create_counsellor(client, world.admin, world.tree.lyon_metro.id)
    erased = await client.post(f"{COUNSELLORS}/{counsellor['id']}/anonymize", headers=world.admin)
    assert erased.status_code == 200, erased.text
    for headers in (world.admin, world.lyon_manager):
        assert_problem(
            await post_assignment(client, headers, position["id"], counsellor["id"], "2021-05-03"),
            409,
            "counsellor_anonymized",
        )
    assert items(await client.get(f"{POSITIONS}/{position['id']}/assignments", headers=world.admin)) == []
    got = (await client.get(f"{POSITIONS}/{position['id']}", headers=world.admin)).json()
    assert (got["status"], got["version"]) == ("vacant", 1)
