"""The workshops' direct path (search, one workshop) answers exactly as their routes do (see
tests/core/test_direct_path.py)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from app.core.direct import answer_observers
from tests.conftest import SameAnswers
from tests.helpers import assert_problem
from tests.workshops.helpers import WORKSHOPS, Place, person
from tests.workshops.test_search import _catalogue


async def test_the_search_answers_the_same(
    client: httpx.AsyncClient, place: Place, same_answers: SameAnswers
) -> None:
    catalogue = await _catalogue(client, place)
    callers = {
        "anonymous": None,
        "admin": place.admin,
        "lyon manager": place.world.lyon_manager,
        "rhone manager": place.world.rhone_manager,
        "viewer": place.world.lyon_viewer,
        "counsellor": place.counsellor_key,
    }
    for headers in callers.values():
        await same_answers(WORKSHOPS, headers=headers)
        await same_answers(WORKSHOPS, params={"department_code": "69", "limit": "2"}, headers=headers)
    await same_answers(WORKSHOPS, params={"theme": "insertion_professionnelle"})
    await same_answers(WORKSHOPS, params=[("theme", "securite_numerique"), ("theme", "parentalite")])
    await same_answers(WORKSHOPS, params={"commune_code": "69266", "level": "intermediaire"})
    await same_answers(WORKSHOPS, params={"postcode": "69400", "has_seats": "true"})
    await same_answers(WORKSHOPS, params={"status": "scheduled", "include_total": "true"})
    await same_answers(WORKSHOPS, params={"within": str(place.tree.rhone.id)})
    await same_answers(WORKSHOPS, params={"within": str(uuid.uuid4())})  # 422: no such territory
    await same_answers(WORKSHOPS, params={"territory_id": str(place.tree.lyon.id)})
    first = await same_answers(WORKSHOPS, params={"limit": "1"})
    cursor = first.json()["next_cursor"]
    assert cursor
    await same_answers(WORKSHOPS, params={"limit": "1", "cursor": cursor})
    await same_answers(WORKSHOPS, params={"limit": "1", "cursor": cursor}, headers=place.admin)  # 422
    await same_answers(WORKSHOPS, headers={"Authorization": "Bearer cnfs_nope"})  # 401
    # What the route answers itself: a date range, a distance, a sort, invalid values.
    for params in (
        {"from": "2020-01-01T00:00:00Z"},
        {"near": "45.76,4.84"},
        {"sort": "-starts_at"},
        {"department_code": "6"},
        {"commune_code": "6912"},
        {"postcode": "6900"},
        {"theme": "cooking"},
        {"level": "expert"},
        {"status": "gone"},
        {"within": "nope"},
        {"limit": "0"},
    ):
        await same_answers(WORKSHOPS, params=params, direct=False)
    await same_answers(WORKSHOPS, params={"unknown": "x"}, direct=False)  # the route's 422
    # A spelling the route accepts is read alike: the twin parses with the route's own declarations.
    await same_answers(WORKSHOPS, params={"has_seats": "1"})

    for workshop in catalogue.values():
        path = f"{WORKSHOPS}/{workshop['id']}"
        for headers in callers.values():
            await same_answers(path, headers=headers)
        answer = await same_answers(path, headers=place.admin)
        await same_answers(path, headers={**place.admin, "If-None-Match": answer.headers["etag"]})
    await same_answers(f"{WORKSHOPS}/{uuid.uuid4()}")  # 404
    await same_answers(f"{WORKSHOPS}/not-an-id", direct=False)  # 422
    await same_answers(f"{WORKSHOPS}/{uuid.uuid4()}.ics", direct=False)  # its own route


def _without(body: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in names}


async def test_a_registration_answers_the_same(
    client: httpx.AsyncClient, route_client: httpx.AsyncClient, place: Place
) -> None:
    """Each registration changes the shared data, so that two answers are compared with the values that
    must differ (ids, tokens, instants, the address) set aside."""
    catalogue = await _catalogue(client, place)
    workshop = catalogue["lyon_cv"]
    url = f"{WORKSHOPS}/{workshop['id']}/registrations"
    seen: list[str] = []
    answer_observers.append(seen.append)
    try:
        direct = await client.post(url, json=person(1))
        assert seen == ["workshops_register"]
        route = await route_client.post(url, json=person(2))
    finally:
        answer_observers.remove(seen.append)
    assert direct.status_code == route.status_code == 201, (direct.text, route.text)
    volatile = ("id", "cancel_token", "created_at", "updated_at", "email", "first_name", "last_name", "phone")
    assert _without(direct.json(), *volatile) == _without(route.json(), *volatile)
    assert set(direct.headers) == set(route.headers)
    assert direct.headers["location"] == f"{url}/{direct.json()['id']}"
    # The same person again: 409 both ways; a full workshop: 409 both ways.
    for again in (client, route_client):
        assert_problem(await again.post(url, json=person(1)), 409, "already_registered")
    full = f"{WORKSHOPS}/{catalogue['villefranche_school']['id']}/registrations"
    assert (await client.post(full, json=person(3))).status_code == 201
    for other in (client, route_client):
        assert_problem(await other.post(full, json=person(4)), 409, "workshop_full")
    # The counters count both paths' registrations.
    after = await client.get(f"{WORKSHOPS}/{workshop['id']}")
    assert after.json()["registered_count"] == workshop["registered_count"] + 2
    assert after.json()["version"] == workshop["version"] + 2


async def test_what_the_registration_route_answers_itself(
    client: httpx.AsyncClient, route_client: httpx.AsyncClient, place: Place
) -> None:
    catalogue = await _catalogue(client, place)
    url = f"{WORKSHOPS}/{catalogue['lyon_cv']['id']}/registrations"
    seen: list[str] = []
    answer_observers.append(seen.append)
    try:
        for kwargs in (
            {"json": {}},
            {"json": {**person(5), "email": "not an address"}},
            {"content": b"{", "headers": {"Content-Type": "application/json"}},
            {"content": b"email=x", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            {"json": person(6), "headers": {"Idempotency-Key": "k-1"}},
        ):
            direct = await client.post(url, **kwargs)  # type: ignore[arg-type]
            assert seen == [], kwargs
            assert direct.status_code in (201, 415, 422), direct.text
        unknown = f"{WORKSHOPS}/{uuid.uuid4()}/registrations"
        assert_problem(await client.post(unknown, json=person(7)), 404, "not_found")
        assert seen == ["workshops_register"]  # answered (404) by the direct path
        assert_problem(await route_client.post(unknown, json=person(7)), 404, "not_found")
    finally:
        answer_observers.remove(seen.append)
