"""DATABASE_READ_URL with a real streaming replica (`bench.replica.streaming_cluster`): a primary made with
initdb and a standby made from it with `pg_basebackup -R`, both on free loopback ports, started for this
module and stopped at its end.

What shows that a read came from the replica: the standby logs every statement it runs, and the service
counts where each read went (`cnfs_replica_reads_total`). What shows that no read sees less than was
acknowledged before it: the standby's replay is paused (pg_wal_replay_pause), then a territory is renamed
through the service; every read after that answers the new name."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from typing import Any, NoReturn

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
from bench.replica import Cluster, caught_up, missing, sql, streaming_cluster
from tests.conftest import postgres_only

pytestmark = postgres_only


def _cannot(reason: str) -> NoReturn:
    """A component missing: skipped on a developer's machine, a failure in CI (`.ci/run` installs it)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: .ci/run installs it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    reason = missing()
    if reason is not None:
        _cannot(reason)
    # The standby's log names every statement it runs: what shows that a read was served there.
    with streaming_cluster("cnfs", log_statements=True) as made:
        command.upgrade(alembic_config(made.primary_url), "head")
        yield made


async def _sql(port: int, statement: str, *args: Any) -> Any:
    return await sql(port, statement, *args)


async def _caught_up(cluster: Cluster) -> None:
    await caught_up(cluster)


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


@pytest.mark.parametrize("bounced", [False, True], ids=["direct", "through PgBouncer"])
async def test_a_read_that_waits_for_the_replica_reads_what_it_waited_for(
    cluster: Cluster, bounced: bool
) -> None:
    """The replica's replay is resumed while reads wait for it: each then reads on the replica, in a
    snapshot taken after the check, so it sees the rename it waited for (on the route and the twin; behind
    PgBouncer too, where a transaction begins with its connection)."""
    from bench.pgbouncer import MISSING, PGBOUNCER, pgbouncer, through

    if bounced and PGBOUNCER is None:
        _cannot(MISSING)
    # An earlier test may have stopped the replica.
    with suppress(subprocess.SubprocessError):
        cluster.start("standby")
    writer_key, _unused = await _keys(cluster.primary_url)
    writer = {"Authorization": f"Bearer {writer_key}"}
    code = "27" if bounced else "28"
    with contextlib.ExitStack() as stack:
        replica_url = cluster.replica_url
        if bounced:
            replica_url = through(stack.enter_context(pgbouncer(cluster.replica_url)), replica_url)
        settings = _settings(cluster).model_copy(
            update={
                "database_read_url": replica_url,
                "database_read_wait_seconds": 10.0,
                "database_pgbouncer": bounced,
            }
        )
        app = create_app(settings)
        async with (
            LifespanManager(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://test"
            ) as client,
        ):
            made = await client.post(
                "/api/v1/territories", json={"kind": "region", "code": code, "name": "Avant"}, headers=writer
            )
            assert made.status_code == 201, made.text
            by_id = f"/api/v1/territories/{made.json()['id']}"
            by_code = f"/api/v1/territories/region/{code}"
            await _caught_up(cluster)
            await _sql(cluster.replica_port, "SELECT pg_wal_replay_pause()")
            try:
                renamed = await client.patch(
                    by_id,
                    json={"name": "Après"},
                    headers={**writer, "If-Match": '"1"', "Content-Type": "application/merge-patch+json"},
                )
                assert renamed.status_code == 200, renamed.text
                counted = _read_on(app, "replica")
                waiting = [
                    asyncio.ensure_future(client.get(path, headers=writer)) for path in (by_id, by_code)
                ]
                await asyncio.sleep(0.5)
                assert not any(read.done() for read in waiting)
            finally:
                await _sql(cluster.replica_port, "SELECT pg_wal_replay_resume()")
            answers = await asyncio.gather(*waiting)
            assert [answer.json()["name"] for answer in answers] == ["Après", "Après"]
            assert _read_on(app, "replica") == counted + 2


async def test_the_primary_down_the_replica_answers_as_it_stands(
    cluster: Cluster, replica_apps: tuple[FastAPI, FastAPI]
) -> None:
    app, _other = replica_apps
    # Runs last: it stops the primary. The replica may have been stopped before.
    with suppress(subprocess.SubprocessError):
        cluster.start("standby")
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
