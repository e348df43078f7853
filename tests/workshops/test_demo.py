"""The demo workshops: a dozen upcoming sessions in Lyon and the Rhône on the five launch themes."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app import demo
from app.agreements import demo as agreements_demo
from app.positions import demo as positions_demo
from app.territories import referential
from app.workshops import demo as workshops_demo
from tests.helpers import items
from tests.workshops.helpers import WORKSHOPS

LAUNCH_THEMES = {
    "reseaux_sociaux",
    "insertion_professionnelle",
    "scolarite_et_numerique",
    "securite_numerique",
    "culture_numerique",
}


async def test_a_dozen_upcoming_workshops(client: httpx.AsyncClient, session: AsyncSession) -> None:
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
