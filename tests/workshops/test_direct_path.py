"""The workshops' direct path (search, one workshop) answers exactly as their routes do (see
tests/core/test_direct_path.py)."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import SameAnswers
from tests.workshops.helpers import WORKSHOPS, Place
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
        {"has_seats": "1"},
        {"status": "gone"},
        {"within": "nope"},
        {"limit": "0"},
    ):
        await same_answers(WORKSHOPS, params=params, direct=False)
    await same_answers(WORKSHOPS, params={"unknown": "x"})  # 422 from the caller's checks, both ways

    for workshop in catalogue.values():
        path = f"{WORKSHOPS}/{workshop['id']}"
        for headers in callers.values():
            await same_answers(path, headers=headers)
        answer = await same_answers(path, headers=place.admin)
        await same_answers(path, headers={**place.admin, "If-None-Match": answer.headers["etag"]})
    await same_answers(f"{WORKSHOPS}/{uuid.uuid4()}")  # 404
    await same_answers(f"{WORKSHOPS}/not-an-id", direct=False)  # 422
    await same_answers(f"{WORKSHOPS}/{uuid.uuid4()}.ics", direct=False)  # its own route
