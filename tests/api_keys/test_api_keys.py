"""API keys: the secret shown once and stored hashed, role and scope rules, listing, revocation, /me."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.models import ApiKey, api_key_territories
from app.core.auth import hash_secret
from tests.conftest import CounsellorMaker, KeyMaker, QueryCounter, Tree, bearer
from tests.helpers import assert_problem

API_KEYS = "/api/v1/api-keys"
ME = "/api/v1/me"
READ_FIELDS = {
    "id", "name", "role", "prefix", "territory_ids", "counsellor_id", "expires_at", "revoked_at",
    "created_at", "rotated_at", "previous_secret_expires_at", "last_used_at",
}  # fmt: skip


async def _create(client: httpx.AsyncClient, admin: dict[str, str], **fields: object) -> httpx.Response:
    return await client.post(API_KEYS, json=fields, headers=admin)


async def test_create_returns_the_secret_once_with_location(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    response = await _create(
        client,
        admin,
        name="SIRH Métropole de Lyon",
        role="territory_manager",
        territory_ids=[str(tree.lyon_metro.id)],
        expires_at=expires.isoformat().replace("+00:00", "Z"),
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == READ_FIELDS | {"key"}
    assert response.headers["location"] == f"{API_KEYS}/{created['id']}"
    assert response.headers["content-type"] == "application/json"
    assert created["key"].startswith("cnfs_")
    assert len(created["key"]) >= 40
    assert created["prefix"] == created["key"][: len(created["prefix"])]
    assert created["name"] == "SIRH Métropole de Lyon"
    assert created["role"] == "territory_manager"
    assert created["territory_ids"] == [str(tree.lyon_metro.id)]
    assert created["counsellor_id"] is None
    assert created["revoked_at"] is None
    assert created["expires_at"] == expires.isoformat().replace("+00:00", "Z")
    assert created["created_at"].endswith("Z")

    fetched = await client.get(response.headers["location"], headers=admin)
    assert fetched.status_code == 200
    assert set(fetched.json()) == READ_FIELDS
    assert {k: v for k, v in created.items() if k != "key"} == fetched.json()
    listed = await client.get(API_KEYS, headers=admin)
    assert created["key"] not in listed.text
    assert created["key"] not in fetched.text
    assert "key" not in listed.json()["items"][0]


async def test_only_a_hash_of_the_secret_is_stored(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    response = await _create(client, admin, name="ops", role="admin")
    secret, key_id = response.json()["key"], uuid.UUID(response.json()["id"])
    key = await session.get(ApiKey, key_id)
    assert key is not None
    assert key.secret_hash != secret
    assert key.secret_hash == hash_secret(secret)
    row = (await session.execute(select(ApiKey.__table__).where(ApiKey.id == key_id))).one()
    assert all(secret not in str(value) for value in row)


async def test_two_keys_never_share_a_secret(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    first = await _create(client, admin, name="a", role="admin")
    second = await _create(client, admin, name="a", role="admin")
    assert first.json()["key"] != second.json()["key"]
    assert first.json()["id"] != second.json()["id"]


async def test_the_new_key_works(client: httpx.AsyncClient, admin: dict[str, str], tree: Tree) -> None:
    response = await _create(
        client, admin, name="Rhône viewer", role="viewer", territory_ids=[str(tree.rhone.id)]
    )
    secret = response.json()["key"]
    me = await client.get(ME, headers=bearer(secret))
    assert me.status_code == 200
    assert me.json()["key_id"] == response.json()["id"]
    assert (await client.get("/api/v1/territories", headers=bearer(secret))).status_code == 200


# --- role and scope rules -------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["territory_manager", "viewer"])
async def test_a_scoped_role_needs_territories(
    client: httpx.AsyncClient, admin: dict[str, str], role: str
) -> None:
    response = await _create(client, admin, name="x", role=role)
    assert_problem(response, 422, "validation_error", pointer="/territory_ids")


async def test_a_counsellor_key_needs_a_counsellor(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    response = await _create(client, admin, name="x", role="counsellor", territory_ids=[str(tree.lyon.id)])
    assert_problem(response, 422, "validation_error", pointer="/counsellor_id")


async def test_a_counsellor_key(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, make_counsellor: CounsellorMaker
) -> None:
    counsellor_id = str((await make_counsellor(tree.lyon)).id)
    response = await _create(
        client,
        admin,
        name="x",
        role="counsellor",
        territory_ids=[str(tree.lyon.id)],
        counsellor_id=counsellor_id,
    )
    assert response.status_code == 201
    me = await client.get(ME, headers=bearer(response.json()["key"]))
    assert me.json()["counsellor_id"] == counsellor_id
    assert me.json()["role"] == "counsellor"


async def test_a_counsellor_key_names_an_existing_counsellor(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    response = await _create(
        client,
        admin,
        name="x",
        role="counsellor",
        territory_ids=[str(tree.lyon.id)],
        counsellor_id=str(uuid.uuid4()),
    )
    assert_problem(response, 422, "unknown_reference", pointer="/counsellor_id")


async def test_only_a_counsellor_key_names_a_counsellor(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    response = await _create(
        client,
        admin,
        name="x",
        role="viewer",
        territory_ids=[str(tree.lyon.id)],
        counsellor_id=str(uuid.uuid4()),
    )
    assert_problem(response, 422, "validation_error", pointer="/counsellor_id")


async def test_an_admin_key_has_no_territories(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    response = await _create(client, admin, name="x", role="admin", territory_ids=[str(tree.ara.id)])
    assert_problem(response, 422, "validation_error", pointer="/territory_ids")


async def test_public_is_not_a_key_role(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await _create(client, admin, name="x", role="public")
    assert_problem(response, 422, "validation_error", pointer="/role")


async def test_unknown_role_is_a_validation_error(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await _create(client, admin, name="x", role="superuser")
    assert_problem(response, 422, "validation_error", pointer="/role")


async def test_an_unknown_territory_is_an_unknown_reference(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    response = await _create(
        client, admin, name="x", role="viewer", territory_ids=[str(uuid.uuid4()), str(tree.ara.id)]
    )
    assert_problem(response, 422, "unknown_reference", pointer="/territory_ids/0")
    response = await _create(
        client, admin, name="x", role="viewer", territory_ids=[str(tree.ara.id), str(uuid.uuid4())]
    )
    assert_problem(response, 422, "unknown_reference", pointer="/territory_ids/1")


async def test_duplicate_territories_are_kept_once(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    ara = str(tree.ara.id)
    response = await _create(client, admin, name="x", role="viewer", territory_ids=[ara, ara])
    assert response.status_code == 201
    assert response.json()["territory_ids"] == [ara]


async def test_expiry_in_the_past_is_refused(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await _create(client, admin, name="x", role="admin", expires_at="2020-01-01T00:00:00Z")
    assert_problem(response, 422, "validation_error", pointer="/expires_at")


async def test_expiry_without_a_time_zone_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    # RFC 3339 timestamps carry an offset; a naive one must not reach the comparison with now.
    response = await _create(client, admin, name="x", role="admin", expires_at="2099-01-01T00:00:00")
    assert_problem(response, 422, "validation_error", pointer="/expires_at")


async def test_expiry_with_an_offset_is_returned_in_utc(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await _create(client, admin, name="x", role="admin", expires_at="2099-01-01T02:00:00+02:00")
    assert response.status_code == 201
    assert response.json()["expires_at"] == "2099-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("fields", "pointer"),
    [
        ({"role": "admin"}, "/name"),
        ({"name": "", "role": "admin"}, "/name"),
        ({"name": "x" * 121, "role": "admin"}, "/name"),
        ({"name": "x"}, "/role"),
        ({"name": "x", "role": "admin", "scope": "all"}, "/scope"),
        ({"name": "x", "role": "viewer", "territory_ids": ["nope"]}, "/territory_ids/0"),
    ],
)
async def test_invalid_bodies(
    client: httpx.AsyncClient, admin: dict[str, str], fields: dict[str, object], pointer: str
) -> None:
    assert_problem(await _create(client, admin, **fields), 422, "validation_error", pointer=pointer)


# --- reading, listing, revoking ---------------------------------------------------------------------


async def test_get_an_unknown_key_is_404(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    assert_problem(await client.get(f"{API_KEYS}/{uuid.uuid4()}", headers=admin), 404, "not_found")
    assert_problem(await client.delete(f"{API_KEYS}/{uuid.uuid4()}", headers=admin), 404, "not_found")
    assert_problem(
        await client.get(f"{API_KEYS}/not-a-uuid", headers=admin), 422, "validation_error", "/path/key_id"
    )


async def test_list_is_paginated_newest_first(
    client: httpx.AsyncClient, admin: dict[str, str], make_key: KeyMaker, session: AsyncSession
) -> None:
    for i in range(4):
        await make_key("admin", name=f"key {i}")
    total = (
        await session.execute(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None)))
    ).scalar_one()

    seen: list[str] = []
    url: str | None = f"{API_KEYS}?limit=2&include_total=true"
    pages = 0
    while url:
        response = await client.get(url, headers=admin)
        assert response.status_code == 200
        page = response.json()
        assert page["total"] == total
        assert len(page["items"]) <= 2
        seen += [k["id"] for k in page["items"]]
        pages += 1
        if page["next_cursor"]:
            link = response.headers["link"]
            assert link.endswith('>; rel="next"')
            url = link[1 : link.index(">")]
            assert f"cursor={page['next_cursor']}" in url
        else:
            assert "link" not in response.headers
            url = None
    assert len(seen) == total == len(set(seen))
    assert pages == (total + 1) // 2
    # UUID v7 ids are time-ordered: newest first is descending id order.
    assert seen == sorted(seen, reverse=True)


async def test_list_filters_by_role(
    client: httpx.AsyncClient, admin: dict[str, str], make_key: KeyMaker, tree: Tree
) -> None:
    await make_key("viewer", [tree.ara], name="the viewer")
    response = await client.get(API_KEYS, params={"role": "viewer"}, headers=admin)
    assert [k["name"] for k in response.json()["items"]] == ["the viewer"]
    assert_problem(
        await client.get(API_KEYS, params={"role": "boss"}, headers=admin),
        422,
        "validation_error",
        "/query/role",
    )


async def test_revoked_keys_are_listed_only_on_request(
    client: httpx.AsyncClient, admin: dict[str, str], make_key: KeyMaker, tree: Tree
) -> None:
    secret = await make_key("viewer", [tree.occ], name="to revoke")
    key_id = (await client.get(ME, headers=bearer(secret))).json()["key_id"]
    assert (await client.delete(f"{API_KEYS}/{key_id}", headers=admin)).status_code == 204

    default = await client.get(API_KEYS, headers=admin)
    assert key_id not in [k["id"] for k in default.json()["items"]]
    everything = await client.get(API_KEYS, params={"include_revoked": "true"}, headers=admin)
    revoked = next(k for k in everything.json()["items"] if k["id"] == key_id)
    assert revoked["revoked_at"].endswith("Z")
    fetched = await client.get(f"{API_KEYS}/{key_id}", headers=admin)
    assert fetched.json()["revoked_at"] == revoked["revoked_at"]

    # Revoking again changes nothing.
    assert (await client.delete(f"{API_KEYS}/{key_id}", headers=admin)).status_code == 204
    again = await client.get(f"{API_KEYS}/{key_id}", headers=admin)
    assert again.json()["revoked_at"] == revoked["revoked_at"]


async def test_revoking_keeps_the_scope_rows(
    client: httpx.AsyncClient, admin: dict[str, str], make_key: KeyMaker, tree: Tree, session: AsyncSession
) -> None:
    secret = await make_key("viewer", [tree.occ, tree.rhone])
    key_id = (await client.get(ME, headers=bearer(secret))).json()["key_id"]
    await client.delete(f"{API_KEYS}/{key_id}", headers=admin)
    count = (
        select(func.count())
        .select_from(api_key_territories)
        .where(api_key_territories.c.api_key_id == uuid.UUID(key_id))
    )
    assert (await session.execute(count)).scalar_one() == 2


# --- /me ------------------------------------------------------------------------------------------


async def test_me_for_an_admin(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.get(ME, headers=admin)
    assert response.status_code == 200
    me = response.json()
    assert set(me) == {
        "key_id", "name", "role", "territory_ids", "counsellor_id", "expires_at",
        "rotated_at", "previous_secret_expires_at", "last_used_at",
    }  # fmt: skip
    assert me["role"] == "admin"
    assert me["territory_ids"] == []
    assert me["name"] == "test admin"
    assert me["counsellor_id"] is None
    assert me["expires_at"] is None
    uuid.UUID(me["key_id"])


async def test_me_for_a_territory_manager(client: httpx.AsyncClient, make_key: KeyMaker, tree: Tree) -> None:
    secret = await make_key("territory_manager", [tree.rhone, tree.hg], name="DDETS")
    me = (await client.get(ME, headers=bearer(secret))).json()
    assert me["role"] == "territory_manager"
    assert me["name"] == "DDETS"
    assert sorted(me["territory_ids"]) == sorted([str(tree.rhone.id), str(tree.hg.id)])
    assert me["counsellor_id"] is None


async def test_listing_makes_a_constant_number_of_queries(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    make_key: KeyMaker,
    tree: Tree,
    count_queries: Callable[[], AbstractContextManager[QueryCounter]],
) -> None:
    for i in range(6):
        await make_key("viewer", [tree.ara, tree.occ], name=f"viewer {i}")
    counts = []
    for limit in (1, 7):
        with count_queries() as counter:
            response = await client.get(API_KEYS, params={"limit": str(limit)}, headers=admin)
        assert len(response.json()["items"]) == limit
        counts.append(counter.count)
    # The caller's key with its territories (one query), the page, its keys' territories: whatever the size.
    assert counts[0] == counts[1] == 3
