"""Money in integer cents: exact sums, amounts beyond 32 bits, no rounding anywhere, and counts and amounts
taken as JSON integers only."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.agreements.helpers import (
    AGREEMENTS,
    amend,
    create_agreement,
    create_programme,
    create_signed,
    get_programme,
    merge_patch,
    post_agreement,
)
from tests.conftest import Tree
from tests.helpers import assert_problem


async def test_odd_subsidies_add_up_to_the_cent(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    programme = await create_programme(client, admin, positions_target=100, budget_cents=10**12)
    figures = [(3, 333_333), (7, 1_234_567), (11, 99)]
    territories = [tree.lyon_metro, tree.rhone, tree.hg]
    agreements = [
        await create_signed(
            client,
            admin,
            programme["id"],
            territory.id,
            reference=f"R{i}",
            positions_granted=positions,
            subsidy_per_position_cents=per_position,
        )
        for i, ((positions, per_position), territory) in enumerate(zip(figures, territories, strict=True))
    ]
    assert [a["subsidy_total_cents"] for a in agreements] == [999_999, 8_641_969, 1_089]
    totals = await get_programme(client, programme["id"])
    assert totals["positions_granted"] == 21
    assert totals["subsidy_committed_cents"] == 999_999 + 8_641_969 + 1_089 == 9_643_057

    added = (await amend(client, admin, agreements[1]["id"], "add_positions", 3)).json()
    assert (added["subsidy_total_before_cents"], added["subsidy_total_after_cents"]) == (
        8_641_969,
        12_345_670,
    )
    withdrawn = (await amend(client, admin, agreements[0]["id"], "withdraw_positions", 1)).json()
    assert withdrawn["subsidy_total_after_cents"] == 666_666
    totals = await get_programme(client, programme["id"])
    assert totals["subsidy_committed_cents"] == 666_666 + 12_345_670 + 1_089


async def test_amounts_beyond_32_bits_are_exact(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    programme = await create_programme(client, admin, positions_target=5000, budget_cents=25_000_000_000)
    whole = await create_signed(
        client,
        admin,
        programme["id"],
        tree.ara.id,
        positions_granted=4000,
        subsidy_per_position_cents=6_250_000,
    )
    assert whole["subsidy_total_cents"] == 25_000_000_000
    assert (await get_programme(client, programme["id"]))["subsidy_committed_cents"] == 25_000_000_000
    one_cent = await post_agreement(
        client,
        admin,
        programme["id"],
        tree.rhone.id,
        reference="R",
        positions_granted=1,
        subsidy_per_position_cents=1,
    )
    assert assert_problem(one_cent, 409, "programme_budget_exceeded")["budget_available_cents"] == 0
    free = await post_agreement(
        client,
        admin,
        programme["id"],
        tree.rhone.id,
        reference="R",
        positions_granted=1,
        subsidy_per_position_cents=0,
    )
    assert free.status_code == 201


# --- strict integers --------------------------------------------------------------------------------

NOT_INTEGERS = [
    ("positions_granted", "3"),
    ("positions_granted", 3.0),
    ("positions_granted", True),
    ("subsidy_per_position_cents", "5000000"),
    ("subsidy_per_position_cents", 5_000_000.0),
    ("subsidy_per_position_cents", False),
]


@pytest.mark.parametrize(("field", "value"), NOT_INTEGERS)
async def test_an_agreement_takes_counts_and_money_as_json_integers_only(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, field: str, value: Any
) -> None:
    programme = await create_programme(client, admin)
    created = await post_agreement(client, admin, programme["id"], tree.rhone.id, **{field: value})
    assert_problem(created, 422, "validation_error", f"/{field}")
    draft = await create_agreement(client, admin, programme["id"], tree.rhone.id, positions_granted=3)
    patched = await merge_patch(client, admin, f"{AGREEMENTS}/{draft['id']}", {field: value})
    assert_problem(patched, 422, "validation_error", f"/{field}")
    assert (await get_programme(client, programme["id"]))["positions_granted"] == 3


@pytest.mark.parametrize("value", ["5", 5.0, True])
async def test_an_amendment_takes_its_positions_as_a_json_integer_only(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, value: Any
) -> None:
    programme = await create_programme(client, admin)
    signed = await create_signed(client, admin, programme["id"], tree.rhone.id, positions_granted=3)
    response = await amend(client, admin, signed["id"], "add_positions", value)
    assert_problem(response, 422, "validation_error", "/positions")
    assert (await get_programme(client, programme["id"]))["positions_granted"] == 3
