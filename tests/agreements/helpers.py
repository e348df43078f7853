"""Shared builders and assertions of the programmes and agreements tests (all through the API)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

PROGRAMMES = "/api/v1/programmes"
AGREEMENTS = "/api/v1/agreements"
MERGE_PATCH = "application/merge-patch+json"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "code", "request_id"}
_LINK_NEXT = re.compile(r'^<([^>]+)>;\s*rel="next"$')

PROGRAMME: dict[str, Any] = {
    "code": "FRANCE_RELANCE_V1",
    "name": "France Relance – Conseillers numériques",
    "positions_target": 4000,
    "budget_cents": 25_000_000_000,
    "subsidy_per_position_cents": 5_000_000,
    "starts_on": "2021-01-01",
}


def assert_problem(
    response: httpx.Response, status: int, code: str, pointer: str | None = None
) -> dict[str, Any]:
    """An RFC 9457 problem with the contract's members; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["type"].endswith("/" + code)
    assert body["detail"]
    assert body["instance"] == response.request.url.path
    if pointer is not None:
        assert body["errors"][0]["pointer"] == pointer, body["errors"]
    return body


def next_link(response: httpx.Response) -> str | None:
    header = response.headers.get("link")
    if header is None:
        return None
    match = _LINK_NEXT.match(header)
    assert match, header
    return match.group(1)


def items(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["items"]
    return result


def ids(response: httpx.Response) -> list[str]:
    return [item["id"] for item in items(response)]


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
