"""Builders shared by the positions, assignments, counsellors and change feed tests (all through the API)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.agreements.helpers import committed_world, create_programme, create_signed
from tests.conftest import KeyMaker, Tree, bearer

POSITIONS = "/api/v1/positions"
COUNSELLORS = "/api/v1/counsellors"
ASSIGNMENTS = "/api/v1/assignments"
CHANGES = "/api/v1/changes"


def day(offset: int = 0) -> str:
    """Today (UTC, as the API counts) plus `offset` days, ISO."""
    return (datetime.now(UTC).date() + timedelta(days=offset)).isoformat()


@dataclass
class World:
    """A programme with signed agreements for the Métropole de Lyon (3 positions) and the Rhône (2), and keys
    for a Lyon manager, a Rhône manager, a Lyon viewer."""

    tree: Tree
    admin: dict[str, str]
    lyon: dict[str, Any]
    rhone: dict[str, Any]
    lyon_manager: dict[str, str]
    rhone_manager: dict[str, str]
    lyon_viewer: dict[str, str]


async def build_world(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, make_key: KeyMaker
) -> World:
    programme = await create_programme(client, admin)
    lyon = await create_signed(
        client, admin, programme["id"], tree.lyon_metro.id, reference="L", positions_granted=3
    )
    rhone = await create_signed(
        client, admin, programme["id"], tree.rhone.id, reference="R", positions_granted=2
    )
    return World(
        tree=tree,
        admin=admin,
        lyon=lyon,
        rhone=rhone,
        lyon_manager=bearer(await make_key("territory_manager", [tree.lyon_metro])),
        rhone_manager=bearer(await make_key("territory_manager", [tree.rhone])),
        lyon_viewer=bearer(await make_key("viewer", [tree.lyon_metro])),
    )


async def post_position(
    client: httpx.AsyncClient, headers: dict[str, str], agreement_id: str, **changes: Any
) -> httpx.Response:
    body = {"agreement_id": agreement_id, "opened_on": "2021-04-01", **changes}
    return await client.post(POSITIONS, json=body, headers=headers)


async def create_position(
    client: httpx.AsyncClient, headers: dict[str, str], agreement_id: str, **changes: Any
) -> dict[str, Any]:
    response = await post_position(client, headers, agreement_id, **changes)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


PERSON: dict[str, Any] = {
    "first_name": "Camille",
    "last_name": "Exemple",
    "email": "camille.exemple@example.org",
    "phone": "+33 4 00 00 00 01",
    "training": {"label": "CCP2_CCP3", "hours": 280, "certified_on": "2021-09-30", "pix_level": 2},
}


async def create_counsellor(
    client: httpx.AsyncClient, headers: dict[str, str], territory_id: object, **changes: Any
) -> dict[str, Any]:
    body = {**PERSON, "territory_id": str(territory_id), **changes}
    response = await client.post(COUNSELLORS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def post_assignment(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    position_id: str,
    counsellor_id: str,
    started_on: str = "2021-05-03",
    **changes: Any,
) -> httpx.Response:
    body = {"counsellor_id": counsellor_id, "contract_type": "CDD", "started_on": started_on, **changes}
    return await client.post(f"{POSITIONS}/{position_id}/assignments", json=body, headers=headers)


async def assign(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    position_id: str,
    counsellor_id: str,
    started_on: str = "2021-05-03",
    **changes: Any,
) -> dict[str, Any]:
    response = await post_assignment(client, headers, position_id, counsellor_id, started_on, **changes)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def end_assignment(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    assignment_id: str,
    ended_on: str,
    reason: str = "demission",
) -> httpx.Response:
    return await client.post(
        f"{ASSIGNMENTS}/{assignment_id}/end",
        json={"ended_on": ended_on, "end_reason": reason},
        headers=headers,
    )


@asynccontextmanager
async def committed_positions_world(settings: Any, engine: Any) -> AsyncIterator[Any]:
    """`committed_world` whose positions, assignments, counsellors and changes are deleted afterwards."""
    from sqlalchemy import delete, select

    from app.core.changes import Change
    from app.counsellors.models import Counsellor
    from app.positions.models import Assignment, Position

    async with committed_world(settings, engine) as world:
        try:
            yield world
        finally:
            async with world.sessions() as session:
                positions = select(Position.id).where(Position.territory_id == world.territory_id)
                await session.execute(delete(Assignment).where(Assignment.position_id.in_(positions)))
                await session.execute(delete(Position).where(Position.territory_id == world.territory_id))
                await session.execute(delete(Counsellor).where(Counsellor.territory_id == world.territory_id))
                await session.execute(delete(Change).where(Change.territory_id == world.territory_id))
                await session.commit()
