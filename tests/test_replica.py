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
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

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


def _cannot(reason: str) -> NoReturn:
    """A component missing: skipped on a developer's machine, a failure in CI (`.ci/run` installs it)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: .ci/run installs it")
    pytest.skip(reason)


def _start(bindir: Path, data: Path, log: Path) -> None:
    _run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if BINDIR is None:
        _cannot("needs PostgreSQL's server binaries (initdb, pg_ctl, pg_basebackup)")
    if RUN_AS is not None:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            _cannot("runs as root without a `postgres` user to run PostgreSQL as")
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
            # Its log names every statement it runs: what shows that a read was served there.
            conf.write(f"port = {replica_port}\nlog_statement = 'all'\n")
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


WAIT_SECONDS = 0.3
RETRY_SECONDS = 1.0


def _settings(cluster: Cluster) -> Settings:
    return Settings(
        database_url=cluster.primary_url,
        database_read_url=cluster.replica_url,
        database_read_wait_seconds=WAIT_SECONDS,
        database_read_retry_seconds=RETRY_SECONDS,
        secret_key="replica-test-" + "x" * 32,
        log_json=False,
        log_level="WARNING",
        rate_limits_enabled=False,
    )


@pytest.fixture(scope="module")
async def replica_apps(cluster: Cluster) -> AsyncIterator[tuple[FastAPI, FastAPI]]:
    """Two applications on the same primary and replica, sharing nothing: two workers, or two machines."""
    first, second = create_app(_settings(cluster)), create_app(_settings(cluster))
    async with LifespanManager(first), LifespanManager(second):
        yield first, second


def _statements_on_replica(cluster: Cluster) -> int:
    """How many statements the replica has run on the territories (its log names each)."""
    log = (cluster.folder / "standby.log").read_text(errors="replace")
    return sum(1 for line in log.splitlines() if "LOG:" in line and "territories" in line)


def _read_on(app: FastAPI, database: str) -> float:
    return float(app.state.metrics.replica_reads.labels(database)._value.get())


async def test_reads_on_the_replica_see_every_write_acknowledged_before_them(
    cluster: Cluster, replica_apps: tuple[FastAPI, FastAPI]
) -> None:
    first_app, second_app = replica_apps
    writer_key, reader_key = await _keys(cluster.primary_url)
    writer = {"Authorization": f"Bearer {writer_key}"}
    reader = {"Authorization": f"Bearer {reader_key}"}
    answered: list[str] = []
    answer_observers.append(answered.append)
    first_transport = httpx.ASGITransport(app=first_app, raise_app_exceptions=False)
    second_transport = httpx.ASGITransport(app=second_app, raise_app_exceptions=False)
    try:
        async with (
            httpx.AsyncClient(transport=first_transport, base_url="http://test") as first,
            httpx.AsyncClient(transport=second_transport, base_url="http://test") as second,
        ):
            code = "84"
            created = await first.post(
                "/api/v1/territories", json={"kind": "region", "code": code, "name": "Avant"}, headers=writer
            )
            assert created.status_code == 201, created.text
            assert "set-cookie" not in created.headers
            territory_id = created.json()["id"]
            by_id = f"/api/v1/territories/{territory_id}"
            by_code = f"/api/v1/territories/region/{code}"
            listed = f"/api/v1/territories?kind=region&code={code}"

            # Read at once, on the other application too: the replica has replayed the creation first.
            assert (await second.get(by_code, headers=writer)).json()["name"] == "Avant"
            await _caught_up(cluster)

            # Served by the replica: its log shows the statements, the route, the direct twin and a list.
            on_replica = _statements_on_replica(cluster)
            counted = _read_on(first_app, "replica")
            answered.clear()
            assert (await first.get(by_id, headers=reader)).json()["name"] == "Avant"
            assert (await first.get(by_code, headers=reader)).json()["name"] == "Avant"
            assert answered == ["territories_get_by_code"]
            page = await first.get(listed)
            assert [item["name"] for item in page.json()["items"]] == ["Avant"]
            assert _read_on(first_app, "replica") == counted + 3
            assert _statements_on_replica(cluster) >= on_replica + 3

            # The replica stops replaying; a rename is acknowledged on the primary. Every read after it,
            # by the writer or anyone, on either application, the route or the twin, sees it: the replica
            # has not replayed it, so they read from the primary.
            await _sql(cluster.replica_port, "SELECT pg_wal_replay_pause()")
            renamed = await first.patch(
                by_id,
                json={"name": "Après"},
                headers={**writer, "If-Match": '"1"', "Content-Type": "application/merge-patch+json"},
            )
            assert renamed.status_code == 200, renamed.text
            primary_reads = _read_on(second_app, "primary")
            assert (await second.get(by_id, headers=writer)).json()["name"] == "Après"
            answered.clear()
            assert (await second.get(by_code, headers=reader)).json()["name"] == "Après"
            assert answered == ["territories_get_by_code"]
            assert (await first.get(by_code)).json()["name"] == "Après"
            page = await first.get(listed)
            assert [item["name"] for item in page.json()["items"]] == ["Après"]
            assert _read_on(second_app, "primary") == primary_reads + 2

            # A key revoked while the replica is behind is refused at once, on both applications.
            await asyncio.sleep(RETRY_SECONDS)
            listed_keys = await first.get("/api/v1/api-keys", headers=writer, params={"limit": 200})
            assert listed_keys.status_code == 200, listed_keys.text
            reader_id = next(item["id"] for item in listed_keys.json()["items"] if item["name"] == "reader")
            revoked = await first.delete(f"/api/v1/api-keys/{reader_id}", headers=writer)
            assert revoked.status_code == 204, revoked.text
            assert (await second.get(by_code, headers=reader)).status_code == 401
            assert (await first.get(by_id, headers=reader)).status_code == 401

            # Personal data reads on the primary: a counsellor made while the replica is paused is found.
            counsellor = await first.post(
                "/api/v1/counsellors",
                json={"territory_id": territory_id, "first_name": "Camille", "last_name": "Exemple"},
                headers=writer,
            )
            assert counsellor.status_code == 201, counsellor.text
            found = await second.get(f"/api/v1/counsellors/{counsellor.json()['id']}", headers=writer)
            assert found.status_code == 200, found.text
            assert found.json()["last_name"] == "Exemple"

            # Replay resumes: once the replica is tried again, it serves the reads, renamed.
            await _sql(cluster.replica_port, "SELECT pg_wal_replay_resume()")
            await _caught_up(cluster)
            await asyncio.sleep(RETRY_SECONDS)
            on_replica = _statements_on_replica(cluster)
            counted = _read_on(second_app, "replica")
            assert (await second.get(by_id, headers=writer)).json()["name"] == "Après"
            assert _read_on(second_app, "replica") == counted + 1
            assert _statements_on_replica(cluster) > on_replica
            # A key made a moment ago on the primary works at once, its read on the replica.
            _unused, fresh_key = await _keys(cluster.primary_url)
            fresh = await first.get(by_code, headers={"Authorization": f"Bearer {fresh_key}"})
            assert fresh.status_code == 200, fresh.text
            unknown = await first.get(by_code, headers={"Authorization": "Bearer cnfs_unknown"})
            assert unknown.status_code == 401, unknown.text

            # The replica stops: the reads go to the primary. The one request whose pooled connection
            # breaks in the middle may be a 503 with Retry-After; none after it.
            cluster.pg_ctl("standby", "-m", "fast", "-w", "stop")
            statuses = []
            for path in (by_code, by_id, by_code, by_id, listed):
                response = await first.get(path, headers=writer)
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
            assert (await first.get(by_code, headers=writer)).json()["name"] == "Après"
            assert answered == ["territories_get_by_code"]
            primary_pool = f'cnfs_db_pool_size{{pool="primary"}} {float(10)}'
            scraped = (await first.get("/metrics")).text
            assert primary_pool in scraped
            assert 'cnfs_db_pool_size{pool="replica"}' in scraped
            assert 'cnfs_replica_reads_total{database="replica"}' in scraped
    finally:
        answer_observers.remove(answered.append)


async def test_the_primary_down_the_replica_answers_as_it_stands(
    cluster: Cluster, replica_apps: tuple[FastAPI, FastAPI]
) -> None:
    app, _other = replica_apps
    # Runs last: it stops the primary. The replica may have been stopped before.
    with suppress(subprocess.SubprocessError):
        cluster.pg_ctl("standby", "-l", str(cluster.folder / "standby.log"), "-w", "-t", "60", "start")
    key, _unused = await _keys(cluster.primary_url)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://test"
    ) as client:
        made = await client.post(
            "/api/v1/territories", json={"kind": "region", "code": "93", "name": "Sud"}, headers=headers
        )
        assert made.status_code == 201, made.text
        await _caught_up(cluster)
        # The replica restarted: the connections its pool held are gone (the first use of each would be a
        # 503, or a read on the primary).
        await app.state.replica.engine.dispose()
        await asyncio.sleep(RETRY_SECONDS)

        cluster.pg_ctl("primary", "-m", "fast", "-w", "stop")
        counted = _read_on(app, "replica")
        statuses = []
        for _ in range(3):
            response = await client.get("/api/v1/territories/region/93", headers=headers)
            statuses.append(response.status_code)
            if response.status_code == 200:
                assert response.json()["name"] == "Sud"
        assert statuses == [200, 200, 200], statuses
        assert _read_on(app, "replica") == counted + 3
        # Writes need the primary: a 503 with Retry-After, nothing else.
        refused = await client.post(
            "/api/v1/territories", json={"kind": "region", "code": "94", "name": "Corse"}, headers=headers
        )
        assert refused.status_code == 503, refused.text
        assert "retry-after" in refused.headers
