"""The right of access: everything held about a counsellor (admin) or a registrant (their cancel token),
and the journal's lines about them."""

from __future__ import annotations

import httpx
import pytest

from app.db import JOURNALED
from app.personal_data import router
from tests.helpers import assert_problem
from tests.positions.helpers import COUNSELLORS
from tests.workshops.helpers import WORKSHOPS, Place, create_workshop

PERSON = {
    "first_name": "Zéphyrine",
    "last_name": "Secrète",
    "email": "zephyrine.secrete@example.org",
    "age_bracket": "soixante_dix_plus",
}
UNKNOWN = "019abc3e-0000-7000-8000-00000000dead"


async def test_a_counsellor_s_personal_data(client: httpx.AsyncClient, place: Place) -> None:
    counsellor = place.counsellor
    workshop = await create_workshop(client, place.counsellor_key, place.lyon_position["id"])
    response = await client.get(f"{COUNSELLORS}/{counsellor['id']}/personal-data", headers=place.admin)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "private, no-store"
    body = response.json()
    assert set(body) == {"counsellor", "assignments", "workshops", "api_keys", "journal"}
    assert body["counsellor"]["id"] == counsellor["id"]
    assert (body["counsellor"]["first_name"], body["counsellor"]["email"]) == ("Camille", "c1@example.org")
    assert body["counsellor"]["current_assignment"]["position_id"] == place.lyon_position["id"]
    [assignment] = body["assignments"]
    assert assignment["position_id"] == place.lyon_position["id"]
    assert assignment["active"] is True
    assert assignment["counsellor_id"] == counsellor["id"]
    assert [(w["id"], w["title"], w["status"]) for w in body["workshops"]] == [
        (workshop["id"], workshop["title"], "scheduled")
    ]
    [key] = body["api_keys"]
    assert (key["role"], key["counsellor_id"]) == ("counsellor", counsellor["id"])
    assert "key" not in key
    assert "secret_hash" not in response.text
    assert isinstance(body["journal"], list)


async def test_who_may_read_a_counsellor_s_personal_data(client: httpx.AsyncClient, place: Place) -> None:
    path = f"{COUNSELLORS}/{place.counsellor['id']}/personal-data"
    assert_problem(await client.get(path), 401, "unauthenticated")
    for headers in (place.world.lyon_manager, place.world.lyon_viewer, place.counsellor_key):
        assert_problem(await client.get(path, headers=headers), 403, "forbidden")
    assert_problem(
        await client.get(f"{COUNSELLORS}/{UNKNOWN}/personal-data", headers=place.admin), 404, "not_found"
    )
    assert_problem(
        await client.get(f"{COUNSELLORS}/nope/personal-data", headers=place.admin), 422, "validation_error"
    )
    assert_problem(await client.delete(path, headers=place.admin), 405, "method_not_allowed")


async def test_a_registrant_s_personal_data(client: httpx.AsyncClient, place: Place) -> None:
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"], public=False)
    path = f"{WORKSHOPS}/{workshop['id']}/registrations"
    created = (await client.post(path, json=PERSON, headers=place.admin)).json()
    token = created["cancel_token"]
    response = await client.get(f"{path}/{created['id']}/personal-data", headers={"X-Cancel-Token": token})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "private, no-store"
    body = response.json()
    assert set(body) == {"registration", "workshop", "journal"}
    registration = body["registration"]
    assert {k: registration[k] for k in PERSON} == PERSON
    assert (registration["id"], registration["status"], registration["anonymized_at"]) == (
        created["id"],
        "confirmed",
        None,
    )
    assert "cancel_token" not in registration
    assert token not in response.text
    assert body["workshop"] == {
        "id": workshop["id"],
        "title": workshop["title"],
        "starts_at": workshop["starts_at"],
        "ends_at": workshop["ends_at"],
        "status": "scheduled",
    }
    assert isinstance(body["journal"], list)


async def test_a_registrant_sees_the_journal_lines_about_them(
    client: httpx.AsyncClient, place: Place
) -> None:
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"])
    path = f"{WORKSHOPS}/{workshop['id']}/registrations"
    created = (await client.post(path, json=PERSON)).json()
    other = (await client.post(path, json={**PERSON, "email": "autre@example.org"})).json()
    mine = f"{path}/{created['id']}/personal-data"
    token = {"X-Cancel-Token": created["cancel_token"]}
    first = (await client.get(mine, headers=token)).json()
    assert [(line["kind"], line["action"], line["resource_id"]) for line in first["journal"]] == [
        ("write", "workshops_register", created["id"])
    ]
    # Masked: the journal shows which fields were set, never their values.
    changes = first["journal"][0]["changes"]
    assert changes["email"] == {"before": None, "after": "***"}
    assert PERSON["email"] not in str(first["journal"])
    await client.delete(mine, headers=token)
    (
        await client.get(
            f"{path}/{other['id']}/personal-data", headers={"X-Cancel-Token": other["cancel_token"]}
        )
    )
    second = (await client.get(mine, headers=token)).json()
    lines = [(line["kind"], line["action"], line["actor"]["role"]) for line in second["journal"]]
    assert lines == [
        ("write", "workshops_register", "public"),
        ("read", "workshops_registrations_personal_data", "public"),
        ("write", "workshops_registrations_erase_personal_data", "public"),
    ]
    erasure = second["journal"][2]
    assert erasure["resource_id"] == created["id"]
    assert erasure["changes"]["email"] == {"before": "***", "after": None}


async def test_a_counsellor_s_journal_lines(client: httpx.AsyncClient, place: Place) -> None:
    path = f"{COUNSELLORS}/{place.counsellor['id']}/personal-data"
    assert (
        await client.get(f"{COUNSELLORS}/{place.counsellor['id']}", headers=place.admin)
    ).status_code == 200
    await client.get(path, headers=place.admin)
    body = (await client.get(path, headers=place.admin)).json()
    [assignment] = body["assignments"]
    lines = [
        (line["kind"], line["action"], line["resource"], line["resource_id"]) for line in body["journal"]
    ]
    # Its creation, its assignment (a write of the assignment: `resource_id` is the assignment's), the
    # previous access (a read: the person in `subject_ids`).
    assert ("write", "counsellors_create", "counsellors", place.counsellor["id"]) in lines
    assert ("write", "positions_assignments_create", "assignments", assignment["id"]) in lines
    assert lines[-1] == ("read", "counsellors_personal_data", "counsellors", None)
    admin_key = body["journal"][-1]["actor"]
    assert admin_key["role"] == "admin"
    assert admin_key["key_id"] is not None
    # Another counsellor's lines are not theirs.
    assert all(
        line["resource_id"] in (None, place.counsellor["id"], assignment["id"]) for line in body["journal"]
    )


@pytest.mark.parametrize(
    "endpoint", [router.counsellors_personal_data, router.workshops_registrations_personal_data]
)
def test_the_access_reads_may_write_their_journal_line(endpoint: object) -> None:
    """A GET reads in a read-only transaction unless its route journals (PostgreSQL, outside the tests'
    own transaction): these write their journal line."""
    assert getattr(endpoint, JOURNALED) is True
