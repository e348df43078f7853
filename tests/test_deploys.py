"""Deploys: a `cnfs-api serve` stopped by SIGTERM stops accepting connections, lets the write in flight commit
and answer (one worker, uvicorn; two, gunicorn), and cancels one that outlasts SHUTDOWN_TIMEOUT_SECONDS, whose
transaction then rolls back whole. The write is made slow by a row lock that the test's own transaction holds
(a registration waits for its workshop's row), released after the SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command

from app.cli import alembic_config, server_command
from app.config import Settings
from tests.helpers import assert_problem
from tests.processes import (
    Database,
    create_remote_workshop,
    needs_postgres,
    position_in,
    postgres_database,
    row_locked,
    wait_until_blocked,
)
from tests.test_serve import ROOT, Server, serve
from tests.workshops.helpers import WORKSHOPS, person

pytestmark = pytest.mark.processes


def test_the_servers_are_given_the_shutdown_timeout() -> None:
    """uvicorn's own bound; under gunicorn, the workers' (app.core.workers) and the arbiter's, later."""
    uvicorn = server_command("127.0.0.1", 8000, 1, 75, shutdown_timeout=7)
    assert uvicorn[uvicorn.index("--timeout-graceful-shutdown") + 1] == "7"
    gunicorn = server_command("127.0.0.1", 8000, 2, 75, shutdown_timeout=7)
    assert gunicorn[gunicorn.index("--graceful-timeout") + 1] == "12"
    assert gunicorn[gunicorn.index("--worker-class") + 1] == "app.core.workers.UvicornWorker"
    assert Settings().shutdown_timeout_seconds == 20


@pytest.fixture(scope="module")
def database() -> Iterator[Database]:
    with postgres_database("cnfs_deploys") as database:
        yield database


async def _refuses_connections(server: Server) -> None:
    """Soon after the SIGTERM (30 s at most, for a loaded machine), a new connection is refused (the
    listening socket is closed)."""
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=2) as fresh:
        while True:
            try:
                await fresh.get(f"{server.url}/healthz", headers={"Connection": "close"})
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                # Refused; or, under gunicorn, accepted into the backlog of a socket being closed, then
                # closed unanswered: either way not served, and the client may retry elsewhere.
                return
            assert time.monotonic() < deadline, "still accepting connections 30 s after SIGTERM"
            await asyncio.sleep(0.05)


async def _registrations(database: Database, workshop_id: str) -> list[dict[str, Any]]:
    connection = await database.connect()
    try:
        rows = await connection.fetch(
            "SELECT id, status FROM registrations WHERE workshop_id = $1", uuid.UUID(workshop_id)
        )
        counts = await connection.fetchrow(
            "SELECT registered_count, seats_left FROM workshops WHERE id = $1", uuid.UUID(workshop_id)
        )
    finally:
        await connection.close()
    return [{"id": str(row["id"]), "status": row["status"], **dict(counts)} for row in rows]


async def _exit_code(server: Server, seconds: float) -> int:
    return await asyncio.to_thread(server.process.wait, seconds)


@needs_postgres
@pytest.mark.parametrize("workers", [1, 2], ids=["uvicorn", "gunicorn"])
async def test_sigterm_lets_the_write_in_flight_commit_and_answer(
    database: Database, tmp_path: Path, workers: int
) -> None:
    env = database.server_env(DATABASE_LOCK_TIMEOUT_MS="60000", SHUTDOWN_TIMEOUT_SECONDS="30")
    with serve(tmp_path, "--workers", str(workers), **env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            position = await position_in(client, database)
            workshop = (await create_remote_workshop(client, database, position, capacity=5))["id"]
            async with row_locked(database, "workshops", workshop) as holder:
                pending = asyncio.create_task(
                    client.post(f"{WORKSHOPS}/{workshop}/registrations", json=person(1))
                )
                await wait_until_blocked(holder)
                pid = server.process.pid
                server.process.send_signal(signal.SIGTERM)
                await _refuses_connections(server)
                # The registration still waits: the server waits for it.
                await asyncio.sleep(0.5)
                assert not pending.done()
                assert server.process.poll() is None
            # The lock is released: the registration goes on, commits and is answered.
            answer = await asyncio.wait_for(pending, 60)
        assert answer.status_code == 201, answer.text
        assert answer.json()["status"] == "confirmed"
        # uvicorn ends by raising the signal it caught again (-15); gunicorn's arbiter exits 0.
        assert await _exit_code(server, 60) in (0, -signal.SIGTERM)
        lines = server.lines()
    assert await _registrations(database, workshop) == [
        {"id": answer.json()["id"], "status": "confirmed", "registered_count": 1, "seats_left": 4}
    ]
    events = [line["event"] for line in lines]
    # Every worker ran the application's shutdown, which closed its pool (DATABASE_POOL_SIZE 6), after
    # the registration was answered (the worker that had it, at least; gunicorn writes uvicorn's own lines
    # from WARNING only).
    disposed = [n for n, event in enumerate(events) if event.startswith("Pool disposed. Pool size: 6 ")]
    answered = events.index("POST /api/v1/workshops/{workshop_id}/registrations 201")
    assert len(disposed) == workers, events
    assert disposed[-1] > answered, events
    if workers == 1:
        assert events[-2:] == ["Application shutdown complete.", f"Finished server process [{pid}]"]
    # No worker was killed, nothing failed.
    assert not [line for line in lines if line["level"] in ("error", "critical")], lines


@needs_postgres
async def test_a_write_that_outlasts_the_shutdown_timeout_is_rolled_back(
    database: Database, tmp_path: Path
) -> None:
    env = database.server_env(DATABASE_LOCK_TIMEOUT_MS="60000", SHUTDOWN_TIMEOUT_SECONDS="2")
    with serve(tmp_path, **env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            position = await position_in(client, database)
            workshop = (await create_remote_workshop(client, database, position, capacity=5))["id"]
            async with row_locked(database, "workshops", workshop) as holder:
                pending = asyncio.create_task(
                    client.post(f"{WORKSHOPS}/{workshop}/registrations", json=person(2))
                )
                await wait_until_blocked(holder)
                stopped = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                # The process exits while the test still holds the lock: the request was cut, or answered
                # 503 (retry) if that answer left before the process ended; never the server's own 500.
                assert await _exit_code(server, 60) in (0, -signal.SIGTERM)
                took = time.monotonic() - stopped
                try:
                    answered = await asyncio.wait_for(pending, 10)
                except httpx.RemoteProtocolError:
                    pass
                else:
                    assert_problem(answered, 503, "service_unavailable")
            lines = server.lines()
    # Within the timeout plus the application's shutdown; bounds of this test, not a measure of speed.
    assert 1.5 < took < 45, took
    # Its transaction rolled back: nothing of it was written.
    assert await _registrations(database, workshop) == []
    events = [line["event"] for line in lines]
    assert "Cancel 1 running task(s), timeout graceful shutdown exceeded" in events, events
    assert "Application shutdown complete." in events, events


def test_the_previous_release_rolls_back_onto_a_newer_schema_with_no_migrate(tmp_path: Path) -> None:
    """After a newer release migrated the database, the previous one's `serve` refuses to migrate it (exit
    status 2: started by mistake); with `--no-migrate` (a rollback) it serves, and is ready."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}"
    command.upgrade(alembic_config(url), "head")
    with closing(sqlite3.connect(tmp_path / "serve.db")) as db, db:
        db.execute("UPDATE alembic_version SET version_num = '9999_from_a_newer_release'")
    refused = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--no-demo", "--port", "0"],
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")},
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": url,
            "SECRET_KEY": "serve-test-" + "x" * 32,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert "which this release does not know (a newer release migrated it)" in refused.stderr
    with serve(tmp_path, "--no-migrate") as server:
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        listed = httpx.get(f"{server.url}/api/v1/territories", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["schema_revision"] == "9999_from_a_newer_release"
    assert listed.status_code == 200, listed.text
