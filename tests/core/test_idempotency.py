"""Idempotency-Key: replay, reuse with another body, per-caller keys, failures not stored, expiry, in use."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.api_keys import service as api_keys
from app.api_keys.models import ApiKey
from app.api_keys.schemas import ApiKeyCreate
from app.config import Settings
from app.core.auth import Role
from app.core.idempotency import (
    IdempotencyDep,
    IdempotencyRecord,
    IdempotencySubject,
    advisory_lock_id,
    forget,
    purge_expired,
)
from app.db import make_engine, make_sessionmaker, utcnow
from app.territories.models import Territory
from tests.conftest import KeyMaker, Tree, bearer, postgres_only
from tests.helpers import add_route, app_client, assert_problem

TERRITORIES = "/api/v1/territories"
API_KEYS = "/api/v1/api-keys"
REGION = {"kind": "region", "code": "84", "name": "Auvergne-Rhône-Alpes"}


def _with_key(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


async def _records(session: AsyncSession, key: str) -> list[IdempotencyRecord]:
    rows = await session.execute(select(IdempotencyRecord).where(IdempotencyRecord.key == key))
    return list(rows.scalars().all())


async def _count_regions(session: AsyncSession, code: str) -> int:
    stmt = (
        select(func.count()).select_from(Territory).where(Territory.kind == "region", Territory.code == code)
    )
    return (await session.execute(stmt)).scalar_one()


async def test_a_retry_replays_the_first_response(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    headers = _with_key(admin, "create-ara-1")
    first = await client.post(TERRITORIES, json=REGION, headers=headers)
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers

    # Same body, keys in another order and other spacing: the same request.
    retry = await client.post(
        TERRITORIES,
        content=b'{"name": "Auvergne-Rh\\u00f4ne-Alpes",   "code": "84", "kind": "region"}',
        headers={**headers, "Content-Type": "application/json", "X-Request-ID": "the-retry"},
    )
    assert retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first.content
    assert retry.json() == first.json()
    assert retry.headers["location"] == first.headers["location"]
    assert retry.headers["etag"] == first.headers["etag"]
    assert retry.headers["content-type"] == "application/json"
    # The replay is a new request: its own request id.
    assert retry.headers["x-request-id"] == "the-retry"
    assert await _count_regions(session, "84") == 1
    assert len(await _records(session, "create-ara-1")) == 1


async def test_the_same_key_with_another_body_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    headers = _with_key(admin, "create-region")
    assert (await client.post(TERRITORIES, json=REGION, headers=headers)).status_code == 201
    other = await client.post(
        TERRITORIES, json={"kind": "region", "code": "76", "name": "Occitanie"}, headers=headers
    )
    problem = assert_problem(other, 422, "idempotency_key_reused")
    assert "Idempotency-Key" in problem["detail"]
    assert "idempotent-replayed" not in other.headers
    assert await _count_regions(session, "76") == 0
    # The same key on another endpoint is another request too.
    on_keys = await client.post(API_KEYS, json={"name": "x", "role": "admin"}, headers=headers)
    assert_problem(on_keys, 422, "idempotency_key_reused")


async def test_callers_have_their_own_keys(client: httpx.AsyncClient, make_key: KeyMaker) -> None:
    one, two = await make_key("admin", name="one"), await make_key("admin", name="two")
    body = {"name": "SIRH", "role": "admin"}
    first = await client.post(API_KEYS, json=body, headers=_with_key(bearer(one), "shared-key"))
    second = await client.post(API_KEYS, json=body, headers=_with_key(bearer(two), "shared-key"))
    assert first.status_code == second.status_code == 201
    assert "idempotent-replayed" not in second.headers
    assert first.json()["id"] != second.json()["id"]
    replay = await client.post(API_KEYS, json=body, headers=_with_key(bearer(two), "shared-key"))
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == second.json()["id"]


async def test_without_a_key_every_post_executes(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    body = {"name": "SIRH", "role": "admin"}
    first = await client.post(API_KEYS, json=body, headers=admin)
    second = await client.post(API_KEYS, json=body, headers=admin)
    assert first.json()["id"] != second.json()["id"]


async def test_a_failed_request_is_not_stored(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    assert (await client.post(TERRITORIES, json=REGION, headers=admin)).status_code == 201
    headers = _with_key(admin, "retry-after-fix")

    # A business failure (inside the handler) and a validation failure (before it).
    duplicate = await client.post(TERRITORIES, json=REGION, headers=headers)
    assert_problem(duplicate, 409, "territory_exists")
    invalid = await client.post(TERRITORIES, json={**REGION, "code": "7x"}, headers=headers)
    assert_problem(invalid, 422, "validation_error")
    assert await _records(session, "retry-after-fix") == []

    fixed = await client.post(
        TERRITORIES, json={**REGION, "code": "76", "name": "Occitanie"}, headers=headers
    )
    assert fixed.status_code == 201, fixed.text
    assert "idempotent-replayed" not in fixed.headers
    assert len(await _records(session, "retry-after-fix")) == 1
    # From now on the key belongs to the request that succeeded.
    assert_problem(
        await client.post(TERRITORIES, json=REGION, headers=headers), 422, "idempotency_key_reused"
    )


async def test_a_key_expires_after_the_ttl(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession, settings: Settings
) -> None:
    headers = _with_key(admin, "daily-sync")
    body = {"name": "SIRH", "role": "admin"}
    first = await client.post(API_KEYS, json=body, headers=headers)
    assert first.status_code == 201
    assert settings.idempotency_ttl_hours == 24

    await session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.key == "daily-sync")
        .values(created_at=utcnow() - timedelta(hours=23))
    )
    still = await client.post(API_KEYS, json=body, headers=headers)
    assert still.headers["idempotent-replayed"] == "true"

    await session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.key == "daily-sync")
        .values(created_at=utcnow() - timedelta(hours=25))
    )
    fresh = await client.post(API_KEYS, json=body, headers=headers)
    assert fresh.status_code == 201
    assert "idempotent-replayed" not in fresh.headers
    assert fresh.json()["id"] != first.json()["id"]
    records = await _records(session, "daily-sync")
    assert len(records) == 1
    assert records[0].created_at > utcnow() - timedelta(minutes=5)

    # An expired key may also carry another body.
    await session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.key == "daily-sync")
        .values(created_at=utcnow() - timedelta(hours=25))
    )
    other = await client.post(API_KEYS, json={"name": "other", "role": "admin"}, headers=headers)
    assert other.status_code == 201
    assert other.json()["name"] == "other"


async def test_purge_expired_removes_only_old_records(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    for key in ("old", "recent"):
        assert (
            await client.post(API_KEYS, json={"name": key, "role": "admin"}, headers=_with_key(admin, key))
        ).status_code == 201
    await session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.key == "old")
        .values(created_at=utcnow() - timedelta(hours=25))
    )
    assert await purge_expired(session, timedelta(hours=24)) >= 1
    assert await _records(session, "old") == []
    assert len(await _records(session, "recent")) == 1


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_the_key_length_is_checked(client: httpx.AsyncClient, admin: dict[str, str], key: str) -> None:
    response = await client.post(API_KEYS, json={"name": "x", "role": "admin"}, headers=_with_key(admin, key))
    assert_problem(response, 422, "validation_error", pointer="/header/Idempotency-Key")


async def test_a_key_of_255_characters_is_accepted(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    headers = _with_key(admin, "k" * 255)
    first = await client.post(API_KEYS, json={"name": "x", "role": "admin"}, headers=headers)
    assert first.status_code == 201
    replay = await client.post(API_KEYS, json={"name": "x", "role": "admin"}, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"


def test_the_lock_id_is_a_signed_bigint_per_caller_and_key() -> None:
    ids = {advisory_lock_id(c, k) for c in ("a", "b") for k in ("1", "2")}
    assert len(ids) == 4
    assert all(-(2**63) <= i < 2**63 for i in ids)
    assert advisory_lock_id("a", "1") == advisory_lock_id("a", "1")


@postgres_only
async def test_a_key_still_in_use_is_409(settings: Settings) -> None:
    """A first request holding the key (its advisory lock) makes a concurrent retry fail fast with 409."""
    engine = make_engine(settings.database_url)
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as session:
        caller = await api_keys.create(session, ApiKeyCreate(name="in-use test", role=Role.admin))
        await session.commit()
    created_ids = [caller.id]
    key = f"in-use-{uuid.uuid4()}"
    headers = {"Authorization": f"Bearer {caller.key}", "Idempotency-Key": key}
    body = {"name": "created while locked", "role": "admin"}
    try:
        async with app_client(settings) as client:
            async with engine.connect() as holder:
                await holder.execute(
                    text("SELECT pg_advisory_xact_lock(:id)"), {"id": advisory_lock_id(str(caller.id), key)}
                )
                in_use = await client.post(API_KEYS, json=body, headers=headers)
                await holder.rollback()
            problem = assert_problem(in_use, 409, "idempotency_key_in_use")
            assert int(in_use.headers["retry-after"]) >= 1
            assert "Idempotency-Key" in problem["detail"]

            # Once the first request is over, the key is free: executed once, then replayed.
            done = await client.post(API_KEYS, json=body, headers=headers)
            assert done.status_code == 201
            created_ids.append(uuid.UUID(done.json()["id"]))
            replay = await client.post(API_KEYS, json=body, headers=headers)
            assert replay.headers["idempotent-replayed"] == "true"
            assert replay.json()["id"] == done.json()["id"]
    finally:
        async with sessionmaker() as session:
            await session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.caller == str(caller.id)))
            await session.execute(delete(ApiKey).where(ApiKey.id.in_(created_ids)))
            await session.commit()
        await engine.dispose()


async def test_an_api_key_secret_is_never_stored_nor_replayed(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    headers = _with_key(admin, "new-sync-key")
    body = {"name": "SIRH Lyon", "role": "admin"}
    first = await client.post(API_KEYS, json=body, headers=headers)
    assert first.status_code == 201
    secret = first.json()["key"]
    assert secret.startswith("cnfs_")

    [record] = await _records(session, "new-sync-key")
    assert secret.encode() not in record.body
    assert secret[5:].encode() not in record.body

    replay = await client.post(API_KEYS, json=body, headers=headers)
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["key"] is None
    assert {k: v for k, v in replay.json().items() if k != "key"} == {
        k: v for k, v in first.json().items() if k != "key"
    }
    assert replay.headers["location"] == first.headers["location"]


async def test_callers_without_a_key_are_told_apart_by_address(
    app: FastAPI, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Two anonymous clients never share an Idempotency-Key namespace."""
    seen: list[str] = []

    async def probe(idem: IdempotencyDep) -> dict[str, str]:
        seen.append(idem.caller)
        return {}

    test_app = FastAPI()
    test_app.state.settings = app.state.settings
    test_app.state.sessionmaker = sessionmaker
    add_route(test_app, "/probe", probe, methods=["POST"])
    for address in ("192.0.2.10", "192.0.2.11"):
        transport = httpx.ASGITransport(app=test_app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as anonymous:
            response = await anonymous.post("/probe", json={}, headers={"Idempotency-Key": "same"})
            assert response.status_code == 200
    assert seen == ["public:192.0.2.10", "public:192.0.2.11"]


async def test_an_expired_record_takes_its_subjects_along(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, session: AsyncSession
) -> None:
    """What a stored response shows is linked to it, and goes with it, as it expires or as it is erased."""
    person = {"first_name": "Camille", "last_name": "Exemple", "territory_id": str(tree.lyon_metro.id)}
    ids = []
    for key in ("shows-1", "shows-2"):
        created = await client.post(
            "/api/v1/counsellors", json={**person, "external_ref": key}, headers=_with_key(admin, key)
        )
        assert created.status_code == 201, created.text
        ids.append(uuid.UUID(created.json()["id"]))
    subjects = select(IdempotencySubject.subject_id).where(IdempotencySubject.subject_id.in_(ids))
    assert set((await session.execute(subjects)).scalars()) == set(ids)
    await session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.key == "shows-1")
        .values(created_at=utcnow() - timedelta(hours=25))
    )
    assert await purge_expired(session, timedelta(hours=24)) >= 1
    assert list((await session.execute(subjects)).scalars()) == [ids[1]]
    assert await forget(session, "counsellors", ids[1]) == 1
    assert await forget(session, "counsellors", ids[1]) == 0
    (record,) = await _records(session, "shows-2")
    await session.refresh(record)
    assert (record.body, record.headers, record.fingerprint) == (b"", {}, "")
    assert record.erased_at is not None
