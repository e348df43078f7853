"""iCalendar feeds, parsed back with the icalendar library."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
from icalendar import Calendar

from tests.helpers import assert_problem
from tests.workshops.helpers import WORKSHOPS, Place, at, create_workshop


async def test_one_workshop(client: httpx.AsyncClient, place: Place) -> None:
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"], starts_at=at(5))
    response = await client.get(f"{WORKSHOPS}/{workshop['id']}.ics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/calendar; charset=utf-8"
    calendar = Calendar.from_ical(response.content)
    assert str(calendar["version"]) == "2.0"
    (event,) = calendar.walk("VEVENT")
    assert str(event["uid"]) == f"{workshop['id']}@workshops.cnfs-api"
    start = event.decoded("dtstart")
    assert start.tzinfo is not None
    assert start.utcoffset() == timedelta(0)
    assert start == datetime.fromisoformat(workshop["starts_at"])
    assert event.decoded("dtend") - start == timedelta(minutes=120)
    assert event.decoded("dtstamp").tzinfo is not None
    assert "Médiathèque de la Part-Dieu" in str(event["location"])
    assert str(event["url"]).endswith(f"{WORKSHOPS}/{workshop['id']}")
    assert str(event["status"]) == "CONFIRMED"
    assert b"DTSTART:" in response.content
    assert b"Z\r\n" in response.content

    await client.post(f"{WORKSHOPS}/{workshop['id']}/cancel", json={"reason": "x"}, headers=place.admin)
    cancelled = Calendar.from_ical((await client.get(f"{WORKSHOPS}/{workshop['id']}.ics")).content)
    assert str(cancelled.walk("VEVENT")[0]["status"]) == "CANCELLED"


async def test_filtered_feed(client: httpx.AsyncClient, place: Place) -> None:
    lyon = place.lyon_position["id"]
    first = await create_workshop(client, place.admin, lyon, starts_at=at(2))
    await create_workshop(client, place.admin, lyon, starts_at=at(3), themes=["email"])
    remote = await create_workshop(
        client,
        place.admin,
        lyon,
        starts_at=at(4),
        format="remote",
        venue=None,
        online_url="https://v.example.org/x",
    )
    private = await create_workshop(client, place.admin, lyon, starts_at=at(5), public=False)
    response = await client.get(f"{WORKSHOPS}.ics", params={"theme": "insertion_professionnelle"})
    events = Calendar.from_ical(response.content).walk("VEVENT")
    assert [str(e["uid"]).split("@")[0] for e in events] == [first["id"], remote["id"]]
    assert str(events[1]["location"]) == "https://v.example.org/x"
    assert private["id"] not in (await client.get(f"{WORKSHOPS}.ics")).text
    assert_problem(await client.get(f"{WORKSHOPS}/{private['id']}.ics"), 404, "not_found")
    assert_problem(await client.get(f"{WORKSHOPS}.ics", params={"near": "x"}), 422, "validation_error")


async def test_other_methods_on_the_calendar_are_405(client: httpx.AsyncClient, place: Place) -> None:
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"])
    response = await client.patch(f"{WORKSHOPS}/{workshop['id']}.ics", json={}, headers=place.admin)
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET"
    assert_problem(await client.get(f"{WORKSHOPS}/not-a-uuid"), 422, "validation_error")
