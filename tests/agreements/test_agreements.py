"""Agreements: create (draft), change, sign, terminate; references, programme invariants, versions."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest

from app.agreements import service
from tests.agreements.helpers import (
    AGREEMENTS,
    create_agreement,
    create_programme,
    create_signed,
    get_programme,
    merge_patch,
    post_agreement,
    sign,
    terminate,
)
from tests.conftest import Tree
from tests.helpers import assert_problem, ids, next_link

READ_FIELDS = {
    "id",
    "programme_id",
    "territory_id",
    "kind",
    "reference",
    "status",
    "positions_granted",
    "subsidy_per_position_cents",
    "subsidy_total_cents",
    "signed_on",
    "starts_on",
    "ends_on",
    "terminated_on",
    "termination_reason",
    "positions_open",
    "positions_occupied",
    "created_at",
    "updated_at",
    "version",
}


@pytest.fixture
async def programme(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    return await create_programme(client, admin, positions_target=100, budget_cents=500_000_000)


def counts(open_: int, occupied: int) -> Callable[..., Any]:
    async def fake(
        session: Any, agreement_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, service.PositionCounts]:
        return {agreement_id: service.PositionCounts(open_, occupied) for agreement_id in agreement_ids}

    return fake


# --- create -----------------------------------------------------------------------------------------


async def test_create_makes_a_draft_with_the_programmes_subsidy(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    response = await post_agreement(client, admin, programme["id"], tree.lyon_metro.id, ends_on="2023-02-28")
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == READ_FIELDS
    assert response.headers["location"] == f"{AGREEMENTS}/{body['id']}"
    assert response.headers["etag"] == '"1"'
    assert body["status"] == "draft"
    assert body["kind"] == "convention"
    assert body["reference"] == "CONV-2021-69M-001"
    assert body["territory_id"] == str(tree.lyon_metro.id)
    assert body["positions_granted"] == 50
    assert body["subsidy_per_position_cents"] == 5_000_000
    assert body["subsidy_total_cents"] == 250_000_000
    assert (body["positions_open"], body["positions_occupied"]) == (0, 0)
    assert (body["signed_on"], body["terminated_on"], body["termination_reason"]) == (None, None, None)
    assert (body["starts_on"], body["ends_on"]) == ("2021-03-01", "2023-02-28")
    assert (await client.get(response.headers["location"], headers=admin)).json() == body
    totals = await get_programme(client, programme["id"])
    assert (totals["positions_granted"], totals["subsidy_committed_cents"]) == (50, 250_000_000)


async def test_create_takes_its_own_subsidy(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    body = await create_agreement(
        client,
        admin,
        programme["id"],
        tree.rhone.id,
        kind="preliminary",
        subsidy_per_position_cents=5_750_000,
    )
    assert body["kind"] == "preliminary"
    assert body["subsidy_per_position_cents"] == 5_750_000
    assert body["subsidy_total_cents"] == 287_500_000


@pytest.mark.parametrize("field", ["programme_id", "territory_id"])
async def test_unknown_references_are_422_unknown_reference(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any], field: str
) -> None:
    await create_agreement(client, admin, programme["id"], tree.rhone.id)
    body = {"programme_id": programme["id"], "territory_id": str(tree.rhone.id), field: str(uuid.uuid4())}
    # Checked before any business rule: the same reference and too many positions would both be 409.
    response = await post_agreement(
        client, admin, body["programme_id"], body["territory_id"], positions_granted=999
    )
    assert_problem(response, 422, "unknown_reference", f"/{field}")


async def test_reference_is_unique_within_a_programme(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    first = await create_agreement(client, admin, programme["id"], tree.lyon_metro.id, positions_granted=10)
    again = await post_agreement(client, admin, programme["id"], tree.rhone.id, positions_granted=10)
    assert_problem(again, 409, "agreement_reference_exists")
    # A terminated agreement keeps its reference.
    assert (await terminate(client, admin, first["id"])).status_code == 200
    assert_problem(
        await post_agreement(client, admin, programme["id"], tree.rhone.id), 409, "agreement_reference_exists"
    )
    other = await create_programme(client, admin, code="RENOUVELLEMENT_V2")
    assert (await post_agreement(client, admin, other["id"], tree.rhone.id)).status_code == 201


async def test_positions_past_the_target_are_409(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    await create_signed(client, admin, programme["id"], tree.lyon_metro.id, positions_granted=60)
    await create_agreement(client, admin, programme["id"], tree.rhone.id, reference="R", positions_granted=30)
    over = await post_agreement(
        client, admin, programme["id"], tree.hg.id, reference="H", positions_granted=11
    )
    assert assert_problem(over, 409, "programme_positions_exceeded")["positions_available"] == 10
    exact = await post_agreement(
        client, admin, programme["id"], tree.hg.id, reference="H", positions_granted=10
    )
    assert exact.status_code == 201
    totals = await get_programme(client, programme["id"])
    assert totals["positions_granted"] == totals["positions_target"] == 100


async def test_subsidy_past_the_budget_is_409(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    await create_agreement(client, admin, programme["id"], tree.lyon_metro.id, positions_granted=50)
    over = await post_agreement(
        client,
        admin,
        programme["id"],
        tree.rhone.id,
        reference="R",
        positions_granted=25,
        subsidy_per_position_cents=10_000_001,
    )
    assert assert_problem(over, 409, "programme_budget_exceeded")["budget_available_cents"] == 250_000_000
    exact = await post_agreement(
        client,
        admin,
        programme["id"],
        tree.rhone.id,
        reference="R",
        positions_granted=25,
        subsidy_per_position_cents=10_000_000,
    )
    assert exact.status_code == 201, exact.text
    assert (await get_programme(client, programme["id"]))["subsidy_committed_cents"] == 500_000_000


async def test_ends_on_before_starts_on_is_422(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    response = await post_agreement(client, admin, programme["id"], tree.rhone.id, ends_on="2021-02-28")
    assert_problem(response, 422, "validation_error", "/ends_on")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "avenant"),
        ("positions_granted", -1),
        ("positions_granted", 1.5),
        ("subsidy_per_position_cents", -5),
        ("reference", ""),
        ("starts_on", "01/03/2021"),
        ("status", "signed"),
        ("subsidy_total_cents", 1),
    ],
)
async def test_invalid_fields_are_422_with_their_pointer(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tree: Tree,
    programme: dict[str, Any],
    field: str,
    value: Any,
) -> None:
    response = await post_agreement(client, admin, programme["id"], tree.rhone.id, **{field: value})
    assert_problem(response, 422, "validation_error", f"/{field}")


async def test_create_is_idempotent_with_a_key(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    headers = {**admin, "Idempotency-Key": "agr-1"}
    first = await post_agreement(client, headers, programme["id"], tree.rhone.id)
    again = await post_agreement(client, headers, programme["id"], tree.rhone.id)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert (await get_programme(client, programme["id"]))["positions_granted"] == 50


# --- read -------------------------------------------------------------------------------------------


async def test_get_answers_etag_and_304(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    agreement = await create_agreement(client, admin, programme["id"], tree.rhone.id)
    url = f"{AGREEMENTS}/{agreement['id']}"
    response = await client.get(url, headers=admin)
    assert response.headers["etag"] == '"1"'
    cached = await client.get(url, headers={**admin, "If-None-Match": '"1"'})
    assert cached.status_code == 304
    assert cached.headers["etag"] == '"1"'
    await sign(client, admin, agreement["id"])
    fresh = await client.get(url, headers={**admin, "If-None-Match": '"1"'})
    assert fresh.status_code == 200
    assert fresh.headers["etag"] == '"2"'
    assert_problem(await client.get(f"{AGREEMENTS}/{uuid.uuid4()}", headers=admin), 404, "not_found")


# --- change -----------------------------------------------------------------------------------------


async def test_patch_changes_a_draft_and_the_programme_totals(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    agreement = await create_agreement(client, admin, programme["id"], tree.rhone.id, positions_granted=15)
    url = f"{AGREEMENTS}/{agreement['id']}"
    response = await merge_patch(
        client,
        admin,
        url,
        {
            "positions_granted": 20,
            "subsidy_per_position_cents": 5_750_000,
            "ends_on": "2023-02-28",
            "kind": "preliminary",
            "territory_id": str(tree.lyon_metro.id),
            "reference": "APP-69M",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["etag"] == '"2"'
    assert body["version"] == 2
    assert body["positions_granted"] == 20
    assert body["subsidy_total_cents"] == 115_000_000
    assert (body["kind"], body["reference"], body["ends_on"]) == ("preliminary", "APP-69M", "2023-02-28")
    assert body["territory_id"] == str(tree.lyon_metro.id)
    totals = await get_programme(client, programme["id"])
    assert (totals["positions_granted"], totals["subsidy_committed_cents"]) == (20, 115_000_000)
    cleared = await merge_patch(client, admin, url, {"ends_on": None}, if_match='"2"')
    assert cleared.json()["ends_on"] is None


async def test_patch_without_if_match_is_428_and_stale_is_412(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    agreement = await create_agreement(client, admin, programme["id"], tree.rhone.id)
    url = f"{AGREEMENTS}/{agreement['id']}"
    assert_problem(
        await merge_patch(client, admin, url, {"positions_granted": 1}, None), 428, "precondition_required"
    )
    assert_problem(
        await merge_patch(client, admin, url, {"positions_granted": 1}, '"5"'), 412, "precondition_failed"
    )
    assert (await client.get(url, headers=admin)).json()["positions_granted"] == 50


async def test_patch_keeps_the_programme_invariants(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    await create_agreement(client, admin, programme["id"], tree.lyon_metro.id, positions_granted=60)
    agreement = await create_agreement(
        client, admin, programme["id"], tree.rhone.id, reference="R", positions_granted=30
    )
    url = f"{AGREEMENTS}/{agreement['id']}"
    assert_problem(
        await merge_patch(client, admin, url, {"positions_granted": 41}), 409, "programme_positions_exceeded"
    )
    over_budget = await merge_patch(client, admin, url, {"subsidy_per_position_cents": 6_666_667})
    assert_problem(over_budget, 409, "programme_budget_exceeded")
    fits = await merge_patch(client, admin, url, {"positions_granted": 40})
    assert fits.status_code == 200, fits.text
    assert (await get_programme(client, programme["id"]))["positions_granted"] == 100


async def test_patch_checks_references_dates_and_nulls(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    await create_agreement(
        client, admin, programme["id"], tree.lyon_metro.id, reference="TAKEN", positions_granted=1
    )
    agreement = await create_agreement(client, admin, programme["id"], tree.rhone.id, positions_granted=1)
    url = f"{AGREEMENTS}/{agreement['id']}"
    unknown = await merge_patch(client, admin, url, {"territory_id": str(uuid.uuid4())})
    assert_problem(unknown, 422, "unknown_reference", "/territory_id")
    assert_problem(
        await merge_patch(client, admin, url, {"reference": "TAKEN"}), 409, "agreement_reference_exists"
    )
    assert_problem(
        await merge_patch(client, admin, url, {"ends_on": "2020-01-01"}), 422, "validation_error", "/ends_on"
    )
    assert_problem(
        await merge_patch(client, admin, url, {"positions_granted": None}),
        422,
        "validation_error",
        "/positions_granted",
    )
    moved = await merge_patch(client, admin, url, {"programme_id": str(uuid.uuid4())})
    assert_problem(moved, 422, "validation_error", "/programme_id")
    assert_problem(
        await merge_patch(client, admin, url, {"status": "signed"}), 422, "validation_error", "/status"
    )


@pytest.mark.parametrize("state", ["signed", "terminated"])
async def test_only_a_draft_is_editable(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any], state: str
) -> None:
    agreement = await create_signed(client, admin, programme["id"], tree.rhone.id)
    version = 2
    if state == "terminated":
        assert (await terminate(client, admin, agreement["id"])).status_code == 200
        version = 3
    url = f"{AGREEMENTS}/{agreement['id']}"
    response = await merge_patch(client, admin, url, {"positions_granted": 10}, if_match=f'"{version}"')
    assert_problem(response, 409, "agreement_not_editable")


async def test_patch_below_the_open_positions_is_409(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tree: Tree,
    programme: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agreement = await create_agreement(client, admin, programme["id"], tree.rhone.id, positions_granted=15)
    monkeypatch.setattr(service, "position_counts", counts(12, 0))
    url = f"{AGREEMENTS}/{agreement['id']}"
    below = await merge_patch(client, admin, url, {"positions_granted": 11})
    assert assert_problem(below, 409, "positions_below_allocated")["positions_open"] == 12
    assert (await merge_patch(client, admin, url, {"positions_granted": 12})).status_code == 200


# --- sign -------------------------------------------------------------------------------------------


async def test_sign_moves_a_draft_to_signed(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    agreement = await create_agreement(client, admin, programme["id"], tree.rhone.id)
    response = await client.post(
        f"{AGREEMENTS}/{agreement['id']}/sign", json={"signed_on": "2021-03-15"}, headers=admin
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == READ_FIELDS
    assert (body["status"], body["signed_on"], body["version"]) == ("signed", "2021-03-15", 2)
    assert response.headers["etag"] == '"2"'
    assert "location" not in response.headers
    totals = await get_programme(client, programme["id"])
    assert totals["positions_granted"] == 50


async def test_sign_is_only_for_drafts(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    signed = await create_signed(client, admin, programme["id"], tree.rhone.id)
    again = await client.post(
        f"{AGREEMENTS}/{signed['id']}/sign", json={"signed_on": "2021-04-01"}, headers=admin
    )
    assert_problem(again, 409, "invalid_transition")
    assert (await terminate(client, admin, signed["id"])).status_code == 200
    ended = await client.post(
        f"{AGREEMENTS}/{signed['id']}/sign", json={"signed_on": "2021-04-01"}, headers=admin
    )
    assert_problem(ended, 409, "invalid_transition")


async def test_sign_needs_a_date(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    agreement = await create_agreement(client, admin, programme["id"], tree.rhone.id)
    url = f"{AGREEMENTS}/{agreement['id']}/sign"
    assert_problem(await client.post(url, json={}, headers=admin), 422, "validation_error", "/signed_on")
    assert_problem(
        await client.post(url, json={"signed_on": "2021-13-01"}, headers=admin),
        422,
        "validation_error",
        "/signed_on",
    )
    assert_problem(
        await client.post(
            f"{AGREEMENTS}/{uuid.uuid4()}/sign", json={"signed_on": "2021-03-01"}, headers=admin
        ),
        404,
        "not_found",
    )


async def test_sign_replays_with_the_same_idempotency_key(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    agreement = await create_agreement(client, admin, programme["id"], tree.rhone.id)
    url = f"{AGREEMENTS}/{agreement['id']}/sign"
    headers = {**admin, "Idempotency-Key": "sign-1"}
    first = await client.post(url, json={"signed_on": "2021-03-15"}, headers=headers)
    again = await client.post(url, json={"signed_on": "2021-03-15"}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.json() == first.json()
    assert again.headers["etag"] == first.headers["etag"] == '"2"'
    assert (await client.get(f"{AGREEMENTS}/{agreement['id']}", headers=admin)).json()["version"] == 2
    other = await client.post(url, json={"signed_on": "2021-03-16"}, headers=headers)
    assert_problem(other, 422, "idempotency_key_reused")
    without_key = await client.post(url, json={"signed_on": "2021-03-15"}, headers=admin)
    assert_problem(without_key, 409, "invalid_transition")


async def test_actions_honour_an_if_match_when_sent(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    agreement = await create_agreement(client, admin, programme["id"], tree.rhone.id)
    url = f"{AGREEMENTS}/{agreement['id']}"
    stale = await client.post(
        f"{url}/sign", json={"signed_on": "2021-03-15"}, headers={**admin, "If-Match": '"4"'}
    )
    assert_problem(stale, 412, "precondition_failed")
    ok = await client.post(
        f"{url}/sign", json={"signed_on": "2021-03-15"}, headers={**admin, "If-Match": '"1"'}
    )
    assert ok.status_code == 200
    stale_end = await client.post(
        f"{url}/terminate",
        json={"terminated_on": "2022-01-01", "reason": "x"},
        headers={**admin, "If-Match": '"1"'},
    )
    assert_problem(stale_end, 412, "precondition_failed")


# --- terminate --------------------------------------------------------------------------------------


@pytest.mark.parametrize("signed", [False, True])
async def test_terminate_frees_the_positions(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any], signed: bool
) -> None:
    make = create_signed if signed else create_agreement
    agreement = await make(client, admin, programme["id"], tree.lyon_metro.id, positions_granted=100)
    assert_problem(
        await post_agreement(
            client, admin, programme["id"], tree.rhone.id, reference="R", positions_granted=15
        ),
        409,
        "programme_positions_exceeded",
    )
    response = await terminate(client, admin, agreement["id"], "2022-06-30", "Le territoire renonce.")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "terminated"
    assert (body["terminated_on"], body["termination_reason"]) == ("2022-06-30", "Le territoire renonce.")
    assert body["positions_granted"] == 100
    assert body["version"] == agreement["version"] + 1
    assert response.headers["etag"] == f'"{body["version"]}"'
    totals = await get_programme(client, programme["id"])
    assert (totals["positions_granted"], totals["subsidy_committed_cents"]) == (0, 0)
    fits = await post_agreement(
        client, admin, programme["id"], tree.rhone.id, reference="R", positions_granted=15
    )
    assert fits.status_code == 201


async def test_terminate_twice_is_an_invalid_transition(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    agreement = await create_signed(client, admin, programme["id"], tree.rhone.id)
    assert (await terminate(client, admin, agreement["id"])).status_code == 200
    assert_problem(await terminate(client, admin, agreement["id"]), 409, "invalid_transition")


async def test_terminate_before_the_signature_is_422(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    agreement = await create_signed(client, admin, programme["id"], tree.rhone.id)
    early = await terminate(client, admin, agreement["id"], terminated_on="2021-03-14")
    assert_problem(early, 422, "validation_error", "/terminated_on")
    same_day = await terminate(client, admin, agreement["id"], terminated_on="2021-03-15")
    assert same_day.status_code == 200


async def test_terminate_needs_a_reason(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    agreement = await create_signed(client, admin, programme["id"], tree.rhone.id)
    url = f"{AGREEMENTS}/{agreement['id']}/terminate"
    response = await client.post(url, json={"terminated_on": "2022-01-01"}, headers=admin)
    assert_problem(response, 422, "validation_error", "/reason")


async def test_terminate_with_occupied_positions_is_409(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tree: Tree,
    programme: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agreement = await create_signed(client, admin, programme["id"], tree.rhone.id)
    monkeypatch.setattr(service, "position_counts", counts(5, 2))
    body = assert_problem(
        await terminate(client, admin, agreement["id"]), 409, "agreement_has_occupied_positions"
    )
    assert body["positions_occupied"] == 2
    # Still signed; the read counts the positions in its own SELECT (there are none), not through the rule's
    # `position_counts` faked above.
    current = (await client.get(f"{AGREEMENTS}/{agreement['id']}", headers=admin)).json()
    assert (current["status"], current["positions_open"], current["positions_occupied"]) == ("signed", 0, 0)


async def test_terminate_replays_with_the_same_idempotency_key(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    agreement = await create_signed(client, admin, programme["id"], tree.rhone.id)
    headers = {**admin, "Idempotency-Key": "end-1"}
    first = await terminate(client, headers, agreement["id"])
    again = await terminate(client, headers, agreement["id"])
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


# --- list -------------------------------------------------------------------------------------------


async def test_list_filters(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    other = await create_programme(client, admin, code="RENOUVELLEMENT_V2")
    lyon = await create_signed(client, admin, programme["id"], tree.lyon_metro.id, positions_granted=50)
    rhone = await create_agreement(
        client, admin, programme["id"], tree.rhone.id, reference="R", kind="preliminary", positions_granted=15
    )
    hg = await create_agreement(client, admin, other["id"], tree.hg.id, reference="H", positions_granted=5)
    ended = await create_agreement(
        client, admin, other["id"], tree.villefranche.id, reference="V", positions_granted=1
    )
    assert (await terminate(client, admin, ended["id"])).status_code == 200

    async def listed(**params: str) -> set[str]:
        return set(ids(await client.get(AGREEMENTS, params=params, headers=admin)))

    assert await listed() == {lyon["id"], rhone["id"], hg["id"], ended["id"]}
    assert await listed(programme_id=programme["id"]) == {lyon["id"], rhone["id"]}
    assert await listed(territory_id=str(tree.rhone.id)) == {rhone["id"]}
    assert await listed(within=str(tree.ara.id)) == {lyon["id"], rhone["id"], ended["id"]}
    assert await listed(within=str(tree.rhone.id)) == {rhone["id"], ended["id"]}
    assert await listed(within=str(tree.occ.id)) == {hg["id"]}
    assert await listed(within=str(tree.lyon.id)) == set()
    assert await listed(status="signed") == {lyon["id"]}
    assert await listed(status="draft") == {rhone["id"], hg["id"]}
    assert await listed(status="terminated") == {ended["id"]}
    assert await listed(kind="preliminary") == {rhone["id"]}
    assert await listed(programme_id=other["id"], status="draft") == {hg["id"]}
    assert await listed(programme_id=str(uuid.uuid4())) == set()

    unknown_root = await client.get(AGREEMENTS, params={"within": str(uuid.uuid4())}, headers=admin)
    assert_problem(unknown_root, 422, "validation_error", "/query/within")
    assert_problem(
        await client.get(AGREEMENTS, params={"status": "x"}, headers=admin),
        422,
        "validation_error",
        "/query/status",
    )
    assert_problem(
        await client.get(AGREEMENTS, params={"region": "84"}, headers=admin),
        422,
        "validation_error",
        "/query/region",
    )


async def test_list_sorts_by_creation_or_reference_and_pages(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    created = [
        (
            await create_agreement(
                client, admin, programme["id"], tree.rhone.id, reference=ref, positions_granted=1
            )
        )["id"]
        for ref in ("C-3", "A-1", "B-2", "E-5", "D-4")
    ]
    by_reference = [created[1], created[2], created[0], created[4], created[3]]
    assert ids(await client.get(AGREEMENTS, headers=admin)) == created
    assert ids(await client.get(AGREEMENTS, params={"sort": "-created_at"}, headers=admin)) == created[::-1]
    assert ids(await client.get(AGREEMENTS, params={"sort": "reference"}, headers=admin)) == by_reference
    assert (
        ids(await client.get(AGREEMENTS, params={"sort": "-reference"}, headers=admin)) == by_reference[::-1]
    )
    assert_problem(
        await client.get(AGREEMENTS, params={"sort": "positions"}, headers=admin), 422, "validation_error"
    )

    seen: list[str] = []
    url: str | None = f"{AGREEMENTS}?limit=2&sort=reference"
    while url:
        response = await client.get(url, headers=admin)
        seen += ids(response)
        url = next_link(response)
    assert seen == by_reference
    first = await client.get(AGREEMENTS, params={"limit": 2}, headers=admin)
    cursor = first.json()["next_cursor"]
    other_filter = await client.get(
        AGREEMENTS, params={"limit": 2, "cursor": cursor, "status": "draft"}, headers=admin
    )
    assert_problem(other_filter, 422, "invalid_cursor")


async def test_list_makes_the_same_number_of_queries_for_2_or_20_agreements(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tree: Tree,
    programme: dict[str, Any],
    count_queries: Callable[[], Any],
) -> None:
    async def fill(first: int, last: int) -> None:
        for i in range(first, last):
            await create_agreement(
                client, admin, programme["id"], tree.rhone.id, reference=f"R-{i:02d}", positions_granted=1
            )

    async def count() -> tuple[int, int]:
        with count_queries() as counter:
            response = await client.get(
                AGREEMENTS, params={"limit": 50, "within": str(tree.ara.id)}, headers=admin
            )
        return counter.count, len(ids(response))

    await fill(0, 2)
    few, few_items = await count()
    await fill(2, 20)
    many, many_items = await count()
    assert (few_items, many_items) == (2, 20)
    assert few == many


async def test_a_territory_with_an_agreement_cannot_be_deleted(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, programme: dict[str, Any]
) -> None:
    await create_agreement(client, admin, programme["id"], tree.villefranche.id)
    url = f"/api/v1/territories/{tree.villefranche.id}"
    etag = (await client.get(url)).headers["etag"]
    assert_problem(await client.delete(url, headers={**admin, "If-Match": etag}), 409, "territory_in_use")
