"""Start-up checks: a wrong setting, an unreachable or missing database, a busy port give one clear line and
exit status 2, before anything is migrated."""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from app.cli import cli
from app.config import get_settings
from tests.conftest import TEST_DATABASE_URL, postgres_only
from tests.helpers import logging_restored

runner = CliRunner()
SECRET = "startup-test-" + "x" * 32


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """A clean environment with a valid SQLite database in a temporary folder."""
    for name in ("CORS_ALLOW_ORIGINS", "SECRET_KEY", "DATABASE_URL", "ALLOWED_HOSTS", "PUBLIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'db' / 'cnfs.db'}")
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.chdir(tmp_path)  # no .env file of the repository
    get_settings.cache_clear()
    with logging_restored():
        yield monkeypatch
    get_settings.cache_clear()


def refused(args: list[str], *expected: str) -> str:
    """The one line a command refuses with (`serve`'s is a JSON log line, LOG_JSON being on by default:
    its message is returned)."""
    result = runner.invoke(cli, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    line = lines[0]
    if args[0] == "serve" and os.environ.get("LOG_JSON", "true") == "true":
        logged = json.loads(line)
        assert logged.keys() == {"event", "level", "logger", "timestamp"}, logged
        assert (logged["level"], logged["logger"]) == ("error", "app.cli")
        assert logged["timestamp"].endswith("Z")
        line = logged["event"]
    assert line.startswith("cnfs-api: "), line
    for text in expected:
        assert text in line, line
    print(line)  # shown with -s: the messages as an operator sees them
    return line


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("command", [["migrate"], ["serve", "--port", "1"]])
def test_cors_origins_not_json(env: pytest.MonkeyPatch, command: list[str]) -> None:
    env.setenv("CORS_ALLOW_ORIGINS", "https://app.example.fr")
    refused(command, "CORS_ALLOW_ORIGINS", "JSON", '["https://app.example.fr"]')


def test_a_postgres_scheme_without_driver(env: pytest.MonkeyPatch) -> None:
    env.setenv("DATABASE_URL", "postgres://cnfs@127.0.0.1:5432/cnfs")
    refused(["migrate"], "DATABASE_URL", "postgresql+asyncpg://", "example")


def test_a_number_that_is_not_one(env: pytest.MonkeyPatch) -> None:
    env.setenv("DATABASE_POOL_SIZE", "ten")
    refused(["migrate"], "DATABASE_POOL_SIZE", "example: DATABASE_POOL_SIZE=10")


@pytest.mark.parametrize("secret", [None, "short"])
def test_secret_key_required_off_the_development_database(
    env: pytest.MonkeyPatch, secret: str | None
) -> None:
    if secret is None:
        env.delenv("SECRET_KEY")
    else:
        env.setenv("SECRET_KEY", secret)
    refused(["migrate"], "SECRET_KEY", "example: SECRET_KEY=")


def test_the_development_database_needs_no_secret(env: pytest.MonkeyPatch) -> None:
    env.delenv("DATABASE_URL")
    env.delenv("SECRET_KEY")
    assert get_settings().secret_key_problem() is None


def test_a_server_that_refuses(env: pytest.MonkeyPatch) -> None:
    env.setenv("DATABASE_URL", f"postgresql+asyncpg://cnfs@127.0.0.1:{free_port()}/cnfs")
    refused(["migrate"], "DATABASE_URL", "cannot reach PostgreSQL", "connection refused")


def test_a_server_that_never_answers(env: pytest.MonkeyPatch) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        env.setenv("DATABASE_URL", f"postgresql+asyncpg://cnfs@127.0.0.1:{silent.getsockname()[1]}/cnfs")
        env.setenv("DATABASE_CONNECT_TIMEOUT_SECONDS", "0.5")
        refused(["migrate"], "DATABASE_URL", "did not answer within 0.5 s")


@postgres_only
def test_a_database_that_does_not_exist(env: pytest.MonkeyPatch) -> None:
    assert TEST_DATABASE_URL
    name = f"cnfs_missing_{uuid.uuid4().hex[:8]}"
    env.setenv("DATABASE_URL", make_url(TEST_DATABASE_URL).set(database=name).render_as_string(False))
    refused(["migrate"], "DATABASE_URL", f'"{name}" that does not exist', "createdb")
    refused(["serve", "--port", str(free_port())], "DATABASE_URL", "does not exist")


def test_a_busy_port_is_found_before_migrating(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        refused(["serve", "--port", str(port)], f"port {port}", "already in use", "--port")
    assert not (tmp_path / "db" / "cnfs.db").exists()  # nothing was migrated


# Every command that reads or writes the database without migrating it first.
SCHEMA_COMMANDS = [
    ["create-key", "--name", "ops", "--role", "admin"],
    ["seed-demo"],
    ["territories", "import"],
    ["serve", "--no-migrate", "--demo", "--port", str(free_port())],
]
COMMAND_IDS = ["create-key", "seed-demo", "territories-import", "serve-no-migrate"]


@pytest.mark.parametrize("command", SCHEMA_COMMANDS, ids=COMMAND_IDS)
def test_a_missing_sqlite_file_is_not_created(
    env: pytest.MonkeyPatch, tmp_path: Path, command: list[str]
) -> None:
    refused(command, "DATABASE_URL", "does not exist yet", "cnfs-api migrate")
    # Neither the file nor its folder: a later `migrate` starts from nothing.
    assert not (tmp_path / "db").exists()


def test_an_unknown_target_revision(env: pytest.MonkeyPatch) -> None:
    refused(["migrate", "0999"], "cannot migrate to 0999", "0999")


def test_a_downgrade_needs_a_database(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    refused(["migrate", "base", "--downgrade"], "DATABASE_URL", "does not exist")
    assert not (tmp_path / "db" / "cnfs.db").exists()


@pytest.mark.parametrize("command", SCHEMA_COMMANDS, ids=COMMAND_IDS)
def test_a_sqlite_database_never_migrated(
    env: pytest.MonkeyPatch, tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "cnfs.db").touch()  # what an earlier command left behind
    refused(command, "is not migrated", "run `cnfs-api migrate` first")


def test_a_sqlite_database_migrated_by_an_older_release(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from alembic import command as alembic

    from app.cli import _revisions, alembic_config

    (tmp_path / "db").mkdir()
    alembic.upgrade(alembic_config(f"sqlite+aiosqlite:///{tmp_path / 'db' / 'cnfs.db'}"), "0001")
    head, _known = _revisions()
    refused(SCHEMA_COMMANDS[0], "at migration 0001", f"needs {head}", "run `cnfs-api migrate` first")


def test_a_sqlite_database_migrated_by_a_newer_release(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sqlite3

    from alembic import command as alembic

    from app.cli import alembic_config

    path = tmp_path / "db" / "cnfs.db"
    path.parent.mkdir()
    alembic.upgrade(alembic_config(f"sqlite+aiosqlite:///{path}"), "head")
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    refused(SCHEMA_COMMANDS[0], "at migration 9999", "does not know")
    refused(["migrate"], "at migration 9999", "does not know")
    refused(["serve", "--port", str(free_port())], "at migration 9999", "does not know")


@pytest.mark.parametrize("command", SCHEMA_COMMANDS, ids=COMMAND_IDS)
def test_a_postgresql_server_that_refuses(env: pytest.MonkeyPatch, command: list[str]) -> None:
    env.setenv("DATABASE_URL", f"postgresql+asyncpg://cnfs@127.0.0.1:{free_port()}/cnfs")
    refused(command, "DATABASE_URL", "cannot reach PostgreSQL", "connection refused")


@postgres_only
@pytest.mark.parametrize("command", SCHEMA_COMMANDS, ids=COMMAND_IDS)
def test_a_postgresql_database_never_migrated(env: pytest.MonkeyPatch, command: list[str]) -> None:
    import asyncio

    from tests.conftest import _create_pg_database, _drop_pg_database

    assert TEST_DATABASE_URL
    name = f"cnfs_bare_{uuid.uuid4().hex[:8]}"
    asyncio.run(_create_pg_database(TEST_DATABASE_URL, name))
    try:
        env.setenv("DATABASE_URL", make_url(TEST_DATABASE_URL).set(database=name).render_as_string(False))
        refused(command, f'"{name}"', "is not migrated", "run `cnfs-api migrate` first")
    finally:
        asyncio.run(_drop_pg_database(TEST_DATABASE_URL, name))


def test_the_readme_s_container_recipe_for_a_key(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """README, Container: the key is made inside the running container (`docker exec`), where `serve` has
    migrated the database of the volume, with the container's own settings."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    recipe = next(line for line in readme.splitlines() if "create-key" in line and "docker" in line)
    assert "docker exec" in recipe, recipe
    assert "python -m app.cli create-key" in recipe, recipe
    assert runner.invoke(cli, ["migrate"]).exit_code == 0  # what `serve` did first
    made = runner.invoke(cli, recipe.split("python -m app.cli ", 1)[1].split("#")[0].strip("` ").split())
    assert made.exit_code == 0, made.output
    assert made.output.strip().startswith("cnfs_")
