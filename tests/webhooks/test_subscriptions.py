"""The subscriptions' API: who may subscribe to what, the secret shown once, rotation, If-Match, the SSRF
refusals at creation."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from app.webhooks import service
from tests.conftest import KeyMaker, Tree, bearer
from tests.helpers import MERGE_PATCH, assert_problem

BASE = "/api/v1/webhook-subscriptions"
# A public address, never contacted here: creating a subscription only checks where its URL leads.
PUBLIC_URL = "https://93.184.215.14/hooks"


async def _create(client: httpx.AsyncClient, headers: dict[str, str], **body: object) -> httpx.Response:
    return await client.post(BASE, json={"url": PUBLIC_URL, **body}, headers=headers)


async def test_admin_creates_and_sees_the_secret_once(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await _create(client, admin, resources=["counsellors"], actions=["updated"])
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["secret"].startswith("whsec_")
    Webhook(body["secret"])  # a secret the library takes
    assert body["url"] == PUBLIC_URL
    assert body["resources"] == ["counsellors"]
    assert body["actions"] == ["updated"]
    assert body["territory_ids"] == []
    assert body["status"] == "active"
    assert body["version"] == 1
    assert response.headers["etag"] == '"1"'
    assert response.headers["location"] == f"{BASE}/{body['id']}"

    got = await client.get(response.headers["location"], headers=admin)
    assert got.status_code == 200
    assert "secret" not in got.json()
    assert got.json() == {k: v for k, v in body.items() if k != "secret"}
    listed = await client.get(BASE, headers=admin)
    assert [item["id"] for item in listed.json()["items"]] == [body["id"]]
    assert "secret" not in listed.json()["items"][0]


async def test_defaults_are_every_resource_and_action(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    body = (await _create(client, admin)).json()
    assert body["resources"] == ["agreements", "positions", "counsellors", "assignments", "workshops"]
    assert body["actions"] == ["created", "updated", "deleted"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:9000/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://192.168.1.10/hook",
        "http://0.0.0.0/hook",
        "ftp://93.184.215.14/hook",
        "https://user:pw@93.184.215.14/hook",
    ],
)
async def test_internal_addresses_are_refused(
    client: httpx.AsyncClient, admin: dict[str, str], url: str
) -> None:
    response = await client.post(BASE, json={"url": url}, headers=admin)
    assert_problem(response, 422, "webhook_url_not_allowed", "/url")
    assert (await client.get(BASE, headers=admin)).json()["items"] == []


async def test_a_name_resolving_to_an_internal_address_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        assert host == "hooks.example.test"
        return ["93.184.215.14", "10.0.0.7"]

    monkeypatch.setattr(service, "resolver", resolve)
    response = await client.post(BASE, json={"url": "https://hooks.example.test/x"}, headers=admin)
    body = assert_problem(response, 422, "webhook_url_not_allowed", "/url")
    assert "10.0.0.7" in body["detail"]


async def test_territory_manager_scope(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, make_key: KeyMaker
) -> None:
    manager = bearer(await make_key("territory_manager", [tree.lyon_metro]))
    other = bearer(await make_key("territory_manager", [tree.hg]))
    # Without territories: the key's own.
    mine = (await _create(client, manager)).json()
    assert mine["territory_ids"] == [str(tree.lyon_metro.id)]
    # Within the subtree: fine; outside: unknown reference.
    inner = await _create(client, manager, territory_ids=[str(tree.lyon.id)])
    assert inner.status_code == 201, inner.text
    outside = await _create(client, manager, territory_ids=[str(tree.lyon.id), str(tree.toulouse.id)])
    assert_problem(outside, 422, "unknown_reference", "/territory_ids/1")
    assert_problem(
        await _create(client, manager, territory_ids=[]), 422, "validation_error", "/territory_ids"
    )
    # The admin's subscription of everything, and another manager's, are not the Lyon manager's to see.
    everything = (await _create(client, admin)).json()
    theirs = (await _create(client, other)).json()
    listed = {item["id"] for item in (await client.get(BASE, headers=manager)).json()["items"]}
    assert listed == {mine["id"], inner.json()["id"]}
    for hidden in (everything, theirs):
        assert_problem(await client.get(f"{BASE}/{hidden['id']}", headers=manager), 404, "not_found")
    admin_list = {item["id"] for item in (await client.get(BASE, headers=admin)).json()["items"]}
    assert admin_list >= {mine["id"], inner.json()["id"], everything["id"], theirs["id"]}


async def test_other_roles_are_refused(client: httpx.AsyncClient, tree: Tree, make_key: KeyMaker) -> None:
    viewer = bearer(await make_key("viewer", [tree.rhone]))
    assert_problem(await client.get(BASE, headers=viewer), 403, "forbidden")
    assert_problem(await _create(client, viewer), 403, "forbidden")
    assert_problem(await client.get(BASE), 401, "unauthenticated")


async def test_patch_pause_and_delete_need_if_match(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    created = (await _create(client, admin)).json()
    url = f"{BASE}/{created['id']}"
    headers = {**admin, "Content-Type": MERGE_PATCH}
    assert_problem(
        await client.patch(url, json={"status": "paused"}, headers=headers), 428, "precondition_required"
    )
    stale = {**headers, "If-Match": '"9"'}
    assert_problem(
        await client.patch(url, json={"status": "paused"}, headers=stale), 412, "precondition_failed"
    )
    paused = await client.patch(url, json={"status": "paused"}, headers={**headers, "If-Match": '"1"'})
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    assert paused.json()["version"] == 2
    refused = await client.patch(
        url, json={"url": "http://127.0.0.1/x"}, headers={**headers, "If-Match": '"2"'}
    )
    assert_problem(refused, 422, "webhook_url_not_allowed", "/url")
    nulled = await client.patch(url, json={"status": None}, headers={**headers, "If-Match": '"2"'})
    assert_problem(nulled, 422, "validation_error", "/status")
    unknown = await client.patch(url, json={"secret": "x"}, headers={**headers, "If-Match": '"2"'})
    assert_problem(unknown, 422, "validation_error")
    assert_problem(await client.delete(url, headers=admin), 428, "precondition_required")
    assert (await client.delete(url, headers={**admin, "If-Match": '"2"'})).status_code == 204
    assert_problem(await client.get(url, headers=admin), 404, "not_found")


async def test_rotation_shows_a_new_secret(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    created = (await _create(client, admin)).json()
    rotated = await client.post(f"{BASE}/{created['id']}/rotate-secret", headers=admin)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != created["secret"]
    assert rotated.json()["version"] == 2


async def test_bad_bodies(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    assert_problem(
        await _create(client, admin, resources=["programmes"]), 422, "validation_error", "/resources/0"
    )
    assert_problem(await _create(client, admin, resources=[]), 422, "validation_error", "/resources")
    assert_problem(
        await _create(client, admin, actions=["created", "created"]), 422, "validation_error", "/actions"
    )
    assert_problem(
        await _create(client, admin, territory_ids=[str(uuid.uuid4())]),
        422,
        "unknown_reference",
        "/territory_ids/0",
    )
    assert_problem(await _create(client, admin, status="paused"), 422, "validation_error")


async def test_deliveries_of_an_unknown_subscription(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    missing = uuid.uuid4()
    assert_problem(await client.get(f"{BASE}/{missing}/deliveries", headers=admin), 404, "not_found")
    created = (await _create(client, admin)).json()
    listed = await client.get(f"{BASE}/{created['id']}/deliveries", headers=admin)
    assert listed.json() == {"items": [], "next_cursor": None}
    retry = await client.post(f"{BASE}/{created['id']}/deliveries/{missing}/retry", headers=admin)
    assert_problem(retry, 404, "not_found")


async def test_a_write_costs_the_same_statements_with_a_subscription(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, make_key: KeyMaker, count_queries: Any
) -> None:
    """The change feed is the outbox: a subscription adds nothing to a write (the worker copies the feed)."""
    manager = bearer(await make_key("territory_manager", [tree.lyon_metro]))
    url = "/api/v1/counsellors/by-ref/HOOK-1"

    async def put(first_name: str) -> list[str]:
        body = {"first_name": first_name, "last_name": "Exemple", "email": "c.exemple@example.org"}
        with count_queries() as counter:
            response = await client.put(url, json=body, headers=manager)
        assert response.status_code in (200, 201), response.text
        return list(counter.statements)

    await put("Camille")
    without = await put("Dominique")
    assert (await _create(client, manager)).status_code == 201
    with_one = await put("Camille")
    assert with_one == without
    assert any("INSERT INTO changes" in statement for statement in with_one)
    assert not any("webhook" in statement for statement in with_one)


async def test_an_idempotent_replay_does_not_show_the_secret(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    headers = {**admin, "Idempotency-Key": "hook-once"}
    first = await client.post(BASE, json={"url": PUBLIC_URL}, headers=headers)
    again = await client.post(BASE, json={"url": PUBLIC_URL}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["secret"].startswith("whsec_")
    assert again.json() == {**first.json(), "secret": None}
    assert again.headers["idempotent-replayed"] == "true"
    assert len((await client.get(BASE, headers=admin)).json()["items"]) == 1
