"""The migrations are the schema: they upgrade, downgrade and match the models on the test database kind."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from app.cli import alembic_config
from app.db import make_engine
from app.migration_lock import MIGRATION_LOCK_KEY
from app.models import metadata
from tests.conftest import IS_POSTGRES, TEST_DATABASE_URL, _create_pg_database, _drop_pg_database

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.mark.skipif(not IS_POSTGRES, reason="needs PostgreSQL (TEST_DATABASE_URL)")
def test_two_processes_starting_at_once_migrate_once(tmp_path: Path) -> None:
    """Two replicas start together on a fresh database: one migrates, the other waits for it under the
    migration lock, then finds the schema current. The test holds the lock first, so that both are
    started, and waiting, before either migrates."""
    url, cleanup = _fresh_database()
    try:
        asyncio.run(_race(url, tmp_path))
    finally:
        cleanup()  # type: ignore[operator]


async def _race(url: str, tmp_path: Path) -> None:
    import asyncpg

    target = make_url(url)
    holder = await asyncpg.connect(
        host=target.host, port=target.port or 5432, user=target.username, database=target.database
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")},
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": url,
        "SECRET_KEY": "migration-race-" + "x" * 32,
        "LOG_JSON": "true",
        "LOG_LEVEL": "INFO",
    }
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    processes: list[asyncio.subprocess.Process] = []
    try:
        await holder.execute(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
        for log in logs:
            with log.open("wb") as stderr:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        *(sys.executable, "-m", "app.cli", "migrate"),
                        cwd=tmp_path,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=stderr,
                    )
                )
        waiting = 0
        deadline = time.monotonic() + 60
        while waiting < 2:
            assert time.monotonic() < deadline, [log.read_text() for log in logs]
            assert all(p.returncode is None for p in processes), [log.read_text() for log in logs]
            await asyncio.sleep(0.2)
            waiting = await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        await holder.execute(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
        codes = [await asyncio.wait_for(p.wait(), 120) for p in processes]
        assert codes == [0, 0], [log.read_text() for log in logs]
        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        assert await holder.fetch("SELECT version_num FROM alembic_version") == [(head,)]
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await asyncio.wait_for(process.wait(), 10)
        await holder.close()
    upgrades = [sum("Running upgrade" in line for line in log.read_text().splitlines()) for log in logs]
    # Every migration ran once, in one of the two processes; both said that they waited.
    assert sorted(upgrades) == [
        0,
        len(list(ScriptDirectory.from_config(alembic_config(url)).walk_revisions())),
    ]
    assert all("another process is migrating the database" in log.read_text() for log in logs)
