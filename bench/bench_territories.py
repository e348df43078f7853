"""Benchmark of the territory reads on a France-sized tree, over real HTTP on loopback.

    .venv/bin/python -m bench.bench_territories                      # SQLite in a temporary folder
    createdb -h 127.0.0.1 -U postgres cnfs_bench && \
        .venv/bin/python -m bench.bench_territories --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/cnfs_bench
    .venv/bin/python -m bench.bench_territories --departements 69,42 --requests 300

It loads the official referential (all of it, or some départements') into a fresh database through the
service's import (`bench.dataset.import_territories`), starts one uvicorn worker on 127.0.0.1, sends a
bounded number of sequential requests per scenario and prints latency percentiles: the latency of one
request at a time, where `bench.load` measures throughput under load. Nothing leaves the machine; the run
stops by itself."""

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
from sqlalchemy import inspect

from app.cli import alembic_config
from app.db import make_engine
from bench.dataset import import_territories, read_territories


async def build_tree(url: str, departements: list[str] | None) -> tuple[dict[str, str], int]:
    """The referential through the service's import; a few ids and codes the scenarios use, and the number
    of territories."""
    await import_territories(url, departements, seed=42)
    rows = await read_territories(url)
    rhone = next(r for r in rows if r["kind"] == "departement" and r["code"] == "69")
    region = next(r for r in rows if r["kind"] == "region" and rhone["path"].startswith(r["path"]))
    return {
        "departement_id": str(rhone["id"]),
        "region_id": str(region["id"]),
        "commune_code": "69123",
    }, len(rows)


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
        ("search q='villefranche saone'", "/api/v1/territories?q=villefranche%20saone&limit=20"),
        ("search q='st etienne'", "/api/v1/territories?q=st%20etienne&limit=20"),
        ("search q='69123' (a code)", "/api/v1/territories?q=69123&limit=20"),
        ("get by kind/code", "/api/v1/territories/departement/69"),
    ]
    results = []
    with httpx.Client(base_url=base, timeout=30) as client:
        # A deep page: follow cursors 20 times, then time that page.
        url = "/api/v1/territories?kind=commune&limit=50"
        pages = 1
        for _ in range(20):
            nxt = client.get(url).json()["next_cursor"]
            if nxt is None:
                break
            url = f"/api/v1/territories?kind=commune&limit=50&cursor={nxt}"
            pages += 1
        scenarios.append((f"list communes, page {pages} (keyset)", url))
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
    parser.add_argument(
        "--departements",
        type=lambda text: [code.strip() for code in text.split(",") if code.strip()],
        help="only the communes of these départements, e.g. 69,42 (default: the whole referential)",
    )
    parser.add_argument("--requests", type=int, default=200, help="requests per scenario (bounded)")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="cnfs-bench-") as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        from alembic import command

        if args.database_url and asyncio.run(has_tables(url)):
            raise SystemExit("the benchmark needs a fresh, empty database: it loads the referential into it")
        command.upgrade(alembic_config(url), "head")
        started = time.perf_counter()
        ids, count = asyncio.run(build_tree(url, args.departements))
        console.print(f"referential loaded in {time.perf_counter() - started:.1f}s ({count} territories)")
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
