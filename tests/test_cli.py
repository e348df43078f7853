"""The command line: migrate, seed-demo and create-key on a database of their own."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.api_keys.models import ApiKey
from app.cli import cli, prepare_metrics_dir
from app.config import get_settings
from app.db import make_engine, make_sessionmaker
from app.programmes.models import Programme
from app.stats.models import workshop_monthly_stats
from app.territories import referential
from app.territories.models import Territory
from tests.helpers import logging_restored

# 18 régions, 101 départements, 22 métropoles, 1 233 EPCI and 34 875 communes.
REFERENTIAL_TERRITORIES = 36_249

runner = CliRunner()


@pytest.fixture
def cli_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="cnfs-cli-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'nested' / 'cli.db'}"
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("SECRET_KEY", "cli-test-" + "x" * 32)
        get_settings.cache_clear()
        with logging_restored():
            yield url
        get_settings.cache_clear()


def _count(url: str, model: type) -> int:
    async def count() -> int:
        engine = make_engine(url)
        async with make_sessionmaker(engine)() as session:
            n = (await session.execute(select(func.count()).select_from(model))).scalar_one()
        await engine.dispose()
        return int(n)

    return asyncio.run(count())


def test_migrate_seed_and_create_key(cli_database: str) -> None:
    migrated = runner.invoke(cli, ["migrate"])
    assert migrated.exit_code == 0, migrated.output

    seeded = runner.invoke(cli, ["seed-demo"])
    assert seeded.exit_code == 0, seeded.output
    assert "demo data loaded" in seeded.output
    keys = re.findall(r"(demo [^:]+): (cnfs_\S+)", seeded.output)
    assert [name for name, _ in keys] == [
        "demo admin",
        "demo manager, Métropole de Lyon",
        "demo viewer, Rhône",
    ]
    # The whole official referential (the one full import of the test run).
    assert _count(cli_database, Territory) == REFERENTIAL_TERRITORIES
    assert _count(cli_database, Programme) == 1
    assert _count(cli_database, ApiKey) == 3

    again = runner.invoke(cli, ["seed-demo"])
    assert again.exit_code == 0
    assert "nothing loaded" in again.output
    assert "cnfs_" not in again.output
    assert _count(cli_database, Territory) == REFERENTIAL_TERRITORIES

    # Importing the referential again changes nothing.
    imported = runner.invoke(cli, ["territories", "import", "--file", str(referential.SNAPSHOT_PATH)])
    assert imported.exit_code == 0, imported.output
    assert re.search(r"commune\s+│\s+0\s+│\s+0\s+│\s+34875", imported.output), imported.output
    assert re.search(r"former codes\s+│\s+0\s+│\s+0\s+│\s+4285", imported.output), imported.output
    assert _count(cli_database, Territory) == REFERENTIAL_TERRITORIES

    made = runner.invoke(cli, ["create-key", "--name", "ops", "--role", "admin"])
    assert made.exit_code == 0, made.output
    assert made.output.strip().startswith("cnfs_")
    assert _count(cli_database, ApiKey) == 4

    # The demo's workshops are in the rollup the triggers kept; a rebuild finds the same rows.
    kept = _rollup(cli_database)
    assert kept
    rebuilt = runner.invoke(cli, ["stats", "rebuild"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "workshop rollup rebuilt" in rebuilt.output
    assert _rollup(cli_database) == kept


def _rollup(url: str) -> set[tuple[object, ...]]:
    async def read() -> set[tuple[object, ...]]:
        engine = make_engine(url)
        async with engine.connect() as connection:
            rows = (await connection.execute(select(workshop_monthly_stats))).all()
        await engine.dispose()
        # Rows that went back to zero mean nothing, and a rebuild does not make them.
        return {tuple(row) for row in rows if any(row[4:])}

    return asyncio.run(read())


def test_create_key_refuses_bad_input_without_a_traceback(cli_database: str) -> None:
    assert runner.invoke(cli, ["migrate"]).exit_code == 0
    no_scope = runner.invoke(cli, ["create-key", "--name", "x", "--role", "viewer"])
    assert no_scope.exit_code == 2
    assert "at least one territory" in no_scope.output
    unknown = runner.invoke(
        cli,
        [
            "create-key",
            "--name",
            "x",
            "--role",
            "viewer",
            "--territory",
            "0" * 8 + "-0000-0000-0000-" + "0" * 12,
        ],
    )
    assert unknown.exit_code == 2
    assert "no territory" in unknown.output
    assert "Traceback" not in no_scope.output + unknown.output
    assert _count(cli_database, ApiKey) == 0


def test_import_refuses_a_file_that_is_not_a_snapshot(cli_database: str, tmp_path: Path) -> None:
    assert runner.invoke(cli, ["migrate"]).exit_code == 0
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(b"not gzip")
    refused = runner.invoke(cli, ["territories", "import", "--file", str(bad)])
    assert refused.exit_code == 2
    assert "cannot import" in refused.output
    assert "Traceback" not in refused.output
    assert _count(cli_database, Territory) == 0


def test_migrate_down_and_up(cli_database: str) -> None:
    assert runner.invoke(cli, ["migrate"]).exit_code == 0
    down = runner.invoke(cli, ["migrate", "base", "--downgrade"])
    assert down.exit_code == 0, down.output
    assert runner.invoke(cli, ["migrate"]).exit_code == 0
    assert _count(cli_database, Territory) == 0


@pytest.mark.parametrize("name", ["PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"])
def test_an_empty_metrics_directory_is_no_directory_for_one_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    """prometheus_client turns its multiprocess mode on when the variable merely exists: left empty, the
    server would write its values' files into its working directory (the image's /srv, read-only: it would
    not start)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, "")
    prepare_metrics_dir(1)
    assert name not in os.environ
    # The server's process, started with this environment, counts in memory.
    counted = "from prometheus_client import Counter; Counter('served', 'Served.').inc()"
    subprocess.run([sys.executable, "-c", counted], cwd=tmp_path, check=True, timeout=60)
    assert list(tmp_path.iterdir()) == []


def test_a_metrics_directory_given_for_one_worker_is_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An operator who names the directory gets it with one worker too, its files from an earlier run
    deleted, as with several."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    prepare_metrics_dir(1)
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(directory)
    assert list(directory.iterdir()) == []
