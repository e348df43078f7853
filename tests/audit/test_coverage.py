"""Every write route of the application records its audit event: each is sent a valid request here, and the
test fails when one commits without an event of its own action, or when a write route has no case below
(a new route must add one)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import utcnow
from app.webhooks.models import WebhookDelivery
from tests.agreements.helpers import AGREEMENTS, PROGRAMMES, amend, create_agreement, create_programme
from tests.audit.helpers import events
from tests.conftest import KeyMaker, Tree
from tests.helpers import MERGE_PATCH
from tests.positions.helpers import (
    ASSIGNMENTS,
    COUNSELLORS,
    POSITIONS,
    assign,
    create_counsellor,
)
from tests.workshops.helpers import WORKSHOPS, Place, at, build_place, create_workshop, person

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
API = "/api/v1"

Case = Callable[[httpx.AsyncClient, Place, dict[str, str]], Awaitable[httpx.Response]]


def _patch(headers: dict[str, str], version: int) -> dict[str, str]:
    return {**headers, "Content-Type": MERGE_PATCH, "If-Match": f'"{version}"'}


async def _territory(client: httpx.AsyncClient, place: Place, headers: dict[str, str]) -> dict[str, Any]:
    body = {
        "kind": "commune",
        "code": "69999",
        "name": "Commune d'essai",
        "parent_id": str(place.tree.rhone.id),
    }
    response = await client.post(f"{API}/territories", json=body, headers=place.admin)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _registration(
    client: httpx.AsyncClient, place: Place, n: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"])
    response = await client.post(f"{WORKSHOPS}/{workshop['id']}/registrations", json=person(n))
    assert response.status_code == 201, response.text
    return workshop, response.json()


async def territories_create(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    body = {
        "kind": "commune",
        "code": "69998",
        "name": "Autre commune",
        "parent_id": str(place.tree.rhone.id),
    }
    return await client.post(f"{API}/territories", json=body, headers=h)


async def territories_update(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    territory = await _territory(client, place, h)
    return await client.patch(
        f"{API}/territories/{territory['id']}", content=b'{"population": 1200}', headers=_patch(h, 1)
    )


async def territories_delete(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    territory = await _territory(client, place, h)
    return await client.delete(f"{API}/territories/{territory['id']}", headers={**h, "If-Match": '"1"'})


async def programmes_create(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    body = {
        "code": "AUTRE",
        "name": "Autre programme",
        "positions_target": 10,
        "budget_cents": 10_000_000,
        "subsidy_per_position_cents": 1_000_000,
        "starts_on": "2022-01-01",
    }
    return await client.post(PROGRAMMES, json=body, headers=h)


async def programmes_update(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    programme = await create_programme(client, place.admin, code="AUTRE2")
    return await client.patch(
        f"{PROGRAMMES}/{programme['id']}", content=b'{"name": "Nouveau nom"}', headers=_patch(h, 1)
    )


async def _draft(client: httpx.AsyncClient, place: Place) -> dict[str, Any]:
    return await create_agreement(
        client, place.admin, place.world.lyon["programme_id"], place.tree.villefranche.id, reference="D-1"
    )


async def agreements_create(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    body = {
        "programme_id": place.world.lyon["programme_id"],
        "territory_id": str(place.tree.villefranche.id),
        "kind": "convention",
        "reference": "D-2",
        "positions_granted": 2,
        "starts_on": "2021-03-01",
    }
    return await client.post(AGREEMENTS, json=body, headers=h)


async def agreements_update(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    draft = await _draft(client, place)
    return await client.patch(
        f"{AGREEMENTS}/{draft['id']}", content=b'{"positions_granted": 3}', headers=_patch(h, 1)
    )


async def agreements_sign(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    draft = await _draft(client, place)
    return await client.post(f"{AGREEMENTS}/{draft['id']}/sign", json={"signed_on": "2021-03-15"}, headers=h)


async def agreements_terminate(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    draft = await _draft(client, place)
    return await client.post(
        f"{AGREEMENTS}/{draft['id']}/terminate",
        json={"terminated_on": "2022-06-30", "reason": "Le territoire renonce."},
        headers={**h, "If-Match": '"1"'},
    )


async def agreements_amendments_create(
    client: httpx.AsyncClient, place: Place, h: dict[str, str]
) -> httpx.Response:
    return await amend(client, h, place.world.lyon["id"], "withdraw_positions", 1)


async def positions_create(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    body = {"agreement_id": place.world.rhone["id"], "opened_on": "2021-04-01"}
    return await client.post(POSITIONS, json=body, headers=h)


async def positions_update(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    position = place.rhone_position
    return await client.patch(
        f"{POSITIONS}/{position['id']}",
        content=b'{"opened_on": "2021-04-02"}',
        headers=_patch(h, position["version"]),
    )


async def positions_close(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    return await client.post(
        f"{POSITIONS}/{place.rhone_position['id']}/close",
        json={"closed_on": "2022-01-31", "reason": "Non pourvu."},
        headers=h,
    )


async def positions_assignments_create(
    client: httpx.AsyncClient, place: Place, h: dict[str, str]
) -> httpx.Response:
    counsellor = await create_counsellor(client, place.admin, place.tree.rhone.id, email="r@example.org")
    body = {"counsellor_id": counsellor["id"], "contract_type": "CDD", "started_on": "2021-05-03"}
    return await client.post(f"{POSITIONS}/{place.rhone_position['id']}/assignments", json=body, headers=h)


async def assignments_end(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    counsellor = await create_counsellor(client, place.admin, place.tree.rhone.id, email="e@example.org")
    assignment = await assign(client, place.admin, place.rhone_position["id"], counsellor["id"])
    return await client.post(
        f"{ASSIGNMENTS}/{assignment['id']}/end",
        json={"ended_on": "2022-01-31", "end_reason": "demission"},
        headers=h,
    )


async def counsellors_create(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    body = {"territory_id": str(place.tree.lyon.id), "first_name": "Alix", "last_name": "Essai"}
    return await client.post(COUNSELLORS, json=body, headers=h)


async def counsellors_update(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    current = await client.get(f"{COUNSELLORS}/{place.counsellor['id']}", headers=place.admin)
    return await client.patch(
        f"{COUNSELLORS}/{place.counsellor['id']}",
        content=b'{"phone": "+33 4 00 00 00 09"}',
        headers=_patch(h, current.json()["version"]),
    )


async def counsellors_anonymize(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    counsellor = await create_counsellor(client, place.admin, place.tree.lyon.id, email="a@example.org")
    return await client.post(f"{COUNSELLORS}/{counsellor['id']}/anonymize", headers=h)


async def counsellors_upsert_by_ref(
    client: httpx.AsyncClient, place: Place, h: dict[str, str]
) -> httpx.Response:
    body = {"territory_id": str(place.tree.lyon.id), "first_name": "Sacha", "last_name": "Essai"}
    return await client.put(f"{COUNSELLORS}/by-ref/REF-1", json=body, headers=h)


async def counsellors_bulk(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    items = [
        {
            "territory_id": str(place.tree.lyon.id),
            "external_ref": f"B-{i}",
            "first_name": "Lou",
            "last_name": "Essai",
        }
        for i in range(2)
    ]
    return await client.post(f"{COUNSELLORS}/bulk", json={"items": items}, headers=h)


async def workshops_create(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    from tests.workshops.helpers import workshop_body

    return await client.post(WORKSHOPS, json=workshop_body(place.lyon_position["id"]), headers=h)


async def workshops_update(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"])
    return await client.patch(
        f"{WORKSHOPS}/{workshop['id']}", content=b'{"capacity": 20}', headers=_patch(h, workshop["version"])
    )


async def workshops_cancel(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"])
    return await client.post(
        f"{WORKSHOPS}/{workshop['id']}/cancel", json={"reason": "Intervenant malade."}, headers=h
    )


async def workshops_attendance(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    workshop, registration = await _registration(client, place, 1)
    moved = await client.patch(
        f"{WORKSHOPS}/{workshop['id']}",
        json={"starts_at": at(0, -2)},
        headers={**place.admin, "If-Match": '"2"'},
    )
    assert moved.status_code == 200, moved.text
    report = {
        "registrations": [{"id": registration["id"], "attendance": "present"}],
        "walk_ins": {"total": 0},
    }
    return await client.put(f"{WORKSHOPS}/{workshop['id']}/attendance", json=report, headers=h)


async def workshops_register(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"])
    # Anonymous: the event's actor is `public`.
    return await client.post(
        f"{WORKSHOPS}/{workshop['id']}/registrations",
        json=person(2),
        headers={"X-Request-ID": h["X-Request-ID"]},
    )


async def workshops_registrations_cancel(
    client: httpx.AsyncClient, place: Place, h: dict[str, str]
) -> httpx.Response:
    workshop, registration = await _registration(client, place, 3)
    return await client.delete(
        f"{WORKSHOPS}/{workshop['id']}/registrations/{registration['id']}",
        headers={"X-Cancel-Token": registration["cancel_token"], "X-Request-ID": h["X-Request-ID"]},
    )


async def workshops_registrations_erase_personal_data(
    client: httpx.AsyncClient, place: Place, h: dict[str, str]
) -> httpx.Response:
    workshop, registration = await _registration(client, place, 3)
    return await client.delete(
        f"{WORKSHOPS}/{workshop['id']}/registrations/{registration['id']}/personal-data",
        headers={"X-Cancel-Token": registration["cancel_token"], "X-Request-ID": h["X-Request-ID"]},
    )


async def api_keys_create(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    return await client.post(f"{API}/api-keys", json={"name": "Essai", "role": "admin"}, headers=h)


async def api_keys_delete(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    created = await client.post(
        f"{API}/api-keys", json={"name": "Essai", "role": "admin"}, headers=place.admin
    )
    assert created.status_code == 201, created.text
    return await client.delete(f"{API}/api-keys/{created.json()['id']}", headers=h)


async def api_keys_rotate(client: httpx.AsyncClient, place: Place, h: dict[str, str]) -> httpx.Response:
    created = await client.post(
        f"{API}/api-keys", json={"name": "Essai", "role": "admin"}, headers=place.admin
    )
    assert created.status_code == 201, created.text
    return await client.post(f"{API}/api-keys/{created.json()['id']}/rotate", headers=h)


HOOKS = f"{API}/webhook-subscriptions"


async def _subscription(client: httpx.AsyncClient, place: Place) -> dict[str, Any]:
    # A public address, never contacted: creating a subscription only checks where its URL leads.
    body = {"url": "https://93.184.215.14/hooks"}
    response = await client.post(HOOKS, json=body, headers=place.admin)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def webhook_subscriptions_create(
    client: httpx.AsyncClient, place: Place, h: dict[str, str]
) -> httpx.Response:
    return await client.post(HOOKS, json={"url": "https://93.184.215.14/hooks"}, headers=h)


async def webhook_subscriptions_update(
    client: httpx.AsyncClient, place: Place, h: dict[str, str]
) -> httpx.Response:
    sub = await _subscription(client, place)
    return await client.patch(
        f"{HOOKS}/{sub['id']}", json={"status": "paused"}, headers=_patch(h, sub["version"])
    )


async def webhook_subscriptions_delete(
    client: httpx.AsyncClient, place: Place, h: dict[str, str]
) -> httpx.Response:
    sub = await _subscription(client, place)
    return await client.delete(f"{HOOKS}/{sub['id']}", headers={**h, "If-Match": f'"{sub["version"]}"'})


async def webhook_subscriptions_rotate_secret(
    client: httpx.AsyncClient, place: Place, h: dict[str, str]
) -> httpx.Response:
    sub = await _subscription(client, place)
    return await client.post(f"{HOOKS}/{sub['id']}/rotate-secret", headers=h)


async def webhook_subscriptions_delivery_retry(
    client: httpx.AsyncClient, place: Place, h: dict[str, str]
) -> httpx.Response:
    sub = await _subscription(client, place)
    # A failed delivery, as the worker leaves one (the worker reads the feed outside the test's transaction).
    app = client._transport.app  # type: ignore[attr-defined]
    delivery = WebhookDelivery(
        id=uuid.uuid4(),
        subscription_id=uuid.UUID(sub["id"]),
        change_xid=0,
        change_seq=1,
        resource="territories",
        object_id=uuid.uuid4(),
        action="created",
        object_version=1,
        territory_id=None,
        occurred_at=utcnow(),
        status="failed",
        attempts=9,
        created_at=utcnow(),
    )
    async with app.state.sessionmaker() as session:
        session.add(delivery)
        await session.commit()
    return await client.post(f"{HOOKS}/{sub['id']}/deliveries/{delivery.id}/retry", headers=h)


CASES: dict[str, Case] = {
    case.__name__: case
    for case in (
        territories_create,
        territories_update,
        territories_delete,
        programmes_create,
        programmes_update,
        agreements_create,
        agreements_update,
        agreements_sign,
        agreements_terminate,
        agreements_amendments_create,
        positions_create,
        positions_update,
        positions_close,
        positions_assignments_create,
        assignments_end,
        counsellors_create,
        counsellors_update,
        counsellors_anonymize,
        counsellors_upsert_by_ref,
        counsellors_bulk,
        workshops_create,
        workshops_update,
        workshops_cancel,
        workshops_attendance,
        workshops_register,
        workshops_registrations_cancel,
        workshops_registrations_erase_personal_data,
        api_keys_create,
        api_keys_delete,
        api_keys_rotate,
        webhook_subscriptions_create,
        webhook_subscriptions_update,
        webhook_subscriptions_delete,
        webhook_subscriptions_rotate_secret,
        webhook_subscriptions_delivery_retry,
    )
}


def write_routes(app: FastAPI) -> set[str]:
    return {
        str(context.name)
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
        and str(context.path_format).startswith(API)
        and WRITE_METHODS & set(context.methods or ())
    }


def test_every_write_route_has_a_case(app: FastAPI) -> None:
    assert len(write_routes(app)) >= len(CASES)
    assert write_routes(app) - CASES.keys() == set(), "a write route without its audit case"
    assert CASES.keys() - write_routes(app) == set()


@pytest.mark.parametrize("name", sorted(CASES))
async def test_a_committed_write_has_its_audit_event(
    name: str,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tree: Tree,
    make_key: KeyMaker,
    connection: AsyncConnection,
) -> None:
    place = await build_place(client, admin, tree, make_key)
    request_id = f"coverage-{name}"
    response = await CASES[name](client, place, {**admin, "X-Request-ID": request_id})
    assert response.status_code < 300, response.text
    found = await events(connection, request_id=request_id)
    assert found, f"{name} committed without an audit event"
    assert {e["action"] for e in found} == {name}
    assert {e["kind"] for e in found} == {"write"}
    assert all(e["resource_id"] is not None for e in found)
    public = name in (
        "workshops_register",
        "workshops_registrations_cancel",
        "workshops_registrations_erase_personal_data",
    )
    assert {e["actor_role"] for e in found} == ({"public"} if public else {"admin"})
