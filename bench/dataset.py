"""The benchmark's national-size dataset: the territory tree, a programme, signed agreements and API keys.

Deterministic for a given seed (ids, names, populations, timestamps and key secrets all come from it), built
straight into a fresh database: on PostgreSQL with COPY (asyncpg), on SQLite with bulk INSERTs through the
app's own models (so that values are stored exactly as the app stores them)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from stdnum import luhn

from app.territories.codes import fold

DEPARTEMENTS = [f"{n:02d}" for n in range(1, 96) if n != 20] + ["2A", "2B", "971", "972", "973", "974", "976"]
WORDS = ["Saint", "Sainte", "Mont", "Val", "Bourg", "Villeneuve", "Château", "Pont", "Montagne", "Rivière"]
BASE_TIME = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
LYON_METROPOLE_SIREN = "200046977"
# Communes of the Rhône whose parent is the Métropole de Lyon (Lyon, 69123, among them).
METROPOLE_COMMUNES = 59
KEY_PREFIX = "cnfs_"
# Large enough that thousands of create-and-sign operations never reach 409 (target or budget).
PROGRAMME_POSITIONS_TARGET = 50_000_000
PROGRAMME_BUDGET_CENTS = 10**16
SUBSIDY_PER_POSITION_CENTS = 5_000_000


def siren(n: int) -> str:
    base = f"2{n:07d}"
    return base + luhn.calc_check_digit(base)


class Ids:
    """UUID v7 values (time-ordered like the app's) drawn from a seeded generator."""

    def __init__(self, rng: random.Random, start: datetime = BASE_TIME) -> None:
        self._rng = rng
        self._ms = int(start.timestamp() * 1000)

    def __call__(self) -> uuid.UUID:
        self._ms += 1
        value = (self._ms & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76
        value |= self._rng.getrandbits(12) << 64
        value |= 0b10 << 62
        value |= self._rng.getrandbits(62)
        return uuid.UUID(int=value)


def territory_rows(
    communes: int = 35_000, epcis: int = 1_250, seed: int = 42, metropole: bool = True
) -> list[dict[str, Any]]:
    """18 régions, 101 départements, the Métropole de Lyon, EPCI and communes, parents before children,
    with `path` and `name_sort` computed as the territories service computes them."""
    rng = random.Random(seed)
    new_id = Ids(rng)
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()

    def node(
        kind: str, code: str, name: str, parent: dict[str, Any] | None, population: int | None
    ) -> dict[str, Any] | None:
        if (kind, code) in seen:
            return None
        seen.add((kind, code))
        ident = new_id()
        row: dict[str, Any] = {
            "id": ident,
            "kind": kind,
            "code": code,
            "name": name,
            "name_sort": fold(name)[:200],
            "parent_id": parent["id"] if parent else None,
            "path": (parent["path"] if parent else "/") + f"{ident}/",
            "population": population,
            "created_at": BASE_TIME,
            "updated_at": BASE_TIME,
            "version": 1,
        }
        rows.append(row)
        return row

    regions = [node("region", f"{10 + i:02d}", f"Région {i}", None, None) for i in range(18)]
    deps = [
        node("departement", d, f"Département {d}", regions[i % 18], None) for i, d in enumerate(DEPARTEMENTS)
    ]
    assert all(regions)
    assert all(deps)
    rhone = deps[DEPARTEMENTS.index("69")]
    assert rhone is not None
    lyon_metro = None
    if metropole:
        lyon_metro = node(
            "metropole",
            LYON_METROPOLE_SIREN,
            "Métropole de Lyon",
            next(r for r in regions if r and r["id"] == rhone["parent_id"]),
            1_411_571,
        )
    epci_rows = [node("epci", siren(i), f"Communauté {i}", deps[i % len(deps)], None) for i in range(epcis)]
    in_rhone = 0
    for i in range(communes):
        dep = deps[i % len(deps)]
        assert dep is not None
        rank = i // len(deps)
        code = (
            f"{dep['code']}{rank % 1000:03d}" if len(dep["code"]) == 2 else f"{dep['code']}{rank % 100:02d}"
        )
        population = 50 + rng.randrange(200_000) if i % 17 == 0 else 50 + rng.randrange(5_000)
        dep_index = i % len(deps)
        # EPCI number j lies in département j % len(deps): pick one of this commune's département.
        per_dep = (len(epci_rows) - dep_index + len(deps) - 1) // len(deps)
        parent = epci_rows[dep_index + len(deps) * (rank % per_dep)] if i % 2 and per_dep > 0 else dep
        name = f"{WORDS[i % len(WORDS)]}-{'é' if i % 3 else 'e'}glise {i}"
        if dep is rhone:
            in_rhone += 1
            if lyon_metro is not None and in_rhone <= METROPOLE_COMMUNES:
                parent = lyon_metro
            if code == "69123":
                name, population = "Lyon", 522_250
        node("commune", code, name, parent, population)
    return rows


@dataclass
class Dataset:
    """What the scenarios need to know about the data: ids, codes and the keys' secrets."""

    seed: int
    territories: int
    programme_id: str
    departement_id: str
    departement_code: str
    commune_code: str
    agreement_id: str
    agreement_version: int
    write_territory_id: str
    agreements: int
    keys: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _secret(rng: random.Random) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return KEY_PREFIX + "".join(rng.choice(alphabet) for _ in range(43))


def build_rows(
    communes: int = 35_000, epcis: int = 1_250, agreements: int = 200, seed: int = 42
) -> tuple[dict[str, list[dict[str, Any]]], Dataset]:
    """Every row of the dataset, per table, and its summary."""
    territories = territory_rows(communes, epcis, seed)
    rng = random.Random(seed + 1)
    new_id = Ids(rng, BASE_TIME + timedelta(days=1))
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for t in territories:
        by_kind.setdefault(t["kind"], []).append(t)
    rhone = next(t for t in by_kind["departement"] if t["code"] == "69")
    programme = {
        "id": new_id(),
        "code": "BENCH-2026",
        "name": "Programme du banc d'essai",
        "positions_target": PROGRAMME_POSITIONS_TARGET,
        "budget_cents": PROGRAMME_BUDGET_CENTS,
        "subsidy_per_position_cents": SUBSIDY_PER_POSITION_CENTS,
        "starts_on": date(2026, 1, 1),
        "ends_on": None,
        "created_at": BASE_TIME,
        "updated_at": BASE_TIME,
        "version": 1,
    }
    # Départements (the Rhône first, so that the scoped key sees agreements whatever their number), the
    # Métropole de Lyon, then EPCI spread over the country.
    signatories = (
        [rhone] + [d for d in by_kind["departement"] if d is not rhone] + by_kind.get("metropole", [])
    )
    epci_list = by_kind.get("epci", [])
    step = max(len(epci_list) // max(agreements - len(signatories), 1), 1)
    signatories += epci_list[::step]
    signatories = signatories[:agreements]
    agreement_rows = []
    for i, territory in enumerate(signatories):
        created = BASE_TIME + timedelta(days=2, minutes=i)
        positions = 1 + rng.randrange(50)
        agreement_rows.append(
            {
                "id": new_id(),
                "programme_id": programme["id"],
                "territory_id": territory["id"],
                "kind": "convention",
                "reference": f"CONV-2026-{i:04d}",
                "status": "signed",
                "positions_granted": positions,
                "subsidy_per_position_cents": SUBSIDY_PER_POSITION_CENTS,
                "signed_on": date(2026, 2, 1) + timedelta(days=i % 28),
                "starts_on": date(2026, 3, 1),
                "ends_on": date(2028, 2, 29) if i % 3 else None,
                "terminated_on": None,
                "termination_reason": None,
                "created_at": created,
                "updated_at": created,
                "version": 1,
            }
        )
    keys = {"admin": _secret(rng), "territory_manager": _secret(rng), "viewer": _secret(rng)}
    key_rows = []
    key_territories = []
    for role, secret in keys.items():
        key_id = new_id()
        key_rows.append(
            {
                "id": key_id,
                "name": f"bench {role}",
                "role": role,
                "prefix": secret[:12],
                "secret_hash": hashlib.sha256(secret.encode()).hexdigest(),
                "counsellor_id": None,
                "expires_at": None,
                "revoked_at": None,
                "created_at": BASE_TIME,
            }
        )
        if role != "admin":
            key_territories.append({"api_key_id": key_id, "territory_id": rhone["id"]})
    rhone_agreement = next(a for a in agreement_rows if a["territory_id"] == rhone["id"])
    # Writes go to a commune (no seeded agreement there), outside the scoped key's subtree.
    write_territory = next(t for t in by_kind["commune"] if not t["path"].startswith(rhone["path"]))
    dataset = Dataset(
        seed=seed,
        territories=len(territories),
        programme_id=str(programme["id"]),
        departement_id=str(rhone["id"]),
        departement_code="69",
        commune_code=next(
            (t["code"] for t in by_kind["commune"] if t["code"] == "69123"),
            next(t["code"] for t in by_kind["commune"] if t["code"].startswith("69")),
        ),
        agreement_id=str(rhone_agreement["id"]),
        agreement_version=1,
        write_territory_id=str(write_territory["id"]),
        agreements=len(agreement_rows),
        keys=keys,
    )
    tables = {
        "territories": territories,
        "programmes": [programme],
        "agreements": agreement_rows,
        "api_keys": key_rows,
        "api_key_territories": key_territories,
    }
    return tables, dataset


# --- PostgreSQL ---------------------------------------------------------------------------------------


def asyncpg_dsn(url: str) -> str:
    """`postgresql+asyncpg://...` (SQLAlchemy's form) → `postgresql://...` (asyncpg's)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def recreate_pg_database(url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = parsed.database
    if not name or not name.replace("_", "").isalnum():
        raise SystemExit(f"refusing database name {name!r}: letters, digits and _ only")
    admin = asyncpg_dsn(parsed.set(database="postgres").render_as_string(hide_password=False))
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_pg_database(url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = asyncpg_dsn(parsed.set(database="postgres").render_as_string(hide_password=False))
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
    finally:
        await conn.close()


async def _copy_pg(url: str, tables: dict[str, list[dict[str, Any]]]) -> None:
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        async with conn.transaction():
            for table, rows in tables.items():
                if not rows:
                    continue
                columns = list(rows[0])
                await conn.copy_records_to_table(
                    table, records=[tuple(r[c] for c in columns) for r in rows], columns=columns
                )
        for table in tables:
            await conn.execute(f"ANALYZE {table}")
    finally:
        await conn.close()


# --- SQLite -------------------------------------------------------------------------------------------


async def _insert_sqlite(url: str, tables: dict[str, list[dict[str, Any]]]) -> None:
    from sqlalchemy import insert

    from app.agreements.models import Agreement
    from app.api_keys.models import ApiKey, api_key_territories
    from app.db import make_engine
    from app.programmes.models import Programme
    from app.territories.models import Territory

    targets: dict[str, Any] = {
        "territories": Territory,
        "programmes": Programme,
        "agreements": Agreement,
        "api_keys": ApiKey,
        "api_key_territories": api_key_territories,
    }
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            for table, rows in tables.items():
                for start in range(0, len(rows), 2000):
                    await conn.execute(insert(targets[table]), rows[start : start + 2000])
    finally:
        await engine.dispose()


def build(
    url: str, *, communes: int = 35_000, epcis: int = 1_250, agreements: int = 200, seed: int = 42
) -> Dataset:
    """Creates (PostgreSQL: drops and creates the database; SQLite: a new file), migrates and fills it."""
    from alembic import command

    from app.cli import alembic_config

    if url.startswith("postgresql"):
        asyncio.run(recreate_pg_database(url))
    else:
        path = Path(url.split("///", 1)[-1])
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")
    tables, dataset = build_rows(communes, epcis, agreements, seed)
    if url.startswith("postgresql"):
        asyncio.run(_copy_pg(url, tables))
    else:
        asyncio.run(_insert_sqlite(url, tables))
    return dataset
