"""Migration 0008 seeds each existing workshop's iCalendar `sequence` from its `version`, so that no calendar
that already holds the event sees its SEQUENCE go back; it downgrades and upgrades again."""

from __future__ import annotations

import asyncio

from alembic import command
from sqlalchemy import inspect

from app.cli import alembic_config
from app.db import make_engine
from tests.conftest import IS_POSTGRES
from tests.test_migrations import _fresh_database, _run_sql

WORKSHOP, POSITION, AGREEMENT, PROGRAMME, TERRITORY = (
    f"0190aaaa-0000-7000-8000-00000000000{n}" for n in range(1, 6)
)
NOW = "'2026-11-26 09:30:00'"


def _insert_workshop(url: str, version: int) -> None:
    """One workshop at revision 0007, with its position, agreement, programme and territory."""

    def i(ident: str) -> str:
        return f"'{ident if IS_POSTGRES else ident.replace('-', '')}'"

    true = "true" if IS_POSTGRES else "1"
    statements = [
        "INSERT INTO territories (id, kind, code, name, name_sort, path, created_at, updated_at, version,"
        f" search_name) VALUES ({i(TERRITORY)}, 'region', '84', 'Auvergne', 'auvergne', '/{TERRITORY}/',"
        f" {NOW}, {NOW}, 1, 'auvergne')",
        "INSERT INTO programmes (id, code, name, positions_target, budget_cents, subsidy_per_position_cents,"
        f" starts_on, created_at, updated_at, version) VALUES ({i(PROGRAMME)}, 'P', 'P', 10, 1000, 10,"
        f" '2021-01-01', {NOW}, {NOW}, 1)",
        "INSERT INTO agreements (id, programme_id, territory_id, kind, reference, status, positions_granted,"
        " subsidy_per_position_cents, starts_on, created_at, updated_at, version) VALUES"
        f" ({i(AGREEMENT)}, {i(PROGRAMME)}, {i(TERRITORY)}, 'convention', 'A', 'signed', 1, 10, '2021-01-01',"
        f" {NOW}, {NOW}, 1)",
        "INSERT INTO positions (id, agreement_id, territory_id, agreement_territory_id, typology, opened_on,"
        f" created_at, updated_at, version) VALUES ({i(POSITION)}, {i(AGREEMENT)}, {i(TERRITORY)},"
        f" {i(TERRITORY)}, 'conum', '2021-04-01', {NOW}, {NOW}, 1)",
        "INSERT INTO workshops (id, position_id, territory_id, title, themes, themes_mask, level, format,"
        " online_url, starts_at, ends_at, duration_minutes, capacity, waitlist_capacity, registered_count,"
        " waitlisted_count, seats_left, status, public, created_at, updated_at, version) VALUES"
        f" ({i(WORKSHOP)}, {i(POSITION)}, {i(TERRITORY)}, 'Atelier', '[\"email\"]', 1, 'debutant', 'remote',"
        " 'https://v.example.org/x', '2026-12-08 09:30:00', '2026-12-08 11:30:00', 120, 10, 0, 3, 0, 7,"
        f" 'scheduled', {true}, {NOW}, {NOW}, {version})",
    ]
    for statement in statements:
        _run_sql(url, statement)


def _columns(url: str) -> set[str]:
    async def read() -> set[str]:
        engine = make_engine(url)
        async with engine.connect() as conn:
            names = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("workshops")}
            )
        await engine.dispose()
        return names

    return asyncio.run(read())


def test_0008_seeds_the_sequence_from_the_version() -> None:
    url, cleanup = _fresh_database()
    try:
        config = alembic_config(url)
        command.upgrade(config, "0007")
        _insert_workshop(url, version=9)
        command.upgrade(config, "0008")
        assert _run_sql(url, "SELECT sequence, version FROM workshops") == [(9, 9)]
        command.downgrade(config, "0007")
        assert "sequence" not in _columns(url)
        assert _run_sql(url, "SELECT version FROM workshops") == [(9,)]
        command.upgrade(config, "head")
        assert "sequence" in _columns(url)
    finally:
        cleanup()  # type: ignore[operator]
