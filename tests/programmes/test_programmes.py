"""Programmes: create, read, list, change; unique codes, dates, committed totals, versions, roles."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.agreements.helpers import (
    PROGRAMME,
    PROGRAMMES,
    create_agreement,
    create_programme,
    create_signed,
    get_programme,
    merge_patch,
    terminate,
)
from tests.conftest import KeyMaker, Tree, bearer
from tests.helpers import assert_problem, ids, next_link

READ_FIELDS = {
    "id",
    "code",
    "name",
    "positions_target",
    "budget_cents",
    "subsidy_per_position_cents",
    "starts_on",
    "ends_on",
    "positions_granted",
    "subsidy_committed_cents",
    "created_at",
    "updated_at",
    "version",
}


# --- create -----------------------------------------------------------------------------------------


async def test_create_returns_201_with_location_etag_and_the_programme(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post(PROGRAMMES, json={**PROGRAMME, "ends_on": "2024-12-31"}, headers=admin)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == READ_FIELDS
    assert response.headers["location"] == f"{PROGRAMMES}/{body['id']}"
    assert response.headers["etag"] == '"1"'
    assert body["code"] == "FRANCE_RELANCE_V1"
    assert body["positions_target"] == 4000
    assert body["budget_cents"] == 25_000_000_000
    assert body["subsidy_per_position_cents"] == 5_000_000
    assert body["starts_on"] == "2021-01-01"
    assert body["ends_on"] == "2024-12-31"
    assert body["positions_granted"] == 0
    assert body["subsidy_committed_cents"] == 0
    assert body["version"] == 1
    assert body["created_at"].endswith("Z")
    assert (await client.get(response.headers["location"])).json() == body


async def test_ends_on_is_optional(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    assert (await create_programme(client, admin))["ends_on"] is None


async def test_duplicate_code_is_409_programme_exists(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_programme(client, admin)
    response = await client.post(PROGRAMMES, json={**PROGRAMME, "name": "Autre"}, headers=admin)
    assert_problem(response, 409, "programme_exists")


async def test_ends_on_before_starts_on_is_422(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.post(PROGRAMMES, json={**PROGRAMME, "ends_on": "2020-12-31"}, headers=admin)
    assert_problem(response, 422, "validation_error", "/ends_on")


async def test_validation_runs_before_the_uniqueness_check(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_programme(client, admin)
    response = await client.post(PROGRAMMES, json={**PROGRAMME, "ends_on": "2020-12-31"}, headers=admin)
    assert_problem(response, 422, "validation_error", "/ends_on")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("code", "france relance"),
        ("code", "X"),
        ("positions_target", -1),
        ("budget_cents", -1),
        ("budget_cents", 12.5),
        ("subsidy_per_position_cents", "5000000.5"),
        ("starts_on", "2021-02-30"),
        ("positions_granted", 10),
        # Counts and money are JSON integers: no string, float or boolean slips through converted.
        ("positions_target", "4000"),
        ("positions_target", 4000.0),
        ("positions_target", True),
        ("budget_cents", "25000000000"),
        ("budget_cents", 25_000_000_000.0),
        ("subsidy_per_position_cents", "5000000"),
        ("subsidy_per_position_cents", 5_000_000.0),
        ("subsidy_per_position_cents", False),
    ],
)
async def test_invalid_fields_are_422_with_their_pointer(
    client: httpx.AsyncClient, admin: dict[str, str], field: str, value: Any
) -> None:
    response = await client.post(PROGRAMMES, json={**PROGRAMME, field: value}, headers=admin)
    assert_problem(response, 422, "validation_error", f"/{field}")


async def test_create_needs_an_admin_key(client: httpx.AsyncClient, make_key: KeyMaker, tree: Tree) -> None:
    no_key = await client.post(PROGRAMMES, json=PROGRAMME)
    assert_problem(no_key, 401, "unauthenticated")
    assert no_key.headers["www-authenticate"].startswith("Bearer")
    for role in ("territory_manager", "viewer"):
        key = await make_key(role, [tree.ara])
        assert_problem(await client.post(PROGRAMMES, json=PROGRAMME, headers=bearer(key)), 403, "forbidden")
    counsellor = await make_key("counsellor", [tree.lyon])
    assert_problem(
        await client.post(PROGRAMMES, json=PROGRAMME, headers=bearer(counsellor)), 403, "forbidden"
    )


async def test_create_is_idempotent_with_a_key(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    headers = {**admin, "Idempotency-Key": "prog-1"}
    first = await client.post(PROGRAMMES, json=PROGRAMME, headers=headers)
    again = await client.post(PROGRAMMES, json=PROGRAMME, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert len(ids(await client.get(PROGRAMMES))) == 1
    other = await client.post(PROGRAMMES, json={**PROGRAMME, "code": "OTHER"}, headers=headers)
    assert_problem(other, 422, "idempotency_key_reused")


# --- read -------------------------------------------------------------------------------------------


async def test_get_is_public_with_etag_and_304(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    programme = await create_programme(client, admin)
    response = await client.get(f"{PROGRAMMES}/{programme['id']}")
    assert response.status_code == 200
    assert response.headers["etag"] == '"1"'
    assert response.json() == programme
    cached = await client.get(f"{PROGRAMMES}/{programme['id']}", headers={"If-None-Match": '"1"'})
    assert cached.status_code == 304
    assert cached.headers["etag"] == '"1"'
    assert cached.content == b""
    assert (
        await client.get(f"{PROGRAMMES}/{programme['id']}", headers={"If-None-Match": '"7"'})
    ).status_code == 200


async def test_reads_are_public_but_an_invalid_key_is_401(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    programme = await create_programme(client, admin)
    bad = bearer("cnfs_not-a-key")
    assert_problem(await client.get(f"{PROGRAMMES}/{programme['id']}", headers=bad), 401, "unauthenticated")
    assert_problem(await client.get(PROGRAMMES, headers=bad), 401, "unauthenticated")


async def test_readable_by_every_role(
    client: httpx.AsyncClient, admin: dict[str, str], make_key: KeyMaker, tree: Tree
) -> None:
    programme = await create_programme(client, admin)
    keys = [
        await make_key("viewer", [tree.rhone]),
        await make_key("territory_manager", [tree.rhone]),
        await make_key("counsellor", [tree.lyon]),
    ]
    for key in keys:
        assert (await client.get(f"{PROGRAMMES}/{programme['id']}", headers=bearer(key))).status_code == 200
        assert ids(await client.get(PROGRAMMES, headers=bearer(key))) == [programme["id"]]


async def test_unknown_programme_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get(f"{PROGRAMMES}/{uuid.uuid4()}"), 404, "not_found")
    assert_problem(await client.get(f"{PROGRAMMES}/not-a-uuid"), 422, "validation_error")


async def test_list_sorts_by_code_by_default_and_by_starts_on(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    b = await create_programme(client, admin, code="B_RENOUVELLEMENT", starts_on="2023-01-01")
    a = await create_programme(client, admin, code="A_INITIAL", starts_on="2021-01-01")
    c = await create_programme(client, admin, code="C_BONUS", starts_on="2022-01-01")
    assert ids(await client.get(PROGRAMMES)) == [a["id"], b["id"], c["id"]]
    assert ids(await client.get(PROGRAMMES, params={"sort": "-code"})) == [c["id"], b["id"], a["id"]]
    assert ids(await client.get(PROGRAMMES, params={"sort": "starts_on"})) == [a["id"], c["id"], b["id"]]
    assert ids(await client.get(PROGRAMMES, params={"sort": "-starts_on"})) == [b["id"], c["id"], a["id"]]
    assert_problem(
        await client.get(PROGRAMMES, params={"sort": "name"}), 422, "validation_error", "/query/sort"
    )
    assert_problem(await client.get(PROGRAMMES, params={"code": "A"}), 422, "validation_error", "/query/code")


async def test_list_pages_with_a_cursor_and_a_link_header(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = [(await create_programme(client, admin, code=f"P{i:02d}"))["id"] for i in range(5)]
    seen: list[str] = []
    url: str | None = f"{PROGRAMMES}?limit=2&sort=starts_on&include_total=true"
    while url:
        response = await client.get(url)
        assert response.json()["total"] == 5
        seen += ids(response)
        url = next_link(response)
        assert (response.json()["next_cursor"] is None) == (url is None)
    assert sorted(seen) == sorted(created)
    assert len(seen) == 5


# --- change -----------------------------------------------------------------------------------------


async def test_patch_is_a_merge_patch_with_if_match(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    programme = await create_programme(client, admin, ends_on="2024-12-31")
    url = f"{PROGRAMMES}/{programme['id']}"
    response = await merge_patch(client, admin, url, {"name": "France Relance V1", "ends_on": None})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "France Relance V1"
    assert body["ends_on"] is None
    assert body["positions_target"] == 4000
    assert body["version"] == 2
    assert response.headers["etag"] == '"2"'
    plain_json = await client.patch(
        url, json={"positions_target": 4500}, headers={**admin, "If-Match": '"2"'}
    )
    assert plain_json.status_code == 200
    assert plain_json.json()["positions_target"] == 4500


async def test_patch_without_if_match_is_428_and_stale_is_412(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    programme = await create_programme(client, admin)
    url = f"{PROGRAMMES}/{programme['id']}"
    assert_problem(
        await merge_patch(client, admin, url, {"name": "x"}, if_match=None), 428, "precondition_required"
    )
    assert_problem(
        await merge_patch(client, admin, url, {"name": "x"}, if_match='"9"'), 412, "precondition_failed"
    )
    assert (await get_programme(client, programme["id"]))["name"] == PROGRAMME["name"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("positions_target", "4500"),
        ("positions_target", 4500.0),
        ("budget_cents", "28125000000"),
        ("budget_cents", 28_125_000_000.0),
        ("subsidy_per_position_cents", "5000000"),
        ("subsidy_per_position_cents", 5_000_000.0),
        ("subsidy_per_position_cents", True),
    ],
)
async def test_patch_takes_counts_and_money_as_json_integers_only(
    client: httpx.AsyncClient, admin: dict[str, str], field: str, value: Any
) -> None:
    programme = await create_programme(client, admin)
    response = await merge_patch(client, admin, f"{PROGRAMMES}/{programme['id']}", {field: value})
    assert_problem(response, 422, "validation_error", f"/{field}")
    assert await get_programme(client, programme["id"]) == programme


@pytest.mark.parametrize("field", ["code", "name", "positions_target", "budget_cents", "starts_on"])
async def test_patch_cannot_clear_a_required_field(
    client: httpx.AsyncClient, admin: dict[str, str], field: str
) -> None:
    programme = await create_programme(client, admin)
    response = await merge_patch(client, admin, f"{PROGRAMMES}/{programme['id']}", {field: None})
    assert_problem(response, 422, "validation_error", f"/{field}")


async def test_patch_checks_dates_against_the_stored_ones(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    programme = await create_programme(client, admin, ends_on="2024-12-31")
    url = f"{PROGRAMMES}/{programme['id']}"
    assert_problem(
        await merge_patch(client, admin, url, {"starts_on": "2025-01-01"}),
        422,
        "validation_error",
        "/ends_on",
    )


async def test_patch_to_another_programmes_code_is_409(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_programme(client, admin, code="TAKEN")
    programme = await create_programme(client, admin)
    response = await merge_patch(client, admin, f"{PROGRAMMES}/{programme['id']}", {"code": "TAKEN"})
    assert_problem(response, 409, "programme_exists")
    same = await merge_patch(client, admin, f"{PROGRAMMES}/{programme['id']}", {"code": programme["code"]})
    assert same.status_code == 200


async def test_patch_needs_an_admin(
    client: httpx.AsyncClient, admin: dict[str, str], make_key: KeyMaker, tree: Tree
) -> None:
    programme = await create_programme(client, admin)
    url = f"{PROGRAMMES}/{programme['id']}"
    manager = bearer(await make_key("territory_manager", [tree.ara]))
    assert_problem(await merge_patch(client, manager, url, {"name": "x"}), 403, "forbidden")
    assert_problem(await merge_patch(client, {}, url, {"name": "x"}), 401, "unauthenticated")
    assert_problem(
        await merge_patch(client, admin, f"{PROGRAMMES}/{uuid.uuid4()}", {"name": "x"}), 404, "not_found"
    )


async def test_lowering_below_what_is_committed_is_409(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    programme = await create_programme(client, admin, positions_target=100, budget_cents=500_000_000)
    await create_signed(client, admin, programme["id"], tree.lyon_metro.id, positions_granted=50)
    await create_agreement(client, admin, programme["id"], tree.rhone.id, reference="R", positions_granted=15)
    url = f"{PROGRAMMES}/{programme['id']}"
    etag = (await client.get(url)).headers["etag"]

    below_target = await merge_patch(client, admin, url, {"positions_target": 64}, if_match=etag)
    assert assert_problem(below_target, 409, "programme_below_committed")["positions_granted"] == 65
    below_budget = await merge_patch(client, admin, url, {"budget_cents": 324_999_999}, if_match=etag)
    assert (
        assert_problem(below_budget, 409, "programme_below_committed")["subsidy_committed_cents"]
        == 325_000_000
    )

    exact = await merge_patch(
        client, admin, url, {"positions_target": 65, "budget_cents": 325_000_000}, if_match=etag
    )
    assert exact.status_code == 200, exact.text
    assert exact.json()["positions_target"] == 65
    assert exact.json()["budget_cents"] == 325_000_000


# --- committed totals -------------------------------------------------------------------------------


async def test_totals_count_drafts_and_signed_but_not_terminated(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    programme = await create_programme(client, admin)
    signed = await create_signed(client, admin, programme["id"], tree.lyon_metro.id, positions_granted=50)
    await create_agreement(client, admin, programme["id"], tree.rhone.id, reference="R", positions_granted=15)
    ended = await create_signed(
        client, admin, programme["id"], tree.hg.id, reference="H", positions_granted=20
    )
    totals = await get_programme(client, programme["id"])
    assert (totals["positions_granted"], totals["subsidy_committed_cents"]) == (85, 425_000_000)

    assert (await terminate(client, admin, ended["id"])).status_code == 200
    totals = await get_programme(client, programme["id"])
    assert (totals["positions_granted"], totals["subsidy_committed_cents"]) == (65, 325_000_000)
    assert signed["status"] == "signed"


async def test_the_etag_moves_when_the_totals_do(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    programme = await create_programme(client, admin)
    url = f"{PROGRAMMES}/{programme['id']}"
    await create_agreement(client, admin, programme["id"], tree.rhone.id, positions_granted=15)
    response = await client.get(url, headers={"If-None-Match": '"1"'})
    assert response.status_code == 200
    assert response.json()["positions_granted"] == 15
    assert response.headers["etag"] != '"1"'
    stale = await merge_patch(client, admin, url, {"name": "x"}, if_match='"1"')
    assert_problem(stale, 412, "precondition_failed")


async def test_list_makes_the_same_number_of_queries_for_2_or_20_programmes(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tree: Tree,
    count_queries: Callable[[], Any],
) -> None:
    async def fill(first: int, last: int) -> None:
        for i in range(first, last):
            programme = await create_programme(client, admin, code=f"P{i:02d}")
            await create_agreement(client, admin, programme["id"], tree.rhone.id, positions_granted=i + 1)

    async def count() -> tuple[int, list[dict[str, Any]]]:
        with count_queries() as counter:
            response = await client.get(PROGRAMMES, params={"limit": 50})
        assert response.status_code == 200
        return counter.count, response.json()["items"]

    await fill(0, 2)
    few, few_items = await count()
    await fill(2, 20)
    many, many_items = await count()
    assert len(few_items) == 2
    assert len(many_items) == 20
    assert few == many
    assert [p["positions_granted"] for p in many_items] == list(range(1, 21))
    assert [p["subsidy_committed_cents"] for p in many_items] == [n * 5_000_000 for n in range(1, 21)]
