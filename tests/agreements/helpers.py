"""Shared builders and assertions of the programmes and agreements tests (all through the API)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.agreements.models import Agreement, Amendment
from app.api_keys import service as api_keys
from app.api_keys.models import ApiKey
from app.api_keys.schemas import ApiKeyCreate
from app.config import Settings
from app.core.auth import Role
from app.core.idempotency import IdempotencyRecord
from app.db import make_sessionmaker
from app.programmes.models import Programme
from app.territories import service as territories
from app.territories.codes import TerritoryKind
from app.territories.models import Territory
from app.territories.schemas import TerritoryCreate
from tests.conftest import bearer
from tests.helpers import MERGE_PATCH, app_client

PROGRAMMES = "/api/v1/programmes"
AGREEMENTS = "/api/v1/agreements"

PROGRAMME: dict[str, Any] = {
    "code": "FRANCE_RELANCE_V1",
    "name": "France Relance – Conseillers numériques",
    "positions_target": 4000,
    "budget_cents": 25_000_000_000,
    "subsidy_per_position_cents": 5_000_000,
    "starts_on": "2021-01-01",
}


async def create_programme(
    client: httpx.AsyncClient, headers: dict[str, str], **changes: Any
) -> dict[str, Any]:
    response = await client.post(PROGRAMMES, json={**PROGRAMME, **changes}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def get_programme(client: httpx.AsyncClient, programme_id: str) -> dict[str, Any]:
    response = await client.get(f"{PROGRAMMES}/{programme_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def agreement_body(programme_id: str, territory_id: object, **changes: Any) -> dict[str, Any]:
    return {
        "programme_id": programme_id,
        "territory_id": str(territory_id),
        "kind": "convention",
        "reference": "CONV-2021-69M-001",
        "positions_granted": 50,
        "starts_on": "2021-03-01",
        **changes,
    }


async def post_agreement(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    programme_id: str,
    territory_id: object,
    **changes: Any,
) -> httpx.Response:
    return await client.post(
        AGREEMENTS, json=agreement_body(programme_id, territory_id, **changes), headers=headers
    )


async def create_agreement(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    programme_id: str,
    territory_id: object,
    **changes: Any,
) -> dict[str, Any]:
    response = await post_agreement(client, headers, programme_id, territory_id, **changes)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def sign(
    client: httpx.AsyncClient, headers: dict[str, str], agreement_id: str, signed_on: str = "2021-03-15"
) -> dict[str, Any]:
    response = await client.post(
        f"{AGREEMENTS}/{agreement_id}/sign", json={"signed_on": signed_on}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def create_signed(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    programme_id: str,
    territory_id: object,
    **changes: Any,
) -> dict[str, Any]:
    agreement = await create_agreement(client, headers, programme_id, territory_id, **changes)
    return await sign(client, headers, agreement["id"])


async def terminate(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    agreement_id: str,
    terminated_on: str = "2022-06-30",
    reason: str = "Le territoire renonce au dispositif.",
) -> httpx.Response:
    return await client.post(
        f"{AGREEMENTS}/{agreement_id}/terminate",
        json={"terminated_on": terminated_on, "reason": reason},
        headers=headers,
    )


async def amend(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    agreement_id: str,
    kind: str,
    positions: int,
    **changes: Any,
) -> httpx.Response:
    body = {
        "kind": kind,
        "positions": positions,
        "reason": "difficultes_de_recrutement",
        "effective_on": "2022-09-01",
        **changes,
    }
    return await client.post(f"{AGREEMENTS}/{agreement_id}/amendments", json=body, headers=headers)


async def merge_patch(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    url: str,
    body: dict[str, Any],
    if_match: str | None = '"1"',
) -> httpx.Response:
    sent = {**headers, "Content-Type": MERGE_PATCH}
    if if_match is not None:
        sent["If-Match"] = if_match
    return await client.patch(url, content=json.dumps(body), headers=sent)


# --- committed data, for tests of real concurrency ----------------------------------------------------


@asynccontextmanager
async def committed_rows(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions that really commit (the rollback-per-test fixtures share one connection, so they cannot
    race). The programmes, their agreements and amendments, and the territories created meanwhile are
    deleted afterwards, whatever the test left behind."""
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        programmes_before = set((await session.execute(select(Programme.id))).scalars())
        territories_before = set((await session.execute(select(Territory.id))).scalars())
    try:
        yield sessions
    finally:
        async with sessions() as session:
            programme_ids = select(Programme.id).where(Programme.id.not_in(programmes_before))
            agreement_ids = select(Agreement.id).where(Agreement.programme_id.in_(programme_ids))
            await session.execute(delete(Amendment).where(Amendment.agreement_id.in_(agreement_ids)))
            await session.execute(delete(Agreement).where(Agreement.programme_id.in_(programme_ids)))
            await session.execute(delete(Programme).where(Programme.id.not_in(programmes_before)))
            rows = (await session.execute(select(Territory.id, Territory.path))).all()
            # Deepest first: a longer path is a deeper territory.
            for territory_id, _path in sorted(
                (r for r in rows if r[0] not in territories_before), key=lambda r: -len(r[1])
            ):
                await session.execute(delete(Territory).where(Territory.id == territory_id))
            await session.commit()


@dataclass(frozen=True)
class World:
    """An app of its own (its own engine: one connection per request) over committed data."""

    client: httpx.AsyncClient
    admin: dict[str, str]
    territory_id: uuid.UUID
    sessions: async_sessionmaker[AsyncSession]


@asynccontextmanager
async def committed_world(settings: Settings, engine: AsyncEngine) -> AsyncIterator[World]:
    """A committed region and admin key, and a client on a separate app; all removed afterwards."""
    async with committed_rows(engine) as sessions:
        async with sessions() as session:
            region = await territories.create(
                session, TerritoryCreate(kind=TerritoryKind.region, code="11", name="Île-de-France")
            )
            key = await api_keys.create(session, ApiKeyCreate(name="concurrency test", role=Role.admin))
            await session.commit()
        try:
            async with app_client(settings) as client:
                yield World(client, bearer(key.key), region.id, sessions)
        finally:
            async with sessions() as session:
                await session.execute(
                    delete(IdempotencyRecord).where(IdempotencyRecord.caller == str(key.id))
                )
                await session.execute(delete(ApiKey).where(ApiKey.id == key.id))
                await session.commit()
