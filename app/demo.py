"""Demo data: the official territorial referential and the programme's launch figures (France Relance, Lyon
and the Rhône)."""

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
from app.territories import referential
from app.territories import service as territories
from app.territories.codes import TerritoryKind
from app.territories.models import Territory
from app.workshops import demo as workshops_demo

# The territories the demo's agreements and keys refer to.
DEMO_TERRITORIES: list[tuple[str, str]] = [
    ("region", "84"),
    ("region", "76"),
    ("departement", "69"),
    ("departement", "31"),
    ("metropole", "200046977"),
    ("metropole", "243100518"),
    ("commune", "69123"),
    ("commune", "69266"),
    ("commune", "69264"),
    ("commune", "31555"),
]


async def load_territories(
    session: AsyncSession, snapshot: referential.Snapshot | None = None
) -> dict[tuple[str, str], Territory]:
    """Imports the official referential (the whole shipped one by default: 6 s on SQLite, see the README) and
    returns the territories the demo refers to."""
    await territories.import_referential(session, snapshot or referential.shipped())
    by_code: dict[tuple[str, str], Territory] = {}
    for kind, code in DEMO_TERRITORIES:
        by_code[(kind, code)] = await territories.get_by_code(session, TerritoryKind(kind), code)
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
    engine = make_engine(settings.database_url, pgbouncer=settings.database_pgbouncer)
    result: dict[str, Any] = {"loaded": False, "keys": []}
    try:
        async with make_sessionmaker(engine)() as session:
            count = (await session.execute(select(func.count()).select_from(Territory))).scalar_one()
            if count == 0:
                by_code = await load_territories(session)
                count = (await session.execute(select(func.count()).select_from(Territory))).scalar_one()
                summaries = [
                    f"{count} territories (the official referential)",
                    await agreements_demo.load(session, by_code),
                    await positions_demo.load(session, by_code),
                    await workshops_demo.load(session),
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
    engine = make_engine(settings.database_url, pgbouncer=settings.database_pgbouncer)
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
