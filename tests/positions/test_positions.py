"""Positions: opening under signed agreements, the derived status, closing, and the agreement's counts."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.agreements.helpers import (
    AGREEMENTS,
    amend,
    create_agreement,
    create_signed,
    merge_patch,
    terminate,
)
from tests.conftest import QueryCounter, bearer
from tests.helpers import assert_problem, ids, items
from tests.positions.helpers import (
    POSITIONS,
    World,
    assign,
    create_counsellor,
    create_position,
    day,
    end_assignment,
    post_assignment,
    post_position,
)


async def _agreement(client: httpx.AsyncClient, world: World, which: str = "lyon") -> dict[str, Any]:
    agreement = world.lyon if which == "lyon" else world.rhone
    response = await client.get(f"{AGREEMENTS}/{agreement['id']}", headers=world.admin)
    body: dict[str, Any] = response.json()
    return body


async def test_a_manager_opens_a_position_under_its_signed_agreement(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await post_position(
        client,
        world.lyon_manager,
        world.lyon["id"],
        external_ref="LYON-1",
        territory_id=str(world.tree.lyon.id),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"{POSITIONS}/{body['id']}"
    assert response.headers["etag"] == '"1"'
    assert body["status"] == "vacant"
    assert body["current_assignment"] is None
    assert body["territory_id"] == str(world.tree.lyon.id)
    assert body["typology"] == "conum"
    assert (body["opened_on"], body["closed_on"], body["version"]) == ("2021-04-01", None, 1)
    got = await client.get(f"{POSITIONS}/{body['id']}", headers=world.lyon_manager)
    assert got.json() == body
    assert (await _agreement(client, world))["positions_open"] == 1


async def test_the_territory_defaults_to_the_agreements(client: httpx.AsyncClient, world: World) -> None:
    body = await create_position(client, world.admin, world.rhone["id"], typology="coordinateur")
    assert body["territory_id"] == str(world.tree.rhone.id)
    assert body["typology"] == "coordinateur"


async def test_a_position_needs_a_signed_agreement_with_a_free_position(
    client: httpx.AsyncClient, world: World
) -> None:
    draft = await create_agreement(
        client, world.admin, world.lyon["programme_id"], world.tree.lyon_metro.id, reference="DRAFT"
    )
    assert_problem(await post_position(client, world.admin, draft["id"]), 409, "agreement_not_signed")
    for _ in range(2):
        await create_position(client, world.admin, world.rhone["id"])
    body = assert_problem(
        await post_position(client, world.admin, world.rhone["id"]), 409, "agreement_positions_exhausted"
    )
    assert (body["positions_granted"], body["positions_open"]) == (2, 2)


async def test_a_closed_position_frees_its_place(client: httpx.AsyncClient, world: World) -> None:
    first = await create_position(client, world.admin, world.rhone["id"])
    await create_position(client, world.admin, world.rhone["id"])
    closed = await client.post(
        f"{POSITIONS}/{first['id']}/close",
        json={"closed_on": "2022-01-31", "reason": "Non pourvu."},
        headers=world.admin,
    )
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed"
    assert (await _agreement(client, world, "rhone"))["positions_open"] == 1
    await create_position(client, world.admin, world.rhone["id"])


async def test_references_outside_the_callers_territories_are_unknown(
    client: httpx.AsyncClient, world: World
) -> None:
    # The Rhône's agreement, from a Lyon manager: as if it did not exist.
    assert_problem(
        await post_position(client, world.lyon_manager, world.rhone["id"]),
        422,
        "unknown_reference",
        "/agreement_id",
    )
    assert_problem(
        await post_position(client, world.admin, str(uuid.uuid4())), 422, "unknown_reference", "/agreement_id"
    )
    assert_problem(
        await post_position(
            client, world.lyon_manager, world.lyon["id"], territory_id=str(world.tree.villefranche.id)
        ),
        422,
        "unknown_reference",
        "/territory_id",
    )
    # The admin sees Villefranche, which is outside Lyon's agreement.
    assert_problem(
        await post_position(
            client, world.admin, world.lyon["id"], territory_id=str(world.tree.villefranche.id)
        ),
        422,
        "territory_outside_agreement",
        "/territory_id",
    )


async def test_external_ref_is_unique_within_the_agreements_territory(
    client: httpx.AsyncClient, world: World
) -> None:
    await create_position(client, world.admin, world.lyon["id"], external_ref="P-1")
    assert_problem(
        await post_position(client, world.admin, world.lyon["id"], external_ref="P-1"),
        409,
        "external_ref_exists",
    )
    await create_position(client, world.admin, world.rhone["id"], external_ref="P-1")


async def test_free_text_refuses_control_characters(client: httpx.AsyncClient, world: World) -> None:
    for ref in ("A\x00B", "A\nB", "A\x1bB"):
        assert_problem(
            await post_position(client, world.admin, world.lyon["id"], external_ref=ref),
            422,
            "validation_error",
            "/external_ref",
        )
    position = await create_position(client, world.admin, world.lyon["id"])
    response = await client.post(
        f"{POSITIONS}/{position['id']}/close",
        json={"closed_on": "2022-01-01", "reason": "x\x00"},
        headers=world.admin,
    )
    assert_problem(response, 422, "validation_error", "/reason")
    response = await client.get(POSITIONS, params={"external_ref": "a\x00"}, headers=world.admin)
    assert_problem(response, 422, "validation_error", "/query/external_ref")


async def test_the_status_follows_the_assignments_day_by_day(client: httpx.AsyncClient, world: World) -> None:
    headers = world.lyon_manager
    counsellor = await create_counsellor(client, headers, world.tree.lyon_metro.id)
    tomorrow = await create_position(client, headers, world.lyon["id"], external_ref="T")
    today = await create_position(client, headers, world.lyon["id"], external_ref="D")
    ended = await create_position(client, headers, world.lyon["id"], external_ref="E")
    other = await create_counsellor(client, headers, world.tree.lyon_metro.id, external_ref="O")
    third = await create_counsellor(client, headers, world.tree.lyon_metro.id, external_ref="P")

    # Starting tomorrow: vacant today.
    await assign(client, headers, tomorrow["id"], counsellor["id"], started_on=day(1))
    # Ending today (inclusive): occupied today.
    current = await assign(client, headers, today["id"], other["id"], started_on=day(-30))
    assert (await end_assignment(client, headers, current["id"], day(0))).status_code == 200
    # Ended yesterday: vacant.
    past = await assign(client, headers, ended["id"], third["id"], started_on=day(-30))
    assert (await end_assignment(client, headers, past["id"], day(-1))).status_code == 200

    statuses = {p["external_ref"]: p["status"] for p in items(await client.get(POSITIONS, headers=headers))}
    assert statuses == {"T": "vacant", "D": "occupied", "E": "vacant"}
    occupied = (await client.get(f"{POSITIONS}/{today['id']}", headers=headers)).json()
    assert occupied["current_assignment"]["id"] == current["id"]
    assert occupied["current_assignment"]["counsellor_id"] == other["id"]
    assert ids(await client.get(POSITIONS, params={"status": "occupied"}, headers=headers)) == [today["id"]]
    assert ids(await client.get(POSITIONS, params={"status": "vacant"}, headers=headers)) == [
        tomorrow["id"],
        ended["id"],
    ]
    assert ids(await client.get(POSITIONS, params={"status": "closed"}, headers=headers)) == []
    agreement = await _agreement(client, world)
    assert (agreement["positions_open"], agreement["positions_occupied"]) == (3, 1)


async def test_the_list_makes_a_constant_number_of_queries(
    client: httpx.AsyncClient, world: World, count_queries: Any
) -> None:
    counsellor = await create_counsellor(client, world.admin, world.tree.lyon_metro.id)
    first = await create_position(client, world.admin, world.lyon["id"])
    await assign(client, world.admin, first["id"], counsellor["id"], started_on=day(-1))
    counts = []
    for _ in range(2):
        with count_queries() as counter:
            response = await client.get(
                POSITIONS, params={"include_total": "true"}, headers=world.lyon_manager
            )
        assert response.status_code == 200
        counts.append(counter.count)
        await create_position(client, world.admin, world.lyon["id"])
    assert counts[0] == counts[1]
    assert isinstance(counter, QueryCounter)


async def test_close_rules(client: httpx.AsyncClient, world: World) -> None:
    headers = world.lyon_manager
    position = await create_position(client, headers, world.lyon["id"])
    counsellor = await create_counsellor(client, headers, world.tree.lyon_metro.id)
    assignment = await assign(client, headers, position["id"], counsellor["id"], started_on="2021-05-03")
    url = f"{POSITIONS}/{position['id']}/close"
    assert_problem(
        await client.post(url, json={"closed_on": "2021-03-31", "reason": "x"}, headers=headers),
        422,
        "validation_error",
        "/closed_on",
    )
    assert_problem(
        await client.post(url, json={"closed_on": "2022-01-31", "reason": "x"}, headers=headers),
        409,
        "position_occupied",
    )
    assert (await end_assignment(client, headers, assignment["id"], "2022-01-31")).status_code == 200
    stale = await client.post(
        url, json={"closed_on": "2022-01-31", "reason": "x"}, headers={**headers, "If-Match": '"1"'}
    )
    assert_problem(stale, 412, "precondition_failed")
    closed = await client.post(url, json={"closed_on": "2022-01-31", "reason": "Fin."}, headers=headers)
    assert closed.status_code == 200, closed.text
    assert (closed.json()["status"], closed.json()["closed_on"], closed.json()["close_reason"]) == (
        "closed",
        "2022-01-31",
        "Fin.",
    )
    assert_problem(
        await client.post(url, json={"closed_on": "2022-02-01", "reason": "x"}, headers=headers),
        409,
        "position_closed",
    )
    other = await create_counsellor(client, headers, world.tree.lyon_metro.id, external_ref="X2")
    response = await client.post(
        f"{POSITIONS}/{position['id']}/assignments",
        json={"counsellor_id": other["id"], "contract_type": "CDI", "started_on": "2022-03-01"},
        headers=headers,
    )
    assert_problem(response, 409, "position_closed")
    patched = await merge_patch(
        client,
        headers,
        f"{POSITIONS}/{position['id']}",
        {"typology": "coordinateur"},
        if_match=closed.headers["etag"],
    )
    assert_problem(patched, 409, "position_closed")


async def test_patch(client: httpx.AsyncClient, world: World) -> None:
    position = await create_position(client, world.admin, world.lyon["id"], external_ref="A")
    await create_position(client, world.admin, world.lyon["id"], external_ref="B")
    url = f"{POSITIONS}/{position['id']}"
    assert_problem(
        await merge_patch(client, world.admin, url, {"typology": "coordinateur"}, if_match=None),
        428,
        "precondition_required",
    )
    assert_problem(
        await merge_patch(client, world.admin, url, {"external_ref": "B"}), 409, "external_ref_exists"
    )
    assert_problem(
        await merge_patch(client, world.admin, url, {"typology": None}), 422, "validation_error", "/typology"
    )
    assert_problem(
        await merge_patch(client, world.admin, url, {"agreement_id": world.rhone["id"]}),
        422,
        "validation_error",
    )
    assert_problem(
        await merge_patch(client, world.admin, url, {"territory_id": str(world.tree.villefranche.id)}),
        422,
        "territory_outside_agreement",
    )
    response = await merge_patch(
        client, world.admin, url, {"territory_id": str(world.tree.villeurbanne.id), "external_ref": None}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["territory_id"], body["external_ref"], body["version"]) == (
        str(world.tree.villeurbanne.id),
        None,
        2,
    )
    # Nothing to change: same version.
    same = await merge_patch(client, world.admin, url, {"external_ref": None}, if_match='"2"')
    assert same.json()["version"] == 2


async def test_who_reads_positions(client: httpx.AsyncClient, world: World, make_key: Any) -> None:
    lyon_position = await create_position(client, world.admin, world.lyon["id"])
    rhone_position = await create_position(client, world.admin, world.rhone["id"])
    counsellor = await create_counsellor(client, world.admin, world.tree.lyon_metro.id)
    await assign(client, world.admin, lyon_position["id"], counsellor["id"], started_on=day(-1))

    seen = await client.get(f"{POSITIONS}/{lyon_position['id']}", headers=world.lyon_viewer)
    assert seen.status_code == 200
    # A viewer sees the status, not who holds the position.
    assert (seen.json()["status"], seen.json()["current_assignment"]) == ("occupied", None)
    assert ids(await client.get(POSITIONS, headers=world.lyon_viewer)) == [lyon_position["id"]]
    assert ids(await client.get(POSITIONS, headers=world.rhone_manager)) == [rhone_position["id"]]
    assert_problem(
        await client.get(f"{POSITIONS}/{rhone_position['id']}", headers=world.lyon_manager), 404, "not_found"
    )
    assert_problem(await post_position(client, world.lyon_viewer, world.lyon["id"]), 403, "forbidden")
    counsellor_key = bearer(await make_key("counsellor", [world.tree.lyon_metro]))
    assert_problem(await client.get(POSITIONS, headers=counsellor_key), 403, "forbidden")
    assert_problem(await client.get(POSITIONS), 401, "unauthenticated")


async def test_list_filters(client: httpx.AsyncClient, world: World) -> None:
    a = await create_position(
        client, world.admin, world.lyon["id"], external_ref="A", territory_id=str(world.tree.lyon.id)
    )
    b = await create_position(client, world.admin, world.rhone["id"], external_ref="B")
    get = client.get
    assert ids(await get(POSITIONS, params={"agreement_id": world.rhone["id"]}, headers=world.admin)) == [
        b["id"]
    ]
    assert ids(
        await get(POSITIONS, params={"territory_id": str(world.tree.lyon.id)}, headers=world.admin)
    ) == [a["id"]]
    assert ids(
        await get(POSITIONS, params={"within": str(world.tree.lyon_metro.id)}, headers=world.admin)
    ) == [a["id"]]
    assert ids(await get(POSITIONS, params={"external_ref": "B"}, headers=world.admin)) == [b["id"]]
    assert ids(await get(POSITIONS, params={"updated_since": b["updated_at"]}, headers=world.admin)) == [
        b["id"]
    ]
    assert ids(await get(POSITIONS, params={"sort": "-updated_at"}, headers=world.admin)) == [
        b["id"],
        a["id"],
    ]
    assert_problem(
        await get(POSITIONS, params={"updated_since": "2021-01-01T00:00:00"}, headers=world.admin),
        422,
        "validation_error",
    )
    assert_problem(
        await get(POSITIONS, params={"status": "busy"}, headers=world.admin), 422, "validation_error"
    )
    page = await get(POSITIONS, params={"limit": 1}, headers=world.admin)
    assert len(items(page)) == 1
    assert page.json()["next_cursor"]


async def test_withdrawing_below_the_open_positions_is_refused(
    client: httpx.AsyncClient, world: World
) -> None:
    await create_position(client, world.admin, world.rhone["id"])
    await create_position(client, world.admin, world.rhone["id"])
    body = assert_problem(
        await amend(client, world.admin, world.rhone["id"], "withdraw_positions", 1),
        409,
        "positions_below_allocated",
    )
    assert body["positions_open"] == 2


async def test_terminating_closes_open_positions_or_refuses_occupied_ones(
    client: httpx.AsyncClient, world: World
) -> None:
    vacant = await create_position(client, world.admin, world.lyon["id"])
    occupied = await create_position(client, world.admin, world.lyon["id"])
    counsellor = await create_counsellor(client, world.admin, world.tree.lyon_metro.id)
    assignment = await assign(client, world.admin, occupied["id"], counsellor["id"], started_on=day(-10))
    refused = await terminate(client, world.admin, world.lyon["id"], terminated_on=day(0))
    assert assert_problem(refused, 409, "agreement_has_occupied_positions")["positions_occupied"] == 1
    assert (await end_assignment(client, world.admin, assignment["id"], day(-1))).status_code == 200
    done = await terminate(client, world.admin, world.lyon["id"], terminated_on=day(0))
    assert done.status_code == 200, done.text
    assert (done.json()["positions_open"], done.json()["positions_occupied"]) == (0, 0)
    for position in (vacant, occupied):
        body = (await client.get(f"{POSITIONS}/{position['id']}", headers=world.admin)).json()
        assert (body["status"], body["closed_on"]) == ("closed", day(0))
        assert body["close_reason"] == "Le territoire renonce au dispositif."
    assert_problem(await post_position(client, world.admin, world.lyon["id"]), 409, "agreement_not_signed")


async def test_reads_cost_the_same_statements_whatever_the_page_and_the_role(
    client: httpx.AsyncClient, world: World, count_queries: Any
) -> None:
    """A page is one SELECT (the status derived in it) plus, for a reader of personal data, one for the
    current assignments of its occupied positions; a viewer never reads them."""
    positions = [await create_position(client, world.admin, world.lyon["id"]) for _ in range(3)]
    for i, position in enumerate(positions):
        counsellor = await create_counsellor(
            client, world.admin, world.tree.lyon_metro.id, external_ref=f"P-{i}"
        )
        await assign(client, world.admin, position["id"], counsellor["id"], started_on=day(-1))
    for headers in (world.lyon_manager, world.lyon_viewer):
        counts = []
        for limit in (1, 3):
            with count_queries() as counter:
                page = await client.get(POSITIONS, params={"limit": str(limit)}, headers=headers)
            assert len(items(page)) == limit
            assert all(p["status"] == "occupied" for p in items(page))
            shown = [p["current_assignment"] is not None for p in items(page)]
            assert shown == [headers is world.lyon_manager] * limit
            counts.append(counter.count)
        assert counts[0] == counts[1], counts
        with count_queries() as counter:
            one = await client.get(f"{POSITIONS}/{positions[0]['id']}", headers=headers)
        assert one.json() == items(page)[0]
        assert one.headers["etag"] == f'"{one.json()["version"]}"'
        assert counter.count == counts[0], (counter.count, counts)


async def test_reads_answer_what_writes_answered(client: httpx.AsyncClient, world: World) -> None:
    """Reads serialise rows (orjson), writes serialise models (pydantic): the same object reads the same."""
    headers = world.lyon_manager
    counsellor = await create_counsellor(client, headers, world.tree.lyon_metro.id, external_ref="SAME-1")
    position = await create_position(client, headers, world.lyon["id"])
    assignment = await assign(client, headers, position["id"], counsellor["id"], started_on=day(-1))
    changed = await client.patch(
        f"{POSITIONS}/{position['id']}",
        json={"external_ref": "SAME-P"},
        headers={**headers, "If-Match": f'"{position["version"] + 1}"'},
    )
    assert changed.status_code == 200, changed.text
    written = changed.json()
    assert written["status"] == "occupied"
    assert written["current_assignment"]["id"] == assignment["id"]
    assert (await client.get(f"{POSITIONS}/{position['id']}", headers=headers)).json() == written
    assert items(await client.get(POSITIONS, params={"external_ref": "SAME-P"}, headers=headers)) == [written]
    assert (await client.get(f"/api/v1/assignments/{assignment['id']}", headers=headers)).json() == assignment
    history = await client.get(f"{POSITIONS}/{position['id']}/assignments", headers=headers)
    assert items(history) == [assignment]
    anonymised = await client.post(f"/api/v1/counsellors/{counsellor['id']}/anonymize", headers=world.admin)
    assert anonymised.status_code == 200, anonymised.text
    person = anonymised.json()
    assert person["current_assignment"]["id"] == assignment["id"]
    assert person["training"]
    assert (await client.get(f"/api/v1/counsellors/{counsellor['id']}", headers=headers)).json() == person
    listed = await client.get(
        "/api/v1/counsellors", params={"territory_id": person["territory_id"]}, headers=headers
    )
    assert items(listed) == [person]


async def _bounded(client: httpx.AsyncClient, world: World) -> dict[str, Any]:
    """A signed agreement of the Métropole de Lyon running from 2021-03-01 to 2023-02-28 (both included)."""
    return await create_signed(
        client,
        world.admin,
        world.lyon["programme_id"],
        world.tree.lyon_metro.id,
        reference="L-BOUNDED",
        positions_granted=5,
        starts_on="2021-03-01",
        ends_on="2023-02-28",
    )


async def test_a_position_opens_within_its_agreements_period(client: httpx.AsyncClient, world: World) -> None:
    bounded = await _bounded(client, world)
    for headers in (world.admin, world.lyon_manager):
        for opened_on, bound in (
            ("2021-02-28", "starts_on (2021-03-01)"),
            ("2023-03-01", "ends_on (2023-02-28)"),
        ):
            problem = assert_problem(
                await post_position(client, headers, bounded["id"], opened_on=opened_on),
                422,
                "validation_error",
                "/opened_on",
            )
            assert bound in problem["errors"][0]["detail"], problem
    for opened_on in ("2021-03-01", "2023-02-28"):
        assert (await create_position(client, world.lyon_manager, bounded["id"], opened_on=opened_on))[
            "opened_on"
        ] == opened_on
    # An open-ended agreement bounds only the start.
    assert_problem(
        await post_position(client, world.lyon_manager, world.lyon["id"], opened_on="2021-02-28"),
        422,
        "validation_error",
        "/opened_on",
    )
    assert (await create_position(client, world.lyon_manager, world.lyon["id"], opened_on="2099-12-31"))[
        "opened_on"
    ] == "2099-12-31"
    agreement = (await client.get(f"{AGREEMENTS}/{bounded['id']}", headers=world.admin)).json()
    assert agreement["positions_open"] == 2
    listed = items(await client.get(POSITIONS, params={"agreement_id": bounded["id"]}, headers=world.admin))
    assert sorted(p["opened_on"] for p in listed) == ["2021-03-01", "2023-02-28"]


async def test_a_new_opening_day_stays_within_the_agreement_and_before_the_first_assignment(
    client: httpx.AsyncClient, world: World
) -> None:
    bounded = await _bounded(client, world)
    position = await create_position(client, world.lyon_manager, bounded["id"], opened_on="2021-04-01")
    url = f"{POSITIONS}/{position['id']}"
    version = 1
    for opened_on, status in (
        ("2021-02-28", 422),
        ("2021-03-01", 200),
        ("2023-03-01", 422),
        ("2023-02-28", 200),
        ("2021-04-01", 200),
    ):
        response = await merge_patch(
            client, world.lyon_manager, url, {"opened_on": opened_on}, if_match=f'"{version}"'
        )
        if status == 422:
            assert_problem(response, 422, "validation_error", "/opened_on")
        else:
            assert response.status_code == 200, response.text
            version = response.json()["version"]
            assert response.json()["opened_on"] == opened_on
    counsellor = await create_counsellor(client, world.admin, world.tree.lyon_metro.id)
    held = await assign(client, world.admin, position["id"], counsellor["id"], "2021-05-03")
    assert (await end_assignment(client, world.admin, held["id"], "2021-06-30")).status_code == 200
    version = (await client.get(url, headers=world.admin)).json()["version"]
    # The assignment, even ended, was accepted on or after `opened_on`: the opening cannot move past it.
    problem = assert_problem(
        await merge_patch(client, world.admin, url, {"opened_on": "2021-05-04"}, if_match=f'"{version}"'),
        422,
        "validation_error",
        "/opened_on",
    )
    assert "2021-05-03" in problem["detail"]
    moved = await merge_patch(client, world.admin, url, {"opened_on": "2021-05-03"}, if_match=f'"{version}"')
    assert moved.status_code == 200, moved.text
    assert moved.json()["opened_on"] == "2021-05-03"


async def test_an_assignment_starts_by_its_agreements_last_day(
    client: httpx.AsyncClient, world: World
) -> None:
    bounded = await _bounded(client, world)
    position = await create_position(client, world.lyon_manager, bounded["id"], opened_on="2021-04-01")
    counsellor = await create_counsellor(client, world.lyon_manager, world.tree.lyon_metro.id)
    problem = assert_problem(
        await post_assignment(client, world.lyon_manager, position["id"], counsellor["id"], "2023-03-01"),
        422,
        "validation_error",
        "/started_on",
    )
    assert "2023-02-28" in problem["detail"]
    held = await assign(client, world.lyon_manager, position["id"], counsellor["id"], "2023-02-28")
    assert held["started_on"] == "2023-02-28"
