"""Rotation of a key's secret with a grace period, `last_used_at`, no secret in any log line or problem."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.models import ApiKey
from app.config import Settings
from app.db import utcnow
from tests.conftest import KeyMaker, bearer
from tests.helpers import app_client, assert_problem

API_KEYS = "/api/v1/api-keys"
ME = "/api/v1/me"


async def _key_id(client: httpx.AsyncClient, secret: str) -> str:
    response = await client.get(ME, headers=bearer(secret))
    assert response.status_code == 200, response.text
    key_id: str = response.json()["key_id"]
    return key_id


async def test_rotation_keeps_the_key_and_the_old_secret_for_the_grace_period(
    client: httpx.AsyncClient, admin: dict[str, str], make_key: KeyMaker, session: AsyncSession
) -> None:
    old = await make_key("admin", name="SIRH")
    key_id = await _key_id(client, old)
    response = await client.post(f"{API_KEYS}/{key_id}/rotate", json={"grace_seconds": 3600}, headers=admin)
    assert response.status_code == 200, response.text
    rotated = response.json()
    new = rotated["key"]
    assert new.startswith("cnfs_")
    assert new != old
    assert (rotated["id"], rotated["name"], rotated["role"]) == (key_id, "SIRH", "admin")
    assert rotated["prefix"] == new[:12]
    assert rotated["rotated_at"].endswith("Z")
    assert rotated["previous_secret_expires_at"] > rotated["rotated_at"]
    # Both secrets are the same key during the grace period.
    for secret in (old, new):
        me = (await client.get(ME, headers=bearer(secret))).json()
        assert me["key_id"] == key_id
        assert me["rotated_at"] == rotated["rotated_at"]
        assert me["previous_secret_expires_at"] == rotated["previous_secret_expires_at"]
    listed = (await client.get(API_KEYS, headers=admin)).json()["items"]
    shown = next(k for k in listed if k["id"] == key_id)
    assert not {"key", "secret_hash", "previous_secret_hash"} & set(shown)
    assert shown["previous_secret_expires_at"] == rotated["previous_secret_expires_at"]
    # Past the grace period, the old secret is refused; the new one goes on.
    await session.execute(
        update(ApiKey)
        .where(ApiKey.id == uuid.UUID(key_id))
        .values(previous_secret_expires_at=utcnow() - timedelta(seconds=1))
    )
    await session.flush()
    assert_problem(await client.get(ME, headers=bearer(old)), 401, "unauthenticated")
    assert (await client.get(ME, headers=bearer(new))).status_code == 200


async def test_rotation_without_grace_and_twice(
    client: httpx.AsyncClient, admin: dict[str, str], make_key: KeyMaker
) -> None:
    first = await make_key("admin")
    key_id = await _key_id(client, first)
    response = await client.post(f"{API_KEYS}/{key_id}/rotate", json={"grace_seconds": 0}, headers=admin)
    second = response.json()["key"]
    assert response.json()["previous_secret_expires_at"] is None
    assert_problem(await client.get(ME, headers=bearer(first)), 401, "unauthenticated")
    # No body: the setting's grace (24 h by default); a second rotation drops the first replaced secret.
    third = (await client.post(f"{API_KEYS}/{key_id}/rotate", headers=admin)).json()
    assert third["previous_secret_expires_at"] > third["rotated_at"]
    fourth = (await client.post(f"{API_KEYS}/{key_id}/rotate", headers=admin)).json()["key"]
    assert_problem(await client.get(ME, headers=bearer(second)), 401, "unauthenticated")
    for secret in (third["key"], fourth):
        assert (await client.get(ME, headers=bearer(secret))).status_code == 200


async def test_rotation_refusals(
    client: httpx.AsyncClient, admin: dict[str, str], make_key: KeyMaker
) -> None:
    secret = await make_key("admin")
    key_id = await _key_id(client, secret)
    assert_problem(
        await client.post(f"{API_KEYS}/{key_id}/rotate", json={"grace_seconds": -1}, headers=admin),
        422,
        "validation_error",
        "/grace_seconds",
    )
    assert_problem(await client.post(f"{API_KEYS}/{uuid.uuid4()}/rotate", headers=admin), 404, "not_found")
    await client.delete(f"{API_KEYS}/{key_id}", headers=admin)
    assert_problem(await client.post(f"{API_KEYS}/{key_id}/rotate", headers=admin), 409, "api_key_revoked")
    # A revoked key is refused whichever of its secrets is sent.
    assert_problem(await client.get(ME, headers=bearer(secret)), 401, "unauthenticated")


async def test_rotation_replayed_without_the_secret(
    client: httpx.AsyncClient, admin: dict[str, str], make_key: KeyMaker
) -> None:
    key_id = await _key_id(client, await make_key("admin"))
    headers = {**admin, "Idempotency-Key": "rotate-1"}
    first = await client.post(f"{API_KEYS}/{key_id}/rotate", json={"grace_seconds": 60}, headers=headers)
    again = await client.post(f"{API_KEYS}/{key_id}/rotate", json={"grace_seconds": 60}, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert first.json()["key"]
    assert again.json()["key"] is None
    assert {**again.json(), "key": None} == {**first.json(), "key": None}


async def test_no_secret_in_logs_or_problems(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    make_key: KeyMaker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    old = await make_key("admin")
    key_id = await _key_id(client, old)
    rotated = await client.post(f"{API_KEYS}/{key_id}/rotate", json={"grace_seconds": 0}, headers=admin)
    new = rotated.json()["key"]
    wrong = "cnfs_" + "w" * 43
    answers = [
        await client.get(ME, headers=bearer(old)),  # replaced, no grace
        await client.get(ME, headers=bearer(wrong)),  # unknown
        await client.get(ME, headers={"Authorization": f"Basic {new}"}),  # malformed
        await client.get(f"/api/v1/counsellors?x={wrong}", headers=bearer(new)),  # an unknown parameter
    ]
    await client.delete(f"{API_KEYS}/{key_id}", headers=admin)
    answers.append(await client.get(ME, headers=bearer(new)))  # revoked
    assert [a.status_code for a in answers] == [401, 401, 401, 422, 401]
    for answer in answers:
        for secret in (old, new, wrong):
            assert secret not in answer.text
            assert secret[5:] not in answer.text
    # The application's lines (the test client's own, httpx's, show the URLs it sends).
    records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any(r.name == "app.access" for r in records)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in records)
    for secret in (old, new, wrong):
        assert secret[5:] not in logged


async def test_last_used_at_written_once_a_minute_outside_the_request(settings: Settings) -> None:
    """With its own app and committed rows: the write runs on a connection of its own."""
    from app.api_keys import service
    from app.api_keys.schemas import ApiKeyCreate
    from app.core.auth import Role
    from app.db import make_engine, make_sessionmaker

    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        created = await service.create(session, ApiKeyCreate(name="last used", role=Role.admin))
        await session.commit()
    key_id = created.id

    async def last_used() -> object:
        async with sessions() as session:
            return (
                await session.execute(select(ApiKey.last_used_at).where(ApiKey.id == key_id))
            ).scalar_one()

    try:
        async with app_client(
            settings.model_copy(update={"api_key_last_used_interval_seconds": 60})
        ) as client:
            assert await last_used() is None
            first = await client.get(ME, headers=bearer(created.key))
            assert first.json()["last_used_at"] is None  # the use recorded before this request
            for _ in range(50):
                if await last_used() is not None:
                    break
                await asyncio.sleep(0.05)
            recorded = await last_used()
            assert recorded is not None
            # Within the interval: no other write, and /me shows the recorded use.
            for _ in range(5):
                me = (await client.get(ME, headers=bearer(created.key))).json()
            await asyncio.sleep(0.2)
            assert await last_used() == recorded
            assert me["last_used_at"] is not None
            # Older than the interval: written again.
            async with sessions() as session:
                await session.execute(
                    update(ApiKey)
                    .where(ApiKey.id == key_id)
                    .values(last_used_at=utcnow() - timedelta(minutes=5))
                )
                await session.commit()
            client._transport.app.state.key_used._written.clear()  # type: ignore[attr-defined]
            await client.get(ME, headers=bearer(created.key))
            for _ in range(50):
                if (value := await last_used()) is not None and value > recorded:  # type: ignore[operator]
                    break
                await asyncio.sleep(0.05)
            assert await last_used() > recorded  # type: ignore[operator]
    finally:
        async with sessions() as session:
            await session.execute(ApiKey.__table__.delete().where(ApiKey.id == key_id))
            await session.commit()
        await engine.dispose()
