"""The audit trail: a committed write has its event (actor, action, changes with personal values masked,
request id); a refused or rolled-back one has none."""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.auth import PrincipalDep
from app.core.problems import AppError
from app.counsellors import service as counsellors
from app.counsellors.schemas import CounsellorCreate
from app.db import SessionDep
from app.territories.models import Territory
from tests.audit.helpers import events
from tests.conftest import KeyMaker, Tree, bearer
from tests.helpers import MERGE_PATCH, add_route, assert_problem
from tests.positions.helpers import COUNSELLORS
from tests.workshops.helpers import WORKSHOPS, build_place, create_workshop, person


async def test_create_and_change_are_recorded_with_personal_values_masked(
    client: httpx.AsyncClient, tree: Tree, make_key: KeyMaker, connection: AsyncConnection
) -> None:
    manager = await make_key("territory_manager", [tree.lyon_metro], name="SIRH Lyon")
    body = {
        "territory_id": str(tree.lyon.id),
        "external_ref": "M-1",
        "first_name": "Camille",
        "last_name": "Exemple",
        "email": "camille@example.org",
    }
    created = await client.post(
        COUNSELLORS, json=body, headers={**bearer(manager), "X-Request-ID": "create-1"}
    )
    assert created.status_code == 201, created.text
    counsellor_id = uuid.UUID(created.json()["id"])
    patch = b'{"email": null, "training": {"hours": 70}}'
    changed = await client.patch(
        f"{COUNSELLORS}/{counsellor_id}",
        content=patch,
        headers={
            **bearer(manager),
            "Content-Type": MERGE_PATCH,
            "If-Match": '"1"',
            "X-Request-ID": "patch-1",
        },
    )
    assert changed.status_code == 200, changed.text

    first, second = await events(connection, resource="counsellors", resource_id=counsellor_id)
    assert first["kind"] == "write"
    assert first["action"] == "counsellors_create"
    assert first["request_id"] == "create-1"
    assert (first["actor_role"], first["actor_name"]) == ("territory_manager", "SIRH Lyon")
    assert first["actor_key_id"] is not None
    assert first["changes"] == {
        "territory_id": {"before": None, "after": str(tree.lyon.id)},
        "external_ref": {"before": None, "after": "***"},
        "first_name": {"before": None, "after": "***"},
        "last_name": {"before": None, "after": "***"},
        "email": {"before": None, "after": "***"},
    }
    assert second["action"] == "counsellors_update"
    assert second["request_id"] == "patch-1"
    # Cleared stays visible as null; the value itself never appears.
    assert second["changes"] == {
        "email": {"before": "***", "after": None},
        "training_hours": {"before": None, "after": 70},
    }
    assert "camille" not in str(await events(connection)).lower()


async def test_bulk_records_each_applied_item(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, connection: AsyncConnection
) -> None:
    def item(ref: str, first_name: str) -> dict[str, str]:
        return {
            "territory_id": str(tree.lyon.id),
            "external_ref": ref,
            "first_name": first_name,
            "last_name": "E",
        }

    first = await client.post(f"{COUNSELLORS}/bulk", json={"items": [item("A", "Ana")]}, headers=admin)
    assert first.status_code == 207, first.text
    bulk = await client.post(
        f"{COUNSELLORS}/bulk",
        json={"items": [item("A", "Anaïs"), item("B", "Bo"), {"external_ref": "C"}]},
        headers={**admin, "X-Request-ID": "bulk-2"},
    )
    assert [r["status"] for r in bulk.json()["items"]] == [200, 201, 422]
    found = await events(connection, request_id="bulk-2")
    assert sorted(str(e["resource_id"]) for e in found) == sorted(r["id"] for r in bulk.json()["items"][:2])
    by_id = {str(e["resource_id"]): e for e in found}
    updated, created = (by_id[r["id"]] for r in bulk.json()["items"][:2])
    assert {e["action"] for e in found} == {"counsellors_bulk"}
    assert updated["changes"] == {"first_name": {"before": "***", "after": "***"}}
    assert created["changes"]["external_ref"] == {"before": None, "after": "***"}
    assert created["changes"]["territory_id"] == {"before": None, "after": str(tree.lyon.id)}


async def test_a_public_registration_is_recorded_as_public(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tree: Tree,
    make_key: KeyMaker,
    connection: AsyncConnection,
) -> None:
    place = await build_place(client, admin, tree, make_key)
    workshop = await create_workshop(client, admin, place.lyon_position["id"])
    response = await client.post(
        f"{WORKSHOPS}/{workshop['id']}/registrations", json=person(7), headers={"X-Request-ID": "reg-7"}
    )
    assert response.status_code == 201, response.text
    (event,) = await events(connection, request_id="reg-7")
    assert (event["actor_role"], event["actor_key_id"], event["action"]) == (
        "public",
        None,
        "workshops_register",
    )
    assert event["resource"] == "registrations"
    assert str(event["resource_id"]) == response.json()["id"]
    changes = event["changes"]
    assert changes["email"] == {"before": None, "after": "***"}
    assert changes["cancel_token_hash"] == {"before": None, "after": "***"}
    assert changes["status"] == {"before": None, "after": "confirmed"}
    assert "personne.7" not in str(event)


async def test_refused_writes_leave_no_event(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, connection: AsyncConnection
) -> None:
    body = {"territory_id": str(tree.lyon.id), "external_ref": "DUP", "first_name": "A", "last_name": "B"}
    assert (await client.post(COUNSELLORS, json=body, headers=admin)).status_code == 201
    duplicate = await client.post(COUNSELLORS, json=body, headers={**admin, "X-Request-ID": "refused-1"})
    assert_problem(duplicate, 409, "external_ref_exists")
    invalid = await client.post(
        COUNSELLORS, json={"first_name": "A"}, headers={**admin, "X-Request-ID": "refused-2"}
    )
    assert_problem(invalid, 422, "validation_error")
    assert await events(connection, request_id="refused-1") == []
    assert await events(connection, request_id="refused-2") == []


async def test_a_write_rolled_back_after_its_flush_leaves_no_event(
    app: FastAPI, client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, connection: AsyncConnection
) -> None:
    class Refused(AppError):
        status, code, title = 409, "refused_for_the_test", "Refused"

    async def create_then_fail(session: SessionDep, principal: PrincipalDep) -> None:
        data = CounsellorCreate(territory_id=tree.lyon.id, first_name="Rollback", last_name="Test")
        # Flushed, its change and audit event written: then the request fails and rolls back.
        await counsellors.create(session, data, principal)
        raise Refused("the write fails after its flush")

    path = "/api/v1/test-audit-rollback"
    add_route(app, path, create_then_fail, methods=["POST"])
    try:
        response = await client.post(path, headers={**admin, "X-Request-ID": "rolled-back"})
    finally:
        # The application is shared by the session's tests (its OpenAPI document is checked elsewhere).
        app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != path]
    assert_problem(response, 409, "refused_for_the_test")
    assert await events(connection, request_id="rolled-back") == []


async def test_a_savepoint_rolled_back_takes_its_objects_events_with_it(
    session: AsyncSession, connection: AsyncConnection
) -> None:
    kept = Territory(kind="region", code="11", name="Île-de-France", name_sort="ile-de-france", path="/kept/")
    session.add(kept)
    await session.flush()
    savepoint = await session.begin_nested()
    undone = Territory(kind="region", code="24", name="Centre", name_sort="centre", path="/undone/")
    session.add(undone)
    await session.flush()
    await savepoint.rollback()
    await session.commit()
    # (Other tests' committed rows may be there on PostgreSQL: these two objects only.)
    found = [
        e
        for e in await events(connection, resource="territories")
        if e["resource_id"] in (kept.id, undone.id)
    ]
    assert [e["resource_id"] for e in found] == [kept.id]
    assert found[0]["actor_role"] == "system"
    assert found[0]["changes"]["code"] == {"before": None, "after": "11"}
