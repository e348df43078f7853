"""GET /stats/positions: the programme totals' figures, positions' derived status, groupings by the
agreement's territory and its kind, filters."""

from __future__ import annotations

from typing import Any

import httpx

from tests.agreements.helpers import create_agreement, create_signed, terminate
from tests.helpers import assert_problem
from tests.positions.helpers import POSITIONS, assign, create_counsellor, create_position, day
from tests.stats.helpers import STATS
from tests.workshops.helpers import Place

URL = f"{STATS}/positions"


async def get(client: httpx.AsyncClient, headers: dict[str, str] | None = None, **params: Any) -> Any:
    response = await client.get(URL, params={k: str(v) for k, v in params.items()}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _more(client: httpx.AsyncClient, place: Place) -> dict[str, Any]:
    """Beside the place (Lyon: 3 granted, 1 occupied position in Lyon; Rhône: 2 granted, 1 vacant): a
    closed Rhône position, a draft for Toulouse (it reserves 4), a terminated agreement (it frees its 6),
    and a position whose counsellor left yesterday (vacant)."""
    admin, tree, programme_id = place.admin, place.tree, place.world.lyon["programme_id"]
    closed = await create_position(client, admin, place.world.rhone["id"])
    response = await client.post(
        f"{POSITIONS}/{closed['id']}/close",
        json={"closed_on": "2022-01-31", "reason": "Non pourvu."},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    draft = await create_agreement(
        client, admin, programme_id, tree.toulouse.id, reference="T", positions_granted=4
    )
    ended = await create_signed(client, admin, programme_id, tree.hg.id, reference="HG", positions_granted=6)
    assert (await terminate(client, admin, ended["id"])).status_code == 200
    left = await create_position(
        client, admin, place.world.lyon["id"], territory_id=str(tree.villeurbanne.id)
    )
    counsellor = await create_counsellor(client, admin, tree.lyon_metro.id, email="c3@example.org")
    assignment = await assign(client, admin, left["id"], counsellor["id"], started_on="2022-01-03")
    response = await client.post(
        f"/api/v1/assignments/{assignment['id']}/end",
        json={"ended_on": day(-1), "end_reason": "demission"},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    return draft


async def test_totals_agree_with_the_programme_and_the_positions(
    client: httpx.AsyncClient, place: Place
) -> None:
    await _more(client, place)
    programme_id = place.world.lyon["programme_id"]
    programme = (await client.get(f"/api/v1/programmes/{programme_id}")).json()
    body = await get(client)
    assert body["items"] == []
    assert body["totals"] == {
        "granted": programme["positions_granted"],
        "open": 3,
        "occupied": 1,
        "vacant": 2,
        "closed": 1,
        "subsidy_committed_cents": programme["subsidy_committed_cents"],
        "occupancy_rate": 1 / 3,
    }
    assert body["totals"]["granted"] == 3 + 2 + 4
    assert await get(client, programme_id=programme_id) == body
    listed = (
        await client.get(
            POSITIONS, params={"status": "occupied", "include_total": "true"}, headers=place.admin
        )
    ).json()
    assert listed["total"] == 1


async def test_group_by_the_agreement_territory_and_its_kind(client: httpx.AsyncClient, place: Place) -> None:
    await _more(client, place)
    tree = place.tree
    body = await get(client, group_by="territory")
    rows = {i["territory_id"]: (i["granted"], i["open"], i["occupied"], i["closed"]) for i in body["items"]}
    # The Lyon positions (in Lyon and Villeurbanne) count under the Métropole's agreement; the terminated
    # agreement's territory shows no granted position.
    assert rows == {
        str(tree.lyon_metro.id): (3, 2, 1, 0),
        str(tree.rhone.id): (2, 1, 0, 1),
        str(tree.toulouse.id): (4, 0, 0, 0),
    }
    assert [i["territory_id"] for i in body["items"]] == sorted(rows)
    assert body["totals"] == (await get(client))["totals"]
    kinds = await get(client, group_by="kind")
    assert [(i["kind"], i["granted"], i["open"], i["occupancy_rate"]) for i in kinds["items"]] == [
        ("region", 0, 0, None),
        ("departement", 2, 1, 0.0),
        ("metropole", 3, 2, 0.5),
        ("epci", 0, 0, None),
        ("commune", 4, 0, None),
    ]
    assert kinds["totals"] == body["totals"]


async def test_filters(client: httpx.AsyncClient, place: Place) -> None:
    await _more(client, place)
    tree = place.tree
    metro = await get(client, territory_id=tree.lyon_metro.id)
    assert (metro["totals"]["granted"], metro["totals"]["open"], metro["totals"]["occupancy_rate"]) == (
        3,
        2,
        0.5,
    )
    # The agreement's territory decides: Lyon itself employs nobody.
    assert (await get(client, territory_id=tree.lyon.id))["totals"]["open"] == 0
    ara = await get(client, within=tree.ara.id, group_by="kind")
    assert (ara["totals"]["granted"], ara["totals"]["open"], ara["totals"]["closed"]) == (5, 3, 1)
    occ = await get(client, within=tree.occ.id)
    assert (occ["totals"]["granted"], occ["totals"]["subsidy_committed_cents"]) == (4, 4 * 5_000_000)
    # A scoped key reads the same public figures.
    assert await get(client, place.world.rhone_manager, group_by="territory") == await get(
        client, group_by="territory"
    )


async def test_refusals(client: httpx.AsyncClient, place: Place) -> None:
    unknown = "0190aaaa-0000-7000-8000-00000000dead"
    assert_problem(
        await client.get(URL, params={"programme_id": unknown}),
        422,
        "validation_error",
        "/query/programme_id",
    )
    assert_problem(
        await client.get(URL, params={"within": unknown}), 422, "validation_error", "/query/within"
    )
    assert_problem(await client.get(URL, params={"group_by": "theme"}), 422, "validation_error")
    assert_problem(await client.get(URL, params={"status": "open"}), 422, "validation_error", "/query/status")
