"""iCalendar feeds, parsed back with the icalendar library."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from icalendar import Calendar

from tests.helpers import MERGE_PATCH, assert_problem
from tests.workshops.helpers import WORKSHOPS, Place, at, create_workshop, register


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
    # No public page set: no URL (the JSON API is no page for a person).
    assert "url" not in event
    assert str(event["sequence"]) == "0"
    assert str(calendar["x-wr-calname"]) == str(calendar["name"]) == workshop["title"]
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


async def _event(client: httpx.AsyncClient, workshop_id: str) -> Any:
    response = await client.get(f"{WORKSHOPS}/{workshop_id}.ics")
    assert response.status_code == 200, response.text
    (event,) = Calendar.from_ical(response.content).walk("VEVENT")
    return event


async def _patch(
    client: httpx.AsyncClient, place: Place, workshop: dict[str, Any], body: str
) -> dict[str, Any]:
    current = await client.get(f"{WORKSHOPS}/{workshop['id']}", headers=place.admin)
    response = await client.patch(
        f"{WORKSHOPS}/{workshop['id']}",
        content=body,
        headers={**place.admin, "Content-Type": MERGE_PATCH, "If-Match": current.headers["etag"]},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_sequence_rises_only_with_what_a_calendar_shows(
    client: httpx.AsyncClient, place: Place
) -> None:
    """RFC 5545 3.8.7.4: SEQUENCE rises when the start, the end, the place or the status change; registrations
    (which change the workshop's version) and a new title or capacity do not raise it."""
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"], capacity=2)
    assert int((await _event(client, workshop["id"]))["sequence"]) == 0
    for n in range(5):
        assert (await register(client, workshop["id"], n)).status_code == 201
    after = (await client.get(f"{WORKSHOPS}/{workshop['id']}", headers=place.admin)).json()
    assert after["version"] == workshop["version"] + 5
    event = await _event(client, workshop["id"])
    assert int(event["sequence"]) == 0
    await _patch(client, place, workshop, '{"title": "Rédiger son CV", "capacity": 4}')
    assert int((await _event(client, workshop["id"]))["sequence"]) == 0
    await _patch(client, place, workshop, f'{{"starts_at": "{at(9)}"}}')
    assert int((await _event(client, workshop["id"]))["sequence"]) == 1
    await _patch(client, place, workshop, '{"duration_minutes": 90}')
    assert int((await _event(client, workshop["id"]))["sequence"]) == 2
    venue = {**workshop["venue"], "name": "Bibliothèque du 1er"}
    await _patch(client, place, workshop, '{"venue": ' + json.dumps(venue) + "}")
    event = await _event(client, workshop["id"])
    assert int(event["sequence"]) == 3
    assert "Bibliothèque du 1er" in str(event["location"])
    # The same values again change nothing.
    await _patch(client, place, workshop, '{"duration_minutes": 90}')
    assert int((await _event(client, workshop["id"]))["sequence"]) == 3
    await client.post(
        f"{WORKSHOPS}/{workshop['id']}/cancel", json={"reason": "Salle indisponible."}, headers=place.admin
    )
    event = await _event(client, workshop["id"])
    assert (int(event["sequence"]), str(event["status"])) == (4, "CANCELLED")
    assert "Atelier annulé : Salle indisponible." in str(event["description"])
    # The feed carries the same SEQUENCE.
    feed = await client.get(f"{WORKSHOPS}.ics", params={"status": "cancelled"})
    (listed,) = Calendar.from_ical(feed.content).walk("VEVENT")
    assert int(listed["sequence"]) == 4


async def test_description_and_calendar_name(client: httpx.AsyncClient, place: Place) -> None:
    lyon = place.lyon_position["id"]
    in_person = await create_workshop(client, place.admin, lyon, description="Apportez vos diplômes.")
    remote = await create_workshop(
        client,
        place.admin,
        lyon,
        starts_at=at(8),
        format="remote",
        venue=None,
        online_url="https://v.example.org/x",
        themes=["email", "insertion_professionnelle"],
    )
    response = await client.get(f"{WORKSHOPS}.ics")
    calendar = Calendar.from_ical(response.content)
    assert str(calendar["name"]) == str(calendar["x-wr-calname"]) == "Ateliers numériques (CnFS)"
    first, second = calendar.walk("VEVENT")
    assert str(first["uid"]).startswith(in_person["id"])
    assert str(first["description"]).splitlines() == [
        "Apportez vos diplômes.",
        "Lieu : Médiathèque de la Part-Dieu, 30 boulevard Vivier-Merle, 69003",
        "Niveau : Débutant",
        "Thèmes : Insertion professionnelle",
    ]
    lines = str(second["description"]).splitlines()
    assert lines[0] == "En ligne : https://v.example.org/x", lines
    assert lines[1].startswith("Niveau : ")
    assert lines[2].startswith("Thèmes : ")
    assert lines[2].count(", ") == 1
    assert str(remote["id"]) in str(second["uid"])
    for event in (first, second):
        assert "url" not in event


@pytest.fixture
def page_url(app: FastAPI) -> Iterator[str]:
    original = app.state.settings
    template = "https://www.example.fr/ateliers/{id}"
    app.state.settings = original.model_copy(update={"workshop_page_url": template})
    try:
        yield template
    finally:
        app.state.settings = original


async def test_url_is_the_public_page_when_set(
    client: httpx.AsyncClient, place: Place, page_url: str
) -> None:
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"])
    event = await _event(client, workshop["id"])
    assert str(event["url"]) == page_url.replace("{id}", workshop["id"])
    response = await client.get(f"{WORKSHOPS}.ics", headers={"Host": "evil.example"})
    (listed,) = Calendar.from_ical(response.content).walk("VEVENT")
    assert str(listed["url"]) == f"https://www.example.fr/ateliers/{workshop['id']}"
    assert b"evil.example" not in response.content
