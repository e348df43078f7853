"""The migrations are the schema: they upgrade, downgrade and match the models on the test database kind."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from app.cli import alembic_config
from app.db import make_engine
from app.models import metadata
from tests.conftest import IS_POSTGRES, TEST_DATABASE_URL, _create_pg_database, _drop_pg_database


def _fresh_database() -> tuple[str, object]:
    if IS_POSTGRES:
        assert TEST_DATABASE_URL
        name = f"cnfs_migr_{uuid.uuid4().hex[:8]}"
        asyncio.run(_create_pg_database(TEST_DATABASE_URL, name))
        url = make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)

        def cleanup() -> None:
            asyncio.run(_drop_pg_database(TEST_DATABASE_URL, name))

        return url, cleanup
    tmp = tempfile.TemporaryDirectory(prefix="cnfs-migr-")
    return f"sqlite+aiosqlite:///{Path(tmp.name) / 'm.db'}", tmp.cleanup


def _tables(url: str) -> set[str]:
    async def read() -> set[str]:
        engine = make_engine(url)
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        await engine.dispose()
        return names

    return asyncio.run(read())


def test_linear_history() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1
    assert len(script.get_bases()) == 1


def test_upgrade_check_downgrade_upgrade() -> None:
    url, cleanup = _fresh_database()
    try:
        config = alembic_config(url)
        command.upgrade(config, "head")
        assert set(metadata.tables) <= _tables(url)
        # Raises when the models and the migrated schema differ.
        command.check(config)
        # Step down one revision at a time so that every downgrade runs.
        script = ScriptDirectory.from_config(config)
        for _ in list(script.walk_revisions()):
            command.downgrade(config, "-1")
        assert _tables(url) <= {"alembic_version"}
        command.upgrade(config, "head")
        assert set(metadata.tables) <= _tables(url)
    finally:
        cleanup()  # type: ignore[operator]


def _run_sql(url: str, statement: str) -> list[tuple[object, ...]]:
    async def run() -> list[tuple[object, ...]]:
        engine = make_engine(url)
        async with engine.begin() as conn:
            result = await conn.execute(text(statement))
            rows = [tuple(row) for row in result.all()] if result.returns_rows else []
        await engine.dispose()
        return rows

    return asyncio.run(run())


def test_0003_makes_existing_territories_searchable() -> None:
    url, cleanup = _fresh_database()
    try:
        config = alembic_config(url)
        command.upgrade(config, "0002")
        ident = "0190aaaa-0000-7000-8000-000000000001"
        stored = ident if IS_POSTGRES else ident.replace("-", "")
        _run_sql(
            url,
            "INSERT INTO territories (id, kind, code, name, name_sort, path, created_at, updated_at, version)"
            f" VALUES ('{stored}', 'commune', '2A004', 'Ajaccio-Vieux l''Île', 'x', '/{ident}/',"
            " '2026-01-01', '2026-01-01', 1)",
        )
        command.upgrade(config, "0003")
        assert _run_sql(url, "SELECT search_name FROM territories") == [("ajaccio vieux l ile",)]
        tokens = _run_sql(url, "SELECT token FROM territory_words ORDER BY token")
        assert [t for (t,) in tokens] == ["2a004", "ajaccio", "ile", "l", "vieux"]
        command.downgrade(config, "0002")
        assert "territory_words" not in _tables(url)
    finally:
        cleanup()  # type: ignore[operator]
