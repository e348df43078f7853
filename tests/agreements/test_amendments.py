"""Amendments: add and withdraw positions of a signed agreement, with the arithmetic and the history."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from app.agreements import service
from tests.agreements.helpers import (
    AGREEMENTS,
    amend,
    create_agreement,
    create_programme,
    create_signed,
    get_programme,
    terminate,
)
from tests.conftest import Tree
from tests.helpers import assert_problem, ids, next_link

READ_FIELDS = {
    "id",
    "agreement_id",
    "kind",
    "positions",
    "reason",
    "reason_detail",
    "effective_on",
    "positions_before",
    "positions_after",
    "subsidy_total_before_cents",
    "subsidy_total_after_cents",
    "created_at",
}


@pytest.fixture
async def programme(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    return await create_programme(client, admin, positions_target=100, budget_cents=500_000_000)


@pytest.fixture
async def lyon(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> dict[str, Any]:
    return await create_signed(client, admin, programme["id"], tree.lyon_metro.id, positions_granted=50)


async def agreement_of(client: httpx.AsyncClient, admin: dict[str, str], agreement_id: str) -> dict[str, Any]:
    response = await client.get(f"{AGREEMENTS}/{agreement_id}", headers=admin)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_add_positions(
    client: httpx.AsyncClient, admin: dict[str, str], programme: dict[str, Any], lyon: dict[str, Any]
) -> None:
    response = await amend(
        client,
        admin,
        lyon["id"],
        "add_positions",
        10,
        reason="autre",
        reason_detail="Extension à Villeurbanne.",
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == READ_FIELDS
    assert response.headers["location"] == f"{AGREEMENTS}/{lyon['id']}/amendments/{body['id']}"
    assert "etag" not in response.headers
    assert body["agreement_id"] == lyon["id"]
    assert (body["kind"], body["positions"], body["reason"]) == ("add_positions", 10, "autre")
    assert body["reason_detail"] == "Extension à Villeurbanne."
    assert body["effective_on"] == "2022-09-01"
    assert (body["positions_before"], body["positions_after"]) == (50, 60)
    assert (body["subsidy_total_before_cents"], body["subsidy_total_after_cents"]) == (
        250_000_000,
        300_000_000,
    )
    assert (await client.get(response.headers["location"], headers=admin)).json() == body

    agreement = await agreement_of(client, admin, lyon["id"])
    assert (agreement["positions_granted"], agreement["subsidy_total_cents"]) == (60, 300_000_000)
    assert agreement["version"] == lyon["version"] + 1
    assert agreement["status"] == "signed"
    totals = await get_programme(client, programme["id"])
    assert (totals["positions_granted"], totals["subsidy_committed_cents"]) == (60, 300_000_000)


async def test_withdraw_positions(
    client: httpx.AsyncClient, admin: dict[str, str], programme: dict[str, Any], lyon: dict[str, Any]
) -> None:
    response = await amend(client, admin, lyon["id"], "withdraw_positions", 5)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["positions_before"], body["positions_after"]) == (50, 45)
    assert (body["subsidy_total_before_cents"], body["subsidy_total_after_cents"]) == (
        250_000_000,
        225_000_000,
    )
    assert body["reason_detail"] is None
    assert (await agreement_of(client, admin, lyon["id"]))["positions_granted"] == 45
    assert (await get_programme(client, programme["id"]))["subsidy_committed_cents"] == 225_000_000


async def test_withdraw_to_exactly_zero_then_more_is_409(
    client: httpx.AsyncClient, admin: dict[str, str], programme: dict[str, Any], lyon: dict[str, Any]
) -> None:
    too_many = await amend(client, admin, lyon["id"], "withdraw_positions", 51)
    assert assert_problem(too_many, 409, "positions_below_allocated")["positions_open"] == 0
    to_zero = await amend(client, admin, lyon["id"], "withdraw_positions", 50, reason="besoin_plus_justifie")
    assert to_zero.status_code == 201, to_zero.text
    assert (to_zero.json()["positions_after"], to_zero.json()["subsidy_total_after_cents"]) == (0, 0)
    agreement = await agreement_of(client, admin, lyon["id"])
    assert (agreement["positions_granted"], agreement["subsidy_total_cents"]) == (0, 0)
    assert_problem(
        await amend(client, admin, lyon["id"], "withdraw_positions", 1), 409, "positions_below_allocated"
    )
    totals = await get_programme(client, programme["id"])
    assert (totals["positions_granted"], totals["subsidy_committed_cents"]) == (0, 0)


async def test_withdraw_below_the_open_positions_is_409(
    client: httpx.AsyncClient, admin: dict[str, str], lyon: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def forty_open(
        session: Any, agreement_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, service.PositionCounts]:
        return {agreement_id: service.PositionCounts(40, 30) for agreement_id in agreement_ids}

    monkeypatch.setattr(service, "position_counts", forty_open)
    below = await amend(client, admin, lyon["id"], "withdraw_positions", 11)
    assert assert_problem(below, 409, "positions_below_allocated")["positions_open"] == 40
    assert (await amend(client, admin, lyon["id"], "withdraw_positions", 10)).status_code == 201


async def test_adding_past_the_target_or_the_budget_is_409_and_changes_nothing(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tree: Tree,
    programme: dict[str, Any],
    lyon: dict[str, Any],
) -> None:
    rhone = await create_signed(
        client,
        admin,
        programme["id"],
        tree.rhone.id,
        reference="R",
        positions_granted=15,
        subsidy_per_position_cents=10_000_000,
    )
    # 65 positions for 400 M€ of 500 M€: 35 positions and 100 M€ are left.
    past_target = await amend(client, admin, lyon["id"], "add_positions", 36)
    assert assert_problem(past_target, 409, "programme_positions_exceeded")["positions_available"] == 35
    past_budget = await amend(client, admin, rhone["id"], "add_positions", 11)
    assert (
        assert_problem(past_budget, 409, "programme_budget_exceeded")["budget_available_cents"] == 100_000_000
    )
    assert (await agreement_of(client, admin, lyon["id"]))["positions_granted"] == 50
    assert (await agreement_of(client, admin, rhone["id"]))["positions_granted"] == 15
    assert ids(await client.get(f"{AGREEMENTS}/{lyon['id']}/amendments", headers=admin)) == []
    assert (await amend(client, admin, rhone["id"], "add_positions", 10)).status_code == 201
    totals = await get_programme(client, programme["id"])
    assert (totals["positions_granted"], totals["subsidy_committed_cents"]) == (75, 500_000_000)


async def test_a_draft_or_terminated_agreement_cannot_be_amended(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tree: Tree,
    programme: dict[str, Any],
    lyon: dict[str, Any],
) -> None:
    draft = await create_agreement(
        client, admin, programme["id"], tree.rhone.id, reference="R", positions_granted=15
    )
    assert_problem(await amend(client, admin, draft["id"], "add_positions", 1), 409, "agreement_not_signed")
    assert (await terminate(client, admin, lyon["id"])).status_code == 200
    assert_problem(
        await amend(client, admin, lyon["id"], "withdraw_positions", 1), 409, "agreement_not_signed"
    )
    assert_problem(await amend(client, admin, str(uuid.uuid4()), "add_positions", 1), 404, "not_found")


@pytest.mark.parametrize(
    ("changes", "pointer"),
    [
        ({"reason": "raison_inconnue"}, "/reason"),
        ({"reason": "autre"}, "/reason_detail"),
        ({"positions": 0}, "/positions"),
        ({"positions": -3}, "/positions"),
        ({"kind": "move_positions"}, "/kind"),
        ({"effective_on": "2021-03-14"}, "/effective_on"),
        ({"positions_after": 60}, "/positions_after"),
    ],
)
async def test_invalid_amendments_are_422(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    lyon: dict[str, Any],
    changes: dict[str, Any],
    pointer: str,
) -> None:
    body = {"kind": "add_positions", "positions": 1, **changes}
    response = await amend(client, admin, lyon["id"], body.pop("kind"), body.pop("positions"), **body)
    assert_problem(response, 422, "validation_error", pointer)
    assert (await agreement_of(client, admin, lyon["id"]))["positions_granted"] == 50


async def test_every_amendment_reason_of_the_referential_is_accepted(
    client: httpx.AsyncClient, admin: dict[str, str], lyon: dict[str, Any]
) -> None:
    referential = (await client.get("/api/v1/referentials/amendment_reasons")).json()
    for item in referential["items"]:
        response = await amend(
            client, admin, lyon["id"], "add_positions", 1, reason=item["value"], reason_detail="x"
        )
        assert response.status_code == 201, response.text
    assert (await agreement_of(client, admin, lyon["id"]))["positions_granted"] == 50 + len(
        referential["items"]
    )


async def test_history_is_listed_in_creation_order_and_paged(
    client: httpx.AsyncClient, admin: dict[str, str], lyon: dict[str, Any]
) -> None:
    steps = [
        ("add_positions", 10),
        ("withdraw_positions", 5),
        ("add_positions", 3),
        ("withdraw_positions", 8),
    ]
    created = []
    for kind, positions in steps:
        response = await amend(client, admin, lyon["id"], kind, positions)
        assert response.status_code == 201, response.text
        created.append(response.json())
    url = f"{AGREEMENTS}/{lyon['id']}/amendments"
    listed = (await client.get(url, headers=admin)).json()["items"]
    assert listed == created
    assert [(a["positions_before"], a["positions_after"]) for a in listed] == [
        (50, 60),
        (60, 55),
        (55, 58),
        (58, 50),
    ]

    seen: list[str] = []
    next_url: str | None = f"{url}?limit=3&include_total=true"
    while next_url:
        response = await client.get(next_url, headers=admin)
        assert response.json()["total"] == 4
        seen += ids(response)
        next_url = next_link(response)
    assert seen == [a["id"] for a in created]


async def test_an_amendment_belongs_to_its_agreement(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tree: Tree,
    programme: dict[str, Any],
    lyon: dict[str, Any],
) -> None:
    rhone = await create_signed(
        client, admin, programme["id"], tree.rhone.id, reference="R", positions_granted=15
    )
    amendment = (await amend(client, admin, lyon["id"], "add_positions", 1)).json()
    elsewhere = await client.get(f"{AGREEMENTS}/{rhone['id']}/amendments/{amendment['id']}", headers=admin)
    assert_problem(elsewhere, 404, "not_found")
    unknown = await client.get(f"{AGREEMENTS}/{lyon['id']}/amendments/{uuid.uuid4()}", headers=admin)
    assert_problem(unknown, 404, "not_found")
    assert ids(await client.get(f"{AGREEMENTS}/{rhone['id']}/amendments", headers=admin)) == []


async def test_an_amendment_replays_with_the_same_idempotency_key(
    client: httpx.AsyncClient, admin: dict[str, str], lyon: dict[str, Any]
) -> None:
    headers = {**admin, "Idempotency-Key": "avenant-1"}
    first = await amend(client, headers, lyon["id"], "add_positions", 5)
    again = await amend(client, headers, lyon["id"], "add_positions", 5)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert (await agreement_of(client, admin, lyon["id"]))["positions_granted"] == 55
    assert len(ids(await client.get(f"{AGREEMENTS}/{lyon['id']}/amendments", headers=admin))) == 1
