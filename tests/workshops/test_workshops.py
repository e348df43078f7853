"""Workshops: creation rules, who may write and read them, versions, cancellation, the change feed."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx

from tests.helpers import MERGE_PATCH, assert_problem
from tests.workshops.helpers import (
    CHANGES,
    VENUE,
    WORKSHOPS,
    Place,
    at,
    create_workshop,
    post_workshop,
    workshop_body,
)


async def test_created_under_a_position_with_its_territory_and_counsellor(
    client: httpx.AsyncClient, place: Place
) -> None:
    response = await post_workshop(client, place.admin, place.lyon_position["id"])
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"{WORKSHOPS}/{body['id']}"
    assert response.headers["etag"] == '"1"'
    assert body["territory_id"] == str(place.tree.lyon.id)
    assert body["counsellor_id"] == place.counsellor["id"]
    assert body["venue"] == VENUE
    assert (body["registered_count"], body["waitlisted_count"], body["seats_left"]) == (0, 0, 12)
    assert body["status"] == "scheduled"
    assert body["online_url"] is None
    got = await client.get(f"{WORKSHOPS}/{body['id']}", headers=place.admin)
    assert got.json() == body


async def test_public_reads_carry_no_personal_link(client: httpx.AsyncClient, place: Place) -> None:
    public = await create_workshop(client, place.admin, place.lyon_position["id"])
    private = await create_workshop(client, place.admin, place.lyon_position["id"], public=False)
    anonymous = await client.get(f"{WORKSHOPS}/{public['id']}")
    assert anonymous.status_code == 200
    assert anonymous.json()["counsellor_id"] is None
    assert anonymous.headers["cache-control"].startswith("public")
    assert_problem(await client.get(f"{WORKSHOPS}/{private['id']}"), 404, "not_found")
    # A key of the territory sees it; one of another territory does not.
    assert (
        await client.get(f"{WORKSHOPS}/{private['id']}", headers=place.world.lyon_viewer)
    ).status_code == 200
    assert_problem(
        await client.get(f"{WORKSHOPS}/{private['id']}", headers=place.world.rhone_manager), 404, "not_found"
    )
    listed = await client.get(WORKSHOPS)
    assert [w["id"] for w in listed.json()["items"]] == [public["id"]]
    assert listed.json()["items"][0]["counsellor_id"] is None


async def test_remote_needs_a_url_and_in_person_a_venue(client: httpx.AsyncClient, place: Place) -> None:
    position = place.lyon_position["id"]
    assert_problem(
        await post_workshop(client, place.admin, position, venue=None), 422, "validation_error", "/venue"
    )
    response = await post_workshop(client, place.admin, position, format="remote", venue=None)
    assert_problem(response, 422, "validation_error", "/online_url")
    remote = await create_workshop(
        client, place.admin, position, format="remote", venue=None, online_url="https://visio.example.org/a"
    )
    assert remote["venue"] is None
    assert remote["online_url"] == "https://visio.example.org/a"


async def test_venue_checked_against_the_referential(client: httpx.AsyncClient, place: Place) -> None:
    position = place.lyon_position["id"]
    response = await post_workshop(client, place.admin, position, venue={**VENUE, "commune_code": "69999"})
    assert_problem(response, 422, "unknown_commune", "/venue/commune_code")
    response = await post_workshop(client, place.admin, position, venue={**VENUE, "postcode": "6900"})
    assert_problem(response, 422, "validation_error")


async def test_themes_and_level_from_the_referentials(client: httpx.AsyncClient, place: Place) -> None:
    position = place.lyon_position["id"]
    assert_problem(
        await post_workshop(client, place.admin, position, themes=["cuisine"]), 422, "validation_error"
    )
    assert_problem(await post_workshop(client, place.admin, position, themes=[]), 422, "validation_error")
    assert_problem(
        await post_workshop(client, place.admin, position, level="expert"), 422, "validation_error"
    )
    # A theme listed twice would count twice in the statistics by theme: each theme once.
    twice = await post_workshop(client, place.admin, position, themes=["email", "sante", "email"])
    assert_problem(twice, 422, "validation_error", "/themes")
    assert "email is listed twice" in twice.json()["errors"][0]["detail"]
    workshop = await create_workshop(client, place.admin, position, themes=["email", "sante"])
    patched = await client.patch(
        f"{WORKSHOPS}/{workshop['id']}",
        json={"themes": ["sante", "sante"]},
        headers={**place.admin, "If-Match": f'"{workshop["version"]}"'},
    )
    assert_problem(patched, 422, "validation_error", "/themes")


async def test_who_may_create(client: httpx.AsyncClient, place: Place) -> None:
    lyon, rhone = place.lyon_position["id"], place.rhone_position["id"]
    assert (await post_workshop(client, place.world.lyon_manager, lyon)).status_code == 201
    assert_problem(
        await post_workshop(client, place.world.lyon_manager, rhone), 422, "unknown_reference", "/position_id"
    )
    assert_problem(await post_workshop(client, place.world.lyon_viewer, lyon), 403, "forbidden")
    assert_problem(await post_workshop(client, {}, lyon), 401, "unauthenticated")
    own = await post_workshop(client, place.counsellor_key, lyon)
    assert own.status_code == 201, own.text
    assert own.json()["counsellor_id"] == place.counsellor["id"]
    # A counsellor who does not hold the position cannot run workshops under it.
    assert_problem(
        await post_workshop(client, place.other_counsellor_key, lyon),
        422,
        "unknown_reference",
        "/position_id",
    )


async def test_counsellor_changes_only_its_own(client: httpx.AsyncClient, place: Place) -> None:
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"])
    url = f"{WORKSHOPS}/{workshop['id']}"
    headers = {"If-Match": '"1"', "Content-Type": MERGE_PATCH}
    other = await client.patch(
        url, content=b'{"title": "x"}', headers={**place.other_counsellor_key, **headers}
    )
    assert_problem(other, 403, "forbidden")
    mine = await client.patch(url, content=b'{"title": "CV"}', headers={**place.counsellor_key, **headers})
    assert mine.status_code == 200, mine.text
    assert mine.json()["title"] == "CV"
    assert mine.json()["version"] == 2


async def test_patch_needs_if_match_and_checks_capacity(client: httpx.AsyncClient, place: Place) -> None:
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"], capacity=2)
    url = f"{WORKSHOPS}/{workshop['id']}"
    assert_problem(
        await client.patch(url, json={"capacity": 3}, headers=place.admin), 428, "precondition_required"
    )
    stale = await client.patch(url, json={"capacity": 3}, headers={**place.admin, "If-Match": '"9"'})
    assert_problem(stale, 412, "precondition_failed")
    for n in range(2):
        await client.post(
            f"{url}/registrations", json={"first_name": "A", "last_name": "B", "email": f"p{n}@example.org"}
        )
    version = (await client.get(url, headers=place.admin)).json()["version"]
    lower = await client.patch(url, json={"capacity": 1}, headers={**place.admin, "If-Match": f'"{version}"'})
    assert_problem(lower, 409, "capacity_below_registrations")
    starts_at = at(9)
    moved = await client.patch(
        url,
        json={"starts_at": starts_at, "duration_minutes": 60},
        headers={**place.admin, "If-Match": f'"{version}"'},
    )
    assert moved.status_code == 200, moved.text
    # An hour after the start that was sent (`at` read again could be a second later).
    ends_at = datetime.fromisoformat(starts_at) + timedelta(hours=1)
    assert moved.json()["ends_at"] == ends_at.isoformat().replace("+00:00", "Z")


async def test_cancel_and_the_change_feed(client: httpx.AsyncClient, place: Place) -> None:
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"])
    url = f"{WORKSHOPS}/{workshop['id']}"
    await client.patch(
        url, json={"venue": {**VENUE, "name": "Salle B"}}, headers={**place.admin, "If-Match": '"1"'}
    )
    cancelled = await client.post(
        f"{url}/cancel", json={"reason": "Intervenant malade."}, headers=place.admin
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancel_reason"] == "Intervenant malade."
    again = await client.post(f"{url}/cancel", json={"reason": "x"}, headers=place.admin)
    assert_problem(again, 409, "workshop_not_editable")
    feed = await client.get(CHANGES, params={"resource": "workshops"}, headers=place.world.lyon_manager)
    entries = [(c["id"], c["action"], c["version"]) for c in feed.json()["items"]]
    assert entries == [
        (workshop["id"], "created", 1),
        (workshop["id"], "updated", 2),
        (workshop["id"], "updated", 3),
    ]
    assert all(c["territory_id"] == str(place.tree.lyon.id) for c in feed.json()["items"])


async def test_etag_and_idempotent_creation(client: httpx.AsyncClient, place: Place) -> None:
    body = workshop_body(place.lyon_position["id"])
    headers = {**place.admin, "Idempotency-Key": "w-1"}
    first = await client.post(WORKSHOPS, json=body, headers=headers)
    second = await client.post(WORKSHOPS, json=body, headers=headers)
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    url = first.headers["location"]
    unchanged = await client.get(url, headers={**place.admin, "If-None-Match": '"1"'})
    assert unchanged.status_code == 304
