"""A registrant erases their personal data with their cancel token: the registration stays counted, and no
answer of the service shows the data again (reads, lists, CSV, replays of the registration)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.helpers import assert_problem
from tests.workshops.helpers import WORKSHOPS, Place, create_workshop

PERSON: dict[str, Any] = {
    "first_name": "Zéphyrine",
    "last_name": "Secrète",
    "email": "zephyrine.secrete@example.org",
    "phone": "+33 6 00 00 00 09",
    "age_bracket": "soixante_dix_plus",
    "social_status": "retraite",
}
SECRETS = ("Zéphyrine", "Secrète", "zephyrine.secrete", "+33 6 00 00 00 09")


def shows_nothing(response: httpx.Response) -> None:
    text = response.content.decode()
    assert not [s for s in SECRETS if s in text], text


async def registered(
    client: httpx.AsyncClient, place: Place, key: str = "inscription-1"
) -> tuple[str, str, str]:
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"], capacity=1)
    response = await client.post(
        f"{WORKSHOPS}/{workshop['id']}/registrations", json=PERSON, headers={"Idempotency-Key": key}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["first_name"] == "Zéphyrine"
    assert body["anonymized_at"] is None
    return workshop["id"], body["id"], body["cancel_token"]


async def test_no_answer_shows_erased_data_again(client: httpx.AsyncClient, place: Place) -> None:
    workshop_id, rid, token = await registered(client, place)
    path = f"{WORKSHOPS}/{workshop_id}/registrations"
    replay = await client.post(path, json=PERSON, headers={"Idempotency-Key": "inscription-1"})
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["email"] == PERSON["email"]
    other = {"first_name": "Dominique", "last_name": "Fictif", "email": "autre@example.org"}
    waiting = await client.post(path, json=other)
    assert waiting.json()["status"] == "waitlisted"

    erased = await client.delete(f"{path}/{rid}/personal-data", headers={"X-Cancel-Token": token})
    assert erased.status_code == 204, erased.text
    assert erased.content == b""

    own = await client.get(f"{path}/{rid}", headers=place.admin)
    assert own.status_code == 200
    body = own.json()
    assert {k: body[k] for k in ("first_name", "last_name", "email", "phone")} == dict.fromkeys(
        ("first_name", "last_name", "email", "phone")
    )
    # What the counters and the activity report count stays.
    assert (body["status"], body["age_bracket"], body["social_status"]) == (
        "confirmed",
        "soixante_dix_plus",
        "retraite",
    )
    assert body["anonymized_at"] is not None
    shows_nothing(own)
    listed = await client.get(path, headers=place.admin)
    assert next(r["id"] for r in listed.json()["items"]) == rid
    shows_nothing(listed)
    csv = await client.get(path, headers={**place.admin, "Accept": "text/csv"})
    assert csv.status_code == 200
    assert csv.headers["content-type"].startswith("text/csv")
    assert rid in csv.text
    shows_nothing(csv)
    by_counsellor = await client.get(path, headers=place.counsellor_key)
    shows_nothing(by_counsellor)
    by_token = await client.get(f"{path}/{rid}", headers={"X-Cancel-Token": token})
    assert by_token.status_code == 200
    assert by_token.json()["email"] is None
    shows_nothing(by_token)
    access = await client.get(f"{path}/{rid}/personal-data", headers={"X-Cancel-Token": token})
    assert access.status_code == 200
    assert access.json()["registration"]["anonymized_at"] is not None
    shows_nothing(access)

    # The stored response of the registration is gone: its key answers 410, with any body, and runs
    # nothing again.
    for body_sent in (PERSON, {**PERSON, "email": "x@example.org"}):
        again = await client.post(path, json=body_sent, headers={"Idempotency-Key": "inscription-1"})
        assert_problem(again, 410, "idempotency_key_erased")
        shows_nothing(again)

    # Still counted: the seat stays taken.
    workshop = (await client.get(f"{WORKSHOPS}/{workshop_id}", headers=place.admin)).json()
    assert (workshop["registered_count"], workshop["waitlisted_count"], workshop["seats_left"]) == (1, 1, 0)

    # Erasing again changes nothing; the token still cancels the registration (and promotes the waitlist).
    twice = await client.delete(f"{path}/{rid}/personal-data", headers={"X-Cancel-Token": token})
    assert twice.status_code == 204
    cancelled = await client.delete(f"{path}/{rid}", headers={"X-Cancel-Token": token})
    assert cancelled.status_code == 204
    workshop = (await client.get(f"{WORKSHOPS}/{workshop_id}", headers=place.admin)).json()
    assert (workshop["registered_count"], workshop["waitlisted_count"]) == (1, 0)


async def test_the_same_person_may_register_again_after_erasure(
    client: httpx.AsyncClient, place: Place
) -> None:
    workshop_id, rid, token = await registered(client, place)
    path = f"{WORKSHOPS}/{workshop_id}/registrations"
    response = await client.delete(f"{path}/{rid}/personal-data", headers={"X-Cancel-Token": token})
    assert response.status_code == 204
    await client.delete(f"{path}/{rid}", headers={"X-Cancel-Token": token})
    again = await client.post(path, json=PERSON)
    assert again.status_code == 201, again.text


async def test_who_may_erase(client: httpx.AsyncClient, place: Place) -> None:
    workshop_id, rid, token = await registered(client, place)
    _, other_rid, other_token = await registered(client, place, key="inscription-2")
    path = f"{WORKSHOPS}/{workshop_id}/registrations"
    unknown = "019abc3e-0000-7000-8000-00000000dead"
    cases = [
        (f"{path}/{rid}/personal-data", {"X-Cancel-Token": "ct_wrong"}, 403, "forbidden"),
        (f"{path}/{rid}/personal-data", {"X-Cancel-Token": other_token}, 403, "forbidden"),
        (f"{path}/{unknown}/personal-data", {"X-Cancel-Token": token}, 404, "not_found"),
        (
            f"{WORKSHOPS}/{unknown}/registrations/{rid}/personal-data",
            {"X-Cancel-Token": token},
            404,
            "not_found",
        ),
        (f"{path}/{other_rid}/personal-data", {"X-Cancel-Token": other_token}, 404, "not_found"),
        (f"{path}/{rid}/personal-data", {}, 401, "unauthenticated"),
        (f"{path}/{rid}/personal-data", place.admin, 403, "forbidden"),
        (f"{path}/{rid}/personal-data", place.counsellor_key, 403, "forbidden"),
        (f"{path}/not-a-uuid/personal-data", {"X-Cancel-Token": token}, 422, "validation_error"),
    ]
    for url, headers, status, code in cases:
        for method in ("DELETE", "GET"):
            assert_problem(await client.request(method, url, headers=headers), status, code)
    own = (await client.get(f"{path}/{rid}", headers=place.admin)).json()
    assert own["email"] == PERSON["email"]
    assert own["anonymized_at"] is None
