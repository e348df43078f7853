"""Demo data: real territories and the programme's launch figures (France Relance, Lyon and the Rhône)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.agreements import demo as agreements_demo
from app.api_keys import repository as api_keys_repo
from app.api_keys import service as api_keys
from app.api_keys.schemas import ApiKeyCreate
from app.config import Settings
from app.core.auth import Role
from app.db import make_engine, make_sessionmaker
from app.positions import demo as positions_demo
from app.territories import service as territories
from app.territories.codes import TerritoryKind
from app.territories.models import Territory
from app.territories.schemas import TerritoryCreate

# (kind, code, name, parent (kind, code)). Official codes; the Métropole de Lyon is a collectivité with
# département powers, distinct from the département du Rhône, so it hangs off the région.
TERRITORIES: list[tuple[str, str, str, tuple[str, str] | None]] = [
    ("region", "84", "Auvergne-Rhône-Alpes", None),
    ("region", "76", "Occitanie", None),
    ("departement", "69", "Rhône", ("region", "84")),
    ("departement", "31", "Haute-Garonne", ("region", "76")),
    ("metropole", "200046977", "Métropole de Lyon", ("region", "84")),
    ("metropole", "243100518", "Toulouse Métropole", ("departement", "31")),
    ("commune", "69123", "Lyon", ("metropole", "200046977")),
    ("commune", "69266", "Villeurbanne", ("metropole", "200046977")),
    ("commune", "69264", "Villefranche-sur-Saône", ("departement", "69")),
    ("commune", "31555", "Toulouse", ("metropole", "243100518")),
]


async def load_territories(session: AsyncSession) -> dict[tuple[str, str], Territory]:
    by_code: dict[tuple[str, str], Territory] = {}
    for kind, code, name, parent in TERRITORIES:
        parent_id = by_code[parent].id if parent else None
        territory = await territories.create(
            session, TerritoryCreate(kind=TerritoryKind(kind), code=code, name=name, parent_id=parent_id)
        )
        by_code[(kind, code)] = territory
    return by_code


# Keys made with the demo data, so that an operator can see scoping at work: (name, role, territory).
DEMO_SCOPED_KEYS = [
    ("demo manager, Métropole de Lyon", Role.territory_manager, ("metropole", "200046977")),
    ("demo viewer, Rhône", Role.viewer, ("departement", "69")),
]


async def seed(settings: Settings) -> dict[str, Any]:
    """Loads the demo into an empty database, with an admin key (when there is none) and two scoped keys.
    A database that already has territories is left alone. Returns what it did, with the new keys' secrets
    (shown once)."""
    engine = make_engine(settings.database_url)
    result: dict[str, Any] = {"loaded": False, "keys": []}
    try:
        async with make_sessionmaker(engine)() as session:
            count = (await session.execute(select(func.count()).select_from(Territory))).scalar_one()
            if count == 0:
                by_code = await load_territories(session)
                summaries = [
                    f"{len(by_code)} territories",
                    await agreements_demo.load(session, by_code),
                    await positions_demo.load(session, by_code),
                ]
                result["loaded"] = True
                result["summary"] = ", ".join(summaries)
                if not await api_keys_repo.any_admin(session):
                    admin = await api_keys.create(session, ApiKeyCreate(name="demo admin", role=Role.admin))
                    result["keys"].append(("demo admin", admin.key))
                for name, role, territory in DEMO_SCOPED_KEYS:
                    scoped = ApiKeyCreate(name=name, role=role, territory_ids=[by_code[territory].id])
                    result["keys"].append((name, (await api_keys.create(session, scoped)).key))
            await session.commit()
    finally:
        await engine.dispose()
    return result


async def create_key(
    settings: Settings,
    *,
    name: str,
    role: str,
    territory_ids: list[uuid.UUID],
    counsellor_id: uuid.UUID | None,
) -> str:
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            created = await api_keys.create(
                session,
                ApiKeyCreate(
                    name=name, role=Role(role), territory_ids=territory_ids, counsellor_id=counsellor_id
                ),
            )
            await session.commit()
            assert created.key is not None  # only a replay omits it
            return created.key
    finally:
        await engine.dispose()
