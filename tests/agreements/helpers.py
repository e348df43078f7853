"""Shared builders and assertions of the programmes and agreements tests (all through the API)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.helpers import MERGE_PATCH

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
