"""What the audit trail and the personal-data journal cost: the same requests with and without them.

    .venv/bin/python -m bench.bench_audit                       # SQLite in a temporary folder
    createdb -h 127.0.0.1 -U postgres cnfs_bench_audit && .venv/bin/python -m bench.bench_audit \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/cnfs_bench_audit

In-process (httpx's ASGITransport, no HTTP parsing), one request at a time, on a small fresh database: for
each scenario, `--requests` operations with the audit on, then the same with it off
(`app.core.audit.disabled()`, which exists for this comparison only), alternating for `--rounds` rounds; it
prints the wall and CPU time per operation of each, and the throughput ratio the CPU time gives (the wall
time is the machine's to give on a shared machine; the CPU time, the process's own, holds). The load
benchmark (`bench.load`) compares the service, whose writes and journaled reads write their audit rows,
with the reference app writing the same rows (`bench.shared`); this one isolates what the rows cost the
service itself."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager
from rich.console import Console
from rich.table import Table

from app.api_keys import service as api_keys
from app.api_keys.schemas import ApiKeyCreate
from app.cli import alembic_config
from app.config import Settings
from app.core import audit
from app.core.auth import Role
from app.db import make_engine, make_sessionmaker
from app.main import create_app
from app.territories import service as territories
from app.territories.codes import TerritoryKind
from app.territories.schemas import TerritoryCreate

console = Console()
Operation = Callable[[httpx.AsyncClient, int], Awaitable[None]]


async def _seed(url: str) -> tuple[str, str]:
    """A département, an admin key; returns (key, territory id)."""
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        territory = await territories.create(
            session, TerritoryCreate(kind=TerritoryKind("departement"), code="69", name="Rhône")
        )
        key = await api_keys.create(session, ApiKeyCreate(name="bench", role=Role.admin, territory_ids=[]))
        await session.commit()
    await engine.dispose()
    return key.key, str(territory.id)


def _check(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} {response.request.url}: {response.text[:300]}")
    return response


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="cnfs-bench-audit-") as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        from alembic import command

        await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
        key, territory_id = await _seed(url)
        headers = {"Authorization": f"Bearer {key}"}
        settings = Settings(
            database_url=url,
            secret_key="bench-" + "x" * 32,
            rate_limits_enabled=False,
            log_level="WARNING",
            log_json=False,
        )
        app = create_app(settings)
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", headers=headers
            ) as client:
                programme = _check(
                    await client.post(
                        "/api/v1/programmes",
                        json={
                            "code": "BENCH",
                            "name": "Bench",
                            "positions_target": 1_000_000,
                            "budget_cents": 10**15,
                            "subsidy_per_position_cents": 1,
                            "starts_on": "2021-01-01",
                        },
                    ),
                    201,
                ).json()
                items = [
                    {
                        "territory_id": territory_id,
                        "external_ref": f"LIST-{n}",
                        "first_name": "Dominique",
                        "last_name": "Fictif",
                        "email": "dominique.fictif@example.org",
                    }
                    for n in range(50)
                ]
                _check(await client.post("/api/v1/counsellors/bulk", json={"items": items}), 207)

                async def create_and_sign(c: httpx.AsyncClient, n: int) -> None:
                    body = {
                        "programme_id": programme["id"],
                        "territory_id": territory_id,
                        "kind": "convention",
                        "reference": f"B-{uuid.uuid4().hex[:12]}",
                        "positions_granted": 1,
                        "starts_on": "2026-03-01",
                    }
                    created = _check(await c.post("/api/v1/agreements", json=body), 201).json()
                    await c.post(f"/api/v1/agreements/{created['id']}/sign", json={"signed_on": "2026-03-02"})

                async def create_counsellor(c: httpx.AsyncClient, n: int) -> None:
                    body = {"territory_id": territory_id, "first_name": "Alix", "last_name": f"Essai {n}"}
                    _check(await c.post("/api/v1/counsellors", json=body), 201)

                async def list_counsellors(c: httpx.AsyncClient, n: int) -> None:
                    _check(await c.get("/api/v1/counsellors?limit=50"), 200)

                scenarios: list[tuple[str, Operation]] = [
                    ("create and sign an agreement (pair; direct path)", create_and_sign),
                    ("create a counsellor (ORM)", create_counsellor),
                    ("counsellors, 50 per page (journaled)", list_counsellors),
                ]
                table = Table(title=f"audit on vs off, {args.requests} operations × {args.rounds} rounds")
                for column in ("scenario", "wall ms on / off", "CPU ms on / off", "on ÷ off (CPU)"):
                    table.add_column(column)
                for name, operation in scenarios:
                    timings: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
                    for _round in range(args.rounds):
                        for enabled in (True, False):
                            timings[enabled].append(await _measure(client, operation, args.requests, enabled))
                    on_wall = statistics.median(w for w, _ in timings[True])
                    off_wall = statistics.median(w for w, _ in timings[False])
                    on_cpu = statistics.median(c for _, c in timings[True])
                    off_cpu = statistics.median(c for _, c in timings[False])
                    table.add_row(
                        name,
                        f"{on_wall:.2f} / {off_wall:.2f}",
                        f"{on_cpu:.2f} / {off_cpu:.2f}",
                        f"{off_cpu / on_cpu:.2f}",
                    )
                console.print(table)


async def _measure(
    client: httpx.AsyncClient, operation: Operation, requests: int, enabled: bool
) -> tuple[float, float]:
    """Wall and CPU milliseconds per operation."""
    wall, cpu = time.perf_counter(), time.process_time()
    if enabled:
        for n in range(requests):
            await operation(client, n)
    else:
        with audit.disabled():
            for n in range(requests):
                await operation(client, n)
    return (
        (time.perf_counter() - wall) * 1000 / requests,
        (time.process_time() - cpu) * 1000 / requests,
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url", help="a fresh, empty database (default: SQLite in a temporary folder)"
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
