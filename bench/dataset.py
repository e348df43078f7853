"""The benchmark's national-size dataset: the official territorial referential, a programme, signed agreements
with positions, counsellors and their contracts, and API keys.

The territory tree is the referential shipped with the service (`app/territories/data`), loaded by the
service's own import (`app.territories.service.import_referential`): the same rows, search words and former
codes as `cnfs-api territories import`, about 36 000 territories, or only some départements' (`departements`,
for tests). Then the programme at its size (`build_rows`): 400 agreements signed in 2021–2022 with the
départements, the métropoles and EPCI spread over the country, sharing 4 000 positions, held in turn by
6 000 counsellors: each position's contracts follow each other (one ended with a reason, the next counsellor
hired after a gap), one position in seven is vacant today and some of those were closed. Everything is
deterministic for a given seed (ids, populations, timestamps, key secrets; the import's territory ids too,
drawn from the seed while it runs), and built straight into a fresh database: on PostgreSQL with COPY
(asyncpg), on SQLite with bulk INSERTs through the app's own models (so that values are stored exactly as
the app stores them)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

BASE_TIME = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
KEY_PREFIX = "cnfs_"
# Large enough that thousands of create-and-sign operations never reach 409 (target or budget).
PROGRAMME_POSITIONS_TARGET = 50_000_000
PROGRAMME_BUDGET_CENTS = 10**16
SUBSIDY_PER_POSITION_CENTS = 5_000_000
RHONE = "69"
LYON = "69123"
# The programme's size: 4 000 positions under agreements with départements, métropoles and EPCI, held in
# turn by 6 000 counsellors (a contract ended, another counsellor hired on the position).
NATIONAL_AGREEMENTS = 400
NATIONAL_POSITIONS = 4_000
NATIONAL_COUNSELLORS = 6_000
# Positions of the Rhône's agreement (more than a page of 50, so that its list has a next page); the other
# agreements share the rest in proportion to a weight of their territory's kind (times 0.5 to 1.5).
RHONE_POSITIONS = 60
KIND_WEIGHTS = {"departement": 3.0, "metropole": 4.0, "epci": 1.0}
PROGRAMME_START = date(2021, 1, 4)
AGREEMENT_END = date(2027, 12, 31)
# The history of the contracts stops the day before the workshops' clock (`workshops_dataset.DATASET_NOW`).
HISTORY_END = date(2026, 11, 28)
VACANT_SHARE = 1 / 7
CLOSE_REASON = "Poste non renouvelé par la structure."
CONTRACT_TYPES = ("CDD", "CDI", "CDP", "PEC")
CONTRACT_WEIGHTS = (60, 15, 15, 10)
END_REASONS = ("demission", "licenciement", "non_reconduction_cdd", "fin_de_contrat", "autre")
# A permanent contract (CDI) has no planned end to reach.
QUIT_REASONS = ("demission", "licenciement", "autre")
# Every counsellor of the dataset holds these values (invented, clearly fictitious): an HR sync that sends
# them again changes nothing (`COUNSELLOR_BODY`, the idempotent `PUT /counsellors/by-ref/...`).
COUNSELLOR_FIELDS: dict[str, Any] = {
    "first_name": "Camille",
    "last_name": "Fictif",
    "email": "camille.fictif@example.org",
    "phone": None,
    "training_label": "CCP2_CCP3",
    "training_hours": 280,
    "certified_on": date(2026, 1, 15),
    "pix_level": 2,
}
COUNSELLOR_BODY = (
    '{"first_name":"Camille","last_name":"Fictif","email":"camille.fictif@example.org",'
    '"training":{"label":"CCP2_CCP3","hours":280,"certified_on":"2026-01-15","pix_level":2}}'
)
COUNSELLOR_REF_PREFIX = "BENCH-C-"
POSITION_REF_PREFIX = "BENCH-P-"


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


def snapshot(departements: Sequence[str] | None = None) -> Any:
    """The shipped referential, or the part of it in these départements."""
    from app.territories import referential

    shipped = referential.shipped()
    if not departements:
        return shipped
    wanted = set(departements)
    return shipped.subset({code for code, c in shipped.communes.items() if c.departement in wanted})


async def import_territories(url: str, departements: Sequence[str] | None, seed: int) -> None:
    """The referential through the service's import (one transaction), with ids and clocks from the seed."""
    from app.db import make_engine, make_sessionmaker
    from app.territories import service

    data = snapshot(departements)
    engine = make_engine(url)
    try:
        with (
            mock.patch.object(service, "new_id", Ids(random.Random(seed))),
            mock.patch.object(service, "utcnow", return_value=BASE_TIME),
        ):
            async with make_sessionmaker(engine)() as session:
                report = await service.import_referential(session, data)
                await session.commit()
        await service.after_import(engine, report)
    finally:
        await engine.dispose()


async def read_territories(url: str) -> list[dict[str, Any]]:
    """What the rest of the dataset needs of the imported territories, in (kind, code) order."""
    from sqlalchemy import select

    from app.db import make_engine
    from app.territories.models import Territory

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(
                    Territory.id, Territory.kind, Territory.code, Territory.path, Territory.postcodes
                ).order_by(Territory.kind, Territory.code)
            )
            return [dict(row._mapping) for row in rows]
    finally:
        await engine.dispose()


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
    positions: int
    counsellors: int
    assignments: int
    # A counsellor employed by the Rhône, holding a position today.
    counsellor_id: str
    counsellor_ref: str
    counsellors_in_scope: int
    keys: dict[str, str] = field(default_factory=dict)
    # The workshops (PostgreSQL only; see `bench.workshops_dataset`): how many, an upcoming public one of the
    # Rhône and its version, the registration scenario's workshops (ids separated by spaces) and their
    # commune.
    workshops: int = 0
    registrations: int = 0
    workshop_id: str = ""
    workshop_version: int = 0
    workshops_register_ids: str = ""
    workshops_register_commune: str = ""
    workshops_seconds: float = 0.0
    workshops_steps: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _secret(rng: random.Random) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return KEY_PREFIX + "".join(rng.choice(alphabet) for _ in range(43))


def _at(day: date, hour: int = 8, seconds: int = 0) -> datetime:
    """A moment of that day (UTC)."""
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC) + timedelta(seconds=seconds)


def _stamped(row: dict[str, Any], created: datetime) -> dict[str, Any]:
    return {**row, "created_at": created, "updated_at": created, "version": 1}


def _share(total: int, weights: list[float]) -> list[int]:
    """`total` split in proportion to `weights`, each part at least 1, the parts adding up to `total`
    (largest remainders first)."""
    spare = total - len(weights)
    if spare < 0:
        raise ValueError(f"{total} positions for {len(weights)} agreements: at least one each")
    whole = sum(weights)
    exact = [spare * w / whole for w in weights]
    parts = [int(e) for e in exact]
    for i in sorted(range(len(weights)), key=lambda i: (parts[i] - exact[i], i))[: spare - sum(parts)]:
        parts[i] += 1
    return [1 + p for p in parts]


def _holders(rng: random.Random, positions: int, counsellors: int) -> list[int]:
    """How many counsellors held each position in turn: one each, the others (hired after a contract
    ended) spread over the positions at random."""
    if counsellors < positions:
        raise ValueError(f"{counsellors} counsellors for {positions} positions: at least one each")
    holders = [1] * positions
    for _ in range(counsellors - positions):
        holders[rng.randrange(positions)] += 1
    return holders


Contract = tuple[date, date | None, date | None, str, str | None]


def contracts(rng: random.Random, opened_on: date, holders: int, vacant: bool) -> list[Contract]:
    """The successive contracts on a position opened on `opened_on`, as (started_on, ends_on, ended_on,
    contract type, end reason): every one but the last ended, the next counsellor starting after a gap; the
    last one goes on (`ended_on` null) unless `vacant`. Nothing starts or ends after `HISTORY_END`."""
    first = opened_on + timedelta(days=7 + rng.randrange(60))
    days = (HISTORY_END - first).days
    # The n-th contract starts within the n-th of `holders` equal slices of the history.
    starts = [first] + [
        first + timedelta(days=int(days * (n + 0.1 + 0.8 * rng.random()) / holders))
        for n in range(1, holders)
    ]
    out: list[Contract] = []
    for n, started_on in enumerate(starts):
        contract_type = rng.choices(CONTRACT_TYPES, CONTRACT_WEIGHTS)[0]
        ended_on: date | None = None
        reason = None
        if n + 1 < holders:
            gap = min(15 + rng.randrange(90), (starts[n + 1] - started_on).days // 2)
            ended_on = starts[n + 1] - timedelta(days=max(gap, 1))
        elif vacant:
            ended_on = started_on + timedelta(
                days=int((HISTORY_END - started_on).days * (0.3 + 0.6 * rng.random()))
            )
        if ended_on is not None:
            ended_on = max(ended_on, started_on)
            reason = rng.choice(END_REASONS if contract_type != "CDI" else QUIT_REASONS)
        if contract_type == "CDI":
            ends_on = None
        elif reason in ("fin_de_contrat", "non_reconduction_cdd"):
            # The contract reached its planned end.
            ends_on = ended_on
        else:
            years = 1 if contract_type == "PEC" else 2
            ends_on = started_on + timedelta(days=365 * years)
            if ended_on is None:
                # Renewed until beyond today.
                while ends_on <= HISTORY_END:
                    ends_on += timedelta(days=365 * years)
            else:
                ends_on = max(ends_on, ended_on)
        out.append((started_on, ends_on, ended_on, contract_type, reason))
    return out


def build_rows(
    territories: list[dict[str, Any]],
    agreements: int = NATIONAL_AGREEMENTS,
    seed: int = 42,
    positions: int = NATIONAL_POSITIONS,
    counsellors: int = NATIONAL_COUNSELLORS,
) -> tuple[dict[str, list[dict[str, Any]]], Dataset]:
    """Every row of the dataset beside the territories, per table, and its summary: `agreements` signed
    agreements sharing `positions` positions (the Rhône's `RHONE_POSITIONS`, the others in proportion to a
    weight of their territory's kind), held in turn by `counsellors` counsellors (one assignment each)."""
    rng = random.Random(seed + 1)
    new_id = Ids(rng, BASE_TIME + timedelta(days=1))
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for t in territories:
        by_kind.setdefault(t["kind"], []).append(t)
    rhone = next(t for t in by_kind["departement"] if t["code"] == RHONE)
    programme = _stamped(
        {
            "id": new_id(),
            "code": "BENCH-2021",
            "name": "Programme du banc d'essai",
            "positions_target": PROGRAMME_POSITIONS_TARGET,
            "budget_cents": PROGRAMME_BUDGET_CENTS,
            "subsidy_per_position_cents": SUBSIDY_PER_POSITION_CENTS,
            "starts_on": PROGRAMME_START,
            "ends_on": None,
        },
        _at(PROGRAMME_START),
    )
    # Départements (the Rhône first, so that the scoped key sees agreements whatever their number), the
    # métropoles, then EPCI spread over the country.
    signatories = (
        [rhone] + [d for d in by_kind["departement"] if d is not rhone] + by_kind.get("metropole", [])
    )
    epci_list = by_kind.get("epci", [])
    step = max(len(epci_list) // max(agreements - len(signatories), 1), 1)
    signatories += epci_list[::step]
    signatories = signatories[:agreements]
    weights = [KIND_WEIGHTS.get(t["kind"], 1.0) * (0.5 + rng.random()) for t in signatories[1:]]
    rhone_size = min(RHONE_POSITIONS, positions - len(weights))
    sizes = [rhone_size, *_share(positions - rhone_size, weights)]
    holders = _holders(rng, positions, counsellors)
    agreement_rows = []
    position_rows: list[dict[str, Any]] = []
    counsellor_rows: list[dict[str, Any]] = []
    assignment_rows: list[dict[str, Any]] = []
    for i, territory in enumerate(signatories):
        size = sizes[i]
        signed_on = PROGRAMME_START + timedelta(days=30 + rng.randrange(540))
        created = _at(signed_on, seconds=i)
        starts_on = signed_on + timedelta(days=rng.randrange(60))
        agreement = _stamped(
            {
                "id": new_id(),
                "programme_id": programme["id"],
                "territory_id": territory["id"],
                "kind": "convention",
                "reference": f"CONV-2021-{i:04d}",
                "status": "signed",
                "positions_granted": size + rng.randrange(1 + size // 5),
                "subsidy_per_position_cents": SUBSIDY_PER_POSITION_CENTS,
                "signed_on": signed_on,
                "starts_on": starts_on,
                "ends_on": AGREEMENT_END if i % 3 else None,
                "terminated_on": None,
                "termination_reason": None,
            },
            created,
        )
        agreement_rows.append(agreement)
        hired = 0
        for j in range(size):
            opened_on = starts_on + timedelta(days=rng.randrange(240))
            opened = _at(opened_on, seconds=j)
            # One position in seven is vacant today; a third of those were closed after their last contract.
            vacant = rng.random() < VACANT_SHARE
            history = contracts(rng, opened_on, holders[len(position_rows)], vacant)
            closed_on = None
            if vacant and territory is not rhone and rng.random() < 1 / 3:
                last_end = history[-1][2]
                assert last_end is not None
                closed_on = min(last_end + timedelta(days=1 + rng.randrange(90)), HISTORY_END)
            position = _stamped(
                {
                    "id": new_id(),
                    "agreement_id": agreement["id"],
                    "territory_id": territory["id"],
                    "agreement_territory_id": territory["id"],
                    "external_ref": f"{POSITION_REF_PREFIX}{i:04d}-{j:03d}",
                    "typology": "coordinateur" if j == 0 else "conum",
                    "opened_on": opened_on,
                    "closed_on": closed_on,
                    "close_reason": CLOSE_REASON if closed_on else None,
                },
                opened,
            )
            if closed_on is not None:
                position.update(version=2, updated_at=_at(closed_on, hour=17))
            position_rows.append(position)
            for started_on, ends_on, ended_on, contract_type, reason in history:
                # The employer is the agreement's territory; every counsellor holds the same fictitious
                # values.
                counsellor = _stamped(
                    {
                        "id": new_id(),
                        "territory_id": territory["id"],
                        "external_ref": f"{COUNSELLOR_REF_PREFIX}{i:04d}-{hired:03d}",
                        **COUNSELLOR_FIELDS,
                        "anonymized_at": None,
                    },
                    _at(started_on, seconds=hired),
                )
                hired += 1
                counsellor_rows.append(counsellor)
                assignment = _stamped(
                    {
                        "id": new_id(),
                        "position_id": position["id"],
                        "counsellor_id": counsellor["id"],
                        "contract_type": contract_type,
                        "started_on": started_on,
                        "ends_on": ends_on,
                        "ended_on": ended_on,
                        "end_reason": reason,
                    },
                    counsellor["created_at"],
                )
                if ended_on is not None:
                    # Written twice: hired, then the end of the contract.
                    assignment.update(version=2, updated_at=_at(ended_on, hour=17))
                assignment_rows.append(assignment)
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
    in_scope = [c for c in counsellor_rows if c["territory_id"] == rhone["id"]]
    current = {a["counsellor_id"] for a in assignment_rows if a["ended_on"] is None}
    holding = next(c for c in in_scope if c["id"] in current)
    # Writes go to a commune (no seeded agreement there), outside the scoped key's subtree.
    write_territory = next(t for t in by_kind["commune"] if not t["path"].startswith(rhone["path"]))
    commune_codes = {t["code"] for t in by_kind["commune"]}
    dataset = Dataset(
        seed=seed,
        territories=len(territories),
        programme_id=str(programme["id"]),
        departement_id=str(rhone["id"]),
        departement_code=RHONE,
        commune_code=LYON if LYON in commune_codes else sorted(commune_codes)[0],
        agreement_id=str(rhone_agreement["id"]),
        agreement_version=1,
        write_territory_id=str(write_territory["id"]),
        agreements=len(agreement_rows),
        positions=len(position_rows),
        counsellors=len(counsellor_rows),
        assignments=len(assignment_rows),
        counsellor_id=str(holding["id"]),
        counsellor_ref=holding["external_ref"],
        counsellors_in_scope=len(in_scope),
        keys=keys,
    )
    tables = {
        "programmes": [programme],
        "agreements": agreement_rows,
        "positions": position_rows,
        "counsellors": counsellor_rows,
        "assignments": assignment_rows,
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
    from app.counsellors.models import Counsellor
    from app.db import make_engine
    from app.positions.models import Assignment, Position
    from app.programmes.models import Programme

    targets: dict[str, Any] = {
        "programmes": Programme,
        "agreements": Agreement,
        "positions": Position,
        "counsellors": Counsellor,
        "assignments": Assignment,
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
    url: str,
    *,
    departements: Sequence[str] | None = None,
    agreements: int = NATIONAL_AGREEMENTS,
    seed: int = 42,
    workshops: int = 0,
    progress: bool = True,
    positions: int = NATIONAL_POSITIONS,
    counsellors: int = NATIONAL_COUNSELLORS,
    registrations_per_workshop: int = 5,
) -> Dataset:
    """Creates (PostgreSQL: drops and creates the database; SQLite: a new file), migrates and fills it: the
    referential (all of it, or these départements'), then the rest (`build_rows`); on PostgreSQL,
    `workshops` workshops and `registrations_per_workshop` times as many registrations
    (`bench.workshops_dataset`; SQLite gets none)."""
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
    asyncio.run(import_territories(url, departements, seed))
    territories = asyncio.run(read_territories(url))
    tables, dataset = build_rows(territories, agreements, seed, positions, counsellors)
    if url.startswith("postgresql"):
        asyncio.run(_copy_pg(url, tables))
        if workshops > 0:
            _add_workshops(
                url, territories, tables, dataset, workshops, registrations_per_workshop, seed, progress
            )
    else:
        asyncio.run(_insert_sqlite(url, tables))
    return dataset


def _add_workshops(
    url: str,
    territories: list[dict[str, Any]],
    tables: dict[str, list[dict[str, Any]]],
    dataset: Dataset,
    count: int,
    per_workshop: int,
    seed: int,
    progress: bool,
) -> None:
    from bench import workshops_dataset

    runners, target_runner, target = workshops_dataset.plan(
        territories, tables["positions"], tables["assignments"], uuid.UUID(dataset.departement_id)
    )
    written = asyncio.run(
        workshops_dataset.load_pg(
            asyncpg_dsn(url),
            runners,
            target_runner,
            target,
            count=count,
            per_workshop=per_workshop,
            seed=seed,
            progress=progress,
        )
    )
    dataset.workshops = written.workshops
    dataset.registrations = written.registrations
    dataset.workshop_id = written.workshop_id or written.register_ids[0]
    dataset.workshop_version = written.workshop_version or 1
    dataset.workshops_register_ids = " ".join(written.register_ids)
    dataset.workshops_register_commune = written.register_commune
    dataset.workshops_seconds = written.seconds
    dataset.workshops_steps = written.steps
