"""DATABASE_READ_URL with a real streaming replica: a primary made with initdb and a standby made from it with
`pg_basebackup -R`, both on free loopback ports, started for this module and stopped at its end.

What shows that a read came from the replica: the standby's replay is paused (pg_wal_replay_pause), then a
territory is renamed on the primary; a read that answers the old name was served by the replica, one that
answers the new name by the primary."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.api_keys import service as api_keys
from app.api_keys.schemas import ApiKeyCreate
from app.cli import alembic_config
from app.config import Settings
from app.core.auth import Role
from app.core.direct import answer_observers
from app.core.replica import PIN_COOKIE
from app.db import make_engine, make_sessionmaker
from app.main import create_app
from bench.pgbouncer import free_port
from tests.conftest import postgres_only

pytestmark = postgres_only


def _bindir() -> Path | None:
    """The binaries of the PostgreSQL the machine runs (initdb, pg_ctl and pg_basebackup of one version)."""
    candidates = []
    if shutil.which("pg_config"):
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(found.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "pg_basebackup", "postgres")):
            return folder
    return None


BINDIR = _bindir()
# PostgreSQL refuses to run as root: the clusters belong to `postgres` when the tests run as root.
RUN_AS = "postgres" if os.geteuid() == 0 else None
STEP_TIMEOUT = 120


@dataclass
class Cluster:
    primary_url: str
    replica_url: str
    primary_port: int
    replica_port: int
    folder: Path

    def pg_ctl(self, data: str, *args: str) -> None:
        _run([str(BINDIR / "pg_ctl"), "-D", str(self.folder / data), *args])


def _run(args: list[str]) -> None:
    command = ["runuser", "-u", RUN_AS, "--", *args] if RUN_AS else args
    subprocess.run(command, check=True, capture_output=True, timeout=STEP_TIMEOUT)


def _start(bindir: Path, data: Path, log: Path) -> None:
    _run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if BINDIR is None:
        pytest.skip("needs PostgreSQL's server binaries (initdb, pg_ctl, pg_basebackup)")
    if RUN_AS is not None:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            pytest.skip("runs as root without a `postgres` user to run PostgreSQL as")
    folder = Path(tempfile.mkdtemp(prefix="cnfs-replica-"))
    if RUN_AS is not None:
        shutil.chown(folder, RUN_AS)
    primary, standby = folder / "primary", folder / "standby"
    primary_port, replica_port = free_port(), free_port()
    started: list[Path] = []
    try:
        _run([str(BINDIR / "initdb"), "-D", str(primary), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        with (primary / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {primary_port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                "max_connections = 60\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        _start(BINDIR, primary, folder / "primary.log")
        started.append(primary)
        _run(
            [
                str(BINDIR / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(primary_port),
                "-U",
                "postgres",
                "-D",
                str(standby),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ]
        )
        with (standby / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {replica_port}\n")
        _start(BINDIR, standby, folder / "standby.log")
        started.append(standby)
        primary_url = f"postgresql+asyncpg://postgres@127.0.0.1:{primary_port}/cnfs"
        asyncio.run(_sql(primary_port, "CREATE DATABASE cnfs", database="postgres"))
        command.upgrade(alembic_config(primary_url), "head")
        yield Cluster(
            primary_url,
            f"postgresql+asyncpg://postgres@127.0.0.1:{replica_port}/cnfs",
            primary_port,
            replica_port,
            folder,
        )
    finally:
        for data in reversed(started):
            with suppress(subprocess.SubprocessError):
                _run([str(BINDIR / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(folder, ignore_errors=True)


async def _sql(port: int, sql: str, *args: Any, database: str = "cnfs") -> Any:
    connection = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database=database)
    try:
        return await connection.fetchval(sql, *args)
    finally:
        await connection.close()


async def _caught_up(cluster: Cluster) -> None:
    """Until the replica has replayed everything the primary has written so far (30 s at most)."""
    target = await _sql(cluster.primary_port, "SELECT pg_current_wal_lsn()::text")
    deadline = time.monotonic() + 30
    while True:
        behind = await _sql(
            cluster.replica_port, "SELECT pg_wal_lsn_diff($1::text::pg_lsn, pg_last_wal_replay_lsn())", target
        )
        if behind <= 0:
            return
        assert time.monotonic() < deadline, f"the replica is {behind} bytes behind"
        await asyncio.sleep(0.05)


async def _keys(url: str) -> tuple[str, str]:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            writer = await api_keys.create(session, ApiKeyCreate(name="writer", role=Role.admin))
            reader = await api_keys.create(session, ApiKeyCreate(name="reader", role=Role.admin))
            await session.commit()
        return writer.key, reader.key
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
async def replica_app(cluster: Cluster) -> AsyncIterator[FastAPI]:
    settings = Settings(
        database_url=cluster.primary_url,
        database_read_url=cluster.replica_url,
        database_read_primary_seconds=1.5,
        database_read_retry_seconds=30,
        secret_key="replica-test-" + "x" * 32,
        log_json=False,
        log_level="WARNING",
        rate_limits_enabled=False,
    )
    app = create_app(settings)
    async with LifespanManager(app):
        yield app


async def test_reads_on_the_replica_writes_and_their_reader_on_the_primary(
    cluster: Cluster, replica_app: FastAPI
) -> None:
    writer_key, reader_key = await _keys(cluster.primary_url)
    writer = {"Authorization": f"Bearer {writer_key}"}
    reader = {"Authorization": f"Bearer {reader_key}"}
    answered: list[str] = []
    answer_observers.append(answered.append)
    transport = httpx.ASGITransport(app=replica_app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            code = "84"
            created = await client.post(
                "/api/v1/territories", json={"kind": "region", "code": code, "name": "Avant"}, headers=writer
            )
            assert created.status_code == 201, created.text
            territory_id = created.json()["id"]
            # The write's answer carries the read-your-writes cookie.
            assert PIN_COOKIE in created.headers["set-cookie"]
            # Each caller below is told apart by its key: the client keeps no cookie unless a step says so.
            client.cookies.clear()
            await _caught_up(cluster)
            await _sql(cluster.replica_port, "SELECT pg_wal_replay_pause()")

            renamed = await client.patch(
                f"/api/v1/territories/{territory_id}",
                json={"name": "Après"},
                headers={**writer, "If-Match": '"1"', "Content-Type": "application/merge-patch+json"},
            )
            assert renamed.status_code == 200, renamed.text
            client.cookies.clear()
            assert (
                await _sql(
                    cluster.primary_port,
                    "SELECT name FROM territories WHERE id = $1",
                    uuid.UUID(territory_id),
                )
                == "Après"
            )

            by_id = f"/api/v1/territories/{territory_id}"
            by_code = f"/api/v1/territories/region/{code}"
            listed = f"/api/v1/territories?kind=region&code={code}"

            # Another caller reads the replica, paused before the rename: the route, the direct twin, a list.
            answered.clear()
            assert (await client.get(by_id, headers=reader)).json()["name"] == "Avant"
            assert (await client.get(by_code, headers=reader)).json()["name"] == "Avant"
            assert answered == ["territories_get_by_code"]
            page = await client.get(listed)
            assert [item["name"] for item in page.json()["items"]] == ["Avant"]
            # A key made on the primary after the pause, unknown to the replica, works at once (looked up
            # on the primary), and the read still comes from the replica.
            _unused, fresh_key = await _keys(cluster.primary_url)
            fresh = await client.get(by_code, headers={"Authorization": f"Bearer {fresh_key}"})
            assert fresh.status_code == 200, fresh.text
            assert fresh.json()["name"] == "Avant"
            unknown = await client.get(by_code, headers={"Authorization": "Bearer cnfs_unknown"})
            assert unknown.status_code == 401, unknown.text

            # The writer reads its own write, on the primary, through the route and the twin alike.
            answered.clear()
            assert (await client.get(by_id, headers=writer)).json()["name"] == "Après"
            assert (await client.get(by_code, headers=writer)).json()["name"] == "Après"
            assert answered == ["territories_get_by_code"]
            # So does a client that sends the write's cookie back (another worker, another connection).
            pinned = {"Cookie": f"{PIN_COOKIE}={time.time() + 30:.3f}"}
            assert (await client.get(by_code, headers=pinned)).json()["name"] == "Après"
            assert (await client.get(by_code)).json()["name"] == "Avant"

            # Personal data reads on the primary: a counsellor made while the replica is paused is found.
            counsellor = await client.post(
                "/api/v1/counsellors",
                json={"territory_id": territory_id, "first_name": "Camille", "last_name": "Exemple"},
                headers=writer,
            )
            assert counsellor.status_code == 201, counsellor.text
            client.cookies.clear()
            found = await client.get(f"/api/v1/counsellors/{counsellor.json()['id']}", headers=reader)
            assert found.status_code == 200, found.text
            assert found.json()["last_name"] == "Exemple"

            # The writer's window ends: it reads the replica again.
            await asyncio.sleep(1.6)
            assert (await client.get(by_id, headers=writer)).json()["name"] == "Avant"

            await _sql(cluster.replica_port, "SELECT pg_wal_replay_resume()")
            await _caught_up(cluster)
            assert (await client.get(by_id, headers=reader)).json()["name"] == "Après"

            # The replica stops: the reads go to the primary. The one request whose pooled connection
            # breaks in the middle may be a 503 with Retry-After; none after it.
            cluster.pg_ctl("standby", "-m", "fast", "-w", "stop")
            statuses = []
            for path in (by_code, by_id, by_code, by_id, listed):
                response = await client.get(path, headers=reader)
                statuses.append(response.status_code)
                if response.status_code == 503:
                    assert "retry-after" in response.headers
                else:
                    assert response.status_code == 200, response.text
                    body = response.json()
                    assert (body["items"][0] if "items" in body else body)["name"] == "Après"
            assert statuses.count(503) <= 1, statuses
            assert statuses[-3:] == [200, 200, 200], statuses
            answered.clear()
            assert (await client.get(by_code, headers=reader)).json()["name"] == "Après"
            assert answered == ["territories_get_by_code"]
    finally:
        answer_observers.remove(answered.append)
