"""Builders shared by the workshops tests (through the API)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import KeyMaker, Tree, bearer
from tests.positions.helpers import World, assign, build_world, create_counsellor, create_position

WORKSHOPS = "/api/v1/workshops"
CHANGES = "/api/v1/changes"

VENUE: dict[str, Any] = {
    "name": "Médiathèque de la Part-Dieu",
    "address": "30 boulevard Vivier-Merle",
    "postcode": "69003",
    "commune_code": "69123",
    "lat": 45.7606,
    "lon": 4.8593,
}


def at(days: float = 7, hours: float = 0) -> str:
    """Now plus `days` (and `hours`), RFC 3339 UTC."""
    moment = datetime.now(UTC).replace(microsecond=0) + timedelta(days=days, hours=hours)
    return moment.isoformat().replace("+00:00", "Z")


def workshop_body(position_id: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "position_id": position_id,
        "title": "Rédiger son CV en ligne",
        "themes": ["insertion_professionnelle"],
        "level": "debutant",
        "format": "in_person",
        "venue": VENUE,
        "starts_at": at(7),
        "duration_minutes": 120,
        "capacity": 12,
        "waitlist_capacity": 3,
        "public": True,
    }
    body.update(changes)
    return body


@dataclass
class Place:
    """The positions world, a Lyon position held by a counsellor with its own key, and a Rhône position."""

    world: World
    lyon_position: dict[str, Any]
    rhone_position: dict[str, Any]
    counsellor: dict[str, Any]
    counsellor_key: dict[str, str]
    other_counsellor_key: dict[str, str]

    @property
    def admin(self) -> dict[str, str]:
        return self.world.admin

    @property
    def tree(self) -> Tree:
        return self.world.tree


async def build_place(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, make_key: KeyMaker
) -> Place:
    world = await build_world(client, admin, tree, make_key)
    lyon_position = await create_position(client, admin, world.lyon["id"], territory_id=str(tree.lyon.id))
    rhone_position = await create_position(client, admin, world.rhone["id"])
    counsellor = await create_counsellor(client, admin, tree.lyon_metro.id, email="c1@example.org")
    await assign(client, admin, lyon_position["id"], counsellor["id"])
    other = await create_counsellor(client, admin, tree.lyon_metro.id, email="c2@example.org")
    counsellor_key = bearer(await make_key("counsellor", [tree.lyon_metro], counsellor_id=counsellor["id"]))
    other_key = bearer(await make_key("counsellor", [tree.lyon_metro], counsellor_id=other["id"]))
    return Place(world, lyon_position, rhone_position, counsellor, counsellor_key, other_key)


async def post_workshop(
    client: httpx.AsyncClient, headers: dict[str, str], position_id: str, **changes: Any
) -> httpx.Response:
    return await client.post(WORKSHOPS, json=workshop_body(position_id, **changes), headers=headers)


async def create_workshop(
    client: httpx.AsyncClient, headers: dict[str, str], position_id: str, **changes: Any
) -> dict[str, Any]:
    response = await post_workshop(client, headers, position_id, **changes)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def person(n: int) -> dict[str, Any]:
    return {"first_name": "Dominique", "last_name": f"Fictif{n}", "email": f"personne.{n}@example.org"}


async def register(
    client: httpx.AsyncClient, workshop_id: str, n: int, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(f"{WORKSHOPS}/{workshop_id}/registrations", json=person(n), headers=headers)
