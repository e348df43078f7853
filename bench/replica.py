"""A PostgreSQL primary and its streaming replica of their own, and what a read on the replica costs.

    .venv/bin/python -m bench.replica                      # 3 rounds of 5 s per scenario and app
    .venv/bin/python -m bench.replica --duration 10 --rounds 5 --markdown /tmp/replica.md

`streaming_cluster` makes the two servers on free loopback ports (`initdb` a primary, `pg_basebackup -R` a
standby from it; as the `postgres` user when run as root, PostgreSQL refusing root), and stops and removes
them at the end: `tests/test_replica.py` uses it too.

The benchmark loads the load benchmark's dataset for the Rhône (`bench.dataset`) into the primary, waits for
the replica to replay it, then runs the scenarios that the replica answers, with wrk, alternating three
apps on the same dataset, each with 2 workers:

- the service on the primary alone (no DATABASE_READ_URL);
- the service with DATABASE_READ_URL on the replica: each read first asks the primary its log position and
  waits for the replica to have replayed it (`app.core.replica`);
- the reference app reading the replica directly, with no such check.

It prints requests per second per app and two ratios: the service on the replica ÷ the service on the
primary (what the check costs, or what the replica saves the primary), and the service on the replica ÷
the reference on the replica. At the end, the service's `cnfs_replica_reads_total` says where its reads
went (none should have fallen back to the primary)."""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

STEP_TIMEOUT = 120
MISSING = "needs PostgreSQL's server binaries (initdb, pg_ctl, pg_basebackup: apt-get install postgresql)"


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
# PostgreSQL refuses to run as root: the clusters belong to `postgres` when run as root.
RUN_AS = "postgres" if os.geteuid() == 0 else None


def missing() -> str | None:
    """Why a cluster cannot be made on this machine, or None."""
    if BINDIR is None:
        return MISSING
    if RUN_AS is not None:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return "runs as root without a `postgres` user to run PostgreSQL as"
    return None


def _run(args: list[str]) -> None:
    command = ["runuser", "-u", RUN_AS, "--", *args] if RUN_AS else args
    subprocess.run(command, check=True, capture_output=True, timeout=STEP_TIMEOUT)


def free_port() -> int:
    from bench.pgbouncer import free_port as port

    return port()


@dataclass
class Cluster:
    """The two servers: their SQLAlchemy URLs (of `database`), ports and folder (`primary`, `standby`, and
    their logs `primary.log`, `standby.log`)."""

    primary_url: str
    replica_url: str
    primary_port: int
    replica_port: int
    folder: Path

    def pg_ctl(self, data: str, *args: str) -> None:
        assert BINDIR is not None
        _run([str(BINDIR / "pg_ctl"), "-D", str(self.folder / data), *args])

    def start(self, data: str) -> None:
        self.pg_ctl(data, "-l", str(self.folder / f"{data}.log"), "-w", "-t", "60", "start")


@contextmanager
def streaming_cluster(
    database: str = "cnfs", log_statements: bool = False, synchronous_commit: str = "off"
) -> Iterator[Cluster]:
    """A primary and a streaming standby of it, on free loopback ports, `database` made on the primary
    (empty); both stopped and removed at the end. `log_statements`: the standby logs every statement
    (`log_statement = 'all'`); `synchronous_commit`: the primary's (fsync is off either way)."""
    reason = missing()
    if reason is not None:
        raise RuntimeError(reason)
    assert BINDIR is not None
    folder = Path(tempfile.mkdtemp(prefix="cnfs-replica-"))
    if RUN_AS is not None:
        shutil.chown(folder, RUN_AS)
    primary, standby = folder / "primary", folder / "standby"
    primary_port, replica_port = free_port(), free_port()
    started: list[Path] = []
    cluster = Cluster(
        f"postgresql+asyncpg://postgres@127.0.0.1:{primary_port}/{database}",
        f"postgresql+asyncpg://postgres@127.0.0.1:{replica_port}/{database}",
        primary_port,
        replica_port,
        folder,
    )
    try:
        _run([str(BINDIR / "initdb"), "-D", str(primary), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        with (primary / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {primary_port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                f"max_connections = 100\nfsync = off\nsynchronous_commit = {synchronous_commit}\n"
                "full_page_writes = off\n"
            )
        cluster.start("primary")
        started.append(primary)
        _run(
            [
                str(BINDIR / "pg_basebackup"),
                *("-h", "127.0.0.1", "-p", str(primary_port), "-U", "postgres"),
                *("-D", str(standby), "-R", "-X", "stream", "-c", "fast"),
            ]
        )
        with (standby / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {replica_port}\n" + ("log_statement = 'all'\n" if log_statements else ""))
        cluster.start("standby")
        started.append(standby)
        asyncio.run(sql(primary_port, f'CREATE DATABASE "{database}"', database="postgres"))
        yield cluster
    finally:
        for data in reversed(started):
            with suppress(subprocess.SubprocessError):
                _run([str(BINDIR / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(folder, ignore_errors=True)


async def sql(port: int, statement: str, *args: Any, database: str = "cnfs") -> Any:
    """One statement on a server of the cluster, on a connection of its own: its first value."""
    connection = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database=database)
    try:
        return await connection.fetchval(statement, *args)
    finally:
        await connection.close()


async def caught_up(cluster: Cluster, database: str = "cnfs", seconds: float = 30) -> None:
    """Until the replica has replayed everything inserted into the primary's log so far."""
    target = await sql(cluster.primary_port, "SELECT pg_current_wal_insert_lsn()::text", database=database)
    deadline = time.monotonic() + seconds
    while True:
        behind = await sql(
            cluster.replica_port,
            "SELECT pg_wal_lsn_diff($1::text::pg_lsn, pg_last_wal_replay_lsn())",
            target,
            database=database,
        )
        # The insert position may stand just past a page's header that no record follows yet.
        if behind <= 40:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the replica is {behind} bytes behind")
        await asyncio.sleep(0.05)


# --- the benchmark ----------------------------------------------------------------------------------------

SCENARIOS = (
    "territory by kind/code",
    "communes, first page of 50",
    "name search q='st etienne'",
    "agreements, 50 per page, admin key",
)
PRIMARY_ONLY, ON_REPLICA, REFERENCE_ON_REPLICA = (
    "service, primary only",
    "service, replica",
    "reference, replica",
)


def _start(label: str, app: str, env: dict[str, str], secret_key: str, work_dir: Path) -> Any:
    from bench import load

    log_dir = work_dir / label.replace(", ", "-").replace(" ", "-")
    log_dir.mkdir(parents=True, exist_ok=True)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        return load.start_server(app, env["DATABASE_URL"], secret_key, 2, log_dir)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _replica_reads(server: Any) -> dict[str, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "cnfs_replica_reads_total":
                counts[sample.labels["database"]] = sample.value
    return counts


def run(args: argparse.Namespace) -> str:
    from rich.console import Console
    from rich.table import Table

    from bench import dataset as datasets
    from bench import load
    from bench.scenarios import REFERENCE, SERVICE, fill
    from bench.scenarios import SCENARIOS as ALL
    from bench.scenarios import context as scenario_context

    console = Console() if sys.stdout.isatty() else Console(width=160)
    chosen = [s for s in ALL if s.name in SCENARIOS]
    work_dir = Path(tempfile.mkdtemp(prefix="cnfs-bench-replica-"))
    if RUN_AS is not None:
        shutil.chown(work_dir, RUN_AS)
    lines: list[str] = []
    # As in production: commits wait for their flush (fsync off all the same: the disk is not measured).
    with streaming_cluster("cnfs_bench", synchronous_commit="on") as cluster:
        console.print(f"primary on port {cluster.primary_port}, replica on port {cluster.replica_port}")
        started = time.perf_counter()
        built = datasets.build(cluster.primary_url, departements=["69"], seed=args.seed, progress=False)
        asyncio.run(caught_up(cluster, "cnfs_bench", seconds=300))
        console.print(
            f"dataset: {built.territories} territories, {built.agreements} agreements, {built.positions} "
            f"positions (the Rhône), loaded and replayed in {time.perf_counter() - started:.1f} s"
        )
        values = scenario_context(built.to_json())
        secret_key = secrets.token_hex(16)
        apps = {
            PRIMARY_ONLY: (SERVICE, {"DATABASE_URL": cluster.primary_url}),
            ON_REPLICA: (
                SERVICE,
                {"DATABASE_URL": cluster.primary_url, "DATABASE_READ_URL": cluster.replica_url},
            ),
            REFERENCE_ON_REPLICA: (REFERENCE, {"DATABASE_URL": cluster.replica_url}),
        }
        servers = {label: _start(label, app, env, secret_key, work_dir) for label, (app, env) in apps.items()}
        try:
            for server in servers.values():
                load.wait_ready(server, 2, "/api/v1/territories?limit=1")
            results: dict[tuple[str, str], list[float]] = {}
            for scenario in chosen:
                steps = [fill(step, values) for step in scenario.steps]
                for server in servers.values():
                    load.wrk_run(args, server, steps, work_dir, args.warmup)
                for round_index in range(args.rounds):
                    for label, server in servers.items():
                        load.settle(servers)
                        measured = load.wrk_run(args, server, steps, work_dir, args.duration)
                        if measured.errors:
                            raise SystemExit(
                                f"{label}, {scenario.name}: {measured.errors} errors or non-2xx answers; "
                                f"see {server.log}"
                            )
                        results.setdefault((scenario.name, label), []).append(measured.throughput)
                        console.print(
                            f"  round {round_index + 1} · {scenario.name} · {label}: "
                            f"{measured.throughput:,.0f}/s, p50 {measured.p50_ms:.1f} ms, "
                            f"p99 {measured.p99_ms:.1f} ms"
                        )
            reads = _replica_reads(servers[ON_REPLICA])
        finally:
            for server in servers.values():
                server.stop()
    table = Table(title=f"Reads on the replica ({args.rounds} rounds of {args.duration:g} s, median req/s)")
    header = [
        "scenario",
        PRIMARY_ONLY,
        ON_REPLICA,
        REFERENCE_ON_REPLICA,
        "replica ÷ primary only",
        "service ÷ reference (replica)",
    ]
    for column in header:
        table.add_column(column, justify="left" if column == "scenario" else "right")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for scenario in chosen:
        medians = {label: statistics.median(results[(scenario.name, label)]) for label in servers}
        row = [
            scenario.name,
            *(f"{medians[label]:,.0f}" for label in servers),
            f"{medians[ON_REPLICA] / medians[PRIMARY_ONLY]:.2f}",
            f"{medians[ON_REPLICA] / medians[REFERENCE_ON_REPLICA]:.2f}",
        ]
        table.add_row(*row)
        lines.append("| " + " | ".join(row) + " |")
    console.print(table)
    where = ", ".join(f"{name} {count:,.0f}" for name, count in sorted(reads.items())) or "none counted"
    console.print(f"the service's reads of the replica's operations, by where they read: {where}")
    lines.append("")
    lines.append(f"`cnfs_replica_reads_total` of the service on the replica: {where}.")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds alternating the apps (default 3)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per app and scenario")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    reason = missing()
    if reason is not None:
        raise SystemExit(reason)
    text = run(args)
    if args.markdown is not None:
        args.markdown.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
