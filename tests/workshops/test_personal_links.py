"""Who runs a workshop is a personal link between a position and a person: `counsellor_id` follows the
personal-data rules of positions' `current_assignment`, in every read (one workshop, the search through the
direct path and through the route, a distance search, the calendars)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import SameAnswers
from tests.workshops.helpers import WORKSHOPS, Place, create_workshop


def _callers(place: Place) -> dict[str, dict[str, str]]:
    return {
        "no key": {},
        "admin": place.admin,
        "lyon manager": place.world.lyon_manager,
        "rhone manager": place.world.rhone_manager,
        "lyon viewer": place.world.lyon_viewer,
        "its counsellor": place.counsellor_key,
        "another counsellor": place.other_counsellor_key,
    }


# Who sees the counsellor of a Lyon workshop run by `place.counsellor`.
SEES_LYON = {"admin", "lyon manager", "its counsellor"}


async def _every_read(
    client: httpx.AsyncClient, route_client: httpx.AsyncClient, headers: dict[str, str], workshop_id: str
) -> list[Any]:
    """`counsellor_id` of the workshop as each read answers it to this caller."""
    seen: list[Any] = []
    for api in (client, route_client):
        one = await api.get(f"{WORKSHOPS}/{workshop_id}", headers=headers)
        assert one.status_code == 200, one.text
        seen.append(one.json()["counsellor_id"])
        for params in ({}, {"from": "2000-01-01T00:00:00Z"}, {"near": "45.76,4.86", "radius_km": 5}):
            listed = await api.get(WORKSHOPS, params=params, headers=headers)
            assert listed.status_code == 200, listed.text
            (item,) = [w for w in listed.json()["items"] if w["id"] == workshop_id]
            seen.append(item["counsellor_id"])
    return seen


async def test_counsellor_id_per_role(
    client: httpx.AsyncClient, route_client: httpx.AsyncClient, place: Place
) -> None:
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"])
    assert workshop["counsellor_id"] == place.counsellor["id"]
    for name, headers in _callers(place).items():
        expected = place.counsellor["id"] if name in SEES_LYON else None
        seen = await _every_read(client, route_client, headers, workshop["id"])
        assert seen == [expected] * len(seen), name


async def test_another_territory_is_another_scope(
    client: httpx.AsyncClient, route_client: httpx.AsyncClient, place: Place
) -> None:
    """A Rhône workshop run by the Lyon counsellor: the Rhône manager sees who runs it, the Lyon manager
    does not (the workshop is public: both read it)."""
    workshop = await create_workshop(
        client, place.admin, place.rhone_position["id"], counsellor_id=place.counsellor["id"]
    )
    expected = {
        "admin": place.counsellor["id"],
        "rhone manager": place.counsellor["id"],
        "its counsellor": place.counsellor["id"],
        "lyon manager": None,
        "lyon viewer": None,
        "another counsellor": None,
        "no key": None,
    }
    for name, headers in _callers(place).items():
        seen = await _every_read(client, route_client, headers, workshop["id"])
        assert seen == [expected[name]] * len(seen), name


async def test_the_direct_path_answers_the_same(same_answers: SameAnswers, place: Place, client: Any) -> None:
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"])
    for headers in _callers(place).values():
        await same_answers(f"{WORKSHOPS}/{workshop['id']}", headers=headers)
        await same_answers(WORKSHOPS, headers=headers)


async def test_private_workshop_of_the_territory_to_a_viewer(
    client: httpx.AsyncClient, route_client: httpx.AsyncClient, place: Place
) -> None:
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"], public=False)
    seen = await _every_read(client, route_client, place.world.lyon_viewer, workshop["id"])
    assert seen == [None] * len(seen)
    seen = await _every_read(client, route_client, place.world.lyon_manager, workshop["id"])
    assert seen == [place.counsellor["id"]] * len(seen)
