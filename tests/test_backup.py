"""Backups restore: scripts/backup_restore_check.py dumps a database with data in every kind of table the
service writes, restores it into a new database and finds every table's row count equal; a difference is
reported and fails the check."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import asyncpg
import pytest

from app.config import Settings
from tests.conftest import IS_POSTGRES
from tests.helpers import app_client
from tests.processes import SECRET_KEY, Database, create_remote_workshop, position_in, postgres_database
from tests.workshops.helpers import WORKSHOPS, person

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "backup_restore_check.py"

pytestmark = pytest.mark.processes
needs_postgres = pytest.mark.skipif(
    not IS_POSTGRES, reason="needs PostgreSQL (TEST_DATABASE_URL): pg_dump and pg_restore back up PostgreSQL"
)


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("backup_restore_check", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_a_difference_is_reported() -> None:
    script = _script()
    assert script.differences({"public.a": 2, "public.b": 1}, {"public.a": 2, "public.b": 1}) == []
    assert script.differences({"public.a": 2, "public.b": 1}, {"public.a": 1, "public.c": 0}) == [
        "public.a: 2 rows in the source, 1 restored",
        "public.b: missing from the restored database (1 rows in the source)",
        "public.c: only in the restored database (0 rows)",
    ]
    assert script.libpq_url("postgresql+asyncpg://u:p@db:5432/cnfs") == "postgresql://u:p@db:5432/cnfs"


@pytest.fixture(scope="module")
def database() -> Iterator[Database]:
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump and pg_restore are not installed (apt-get install postgresql-client)")
    with postgres_database("cnfs_backup") as database:
        yield database


@needs_postgres
async def test_a_dump_restores_with_every_row(database: Database, tmp_path: Path) -> None:
    settings = Settings(
        database_url=database.direct_url, secret_key=SECRET_KEY, rate_limits_enabled=False, log_json=False
    )
    async with app_client(settings) as client:
        position = await position_in(client, database)
        workshop = await create_remote_workshop(client, database, position, capacity=3)
        for n in range(4):
            registered = await client.post(
                f"{WORKSHOPS}/{workshop['id']}/registrations",
                json=person(n),
                headers={"Idempotency-Key": f"backup-{n}"},
            )
            assert registered.status_code == 201, registered.text
    dump = tmp_path / "cnfs.dump"
    result = await asyncio.to_thread(_check, database.direct_url, "--dump", str(dump))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {
        line.split()[0]: (int(line.split()[1]), int(line.split()[2]))
        for line in result.stdout.splitlines()
        if line.startswith("public.")
    }
    # Every table the migrations made, with what the requests above wrote.
    assert rows["public.registrations"] == (4, 4)
    assert rows["public.workshops"] == (1, 1)
    assert rows["public.idempotency_keys"] == (4, 4)
    assert rows["public.alembic_version"] == (1, 1)
    assert rows["public.workshop_monthly_stats"][0] > 0
    assert rows["public.changes"][0] >= 4
    assert all(source == restored for source, restored in rows.values())
    assert "all equal" in result.stdout
    assert dump.stat().st_size > 0
    # The restored database was dropped.
    connection = await database.connect()
    try:
        left = await connection.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname LIKE $1", "cnfs_backup_%_restore_check_%"
        )
    finally:
        await connection.close()
    assert left == 0


@needs_postgres
async def test_a_failed_restore_is_exit_status_2(database: Database, tmp_path: Path) -> None:
    """A dump that cannot be written (its directory does not exist): the step's error, exit status 2, and
    no restored database left behind."""
    result = await asyncio.to_thread(
        _check, database.direct_url, "--dump", str(tmp_path / "missing" / "x.dump")
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "backup check failed: pg_dump failed" in result.stderr
    connection: asyncpg.Connection = await database.connect()
    try:
        left = await connection.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname LIKE $1", "cnfs_backup_%_restore_check_%"
        )
    finally:
        await connection.close()
    assert left == 0
