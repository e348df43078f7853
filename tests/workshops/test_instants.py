"""Every instant the API accepts is one it computes with: the extremes are 422 at their pointer, never a 500;
the last accepted instant gives a workshop whose end is stored and read back."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import MERGE_PATCH, assert_problem
from tests.workshops.helpers import WORKSHOPS, Place, create_workshop, post_workshop

RANGE = "must be an instant from 1900-01-01T00:00:00Z to 2999-12-31T23:59:59Z"
OUTSIDE = [
    "9999-12-31T23:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59-23:59",
    "3000-01-01T00:00:00Z",
    "2999-12-31T23:59:59-00:01",
    "1899-12-31T23:59:59Z",
    "1900-01-01T00:59:59+01:00",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+23:59",
]


def _out_of_range(response: httpx.Response, pointer: str) -> None:
    body = assert_problem(response, 422, "validation_error", pointer=pointer)
    assert [e["detail"] for e in body["errors"] if e["pointer"] == pointer] == [RANGE], body


@pytest.mark.parametrize("value", OUTSIDE)
async def test_extreme_instants_are_refused_on_create_and_patch(
    client: httpx.AsyncClient, place: Place, value: str
) -> None:
    _out_of_range(
        await post_workshop(client, place.admin, place.lyon_position["id"], starts_at=value), "/starts_at"
    )
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"])
    response = await client.patch(
        f"{WORKSHOPS}/{workshop['id']}",
        content=f'{{"starts_at": "{value}"}}',
        headers={**place.admin, "Content-Type": MERGE_PATCH, "If-Match": '"1"'},
    )
    _out_of_range(response, "/starts_at")
    # Unchanged.
    assert (await client.get(f"{WORKSHOPS}/{workshop['id']}", headers=place.admin)).json() == workshop
    # The same bound on the instants of a query string and of another resource.
    _out_of_range(await client.get(WORKSHOPS, params={"from": value}), "/query/from")
    _out_of_range(await client.get(f"{WORKSHOPS}.ics", params={"to": value}), "/query/to")
    response = await client.post(
        "/api/v1/api-keys", json={"name": "k", "role": "admin", "expires_at": value}, headers=place.admin
    )
    _out_of_range(response, "/expires_at")
    response = await client.get("/api/v1/positions", params={"updated_since": value}, headers=place.admin)
    _out_of_range(response, "/query/updated_since")


async def test_the_last_instant_accepted_is_computed_with(client: httpx.AsyncClient, place: Place) -> None:
    last = "2999-12-31T23:59:59Z"
    workshop = await create_workshop(
        client, place.admin, place.lyon_position["id"], starts_at=last, duration_minutes=24 * 60
    )
    assert (workshop["starts_at"], workshop["ends_at"]) == (last, "3000-01-01T23:59:59Z")
    first = await create_workshop(client, place.admin, place.lyon_position["id"], starts_at=at_first())
    response = await client.patch(
        f"{WORKSHOPS}/{first['id']}",
        content=f'{{"starts_at": "{last}", "duration_minutes": 15}}',
        headers={**place.admin, "Content-Type": MERGE_PATCH, "If-Match": '"1"'},
    )
    assert response.status_code == 200, response.text
    assert response.json()["ends_at"] == "3000-01-01T00:14:59Z"
    calendar = await client.get(f"{WORKSHOPS}/{workshop['id']}.ics")
    assert calendar.status_code == 200
    assert b"DTEND:30000101T235959Z" in calendar.content
    listed = await client.get(WORKSHOPS, params={"from": last, "to": last})
    assert {w["id"] for w in listed.json()["items"]} == {workshop["id"], first["id"]}
    response = await client.post(
        "/api/v1/api-keys", json={"name": "k", "role": "admin", "expires_at": last}, headers=place.admin
    )
    assert response.status_code == 201, response.text


def at_first() -> str:
    return "1900-01-01T00:00:00Z"
