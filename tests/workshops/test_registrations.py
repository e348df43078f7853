"""Registrations: confirmed, waitlisted, full; the cancel token; promotion; who reads them; attendance."""

from __future__ import annotations

import logging
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.workshops.models import Registration
from tests.helpers import assert_problem, service_logs
from tests.workshops.helpers import WORKSHOPS, Place, at, create_workshop, person, register


async def _workshop(client: httpx.AsyncClient, place: Place, **changes: Any) -> dict[str, Any]:
    return await create_workshop(client, place.admin, place.lyon_position["id"], **changes)


async def _state(client: httpx.AsyncClient, place: Place, workshop_id: str) -> dict[str, Any]:
    response = await client.get(f"{WORKSHOPS}/{workshop_id}", headers=place.admin)
    body: dict[str, Any] = response.json()
    return body


async def _registrations(client: httpx.AsyncClient, place: Place, workshop_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"{WORKSHOPS}/{workshop_id}/registrations", headers=place.admin)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["items"]
    return result


async def test_confirmed_then_waitlisted_then_full(
    client: httpx.AsyncClient, place: Place, session: AsyncSession
) -> None:
    workshop = await _workshop(client, place, capacity=2, waitlist_capacity=2)
    answers = [await register(client, workshop["id"], n) for n in range(5)]
    assert [a.status_code for a in answers[:4]] == [201] * 4
    bodies = [a.json() for a in answers[:4]]
    assert [(b["status"], b["waitlist_rank"]) for b in bodies] == [
        ("confirmed", None),
        ("confirmed", None),
        ("waitlisted", 1),
        ("waitlisted", 2),
    ]
    assert all(b["cancel_token"].startswith("ct_") for b in bodies)
    assert answers[0].headers["location"] == f"{WORKSHOPS}/{workshop['id']}/registrations/{bodies[0]['id']}"
    body = assert_problem(answers[4], 409, "workshop_full")
    assert body["capacity"] == 2
    state = await _state(client, place, workshop["id"])
    assert (state["registered_count"], state["waitlisted_count"], state["seats_left"]) == (2, 2, 0)
    # Only the token's hash is stored.
    stored = (await session.execute(select(Registration.cancel_token_hash))).scalars().all()
    assert all(len(h) == 64 and not h.startswith("ct_") for h in stored)


async def test_a_registration_leaves_no_personal_data_in_the_logs_even_at_debug(
    client: httpx.AsyncClient, place: Place
) -> None:
    """LOG_LEVEL=DEBUG: every line that reaches the service's handler, the libraries' included (aiosqlite
    logs each statement it runs with its bound values at DEBUG)."""
    workshop = await _workshop(client, place)
    body = {
        "first_name": "Philibertine",
        "last_name": "Secretnom",
        "email": "philibertine.secretnom@example.org",
    }
    with service_logs("DEBUG") as written:
        response = await client.post(f"{WORKSHOPS}/{workshop['id']}/registrations", json=body)
        logging.getLogger("app").debug("a debug line")
        logged = written()
    assert response.status_code == 201, response.text
    # The lines were captured, DEBUG's included.
    assert "a debug line" in logged
    assert "POST /api/v1/workshops/{workshop_id}/registrations 201" in logged
    for secret in ("philibertine", "secretnom"):
        assert secret not in logged.lower()


async def test_same_email_twice(client: httpx.AsyncClient, place: Place) -> None:
    workshop = await _workshop(client, place)
    assert (await register(client, workshop["id"], 1)).status_code == 201
    again = await client.post(
        f"{WORKSHOPS}/{workshop['id']}/registrations",
        json={**person(1), "email": person(1)["email"].upper()},
    )
    assert_problem(again, 409, "already_registered")


async def test_closed_workshops(client: httpx.AsyncClient, place: Place) -> None:
    started = await _workshop(client, place, starts_at=at(0, -1))
    assert_problem(await register(client, started["id"], 1), 409, "workshop_closed")
    cancelled = await _workshop(client, place)
    await client.post(f"{WORKSHOPS}/{cancelled['id']}/cancel", json={"reason": "x"}, headers=place.admin)
    assert_problem(await register(client, cancelled["id"], 1), 409, "workshop_closed")
    private = await _workshop(client, place, public=False)
    assert_problem(await register(client, private["id"], 1), 404, "not_found")
    bad = await client.post(f"{WORKSHOPS}/{started['id']}/registrations", json={**person(1), "email": "nope"})
    assert_problem(bad, 422, "validation_error", "/email")


async def test_cancel_with_token_promotes_and_renumbers(client: httpx.AsyncClient, place: Place) -> None:
    workshop = await _workshop(client, place, capacity=1, waitlist_capacity=3)
    made = [(await register(client, workshop["id"], n)).json() for n in range(4)]
    url = f"{WORKSHOPS}/{workshop['id']}/registrations"
    wrong = await client.delete(f"{url}/{made[0]['id']}", headers={"X-Cancel-Token": made[1]["cancel_token"]})
    assert_problem(wrong, 403, "forbidden")
    assert_problem(await client.delete(f"{url}/{made[0]['id']}"), 401, "unauthenticated")
    done = await client.delete(f"{url}/{made[0]['id']}", headers={"X-Cancel-Token": made[0]["cancel_token"]})
    assert done.status_code == 204
    rows = {r["id"]: r for r in await _registrations(client, place, workshop["id"])}
    assert (rows[made[0]["id"]]["status"], rows[made[1]["id"]]["status"]) == ("cancelled", "confirmed")
    assert [rows[made[n]["id"]]["waitlist_rank"] for n in (2, 3)] == [1, 2]
    # A waitlisted person leaving moves those behind up.
    await client.delete(f"{url}/{made[2]['id']}", headers={"X-Cancel-Token": made[2]["cancel_token"]})
    assert (await client.get(f"{url}/{made[3]['id']}", headers=place.admin)).json()["waitlist_rank"] == 1
    state = await _state(client, place, workshop["id"])
    assert (state["registered_count"], state["waitlisted_count"], state["seats_left"]) == (1, 1, 0)
    # Twice is harmless.
    again = await client.delete(f"{url}/{made[0]['id']}", headers={"X-Cancel-Token": made[0]["cancel_token"]})
    assert again.status_code == 204


async def test_organisers_cancel_and_read(client: httpx.AsyncClient, place: Place) -> None:
    workshop = await _workshop(client, place, capacity=1, waitlist_capacity=1)
    first = (await register(client, workshop["id"], 1)).json()
    await register(client, workshop["id"], 2)
    url = f"{WORKSHOPS}/{workshop['id']}/registrations"
    for headers in (place.counsellor_key, place.world.lyon_manager, place.admin):
        assert (await client.get(url, headers=headers)).status_code == 200
    assert_problem(await client.get(url, headers=place.world.lyon_viewer), 403, "forbidden")
    assert_problem(await client.get(url, headers=place.world.rhone_manager), 403, "forbidden")
    assert_problem(await client.get(url, headers=place.other_counsellor_key), 403, "forbidden")
    assert_problem(await client.get(url), 401, "unauthenticated")
    listed = (await client.get(url, headers=place.counsellor_key)).json()["items"]
    assert listed[0]["email"] == "personne.1@example.org"
    assert "cancel_token" not in listed[0]
    assert_problem(
        await client.delete(f"{url}/{first['id']}", headers=place.world.rhone_manager), 403, "forbidden"
    )
    assert (await client.delete(f"{url}/{first['id']}", headers=place.counsellor_key)).status_code == 204
    state = await _state(client, place, workshop["id"])
    assert (state["registered_count"], state["waitlisted_count"]) == (1, 0)


async def test_raising_capacity_promotes_and_cancelling_cancels_all(
    client: httpx.AsyncClient, place: Place
) -> None:
    workshop = await _workshop(client, place, capacity=1, waitlist_capacity=2)
    for n in range(3):
        await register(client, workshop["id"], n)
    url = f"{WORKSHOPS}/{workshop['id']}"
    version = (await _state(client, place, workshop["id"]))["version"]
    raised = await client.patch(
        url, json={"capacity": 2}, headers={**place.admin, "If-Match": f'"{version}"'}
    )
    assert raised.status_code == 200, raised.text
    assert (raised.json()["registered_count"], raised.json()["waitlisted_count"]) == (2, 1)
    statuses = [
        (r["status"], r["waitlist_rank"]) for r in await _registrations(client, place, workshop["id"])
    ]
    assert statuses == [("confirmed", None), ("confirmed", None), ("waitlisted", 1)]
    lower = await client.patch(
        url,
        json={"waitlist_capacity": 0},
        headers={**place.admin, "If-Match": f'"{raised.json()["version"]}"'},
    )
    assert_problem(lower, 409, "capacity_below_registrations")
    cancelled = await client.post(f"{url}/cancel", json={"reason": "x"}, headers=place.admin)
    assert (cancelled.json()["registered_count"], cancelled.json()["waitlisted_count"]) == (0, 0)
    assert {r["status"] for r in await _registrations(client, place, workshop["id"])} == {"cancelled"}


async def test_replayed_registration_has_no_token(client: httpx.AsyncClient, place: Place) -> None:
    workshop = await _workshop(client, place)
    url = f"{WORKSHOPS}/{workshop['id']}/registrations"
    first = await client.post(url, json=person(1), headers={"Idempotency-Key": "r-1"})
    second = await client.post(url, json=person(1), headers={"Idempotency-Key": "r-1"})
    assert first.json()["cancel_token"]
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json()["cancel_token"] is None
    assert second.json()["id"] == first.json()["id"]


async def test_attendance(client: httpx.AsyncClient, place: Place) -> None:
    upcoming = await _workshop(client, place)
    url = f"{WORKSHOPS}/{upcoming['id']}/attendance"
    report: dict[str, Any] = {"registrations": [], "walk_ins": {"total": 0}}
    assert_problem(await client.put(url, json=report, headers=place.admin), 409, "workshop_not_started")
    workshop = await _workshop(client, place, starts_at=at(3))
    one = (await register(client, workshop["id"], 1)).json()
    two = (await register(client, workshop["id"], 2)).json()
    # Move it into the past (organisers may), then report.
    await client.patch(
        f"{WORKSHOPS}/{workshop['id']}",
        json={"starts_at": at(0, -2)},
        headers={**place.admin, "If-Match": '"3"'},
    )
    url = f"{WORKSHOPS}/{workshop['id']}/attendance"
    walk_ins = {
        "total": 3,
        "age_brackets": {"soixante_dix_plus": 2, "non_communique": 1},
        "social_statuses": {"retraite": 2},
    }
    report = {"registrations": [{"id": one["id"], "attendance": "present"}], "walk_ins": walk_ins}
    body = assert_problem(
        await client.put(url, json=report, headers=place.admin), 422, "attendance_totals_mismatch"
    )
    assert [e["pointer"] for e in body["errors"]] == ["/walk_ins/social_statuses"]
    walk_ins["social_statuses"] = {"retraite": 2, "sans_emploi": 1}
    stranger = {"id": upcoming["id"], "attendance": "present"}
    unknown = await client.put(url, json={**report, "registrations": [stranger]}, headers=place.admin)
    assert_problem(unknown, 422, "unknown_reference", "/registrations/0/id")
    assert_problem(await client.put(url, json=report, headers=place.world.lyon_viewer), 403, "forbidden")
    report["registrations"].append({"id": two["id"], "attendance": "excused"})
    done = await client.put(url, json=report, headers=place.counsellor_key)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed"
    assert done.json()["walk_ins"] == walk_ins
    attendance = {r["id"]: r["attendance"] for r in await _registrations(client, place, workshop["id"])}
    assert attendance == {one["id"]: "present", two["id"]: "excused"}
    # A completed workshop's registrations stay as the report says.
    cancel = await client.delete(
        f"{WORKSHOPS}/{workshop['id']}/registrations/{one['id']}",
        headers={"X-Cancel-Token": one["cancel_token"]},
    )
    assert_problem(cancel, 409, "workshop_closed")


async def test_a_registrant_reads_their_own_registration_with_its_token(
    client: httpx.AsyncClient, place: Place
) -> None:
    """Promoted from the waitlist, the registrant sees it with the token that cancels it, and reads nothing
    else with it."""
    workshop = await _workshop(client, place, capacity=1, waitlist_capacity=2, public=False)
    first, second, third = [(await register(client, workshop["id"], n, place.admin)).json() for n in range(3)]
    url = f"{WORKSHOPS}/{workshop['id']}/registrations"

    def token(registration: dict[str, Any]) -> dict[str, str]:
        return {"X-Cancel-Token": registration["cancel_token"]}

    mine = await client.get(f"{url}/{second['id']}", headers=token(second))
    assert mine.status_code == 200, mine.text
    assert mine.headers["cache-control"] == "private, no-store"
    body = mine.json()
    assert (body["id"], body["status"], body["waitlist_rank"]) == (second["id"], "waitlisted", 1)
    assert body["email"] == second["email"]
    assert "cancel_token" not in body
    # The first one cancels: the second is promoted, and sees it.
    assert (await client.delete(f"{url}/{first['id']}", headers=token(first))).status_code == 204
    promoted = (await client.get(f"{url}/{second['id']}", headers=token(second))).json()
    assert (promoted["status"], promoted["waitlist_rank"]) == ("confirmed", None)
    cancelled = (await client.get(f"{url}/{first['id']}", headers=token(first))).json()
    assert cancelled["status"] == "cancelled"
    assert (await client.get(f"{url}/{third['id']}", headers=token(third))).json()["waitlist_rank"] == 1
    # Another registration's token, a wrong one: 403, even with a key that could read it.
    for headers in (token(third), {"X-Cancel-Token": "ct_wrong"}, {**token(third), **place.admin}):
        assert_problem(await client.get(f"{url}/{second['id']}", headers=headers), 403, "forbidden")
    # Unknown registration, another workshop's: 404.
    other = await _workshop(client, place)
    assert_problem(
        await client.get(f"{WORKSHOPS}/{other['id']}/registrations/{second['id']}", headers=token(second)),
        404,
        "not_found",
    )
    assert_problem(await client.get(f"{url}/{workshop['id']}", headers=token(second)), 404, "not_found")
    # The token reads no list, and without it nor a key: 401.
    assert_problem(await client.get(url, headers=token(second)), 401, "unauthenticated")
    assert_problem(await client.get(f"{url}/{second['id']}"), 401, "unauthenticated")
    # Organisers still read it with their key.
    assert (await client.get(f"{url}/{second['id']}", headers=place.counsellor_key)).json()[
        "status"
    ] == "confirmed"
