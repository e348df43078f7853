"""Personal data stays out of the logs, and lists of personal data cost a constant number of queries."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.idempotency import IdempotencyRecord
from app.counsellors.models import Counsellor
from tests.audit.helpers import events
from tests.conftest import KeyMaker, bearer
from tests.helpers import assert_problem, items
from tests.positions.helpers import (
    ASSIGNMENTS,
    COUNSELLORS,
    PERSON,
    World,
    assign,
    create_counsellor,
    create_position,
    day,
)


async def test_no_personal_data_in_the_logs(
    client: httpx.AsyncClient, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # The application's own loggers at their most talkative (the client's and the driver's debug logs are
    # not the service's).
    caplog.set_level(logging.DEBUG, logger="app")
    caplog.set_level(logging.INFO, logger="sqlalchemy")
    body = {**PERSON, "first_name": "Zéphyrine", "email": "zephyrine.secrete@example.org"}
    await client.put(f"{COUNSELLORS}/by-ref/REF-SECRETE", json=body, headers=world.lyon_manager)
    await client.put(
        f"{COUNSELLORS}/by-ref/REF-SECRETE", json={**body, "email": "bad"}, headers=world.lyon_manager
    )
    await client.post(
        f"{COUNSELLORS}/bulk",
        json={
            "items": [{**body, "external_ref": "REF-SECRETE"}, {**body, "external_ref": "X", "phone": "?"}]
        },
        headers=world.lyon_manager,
    )
    # A duplicate reference at the database level (a direct POST racing nothing: the check answers first).
    await client.post(
        COUNSELLORS,
        json={**body, "territory_id": str(world.tree.lyon_metro.id), "external_ref": "REF-SECRETE"},
        headers=world.lyon_manager,
    )
    text = "\n".join(
        f"{r.getMessage()} {r.__dict__}" for r in caplog.records if r.name.startswith(("app", "sqlalchemy"))
    )
    assert "POST /api/v1/counsellors/bulk 207" in text
    for secret in ("Zéphyrine", "zephyrine", "secrete", "REF-SECRETE", "Exemple"):
        assert secret not in text


async def test_personal_lists_make_a_constant_number_of_queries(
    client: httpx.AsyncClient, world: World, count_queries: Any
) -> None:
    counts: dict[str, list[int]] = {COUNSELLORS: [], ASSIGNMENTS: []}
    for round_ in range(2):
        for i in range(2):
            counsellor = await create_counsellor(
                client, world.admin, world.tree.lyon_metro.id, external_ref=f"{round_}-{i}"
            )
            position = await create_position(client, world.admin, world.lyon["id"]) if round_ == 0 else None
            if position is not None:
                await assign(client, world.admin, position["id"], counsellor["id"], started_on=day(-1))
        for url in counts:
            with count_queries() as counter:
                response = await client.get(url, headers=world.lyon_manager)
            assert items(response)
            counts[url].append(counter.count)
    for url, seen in counts.items():
        assert seen[0] == seen[1], (url, seen)


async def _stored_bodies(session: AsyncSession) -> bytes:
    return b"\n".join((await session.execute(select(IdempotencyRecord.body))).scalars())


async def test_no_stored_response_outlives_an_anonymisation(
    client: httpx.AsyncClient, world: World, session: AsyncSession
) -> None:
    """The responses kept for `Idempotency-Key` that show the person go with the anonymisation, in its
    transaction; a retry with their key then answers 410 `idempotency_key_erased`, never the old names, and
    never a new counsellor."""
    lyon = str(world.tree.lyon_metro.id)
    body = {**PERSON, "territory_id": lyon, "external_ref": "ERASED-1", "email": "erased@example.org"}
    create = {**world.lyon_manager, "Idempotency-Key": "create-erased-1"}
    created = await client.post(COUNSELLORS, json=body, headers=create)
    assert created.status_code == 201, created.text
    bulk = {**world.lyon_manager, "Idempotency-Key": "bulk-erased"}
    payload = {"items": [{**PERSON, "external_ref": "ERASED-2"}, {**PERSON, "external_ref": "KEPT-1"}]}
    first_bulk = await client.post(f"{COUNSELLORS}/bulk", json=payload, headers=bulk)
    assert [r["status"] for r in first_bulk.json()["items"]] == [201, 201]
    other = {**world.lyon_manager, "Idempotency-Key": "bulk-kept"}
    kept = await client.post(
        f"{COUNSELLORS}/bulk", json={"items": [{**PERSON, "external_ref": "KEPT-2"}]}, headers=other
    )
    assert kept.status_code == 207
    assert b"ERASED-1" in await _stored_bodies(session)

    for counsellor_id in (created.json()["id"], first_bulk.json()["items"][0]["id"]):
        anonymized = await client.post(f"{COUNSELLORS}/{counsellor_id}/anonymize", headers=world.admin)
        assert anonymized.status_code == 200, anonymized.text

    stored = await _stored_bodies(session)
    for secret in (b"ERASED-1", b"ERASED-2", b"erased@example.org"):
        assert secret not in stored
    again = await client.post(COUNSELLORS, json=body, headers=create)
    problem = assert_problem(again, 410, "idempotency_key_erased")
    assert "idempotent-replayed" not in again.headers
    for secret in ("ERASED-1", "erased@example.org", PERSON["first_name"]):
        assert secret not in again.text
    assert_problem(
        await client.post(COUNSELLORS, json={**body, "phone": None}, headers=create),
        410,
        "idempotency_key_erased",
    )
    assert problem["detail"]
    assert_problem(
        await client.post(f"{COUNSELLORS}/bulk", json=payload, headers=bulk), 410, "idempotency_key_erased"
    )
    # Nothing was created again, and a response that does not show the person is still replayed.
    listed = await client.get(COUNSELLORS, params={"external_ref": "ERASED-1"}, headers=world.lyon_manager)
    assert items(listed) == []
    replay = await client.post(
        f"{COUNSELLORS}/bulk", json={"items": [{**PERSON, "external_ref": "KEPT-2"}]}, headers=other
    )
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == kept.json()


async def test_an_anonymisation_revokes_the_counsellors_keys(
    client: httpx.AsyncClient, world: World, make_key: KeyMaker, connection: AsyncConnection
) -> None:
    """A counsellor who has left must not keep their access (their workshops' registrants are personal
    data): the anonymisation revokes every key bound to them, in its transaction, each revocation in the
    audit trail; another counsellor's key, and a key revoked earlier, are left as they were."""
    lyon = world.tree.lyon_metro
    leaving = await create_counsellor(client, world.admin, lyon.id, email="leaving@example.org")
    staying = await create_counsellor(client, world.admin, lyon.id, email="staying@example.org")
    tablet = bearer(await make_key("counsellor", [lyon], counsellor_id=leaving["id"], name="tablet"))
    phone = bearer(await make_key("counsellor", [lyon], counsellor_id=leaving["id"], name="phone"))
    other = bearer(await make_key("counsellor", [lyon], counsellor_id=staying["id"]))
    earlier = await make_key("counsellor", [lyon], counsellor_id=leaving["id"], name="earlier")
    earlier_id = (await client.get("/api/v1/me", headers=bearer(earlier))).json()["key_id"]
    assert (await client.delete(f"/api/v1/api-keys/{earlier_id}", headers=world.admin)).status_code == 204
    for headers in (tablet, phone, other):
        assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
    keys_before = await client.get(f"{COUNSELLORS}/{leaving['id']}/personal-data", headers=world.admin)
    revoked_earlier = {k["id"]: k["revoked_at"] for k in keys_before.json()["api_keys"]}[earlier_id]

    anonymized = await client.post(
        f"{COUNSELLORS}/{leaving['id']}/anonymize", headers={**world.admin, "X-Request-ID": "leaving"}
    )
    assert anonymized.status_code == 200, anonymized.text

    for headers in (tablet, phone):
        assert_problem(await client.get("/api/v1/me", headers=headers), 401, "unauthenticated")
    assert (await client.get("/api/v1/me", headers=other)).status_code == 200
    keys = (await client.get(f"{COUNSELLORS}/{leaving['id']}/personal-data", headers=world.admin)).json()[
        "api_keys"
    ]
    assert {k["name"]: k["revoked_at"] is not None for k in keys} == {
        "tablet": True,
        "phone": True,
        "earlier": True,
    }
    assert {k["id"]: k["revoked_at"] for k in keys}[earlier_id] == revoked_earlier
    written = await events(connection, request_id="leaving", kind="write")
    revocations = [e for e in written if e["resource"] == "api_keys"]
    assert len(revocations) == 2
    assert all(set(e["changes"]) == {"revoked_at"} for e in revocations), revocations
    # Anonymising again changes nothing.
    again = await client.post(f"{COUNSELLORS}/{leaving['id']}/anonymize", headers=world.admin)
    assert (again.status_code, again.json()) == (200, anonymized.json())


async def test_no_key_is_bound_to_an_anonymised_counsellor(
    client: httpx.AsyncClient, world: World, session: AsyncSession
) -> None:
    """A key created for an anonymised counsellor is refused (409); one that an anonymisation could not see
    (a creation that raced it) is revoked by anonymising again."""
    lyon = world.tree.lyon_metro
    counsellor = await create_counsellor(client, world.admin, lyon.id, email="gone@example.org")
    body = {"name": "late", "role": "counsellor", "territory_ids": [str(lyon.id)]}
    raced = await client.post(
        "/api/v1/api-keys", json={**body, "counsellor_id": counsellor["id"]}, headers=world.admin
    )
    assert raced.status_code == 201, raced.text
    # As if the key's creation had committed just after an anonymisation that could not see it.
    await session.execute(
        update(Counsellor)
        .where(Counsellor.id == uuid.UUID(counsellor["id"]))
        .values(anonymized_at=datetime.now(UTC), first_name=None, last_name=None, email=None)
    )
    await session.flush()
    assert (await client.get("/api/v1/me", headers=bearer(raced.json()["key"]))).status_code == 200
    refused = await client.post(
        "/api/v1/api-keys", json={**body, "counsellor_id": counsellor["id"]}, headers=world.admin
    )
    assert_problem(refused, 409, "counsellor_anonymized")
    again = await client.post(f"{COUNSELLORS}/{counsellor['id']}/anonymize", headers=world.admin)
    assert again.status_code == 200, again.text
    assert_problem(
        await client.get("/api/v1/me", headers=bearer(raced.json()["key"])), 401, "unauthenticated"
    )


async def test_a_patch_that_changes_nothing_has_its_journal_line(
    client: httpx.AsyncClient, world: World, connection: AsyncConnection
) -> None:
    """An empty merge patch (with `If-Match: *`) writes nothing, so it has no write event; its answer shows
    the person, so it has a read line. A patch that changes something has its write event only."""
    counsellor = await create_counsellor(client, world.admin, world.tree.lyon_metro.id)
    url = f"{COUNSELLORS}/{counsellor['id']}"
    headers = {**world.lyon_manager, "If-Match": "*"}
    same = await client.patch(url, json={}, headers={**headers, "X-Request-ID": "patch-same"})
    assert same.status_code == 200, same.text
    assert same.json()["version"] == counsellor["version"]
    (line,) = await events(connection, request_id="patch-same")
    assert (line["kind"], line["action"], line["subject_ids"]) == (
        "read",
        "counsellors_update",
        [counsellor["id"]],
    )
    changed = await client.patch(url, json={"phone": None}, headers={**headers, "X-Request-ID": "patch-1"})
    assert changed.status_code == 200, changed.text
    assert [e["kind"] for e in await events(connection, request_id="patch-1")] == ["write"]
