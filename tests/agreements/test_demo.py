"""The demo data: France Relance with the signed conventions of the Métropole de Lyon and the Rhône."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app import demo
from app.agreements import demo as agreements_demo
from app.positions import demo as positions_demo
from app.territories import referential
from tests.agreements.helpers import AGREEMENTS, PROGRAMMES
from tests.helpers import items


async def test_the_demo_programme_commits_65_positions_and_3_25_million_euros(
    client: httpx.AsyncClient, session: AsyncSession, admin: dict[str, str]
) -> None:
    # A few communes of the referential: the whole one is loaded once, by the command line's test.
    by_code = await demo.load_territories(
        session, referential.shipped().subset({"69123", "69264", "69266", "31555"})
    )
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


async def test_the_demo_positions_and_fictitious_counsellors(
    client: httpx.AsyncClient, session: AsyncSession, admin: dict[str, str]
) -> None:
    by_code = await demo.load_territories(session)
    await agreements_demo.load(session, by_code)
    summary = await positions_demo.load(session, by_code)
    await session.flush()
    assert summary == "5 positions, 5 fictitious counsellors, 4 assignments"
    agreements = items(await client.get(AGREEMENTS, params={"sort": "reference"}, headers=admin))
    assert [(a["reference"], a["positions_open"], a["positions_occupied"]) for a in agreements] == [
        ("CONV-2021-69D-001", 2, 1),
        ("CONV-2021-69M-001", 3, 2),
    ]
    people = items(await client.get("/api/v1/counsellors", headers=admin))
    assert len(people) == 5
    assert all(p["email"].endswith("@example.org") for p in people)
    vacant = items(await client.get("/api/v1/positions", params={"status": "vacant"}, headers=admin))
    assert sorted(p["external_ref"] for p in vacant) == ["LYON-CNFS-003", "RHONE-CNFS-002"]
