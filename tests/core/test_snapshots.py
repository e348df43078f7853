"""One moment per answer: an answer read in several statements (a position and its current assignment, a
page and its total) reads one snapshot, while a writer commits between them (both paths, both databases)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.core.direct import answer_observers
from tests.agreements.helpers import World, create_programme, create_signed
from tests.positions.helpers import (
    ASSIGNMENTS,
    COUNSELLORS,
    PERSON,
    POSITIONS,
    committed_positions_world,
    post_assignment,
    post_position,
)

TOGGLES = 30
SECONDS = 20.0


@pytest.fixture(params=[True, False], ids=["direct", "session"])
def direct_path(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
async def world(direct_path: bool, settings: Settings, engine: AsyncEngine) -> AsyncIterator[World]:
    own = settings.model_copy(update={"direct_path": direct_path, "rate_limits_enabled": False})
    async with committed_positions_world(own, engine) as world:
        yield world


async def _ok(response: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_writer_racing_readers_never_shows_a_mixed_answer(world: World, direct_path: bool) -> None:
    """A writer makes a position occupied then vacant again, over and over (an assignment begun, then ended
    on its first day, which is in the past); two readers read the position and the page of occupied
    positions with its total. A position `occupied` without its current assignment (or `vacant` with one),
    or a total other than the page's items, is an answer no state of the data ever had."""
    client, admin = world.client, world.admin
    programme = await create_programme(client, admin, code="SNAPSHOTS")
    agreement = await create_signed(
        client, admin, programme["id"], world.territory_id, reference="SNAP", positions_granted=3
    )
    position = await _ok(await post_position(client, admin, agreement["id"]))
    counsellor = await _ok(
        await client.put(
            f"{COUNSELLORS}/by-ref/SNAP-1",
            json={**PERSON, "territory_id": str(world.territory_id)},
            headers=admin,
        )
    )
    done = asyncio.Event()
    seen: Counter[str] = Counter()
    mixed: list[Any] = []

    async def writer() -> None:
        first = date(2021, 5, 1)
        try:
            for toggle in range(TOGGLES):
                day = (first + timedelta(days=toggle)).isoformat()
                held = await _ok(await post_assignment(client, admin, position["id"], counsellor["id"], day))
                await asyncio.sleep(0.005)
                ended = await client.post(
                    f"{ASSIGNMENTS}/{held['id']}/end",
                    json={"ended_on": day, "end_reason": "demission"},
                    headers=admin,
                )
                await _ok(ended, 200)
                await asyncio.sleep(0.005)
        finally:
            done.set()

    async def read_position() -> None:
        while not done.is_set():
            body = await _ok(await client.get(f"{POSITIONS}/{position['id']}", headers=admin), 200)
            seen[body["status"]] += 1
            if (body["status"] == "occupied") != (body["current_assignment"] is not None):
                mixed.append(("position", body["status"], body["current_assignment"]))

    async def read_page() -> None:
        params = {
            "agreement_id": agreement["id"],
            "status": "occupied",
            "include_total": "true",
            "limit": "50",
        }
        while not done.is_set():
            body = await _ok(await client.get(POSITIONS, params=params, headers=admin), 200)
            seen[f"page of {len(body['items'])}"] += 1
            if body["total"] != len(body["items"]):
                mixed.append(("page", body["total"], len(body["items"])))

    answered_directly: list[str] = []
    answer_observers.append(answered_directly.append)
    started = time.monotonic()
    try:
        await asyncio.wait_for(
            asyncio.gather(writer(), read_position(), read_position(), read_page()), SECONDS * 3
        )
    finally:
        answer_observers.remove(answered_directly.append)
    assert mixed == [], (mixed[:5], len(mixed), dict(seen))
    # The race was run: the readers saw both states.
    for state in ("occupied", "vacant", "page of 1", "page of 0"):
        assert seen[state], dict(seen)
    assert time.monotonic() - started < SECONDS * 3
    if direct_path:
        # The readers were answered by the twins, in their snapshot transactions.
        assert {"positions_get", "positions_list"} <= set(answered_directly), Counter(answered_directly)
