"""The public search: every filter, distance (box then haversine), the subtree, pagination, query counts."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import httpx

from tests.helpers import assert_problem, next_link
from tests.workshops.helpers import VENUE, WORKSHOPS, Place, at, create_workshop, register

# Lyon (Part-Dieu), Villeurbanne (~3 km), Villefranche-sur-Saône (~30 km), Toulouse (~360 km).
VILLEURBANNE = {
    **VENUE,
    "name": "MJC",
    "postcode": "69100",
    "commune_code": "69266",
    "lat": 45.7719,
    "lon": 4.8902,
}
VILLEFRANCHE = {
    **VENUE,
    "name": "Médiathèque",
    "postcode": "69400",
    "commune_code": "69264",
    "lat": 45.9898,
    "lon": 4.7186,
}


async def _ids(client: httpx.AsyncClient, headers: dict[str, str] | None = None, **params: Any) -> list[str]:
    response = await client.get(WORKSHOPS, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [w["id"] for w in response.json()["items"]]


async def _catalogue(client: httpx.AsyncClient, place: Place) -> dict[str, dict[str, Any]]:
    lyon, rhone = place.lyon_position["id"], place.rhone_position["id"]
    return {
        "lyon_cv": await create_workshop(client, place.admin, lyon, starts_at=at(3)),
        "villeurbanne_data": await create_workshop(
            client,
            place.admin,
            lyon,
            venue=VILLEURBANNE,
            themes=["securite_numerique"],
            level="intermediaire",
            starts_at=at(4),
        ),
        "villefranche_school": await create_workshop(
            client,
            place.admin,
            rhone,
            venue=VILLEFRANCHE,
            themes=["scolarite_et_numerique", "parentalite"],
            starts_at=at(5),
            capacity=1,
            waitlist_capacity=0,
        ),
        "remote": await create_workshop(
            client,
            place.admin,
            lyon,
            format="remote",
            venue=None,
            online_url="https://visio.example.org/x",
            themes=["culture_numerique"],
            starts_at=at(6),
        ),
        "past": await create_workshop(client, place.admin, lyon, starts_at=at(-3)),
    }


async def test_every_filter(client: httpx.AsyncClient, place: Place) -> None:
    w = await _catalogue(client, place)
    tree = place.tree
    upcoming = [w[k]["id"] for k in ("lyon_cv", "villeurbanne_data", "villefranche_school", "remote")]
    assert await _ids(client) == upcoming
    assert await _ids(client, **{"from": at(-10)}) == [w["past"]["id"], *upcoming]
    assert await _ids(client, to=at(4, 1)) == upcoming[:2]
    lyon_ids = [w[k]["id"] for k in ("lyon_cv", "villeurbanne_data", "remote")]
    assert await _ids(client, territory_id=str(tree.lyon.id)) == lyon_ids
    assert await _ids(client, territory_id=str(tree.lyon_metro.id)) == []
    # `within` the Métropole: its commune Lyon's workshops; the Rhône's subtree holds Villefranche only.
    assert await _ids(client, within=str(tree.lyon_metro.id)) == [
        w[k]["id"] for k in ("lyon_cv", "villeurbanne_data", "remote")
    ]
    assert await _ids(client, within=str(tree.rhone.id)) == [w["villefranche_school"]["id"]]
    assert await _ids(client, department_code="69") == upcoming[:3]
    assert await _ids(client, commune_code="69266") == [w["villeurbanne_data"]["id"]]
    assert await _ids(client, postcode="69400") == [w["villefranche_school"]["id"]]
    assert await _ids(client, theme=["parentalite", "culture_numerique"]) == [
        w["villefranche_school"]["id"],
        w["remote"]["id"],
    ]
    assert await _ids(client, level="intermediaire") == [w["villeurbanne_data"]["id"]]
    await register(client, w["villefranche_school"]["id"], 1)
    assert w["villefranche_school"]["id"] not in await _ids(client, has_seats="true")
    await client.post(f"{WORKSHOPS}/{w['lyon_cv']['id']}/cancel", json={"reason": "x"}, headers=place.admin)
    assert await _ids(client, status="cancelled") == [w["lyon_cv"]["id"]]
    assert w["lyon_cv"]["id"] not in await _ids(client, has_seats="true")
    assert await _ids(client, sort="-starts_at") == upcoming[::-1]


async def test_near_with_distance_sort(client: httpx.AsyncClient, place: Place) -> None:
    w = await _catalogue(client, place)
    # From Villeurbanne's venue: Villeurbanne (0 km), Lyon Part-Dieu (~3 km), Villefranche (~30 km).
    near = f"{VILLEURBANNE['lat']},{VILLEURBANNE['lon']}"
    assert await _ids(client, near=near, radius_km=5, sort="distance") == [
        w["villeurbanne_data"]["id"],
        w["lyon_cv"]["id"],
    ]
    assert await _ids(client, near=near, radius_km=40, sort="distance") == [
        w["villeurbanne_data"]["id"],
        w["lyon_cv"]["id"],
        w["villefranche_school"]["id"],
    ]
    # Default radius 10 km, date order.
    assert await _ids(client, near=near) == [w["lyon_cv"]["id"], w["villeurbanne_data"]["id"]]
    # Distance sort pages with a cursor.
    first = await client.get(
        WORKSHOPS, params={"near": near, "radius_km": 40, "sort": "distance", "limit": 2}
    )
    link = next_link(first)
    assert link is not None
    rest = await client.get(link)
    assert [x["id"] for x in rest.json()["items"]] == [w["villefranche_school"]["id"]]


async def test_bad_search_parameters(client: httpx.AsyncClient, place: Place) -> None:
    for params, pointer in [
        ({"radius_km": "101", "near": "45,4"}, "/query/radius_km"),
        ({"near": "somewhere"}, "/query/near"),
        ({"near": "91,4"}, "/query/near"),
        ({"radius_km": "5"}, "/query/radius_km"),
        ({"sort": "distance"}, "/query/sort"),
        ({"sort": "title"}, "/query/sort"),
        ({"department_code": "6"}, "/query/department_code"),
        ({"theme": "cuisine"}, "/query/theme/0"),
        ({"from": "2026-01-01T00:00:00"}, "/query/from"),
    ]:
        body = assert_problem(await client.get(WORKSHOPS, params=params), 422, "validation_error")
        assert any(e["pointer"].startswith(pointer.rsplit("/", 1)[0]) for e in body["errors"]), (params, body)
    lyon = str(place.tree.lyon.id)
    unknown = lyon[:-1] + ("1" if lyon.endswith("0") else "0")
    assert_problem(await client.get(WORKSHOPS, params={"within": unknown}), 422, "validation_error")


async def test_pages_and_scoped_keys(client: httpx.AsyncClient, place: Place) -> None:
    lyon = place.lyon_position["id"]
    made = [await create_workshop(client, place.admin, lyon, starts_at=at(1 + i)) for i in range(5)]
    private = await create_workshop(client, place.admin, lyon, starts_at=at(9), public=False)
    seen: list[str] = []
    url: str | None = f"{WORKSHOPS}?limit=2"
    while url:
        response = await client.get(url)
        seen += [w["id"] for w in response.json()["items"]]
        url = next_link(response)
    assert seen == [w["id"] for w in made]
    # A scoped key also sees its territories' private workshops; another territory's key does not.
    assert private["id"] in await _ids(client, place.world.lyon_viewer)
    assert private["id"] not in await _ids(client, place.world.rhone_manager)


async def test_constant_queries_per_page(
    client: httpx.AsyncClient, place: Place, count_queries: Callable[..., Any]
) -> None:
    for i in range(6):
        await create_workshop(client, place.admin, place.lyon_position["id"], starts_at=at(1 + i))
    counts = []
    for limit in (1, 6):
        with count_queries() as counter:
            response = await client.get(
                WORKSHOPS,
                params={"limit": limit, "department_code": "69", "theme": "insertion_professionnelle"},
            )
        assert len(response.json()["items"]) == limit
        counts.append(counter.count)
    assert counts[0] == counts[1] <= 2, counts


async def test_instants_are_rfc_3339_not_numbers(client: httpx.AsyncClient) -> None:
    for value in ("0.5", "1700000000", "1e9"):
        assert_problem(
            await client.get(WORKSHOPS, params={"to": value}), 422, "validation_error", "/query/to"
        )
    assert (await client.get(WORKSHOPS, params={"to": "2030-01-01T00:00:00+01:00"})).status_code == 200


async def test_has_seats_both_ways(client: httpx.AsyncClient, place: Place) -> None:
    """`has_seats=true` keeps a scheduled workshop with one seat left, drops it at none; every path of the
    search (the direct path, the route's template with a date range, the calendar feed) agrees."""
    lyon = place.lyon_position["id"]
    one_left = await create_workshop(client, place.admin, lyon, capacity=2, waitlist_capacity=1)
    await register(client, one_left["id"], 1)
    assert (await client.get(f"{WORKSHOPS}/{one_left['id']}")).json()["seats_left"] == 1
    other = await create_workshop(client, place.admin, lyon, capacity=5, starts_at=at(8))

    async def with_seats() -> list[list[str]]:
        direct = await _ids(client, has_seats="true")
        ranged = await _ids(client, has_seats="true", **{"from": at(0), "to": at(30)})
        feed = await client.get(f"{WORKSHOPS}.ics", params={"has_seats": "true"})
        return [direct, ranged, [i for i in (one_left["id"], other["id"]) if i in feed.text]]

    assert await with_seats() == [[one_left["id"], other["id"]]] * 3
    assert one_left["id"] in await _ids(client, has_seats="false")
    await register(client, one_left["id"], 2)  # the last seat; the next one waits
    assert await with_seats() == [[other["id"]]] * 3
    assert one_left["id"] in await _ids(client)


def _haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dlat, dlon = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dlat / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlon / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(a))


async def test_near_is_a_circle_not_its_bounding_box(client: httpx.AsyncClient, place: Place) -> None:
    """Points just inside and just outside the radius, and one in the corner of the bounding box (inside the
    box, outside the circle): only the first is near."""
    lat, lon, radius = VENUE["lat"], VENUE["lon"], 5.0
    km_per_degree = math.pi * 6371.0088 / 180
    dlat = radius / km_per_degree
    dlon = radius / (km_per_degree * math.cos(math.radians(lat)))
    points = {
        "inside": (lat + dlat * 0.98, lon),  # 4.9 km north
        "inside_diagonal": (lat - dlat * 0.69, lon + dlon * 0.69),  # ~4.9 km south-east
        "outside": (lat + dlat * 1.02, lon),  # 5.1 km north, just outside the box as well
        "corner": (lat + dlat * 0.9, lon - dlon * 0.9),  # in the box, ~6.4 km away
    }
    distances = {name: _haversine_km(lat, lon, *point) for name, point in points.items()}
    assert distances["inside"] < radius
    assert distances["inside_diagonal"] < radius
    assert distances["outside"] > radius
    assert distances["corner"] > radius * 1.2
    made = {}
    for name, (p_lat, p_lon) in points.items():
        venue = {**VENUE, "name": name, "lat": round(p_lat, 6), "lon": round(p_lon, 6)}
        made[name] = await create_workshop(client, place.admin, place.lyon_position["id"], venue=venue)
    near = f"{lat},{lon}"
    found = await _ids(client, near=near, radius_km=radius)
    assert set(found) == {made["inside"]["id"], made["inside_diagonal"]["id"]}
    by_distance = await _ids(client, near=near, radius_km=radius, sort="distance")
    assert set(by_distance) == set(found)
    feed = await client.get(f"{WORKSHOPS}.ics", params={"near": near, "radius_km": radius})
    assert [name for name in points if made[name]["id"] in feed.text] == ["inside", "inside_diagonal"]
    # A wider circle takes the corner.
    assert made["corner"]["id"] in await _ids(client, near=near, radius_km=7)
