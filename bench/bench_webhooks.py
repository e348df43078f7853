"""Benchmark of the webhooks: deliveries per second of one worker, and what a subscription costs a write.

    .venv/bin/python -m bench.bench_webhooks                  # PostgreSQL, database cnfs_bench_webhooks
    .venv/bin/python -m bench.bench_webhooks --sqlite         # a SQLite file in a temporary folder

It creates the database afresh and migrates it, then:

1. Deliveries: `--deliveries` changes of `--objects` objects in the feed, one subscription matching them, and
   one delivery worker in this process (`app.webhooks.delivery.Worker`, WEBHOOK_CONCURRENCY at a time) sending
   them to a receiver on a loopback port (a uvicorn process answering 204). Printed: deliveries per second,
   from the first fan-out to the last delivery recorded, and the worker's CPU time per delivery.
2. The write: `PUT /counsellors/by-ref/{ref}` that changes the counsellor each time (its version moves and a
   change enters the feed), sequential requests in process (httpx ASGITransport), through the service and
   through the reference app (bench/reference_app.py, which writes the same change row): without a
   subscription; with one subscription matching every change, no worker running (the write path alone);
   and with a `cnfs-api webhooks deliver` process delivering them meanwhile (on the same machine: it takes
   CPU, and on SQLite the write lock, from the writes). Printed: the median and p99 latency, requests per
   second, and this process's CPU time per request (the app and the client; it holds on a busy machine).

Everything it starts is on 127.0.0.1 and stopped at the end."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select, text

from app.api_keys import service as api_keys
from app.api_keys.schemas import ApiKeyCreate
from app.cli import alembic_config
from app.config import Settings
from app.core import changes
from app.core.auth import Principal, Role
from app.db import make_engine, make_sessionmaker
from app.main import create_app
from app.territories import service as territories
from app.territories.codes import TerritoryKind
from app.territories.schemas import TerritoryCreate
from app.webhooks import service as webhooks
from app.webhooks.delivery import Worker
from app.webhooks.models import WebhookDelivery
from app.webhooks.schemas import SubscriptionCreate
from bench import reference_app

ROOT = Path(__file__).resolve().parents[1]
ADMIN = Principal(role=Role.admin, name="bench")
PG_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DATABASE = "cnfs_bench_webhooks"
SECRET = "bench-webhooks-" + "x" * 32
LOOPBACK = ["127.0.0.0/8"]
# CPU seconds per request of each run of `_puts` (this process: the app and the client, not the worker).
CPU: list[float] = []
CPU_OF: dict[str, list[float]] = {}


async def receiver_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The receiver: reads the body, answers 204."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _process(command: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def receiving() -> Iterator[str]:
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", "bench.bench_webhooks:receiver_app", "--port", str(port)]
    with _process([*command, "--no-access-log", "--log-level", "warning"]):
        url = f"http://127.0.0.1:{port}/hook"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(url, content=b"{}", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url


async def _fresh_database(sqlite: bool, folder: str) -> str:
    if sqlite:
        return f"sqlite+aiosqlite:///{folder}/bench.db"
    engine = make_engine(PG_ADMIN_URL)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        await conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    await engine.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{DATABASE}"


def _settings(url: str, **extra: Any) -> Settings:
    return Settings(
        database_url=url,
        secret_key=SECRET,
        log_json=False,
        log_level="WARNING",
        rate_limits_enabled=False,
        webhook_allowed_networks=LOOPBACK,
        **extra,
    )


async def _territory(sessions: Any, code: str) -> uuid.UUID:
    async with sessions() as session:
        territory = await territories.create(
            session, TerritoryCreate(kind=TerritoryKind.departement, code=code, name=f"Département {code}")
        )
        await session.commit()
        return territory.id


async def _subscribe(sessions: Any, settings: Settings, url: str, territory_id: uuid.UUID) -> uuid.UUID:
    async with sessions() as session:
        subscription = await webhooks.create(
            session, ADMIN, SubscriptionCreate(url=url, territory_ids=[territory_id]), settings
        )
        await session.commit()
        return subscription.id


async def deliveries(
    url: str, receiver: str, count: int, objects: int, concurrency: int
) -> tuple[float, float]:
    settings = _settings(url, webhook_concurrency=concurrency)
    engine = make_engine(url, pool_size=4)
    sessions = make_sessionmaker(engine)
    try:
        territory_id = await _territory(sessions, "01" if concurrency == 10 else f"{concurrency % 90 + 10}")
        subscription_id = await _subscribe(sessions, settings, receiver, territory_id)
        ids = [uuid.uuid4() for _ in range(objects)]
        async with sessions() as session:
            await changes.record_many(
                session,
                [
                    changes.Entry("positions", ids[n % objects], changes.Action.updated, n + 1, territory_id)
                    for n in range(count)
                ],
            )
            await session.commit()
        worker = Worker(sessions, settings)
        done_query = select(func.count()).where(
            WebhookDelivery.subscription_id == subscription_id, WebhookDelivery.status == "succeeded"
        )
        started, cpu = time.perf_counter(), time.process_time()
        try:
            while True:
                queued, sent = await worker.run_once()
                if queued or sent:
                    continue
                async with sessions() as session:
                    if (await session.execute(done_query)).scalar_one() >= count:
                        break
        finally:
            await worker.close()
        return count / (time.perf_counter() - started), (time.process_time() - cpu) / count
    finally:
        await engine.dispose()


@asynccontextmanager
async def _client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            yield client


async def _puts(client: httpx.AsyncClient, key: str, prefix: str, requests: int) -> list[float]:
    """Sequential PUTs by reference, each changing its counsellor (two names, in turn, on 20 references)."""
    headers = {"Authorization": f"Bearer {key}"}
    timings = []
    cpu = time.process_time()
    for n in range(requests):
        body = {
            "first_name": "Camille" if (n // 20) % 2 else "Dominique",
            "last_name": "Fictif",
            "email": "camille.fictif@example.org",
        }
        started = time.perf_counter()
        response = await client.put(
            f"/api/v1/counsellors/by-ref/{prefix}-{n % 20}", json=body, headers=headers
        )
        timings.append(time.perf_counter() - started)
        assert response.status_code in (200, 201), response.text
    CPU.append((time.process_time() - cpu) / requests)
    return timings


def _summary(timings: list[float]) -> str:
    ordered = sorted(timings)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return (
        f"median {statistics.median(ordered) * 1000:6.2f} ms, p99 {p99 * 1000:6.2f} ms, "
        f"{len(ordered) / sum(ordered):7.0f} req/s"
    )


async def writes(url: str, receiver: str, requests: int, rounds: int) -> dict[str, list[float]]:
    settings = _settings(url)
    engine = make_engine(url, pool_size=2)
    sessions = make_sessionmaker(engine)
    results: dict[str, list[float]] = {}
    cpu_of = CPU_OF
    try:
        territory_id = await _territory(sessions, "69")
        async with sessions() as session:
            created = await api_keys.create(
                session,
                ApiKeyCreate(name="bench", role=Role.territory_manager, territory_ids=[territory_id]),
            )
            await session.commit()
        key = created.key
        service_app = create_app(settings)
        reference = reference_app.create_app(url, SECRET)
        async with _client(service_app) as service_client, _client(reference) as reference_client:
            apps = {"service": service_client, "reference": reference_client}
            # Warm-up: the counsellors exist, every statement prepared.
            for name, client in apps.items():
                await _puts(client, key, name, 60)
            phases = ("no subscription", "a subscription, no worker", "a subscription, a worker delivering")
            for phase in phases:
                if phase == "a subscription, no worker":
                    await _subscribe(sessions, settings, receiver, territory_id)
                worker = None
                if phase == "a subscription, a worker delivering":
                    env = {
                        "DATABASE_URL": url,
                        "WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
                        "LOG_JSON": "false",
                        "LOG_LEVEL": "WARNING",
                    }
                    worker = _process([sys.executable, "-m", "app.cli", "webhooks", "deliver"], env)
                    worker.__enter__()
                    await asyncio.sleep(3)
                try:
                    for _ in range(rounds):
                        for name, client in apps.items():
                            timings = await _puts(client, key, name, requests)
                            results.setdefault(f"{name}, {phase}", []).extend(timings)
                            cpu_of.setdefault(f"{name}, {phase}", []).append(CPU[-1])
                finally:
                    if worker is not None:
                        worker.__exit__(None, None, None)
        async with sessions() as session:
            stmt = select(WebhookDelivery.status, func.count()).where(
                WebhookDelivery.territory_id == territory_id
            )
            counts = dict((await session.execute(stmt.group_by(WebhookDelivery.status))).all())
        print(f"deliveries of the writes with a subscription, by status: {counts}")
        return results
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sqlite", action="store_true", help="A SQLite file instead of PostgreSQL.")
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=300, help="PUTs per app, phase and round.")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cnfs-bench-webhooks-") as folder:
        url = asyncio.run(_fresh_database(args.sqlite, folder))
        from alembic import command

        command.upgrade(alembic_config(url), "head")
        with receiving() as receiver:
            for concurrency in (10, 50):
                rate, cpu = asyncio.run(deliveries(url, receiver, args.deliveries, args.objects, concurrency))
                print(
                    f"deliveries: {args.deliveries} changes of {args.objects} objects, one worker, "
                    f"WEBHOOK_CONCURRENCY={concurrency}: {rate:.0f} deliveries/s, "
                    f"{cpu * 1000:.2f} ms of the worker's CPU per delivery ({1 / cpu:.0f}/s per core)"
                )
            results = asyncio.run(writes(url, receiver, args.requests, args.rounds))
        for name, timings in results.items():
            cpu = statistics.median(CPU_OF[name]) * 1000
            print(f"PUT by-ref (a change), {name:46}: {_summary(timings)}, CPU {cpu:.2f} ms/request")


if __name__ == "__main__":
    main()
