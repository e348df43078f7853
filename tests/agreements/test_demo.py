"""The demo data: France Relance with the signed conventions of the Métropole de Lyon and the Rhône."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app import demo
from app.agreements import demo as agreements_demo
from app.territories import referential
from tests.agreements.helpers import AGREEMENTS, PROGRAMMES
from tests.helpers import items


async def test_the_demo_programme_commits_65_positions_and_3_25_million_euros(
    client: httpx.AsyncClient, session: AsyncSession, admin: dict[str, str]
) -> None:
    # A few communes of the referential: the whole one is loaded once, by the command line's test.
    by_code = await demo.load_territories(session, referential.shipped().subset({"69123", "69264", "31555"}))
    summary = await agreements_demo.load(session, by_code)
    await session.flush()
    assert summary == "1 programme, 2 signed agreements"

    [programme] = items(await client.get(PROGRAMMES))
    assert programme["code"] == "FRANCE_RELANCE_V1"
    assert (programme["positions_target"], programme["budget_cents"]) == (4000, 25_000_000_000)
    assert programme["subsidy_per_position_cents"] == 5_000_000
    assert programme["positions_granted"] == 65
    assert programme["subsidy_committed_cents"] == 325_000_000
    assert (await client.get(f"{PROGRAMMES}/{programme['id']}")).json() == programme

    agreements = items(await client.get(AGREEMENTS, params={"sort": "reference"}, headers=admin))
    lyon = by_code[("metropole", "200046977")].id
    rhone = by_code[("departement", "69")].id
    assert [
        (a["territory_id"], a["status"], a["positions_granted"], a["subsidy_total_cents"]) for a in agreements
    ] == [
        (str(rhone), "signed", 15, 75_000_000),
        (str(lyon), "signed", 50, 250_000_000),
    ]
    haute_garonne = by_code[("departement", "31")].id
    listed = await client.get(AGREEMENTS, params={"within": str(haute_garonne)}, headers=admin)
    assert items(listed) == []
