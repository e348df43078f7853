"""Benchmark of the territory reads on a France-sized tree, over real HTTP on loopback.

    .venv/bin/python -m bench.bench_territories                      # SQLite in a temporary folder
    createdb -h 127.0.0.1 -U postgres cnfs_bench && \
        .venv/bin/python -m bench.bench_territories --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/cnfs_bench
    .venv/bin/python -m bench.bench_territories --communes 35000 --requests 300

It builds the tree of `bench.dataset` (18 régions, 101 départements, the Métropole de Lyon, EPCI, communes)
straight into a fresh database, starts one uvicorn worker on 127.0.0.1, sends a bounded number of sequential
requests per scenario and prints latency percentiles: the latency of one request at a time, where
`bench.load` measures throughput under load. Nothing leaves the machine; the run stops by itself."""

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
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import insert, inspect, text

from app.cli import alembic_config
from app.db import make_engine
from app.territories.models import Territory
from bench.dataset import territory_rows


async def build_tree(url: str, communes: int) -> dict[str, str]:
    """Inserts the tree of `bench.dataset` in bulk; returns a few ids and codes the scenarios use."""
    rows = territory_rows(communes)
    engine = make_engine(url)
    async with engine.begin() as conn:
        for start in range(0, len(rows), 2000):
            await conn.execute(insert(Territory), rows[start : start + 2000])
        if url.startswith("postgresql"):
            await conn.execute(text("ANALYZE territories"))
    await engine.dispose()
    rhone = next(r for r in rows if r["kind"] == "departement" and r["code"] == "69")
    return {
        "departement_id": str(rhone["id"]),
        "region_id": str(rows[0]["id"]),
        "commune_code": "69123",
    }


async def has_tables(url: str) -> bool:
    engine = make_engine(url)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: inspect(c).get_table_names())
    await engine.dispose()
    return bool(names)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_scenarios(base: str, requests: int, ids: dict[str, str]) -> list[tuple[str, list[float], int]]:
    scenarios: list[tuple[str, str]] = [
        ("list, first page of 50", "/api/v1/territories?limit=50"),
        ("list communes, 200 per page", "/api/v1/territories?kind=commune&limit=200"),
        ("within a département (subtree)", f"/api/v1/territories?within={ids['departement_id']}&limit=50"),
        ("within a région + total", f"/api/v1/territories?within={ids['region_id']}&include_total=true"),
        ("search q='eglise 1' (matches église)", "/api/v1/territories?q=eglise%201&limit=20"),
        ("get by kind/code", "/api/v1/territories/departement/69"),
    ]
    results = []
    with httpx.Client(base_url=base, timeout=30) as client:
        # A deep page: follow cursors 20 times, then time that page.
        url = "/api/v1/territories?kind=commune&limit=50"
        for _ in range(20):
            nxt = client.get(url).json()["next_cursor"]
            url = f"/api/v1/territories?kind=commune&limit=50&cursor={nxt}"
        scenarios.append(("list communes, page 21 (keyset)", url))
        for name, path in scenarios:
            client.get(path)
            timings = []
            status = 0
            for _ in range(requests):
                started = time.perf_counter()
                response = client.get(path)
                timings.append((time.perf_counter() - started) * 1000)
                status = response.status_code
            results.append((name, timings, status))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url", help="a fresh database (its territories are replaced); default: SQLite"
    )
    parser.add_argument("--communes", type=int, default=35_000)
    parser.add_argument("--requests", type=int, default=200, help="requests per scenario (bounded)")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="cnfs-bench-") as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        from alembic import command

        if args.database_url and asyncio.run(has_tables(url)):
            raise SystemExit("the benchmark needs a fresh, empty database: it fills it with a synthetic tree")
        command.upgrade(alembic_config(url), "head")
        started = time.perf_counter()
        ids = asyncio.run(build_tree(url, args.communes))
        console.print(f"tree built in {time.perf_counter() - started:.1f}s ({args.communes} communes)")
        port = free_port()
        env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING", "SECRET_KEY": uuid.uuid4().hex}
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env=env,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            results = run_scenarios(base, args.requests, ids)
        finally:
            server.terminate()
            server.wait(timeout=10)
    table = Table(
        title=f"territories on {'PostgreSQL' if url.startswith('postgresql') else 'SQLite'}, "
        f"{args.requests} sequential requests each, one uvicorn worker"
    )
    for column in ("scenario", "status", "p50 ms", "p95 ms", "p99 ms", "req/s"):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for name, timings, status in results:
        q = statistics.quantiles(timings, n=100)
        table.add_row(
            name,
            str(status),
            f"{q[49]:.1f}",
            f"{q[94]:.1f}",
            f"{q[98]:.1f}",
            f"{1000 / statistics.mean(timings):.0f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
