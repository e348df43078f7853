"""The demo workshops: a dozen upcoming sessions in Lyon and the Rhône on the five launch themes, and four
months of history that the statistics show."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app import demo
from app.agreements import demo as agreements_demo
from app.positions import demo as positions_demo
from app.territories import referential
from app.workshops import demo as workshops_demo
from tests.helpers import items
from tests.stats.helpers import rollup_at_each_statement
from tests.workshops.helpers import WORKSHOPS

LAUNCH_THEMES = {
    "reseaux_sociaux",
    "insertion_professionnelle",
    "scolarite_et_numerique",
    "securite_numerique",
    "culture_numerique",
}


async def test_a_dozen_upcoming_workshops(
    client: httpx.AsyncClient, session: AsyncSession, connection: AsyncConnection, admin: dict[str, str]
) -> None:
    await rollup_at_each_statement(connection)
    communes = {"69123", "69264", "69266", "69243", "31555"}
    by_code = await demo.load_territories(session, referential.shipped().subset(communes))
    await agreements_demo.load(session, by_code)
    await positions_demo.load(session, by_code)
    summary = await workshops_demo.load(session)
    await session.flush()
    assert summary.startswith("12 upcoming workshops with ")
    listed = items(await client.get(WORKSHOPS, params={"limit": 50}))
    assert len(listed) == 12
    assert {t for w in listed for t in w["themes"]} >= LAUNCH_THEMES
    assert {w["venue"]["commune_code"] for w in listed if w["venue"]} == {"69123", "69266", "69264", "69243"}
    nearly_full = [w for w in listed if 0 < w["seats_left"] <= 2 or w["waitlisted_count"]]
    assert len(nearly_full) >= 3
    assert all(w["counsellor_id"] is None for w in listed)
    rhone = items(
        await client.get(WORKSHOPS, params={"department_code": "69", "theme": "securite_numerique"})
    )
    assert len(rhone) == 2
    # The history: held workshops with their activity reports, one of them cancelled, in the statistics.
    assert summary.endswith("60 held and 4 cancelled in the last four months")
    stats = await client.get("/api/v1/stats/workshops", params={"group_by": "month"}, headers=admin)
    assert stats.status_code == 200, stats.text
    totals = stats.json()["totals"]
    assert (totals["held"], totals["cancelled"]) == (60, 4)
    assert (
        totals["attendees"] == sum(totals["age_brackets"].values()) == sum(totals["social_statuses"].values())
    )
    assert totals["attendees"] > 300
    assert len(stats.json()["items"]) >= 4
    # Without a key, small cells are hidden (and the large ones shown).
    public = (await client.get("/api/v1/stats/workshops", params={"group_by": "month"})).json()
    cells = [v for item in public["items"] for v in item["age_brackets"].values()]
    assert None in cells
    assert any(v is not None and v >= 11 for v in cells)
