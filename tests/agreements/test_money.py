"""Money in integer cents: exact sums, amounts beyond 32 bits, no rounding anywhere."""

from __future__ import annotations

import httpx

from tests.agreements.helpers import amend, create_programme, create_signed, get_programme, post_agreement
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
