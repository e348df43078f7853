"""Bearer API keys: missing, malformed, unknown, revoked and expired keys; role checks."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.models import ApiKey
from app.core.auth import hash_secret
from app.db import utcnow
from tests.conftest import KeyMaker, Tree, bearer
from tests.helpers import assert_problem

ME = "/api/v1/me"
TERRITORIES = "/api/v1/territories"
API_KEYS = "/api/v1/api-keys"


def assert_unauthenticated(
    response: httpx.Response, error: str | None = "invalid_token"
) -> dict[str, object]:
    """A 401 problem with an RFC 6750 challenge (`error` only when credentials were sent)."""
    body = assert_problem(response, 401, "unauthenticated")
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'realm="cnfs-api"' in challenge
    if error is None:
        assert "error=" not in challenge
    else:
        assert f'error="{error}"' in challenge
    return body


async def test_no_key_on_a_protected_route_is_401(client: httpx.AsyncClient) -> None:
    body = assert_unauthenticated(await client.get(ME), error=None)
    assert "Bearer" in str(body["detail"])
    assert_unauthenticated(await client.get(API_KEYS), error=None)


async def test_no_key_on_a_public_route_is_fine(client: httpx.AsyncClient, tree: Tree) -> None:
    response = await client.get(TERRITORIES, params={"kind": "region"})
    assert response.status_code == 200
    assert [t["code"] for t in response.json()["items"]] == ["84", "76"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/territories/region/84",
        "/api/v1/referentials",
        "/api/v1/referentials/themes",
        "/api/v1/programmes",
    ],
)
async def test_an_invalid_key_is_401_on_every_public_route(
    client: httpx.AsyncClient, tree: Tree, path: str
) -> None:
    assert (await client.get(path)).status_code == 200
    assert_unauthenticated(await client.get(path, headers=bearer("cnfs_not-a-real-key")))


@pytest.mark.parametrize(
    "secret",
    ["cnfs_not-a-real-key", "sk_live_123", "cnfs_", "x" * 300],
)
async def test_an_invalid_key_is_401_even_on_a_public_route(client: httpx.AsyncClient, secret: str) -> None:
    body = assert_unauthenticated(await client.get(TERRITORIES, headers=bearer(secret)))
    assert secret not in str(body)
    assert_unauthenticated(await client.get(ME, headers=bearer(secret)))


@pytest.mark.parametrize(
    "header",
    ["Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer ", "cnfs_abc", "Token cnfs_abc", ""],
)
async def test_a_malformed_authorization_header_is_401(client: httpx.AsyncClient, header: str) -> None:
    response = await client.get(TERRITORIES, headers={"Authorization": header})
    body = assert_unauthenticated(response, error="invalid_request")
    assert "Bearer" in str(body["detail"])


async def test_the_scheme_is_case_insensitive(client: httpx.AsyncClient, admin_key: str) -> None:
    response = await client.get(ME, headers={"Authorization": f"bearer {admin_key}"})
    assert response.status_code == 200
    assert response.json()["role"] == "admin"


async def test_a_revoked_key_is_refused_afterwards(
    client: httpx.AsyncClient, admin: dict[str, str], make_key: KeyMaker, tree: Tree
) -> None:
    secret = await make_key("viewer", [tree.ara])
    me = await client.get(ME, headers=bearer(secret))
    assert me.status_code == 200
    key_id = me.json()["key_id"]

    revoked = await client.delete(f"{API_KEYS}/{key_id}", headers=admin)
    assert revoked.status_code == 204
    assert revoked.content == b""

    assert_unauthenticated(await client.get(ME, headers=bearer(secret)))
    assert_unauthenticated(await client.get(TERRITORIES, headers=bearer(secret)))


async def test_an_expired_key_is_refused(
    client: httpx.AsyncClient, session: AsyncSession, make_key: KeyMaker, tree: Tree
) -> None:
    secret = await make_key("territory_manager", [tree.rhone])
    assert (await client.get(ME, headers=bearer(secret))).status_code == 200
    await session.execute(
        update(ApiKey)
        .where(ApiKey.secret_hash == hash_secret(secret))
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    await session.flush()
    assert_unauthenticated(await client.get(ME, headers=bearer(secret)))
    assert_unauthenticated(await client.get(TERRITORIES, headers=bearer(secret)))


async def test_a_key_expiring_later_still_works(
    client: httpx.AsyncClient, session: AsyncSession, make_key: KeyMaker, tree: Tree
) -> None:
    secret = await make_key("viewer", [tree.occ])
    key = (
        await session.execute(select(ApiKey).where(ApiKey.secret_hash == hash_secret(secret)))
    ).scalar_one()
    key.expires_at = utcnow() + timedelta(hours=1)
    await session.flush()
    response = await client.get(ME, headers=bearer(secret))
    assert response.status_code == 200
    assert response.json()["expires_at"].endswith("Z")


@pytest.mark.parametrize("role", ["viewer", "territory_manager"])
async def test_a_role_that_may_not_is_403(
    client: httpx.AsyncClient, make_key: KeyMaker, tree: Tree, role: str
) -> None:
    secret = await make_key(role, [tree.ara])
    create = await client.post(API_KEYS, json={"name": "x", "role": "admin"}, headers=bearer(secret))
    body = assert_problem(create, 403, "forbidden")
    assert role in body["detail"]
    assert_problem(await client.get(API_KEYS, headers=bearer(secret)), 403, "forbidden")
    assert "www-authenticate" not in create.headers


async def test_a_counsellor_may_not_manage_keys(
    client: httpx.AsyncClient, make_key: KeyMaker, tree: Tree
) -> None:
    secret = await make_key("counsellor", [tree.lyon])
    assert_problem(await client.get(API_KEYS, headers=bearer(secret)), 403, "forbidden")


async def test_anonymous_on_an_admin_route_is_401_not_403(client: httpx.AsyncClient) -> None:
    assert_unauthenticated(await client.post(API_KEYS, json={"name": "x", "role": "admin"}), error=None)
