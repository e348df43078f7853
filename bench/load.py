"""Load benchmark: the service beside a reference app and a minimal FastAPI app, driven by wrk.

    .venv/bin/python -m bench.load                                   # PostgreSQL, database cnfs_bench
    .venv/bin/python -m bench.load --sqlite                          # then the read scenarios on SQLite
    .venv/bin/python -m bench.load --duration 3 --rounds 1 --scenarios "kind/code,search"
    .venv/bin/python -m bench.load --pgbouncer                       # the apps through PgBouncer

It builds a national-size dataset (the official referential through the service's import, a programme, 200
signed agreements with positions, counsellors and assignments, keys; a fresh `cnfs_bench` database, dropped
and created again; the SQLite file lives in a temporary folder), counts the SQL statements of each scenario
in-process, starts the three apps on 127.0.0.1 (2 worker processes each: the service as `cnfs-api serve`
runs it, its access log on; the other two under uvicorn, no access log), checks that they answer each
scenario alike, drives each with wrk (32 connections, a fixed
duration per run, every server idle before a run starts; the HR bulk scenarios by sequential requests
through one client instead, in items per second) over several rounds that rotate the apps' order, reads the
workers' RSS, stops the servers, and prints one table per database (and its Markdown for
docs/performance.md). Everything it starts is stopped on exit, Ctrl-C and errors included."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from bench import dataset as datasets
from bench import inprocess, wrk
from bench.pgbouncer import pgbouncer, through
from bench.scenarios import (
    APPS,
    MINIMAL,
    POSTGRESQL,
    RATE_LIMIT_BACKENDS,
    REDIS_URL,
    REFERENCE,
    SCENARIOS,
    SERVICE,
    SQLITE,
    Scenario,
    cleanup_statements,
    fill,
    needs_workshops,
    rate_limit_settings,
)
from bench.scenarios import context as scenario_context
from bench.workshops_dataset import DEFAULT_WORKSHOPS, REGISTRATIONS_PER_WORKSHOP

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/cnfs_bench"
TARGETS = {
    SERVICE: "app.main:create_app",
    REFERENCE: "bench.reference_app:create_app",
    MINIMAL: "bench.minimal_fastapi_app:create_app",
}
LABELS = {SERVICE: "service", REFERENCE: "reference", MINIMAL: "minimal FastAPI"}
# Piped output (a log file, `tee`) gets the tables' full width rather than rich's default of 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=180)


# --- servers ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    app: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    worker_count: int = 2

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        """The worker processes: uvicorn's children started by multiprocessing's spawn, gunicorn's forked
        children, or the server itself when it runs a single worker."""
        if self.worker_count == 1:
            return [self.process.pid]
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                cmdline = (entry / "cmdline").read_bytes()
            except (OSError, ValueError, IndexError):
                continue
            if ppid == self.process.pid and (b"spawn_main" in cmdline or b"gunicorn" in cmdline):
                found.append(int(entry.name))
        return sorted(found)

    def cpu_ticks(self) -> int:
        """CPU time used so far by the workers, in clock ticks."""
        total = 0
        for pid in self.workers():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, ValueError, IndexError):
                continue
        return total

    def rss_mb(self) -> list[tuple[float, float, float]]:
        """(RSS, PSS, USS) of each worker, in MB. RSS counts every page the worker maps, shared ones
        included; PSS divides each shared page among the processes sharing it; USS is what the worker alone
        holds (what stopping it would free)."""
        sizes = []
        for pid in self.workers():
            try:
                fields: dict[str, int] = {}
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
                    name, _, rest = line.partition(":")
                    fields[name] = int(rest.split()[0])
            except (OSError, ValueError, IndexError):
                continue
            uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
            sizes.append((fields.get("Rss", 0) / 1024, fields.get("Pss", 0) / 1024, uss / 1024))
        return sizes

    def stop(self) -> None:
        """SIGTERM to the server's process group (its own session), SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def start_server(
    app: str,
    database_url: str,
    secret_key: str,
    workers: int,
    log_dir: Path,
    rate_limits: str | None = None,
    pgbouncer: bool = False,
) -> Server:
    """One app on a free port; the service with its rate limits off, or on with the `rate_limits` backend
    (limits that no run reaches, see `bench.scenarios.rate_limit_settings`)."""
    port = free_port()
    log = log_dir / f"{app}{'-' + rate_limits if rate_limits else ''}.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": secret_key,
        # The production default: the access log is written (to the log file), as in production.
        "LOG_LEVEL": "INFO",
        "LOG_JSON": "true",
        # Every request of a benchmark comes from one address: the service's rate limits would refuse most.
        "RATE_LIMITS_ENABLED": "false",
        # The open-data scenarios measure the export, as the reference runs it, not a worker's copy of it.
        "OPEN_DATA_CACHE_SECONDS": "0",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    env.pop("WEB_CONCURRENCY", None)
    env.pop("REDIS_URL", None)
    if pgbouncer:
        # Through PgBouncer in transaction mode: the service as DATABASE_PGBOUNCER=true runs it, the other
        # apps with asyncpg's statement cache off, as asyncpg documents for PgBouncer, and the server's
        # timeouts set in each transaction as the service sets them (bench.shared.BouncedConnection).
        env["DATABASE_PGBOUNCER"] = "true"
        env["BENCH_PGBOUNCER"] = "1"
    if rate_limits is not None:
        env.update(rate_limit_settings(rate_limits))
    if app == SERVICE:
        # The service runs as `cnfs-api serve` runs it (gunicorn forking preloaded workers, or uvicorn alone).
        from app.cli import server_command

        command = server_command("127.0.0.1", port, workers, keep_alive=75)
        if workers > 1:
            # As `cnfs-api serve` runs them: the workers' metrics in one directory (multiprocess mode).
            metrics_dir = log_dir / f"metrics-{port}"
            metrics_dir.mkdir(parents=True, exist_ok=True)
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    else:
        command = uvicorn_command(app, port, workers)
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(app, port, process, log, workers)


def uvicorn_command(app: str, port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        TARGETS[app],
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def wait_ready(server: Server, workers: int, probe: str, timeout: float = 60) -> None:
    """Until every worker is up and the server answers `probe`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.app} exited; see {server.log}:\n{server.log.read_text()[-2000:]}")
        if len(server.workers()) >= workers:
            try:
                if httpx.get(server.base_url + probe, timeout=2).status_code < 500:
                    return
            except httpx.TransportError:
                pass
        time.sleep(0.3)
    raise RuntimeError(
        f"{server.app} not ready after {timeout}s; see {server.log}:\n{server.log.read_text()[-2000:]}"
    )


def settle(running: dict[str, Server], timeout: float = 10) -> None:
    """Until every server is idle (its workers use no CPU over 0.2 s): requests still queued when wrk
    stopped would otherwise run on the CPUs while the next app is measured."""
    deadline = time.monotonic() + timeout
    before = {app: server.cpu_ticks() for app, server in running.items()}
    while time.monotonic() < deadline:
        time.sleep(0.2)
        after = {app: server.cpu_ticks() for app, server in running.items()}
        if all(after[app] - before[app] <= 1 for app in running):
            return
        before = after


@contextmanager
def servers(
    apps: list[str],
    database_url: str,
    secret_key: str,
    workers: int,
    log_dir: Path,
    probe: str,
    pgbouncer: bool = False,
) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    try:
        for app in apps:
            started[app] = start_server(app, database_url, secret_key, workers, log_dir, pgbouncer=pgbouncer)
        for server in started.values():
            wait_ready(server, workers, probe)
        yield started
    finally:
        for server in started.values():
            server.stop()


@contextmanager
def rate_limited_service(
    backend: str,
    database_url: str,
    secret_key: str,
    workers: int,
    log_dir: Path,
    probe: str,
    pgbouncer: bool = False,
) -> Iterator[Server]:
    """The service with its rate limits on, for the rows that measure them: started for those rows only,
    so that its connection pool does not add to the three apps' for the whole run."""
    server = start_server(
        SERVICE, database_url, secret_key, workers, log_dir, rate_limits=backend, pgbouncer=pgbouncer
    )
    try:
        wait_ready(server, workers, probe)
        yield server
    finally:
        server.stop()


def redis_answers(url: str = REDIS_URL) -> bool:
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


# --- the run ------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One app on one scenario, over the rounds."""

    runs: list[wrk.WrkResult] = field(default_factory=list)

    def mean(self, attribute: str) -> float:
        return statistics.fmean(getattr(r, attribute) for r in self.runs)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)


@dataclass
class Outcome:
    database: str
    scenarios: list[Scenario]
    cells: dict[tuple[str, str], Cell]
    statements: dict[str, inprocess.Measured]
    rss: dict[str, list[tuple[float, float, float]]]
    warnings: list[str]


async def _connect_when_free(database_url: str) -> Any:
    """A connection, waiting (30 s at most) while the servers' pools and other clients hold every
    connection PostgreSQL allows (three apps of two workers keep their pools open side by side)."""
    import asyncpg

    deadline = time.monotonic() + 30
    while True:
        try:
            return await asyncpg.connect(datasets.asyncpg_dsn(database_url))
        except asyncpg.TooManyConnectionsError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _cleanup(database_url: str, statements: tuple[str, ...], reserved: Any = None) -> None:
    """Runs a scenario's cleanup SQL, through the `reserved` connection when one is given (see `Cleaner`)."""
    if not statements:
        return
    if database_url.startswith("postgresql"):
        conn = reserved or await _connect_when_free(database_url)
        try:
            # Requests still in flight when wrk stopped finish first (up to the lock timeout), so that no
            # row they write outlives the cleanup.
            for _ in range(100):
                busy = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND state <> 'idle' AND pid <> pg_backend_pid()"
                )
                if not busy:
                    break
                await asyncio.sleep(0.1)
            for statement in statements:
                await conn.execute(statement)
            await conn.execute("VACUUM ANALYZE agreements, counsellors, changes")
        finally:
            if reserved is None:
                await conn.close()
    else:
        import sqlite3

        with sqlite3.connect(database_url.split("///", 1)[-1]) as conn:
            for statement in statements:
                conn.execute(statement)


class Cleaner:
    """The cleanups between runs, through one connection opened before the servers start: the three apps'
    pools (and any other client of the same PostgreSQL) may hold every other connection by then. One event
    loop for all of them, which the connection belongs to."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.runner = asyncio.Runner()
        self.conn: Any = None
        if database_url.startswith("postgresql"):
            self.conn = self.runner.run(_connect_when_free(database_url))

    def __call__(self, statements: tuple[str, ...]) -> None:
        self.runner.run(_cleanup(self.database_url, statements, self.conn))

    def close(self) -> None:
        try:
            if self.conn is not None:
                self.runner.run(self.conn.close())
        finally:
            self.runner.close()


async def _count_and_compare(
    database_url: str,
    secret_key: str,
    scenarios: list[Scenario],
    values: dict[str, str],
    apps: list[str],
    cpu_passes: int,
) -> dict[str, inprocess.Measured]:
    measured = {}
    async with inprocess.open_apps(database_url, secret_key, tuple(apps)) as opened:
        for scenario in (s for s in scenarios if s.rate_limits is None):
            cleanup = cleanup_statements(scenario, values)
            measured[scenario.name] = await inprocess.measure(opened, scenario, values)
            passes = min(cpu_passes, scenario.max_cpu_passes)
            if passes > 0:
                await inprocess.cpu_cost(opened, scenario, values, measured[scenario.name], passes=passes)
                await _cleanup(database_url, cleanup)
            await _cleanup(database_url, cleanup)
    # The rows with the rate limits on: the service with them (one per backend) beside the service without,
    # their CPU times taken in turns (`inprocess.cpu_in_turns`), the limiter being a small part of a request.
    for backend in RATE_LIMIT_BACKENDS:
        group = [s for s in scenarios if s.rate_limits == backend]
        if not group:
            continue
        async with (
            inprocess.open_apps(database_url, secret_key, (SERVICE,), rate_limits=backend) as limited,
            inprocess.open_apps(database_url, secret_key, (SERVICE,)) as unlimited,
        ):
            for scenario in group:
                found = measured[scenario.name] = await inprocess.measure(limited, scenario, values)
                if cpu_passes > 0:
                    on, off = await inprocess.cpu_in_turns(
                        limited, unlimited, scenario, values, found, passes=max(cpu_passes, 100)
                    )
                    found.cpu_ms[SERVICE], found.baseline_cpu_ms = on, off
                await _cleanup(database_url, cleanup_statements(scenario, values))
    return {s.name: measured[s.name] for s in scenarios}


async def _compare_servers(
    running: dict[str, Server], scenarios: list[Scenario], values: dict[str, str], database_url: str
) -> list[str]:
    """Each scenario once against each running server: status, JSON (cursors aside), ETag, Link."""
    found = []
    for scenario in scenarios:
        steps = [fill(s, values) for s in scenario.steps]
        answers = {}
        for app, server in running.items():
            if app not in scenario.apps:
                continue
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
                answers[app] = await inprocess.run_cycle(client, steps, "check-" + secrets.token_hex(4))
            for step, got in zip(steps, answers[app], strict=True):
                if got.status != step.expect:
                    found.append(
                        f"{scenario.name}: {LABELS[app]} answers {got.status}, expected {step.expect}"
                    )
        found += inprocess.differences(scenario, answers)
        await _cleanup(database_url, cleanup_statements(scenario, values))
    return found


def run_database(args: argparse.Namespace, database_url: str, work_dir: Path) -> Outcome:
    kind = POSTGRESQL if database_url.startswith("postgresql") else SQLITE
    scenarios = [s for s in selected(args.scenarios, args.rate_limits) if kind in s.databases]
    if not args.workshops and any(needs_workshops(s) for s in scenarios):
        console.print("[yellow]warning:[/yellow] --workshops 0: the workshop scenarios are left out")
        scenarios = [s for s in scenarios if not needs_workshops(s)]
    if any(s.rate_limits == "redis" for s in scenarios) and not redis_answers():
        console.print(
            f"[yellow]warning:[/yellow] Redis does not answer at {REDIS_URL}: its rows are left out"
        )
        scenarios = [s for s in scenarios if s.rate_limits != "redis"]
    apps = [a for a in APPS if a in args.apps.split(",")]
    console.rule(f"[bold]{'PostgreSQL' if kind == POSTGRESQL else 'SQLite'}[/bold]")
    started = time.perf_counter()
    saved = args.reuse_dataset if kind == POSTGRESQL else None
    built = (
        datasets.Dataset(**json.loads(saved.read_text()))
        if saved is not None and saved.exists()
        else datasets.build(
            database_url,
            departements=args.departements,
            agreements=args.agreements,
            seed=args.seed,
            workshops=args.workshops
            if kind == POSTGRESQL and any(needs_workshops(s) for s in scenarios)
            else 0,
            positions=args.positions,
            counsellors=args.counsellors,
            registrations_per_workshop=args.registrations_per_workshop,
        )
    )
    if saved is not None and not saved.exists():
        saved.write_text(json.dumps(built.to_json()))
    console.print(
        f"dataset: {built.territories} territories (the official referential"
        + (f", départements {', '.join(args.departements)}" if args.departements else "")
        + f"), {built.agreements} signed agreements, {built.positions} positions, {built.counsellors} "
        f"counsellors, {built.assignments} assignments, 3 keys"
        + (
            f", {_num(built.workshops)} workshops and {_num(built.registrations)} registrations (generated "
            f"and loaded in {built.workshops_seconds:.1f} s: "
            + ", ".join(f"{step} {seconds:g} s" for step, seconds in built.workshops_steps.items())
            + ")"
            if built.workshops
            else ""
        )
        + f" (seed {built.seed}), built in {time.perf_counter() - started:.1f} s"
    )
    values = scenario_context(built.to_json())
    secret_key = secrets.token_hex(16)
    console.print("counting SQL statements and CPU time per request (in-process) ...")
    measured = asyncio.run(
        _count_and_compare(database_url, secret_key, scenarios, values, apps, args.cpu_passes)
    )
    warnings: list[str] = []
    for scenario in scenarios:
        warnings += inprocess.differences(scenario, measured[scenario.name].answers)
    run = Run(
        args,
        apps,
        values,
        database_url,
        secret_key,
        work_dir,
        probe=fill(SCENARIOS[0].steps[0], values).path,
        cleaner=Cleaner(database_url),
    )
    try:
        if args.pgbouncer and kind == POSTGRESQL:
            with pgbouncer(database_url, pool_size=args.pgbouncer_pool_size) as address:
                run.server_url = through(address, database_url)
                console.print(
                    f"the apps connect through PgBouncer {address} (transaction mode, "
                    f"{args.pgbouncer_pool_size} server connections)"
                )
                run_rows(run, scenarios, warnings)
        else:
            run_rows(run, scenarios, warnings)
    finally:
        run.cleaner.close()
    return Outcome(kind, scenarios, run.cells, measured, run.rss, list(dict.fromkeys(warnings)))


@dataclass
class Run:
    """What the wrk runs of one database share, and what they gather."""

    args: argparse.Namespace
    apps: list[str]
    values: dict[str, str]
    database_url: str
    secret_key: str
    work_dir: Path
    probe: str
    cleaner: Cleaner
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    rss: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    # What the servers connect to: the database, or a PgBouncer in front of it (`--pgbouncer`).
    server_url: str | None = None

    @property
    def servers_url(self) -> str:
        return self.server_url or self.database_url

    @property
    def through_pgbouncer(self) -> bool:
        return self.server_url is not None


def run_rows(run: Run, scenarios: list[Scenario], warnings: list[str]) -> None:
    """Every app on the plain rows, round after round; then the rows with the rate limits on."""
    args, apps = run.args, run.apps
    plain = [s for s in scenarios if s.rate_limits is None]
    limited = [s for s in scenarios if s.rate_limits is not None]
    pairs = sum(1 for s in scenarios for a in apps if a in s.apps)
    seconds = pairs * (args.rounds * (args.duration + 0.5) + args.warmup)
    with servers(
        apps,
        run.servers_url,
        run.secret_key,
        args.workers,
        run.work_dir,
        run.probe,
        pgbouncer=run.through_pgbouncer,
    ) as running:
        warnings += asyncio.run(_compare_servers(running, plain, run.values, run.database_url))
        for message in dict.fromkeys(warnings):
            console.print(f"[yellow]warning:[/yellow] {message}")
        console.print(
            f"wrk: {args.connections} connections, {args.duration:g} s per run, {args.rounds} round(s), "
            f"{args.warmup:g} s warm-up per app and scenario; about {seconds / 60:.1f} min"
        )
        for round_index in range(args.rounds):
            order = apps[round_index % len(apps) :] + apps[: round_index % len(apps)]
            for scenario in plain:
                for app in order:
                    if app in scenario.apps:
                        measure_cell(run, scenario, app, running, round_index)
        for app, server in running.items():
            run.rss[app] = server.rss_mb()
    # The rows with the rate limits on, after the three apps have stopped: a service of their own each, so
    # that its connection pool never adds to theirs (PostgreSQL's connections are few).
    for scenario in limited:
        assert scenario.rate_limits is not None
        with rate_limited_service(
            scenario.rate_limits,
            run.servers_url,
            run.secret_key,
            args.workers,
            run.work_dir,
            run.probe,
            pgbouncer=run.through_pgbouncer,
        ) as server:
            found = asyncio.run(_compare_servers({SERVICE: server}, [scenario], run.values, run.database_url))
            warnings += found
            for message in found:
                console.print(f"[yellow]warning:[/yellow] {message}")
            for round_index in range(args.rounds):
                measure_cell(run, scenario, SERVICE, {SERVICE: server}, round_index)


def measure_cell(
    run: Run, scenario: Scenario, app: str, running: dict[str, Server], round_index: int
) -> None:
    """One run of one app on one scenario (after a warm-up in the first round), its writes cleaned up."""
    args = run.args
    steps = [fill(s, run.values) for s in scenario.steps]
    cleanup = cleanup_statements(scenario, run.values)
    script = scenario.lua.format(**run.values) if scenario.lua is not None else None
    if round_index == 0 and args.warmup > 0:
        settle(running)
        drive(args, scenario, running[app], steps, run.work_dir, args.warmup, script)
        run.cleaner(cleanup)
    settle(running)
    result = drive(args, scenario, running[app], steps, run.work_dir, args.duration, script)
    run.cleaner(cleanup)
    run.cells.setdefault((scenario.name, app), Cell()).runs.append(result)
    console.print(
        f"  round {round_index + 1} · {scenario.name} · {LABELS[app]}: "
        f"{result.throughput:,.0f}/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms"
        + (f", [red]{result.errors} errors[/red]" if result.errors else "")
    )


def drive(
    args: argparse.Namespace,
    scenario: Scenario,
    server: Server,
    steps: list[Any],
    work_dir: Path,
    duration: float,
    script: str | None,
) -> wrk.WrkResult:
    if scenario.driver == "sequential":
        return sequential_run(server, steps, duration, scenario.items)
    return wrk_run(args, server, steps, work_dir, duration, script)


# Bounds of a sequential run, whatever its duration.
MAX_SEQUENTIAL_OPERATIONS = 500
SEQUENTIAL_TIMEOUT_S = 60


def sequential_run(server: Server, steps: list[Any], duration: float, items: int) -> wrk.WrkResult:
    """Cycles of `steps` one after the other through one HTTP client (127.0.0.1 only) for `duration`
    seconds (at least one cycle, at most MAX_SEQUENTIAL_OPERATIONS), each with its own `{unique}`; only the
    last step of each cycle is timed (the HR bulk's replay follows an untimed first request). The result
    reads like wrk's: requests are the timed ones, `ops` counts `items` per timed request."""
    if not server.base_url.startswith("http://127.0.0.1:"):
        raise ValueError("the benchmark only drives servers on 127.0.0.1")
    timed: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration
    with httpx.Client(base_url=server.base_url, timeout=SEQUENTIAL_TIMEOUT_S) as client:
        while len(timed) + errors < MAX_SEQUENTIAL_OPERATIONS and (
            (not timed and not errors) or time.monotonic() < deadline
        ):
            unique = secrets.token_hex(6)
            for index, step in enumerate(steps):
                body = step.body.replace("{unique}", unique).encode() if step.body is not None else None
                started = time.perf_counter()
                response = client.request(step.method, step.path, headers=step.headers, content=body)
                elapsed = time.perf_counter() - started
                if response.status_code != step.expect:
                    errors += 1
                    break
                if index == len(steps) - 1:
                    timed.append(elapsed)
    seconds = sum(timed)
    latencies = sorted(t * 1000 for t in timed) or [0.0]
    return wrk.WrkResult(
        requests=len(timed),
        seconds=seconds,
        rps=len(timed) / seconds if seconds else 0.0,
        p50_ms=statistics.median(latencies),
        p99_ms=latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
        errors=errors,
        ops=len(timed) * items,
    )


def wrk_run(
    args: argparse.Namespace,
    server: Server,
    steps: list[Any],
    work_dir: Path,
    duration: float,
    script: str | None = None,
) -> wrk.WrkResult:
    return wrk.run(
        server.base_url,
        steps,
        duration=duration,
        connections=args.connections,
        threads=args.threads,
        script_dir=work_dir,
        nonce=f"{server.app[0]}{secrets.token_hex(4)}",
        script=script,
    )


def selected(filters: str | None, rate_limits: list[str] | None = None) -> list[Scenario]:
    """The scenarios whose names contain one of the comma-separated `filters` (all without), those with
    the rate limits on only for the backends in `rate_limits`."""
    backends = set(rate_limits or ())
    candidates = [s for s in SCENARIOS if s.rate_limits is None or s.rate_limits in backends]
    if not filters:
        return candidates
    wanted = [f.strip().lower() for f in filters.split(",") if f.strip()]
    chosen = [s for s in candidates if any(w in s.name.lower() for w in wanted)]
    if not chosen:
        raise SystemExit(f"no scenario matches {filters!r}; scenarios: {[s.name for s in candidates]}")
    return chosen


# --- the report ---------------------------------------------------------------------------------------


def _num(value: float) -> str:
    return f"{value:,.0f}".replace(",", " ")


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _ratio(a: Cell | None, b: Cell | None) -> str:
    if a is None or b is None or not b.mean("throughput"):
        return "–"
    return f"{a.mean('throughput') / b.mean('throughput'):.2f}"


def _sql(measured: inprocess.Measured, app: str) -> str:
    if app not in measured.statements:
        return "–"
    statements, trips = measured.statements[app], measured.round_trips[app]
    return f"{statements:g} ({trips:g})"


# The terminal table's headers (the Markdown one spells them out).
SHORT_HEADERS = [
    "scenario",
    "svc /s",
    "ref /s",
    "min /s",
    "÷ ref",
    "÷ min",
    "p50 ms s / r / m",
    "p99 ms s / r / m",
    "SQL svc",
    "SQL ref",
    "CPU ms s / r / m",
]


def _cpu(measured: inprocess.Measured) -> str:
    if not measured.cpu_ms:
        return "–"
    return " / ".join(f"{measured.cpu_ms[a]:.2f}" if a in measured.cpu_ms else "–" for a in APPS)


HEADERS = [
    "scenario",
    "service /s",
    "reference /s",
    "minimal /s",
    "svc ÷ ref",
    "svc ÷ min",
    "p50 ms svc / ref / min",
    "p99 ms svc / ref / min",
    "SQL svc (round trips)",
    "SQL ref (round trips)",
    "CPU ms in-process svc / ref / min",
]


def rows(outcome: Outcome) -> list[list[str]]:
    out = []
    for scenario in outcome.scenarios:
        cells = {app: outcome.cells.get((scenario.name, app)) for app in APPS}

        def trio(attribute: str, cells: dict[str, Cell | None] = cells) -> str:
            return " / ".join(_ms(c.mean(attribute)) if c else "–" for c in cells.values())

        errors = sum(c.errors for c in cells.values() if c)
        out.append(
            [
                scenario.name + (f" ({errors} errors)" if errors else ""),
                *(_num(c.mean("throughput")) if c else "–" for c in cells.values()),
                _ratio(cells[SERVICE], cells[REFERENCE]),
                _ratio(cells[SERVICE], cells[MINIMAL]),
                trio("p50_ms"),
                trio("p99_ms"),
                _sql(outcome.statements[scenario.name], SERVICE),
                _sql(outcome.statements[scenario.name], REFERENCE),
                _cpu(outcome.statements[scenario.name]),
            ]
        )
    return out


def rss_line(outcome: Outcome) -> str:
    parts = []
    for app in APPS:
        sizes = outcome.rss.get(app)
        if sizes:
            parts.append(f"{LABELS[app]} {', '.join('/'.join(f'{v:.0f}' for v in s) for s in sizes)}")
    return "memory per worker after the run, RSS/PSS/USS (MB): " + "; ".join(parts)


def rate_limit_lines(outcome: Outcome) -> list[str]:
    """The rate limiter's cost per request: each rate-limited row against the service without limits (CPU
    time in-process, both measured in turns), and against the row it varies (throughput; the rate-limited
    rows run alone after the others, so this one moves with whatever else the machine does)."""
    lines = []
    by_name = {s.name: s for s in outcome.scenarios}
    for scenario in outcome.scenarios:
        if scenario.rate_limits is None or scenario.base not in by_name:
            continue
        assert scenario.base is not None
        cpu_on = outcome.statements[scenario.name].cpu_ms.get(SERVICE)
        cpu_off = outcome.statements[scenario.name].baseline_cpu_ms
        on = outcome.cells.get((scenario.name, SERVICE))
        off = outcome.cells.get((scenario.base, SERVICE))
        parts = []
        if cpu_on is not None and cpu_off is not None:
            parts.append(
                f"{cpu_on - cpu_off:+.2f} ms CPU per request in-process ({cpu_off:.2f} → {cpu_on:.2f})"
            )
        if on is not None and off is not None and off.mean("throughput"):
            ratio = on.mean("throughput") / off.mean("throughput")
            parts.append(
                f"throughput × {ratio:.2f} ({_num(off.mean('throughput'))} → {_num(on.mean('throughput'))}/s)"
            )
        if parts:
            backend = "in Redis" if scenario.rate_limits == "redis" else "in memory"
            lines.append(f"rate limits {backend} on “{scenario.base}”: " + ", ".join(parts))
    return lines


def machine(database_urls: list[str]) -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [f"{os.cpu_count()} CPUs ({cpu})", f"Python {platform.python_version()}"]
    for url in database_urls:
        if url.startswith("postgresql"):
            parts.append(asyncio.run(_pg_version(url)))
        else:
            import sqlite3

            parts.append(f"SQLite {sqlite3.sqlite_version}")
    return ", ".join(parts)


async def _pg_version(url: str) -> str:
    import asyncpg
    from sqlalchemy.engine import make_url

    admin = make_url(url).set(database="postgres").render_as_string(hide_password=False)
    conn = await asyncpg.connect(datasets.asyncpg_dsn(admin))
    try:
        return "PostgreSQL " + str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def markdown(outcomes: list[Outcome], args: argparse.Namespace, machine_line: str) -> str:
    lines = [
        f"Machine: {machine_line}. The servers, the database and wrk on the same machine; each app "
        f"with {args.workers} uvicorn workers; wrk with {args.connections} connections, "
        f"{args.duration:g} s per run, {args.rounds} round(s) alternating the apps' order (means over the "
        "rounds). `/s` is requests per second (create-and-sign: pairs per second; the HR bulk: items per "
        "second, over sequential requests of 1 000 items through one client, the replay's first request "
        "untimed); SQL is the statements "
        "per request, with the database round trips in brackets (BEGIN, COMMIT, pre-ping included). CPU is "
        "the app's CPU time per request in-process (httpx ASGITransport, no HTTP parsing, the client's share "
        "taken out; SQLite's work included, PostgreSQL's not): unlike throughput, it holds on a busy "
        "machine.",
        "",
    ]
    for outcome in outcomes:
        lines += [f"### {'PostgreSQL' if outcome.database == POSTGRESQL else 'SQLite'}", ""]
        lines.append("| " + " | ".join(HEADERS) + " |")
        lines.append("|" + "---|" * len(HEADERS))
        lines += ["| " + " | ".join(row) + " |" for row in rows(outcome)]
        lines += ["", rss_line(outcome) + ".", ""]
        for line in rate_limit_lines(outcome):
            lines += [line + ".", ""]
    return "\n".join(lines)


def print_report(outcomes: list[Outcome], args: argparse.Namespace, machine_line: str) -> str:
    for outcome in outcomes:
        table = Table(
            title=f"{'PostgreSQL' if outcome.database == POSTGRESQL else 'SQLite'}: "
            f"{args.connections} connections, {args.duration:g} s × {args.rounds} round(s), "
            f"{args.workers} workers per app",
        )
        for header in SHORT_HEADERS:
            table.add_column(header, justify="left" if header == "scenario" else "right")
        for row in rows(outcome):
            table.add_row(*row)
        console.print(table)
        console.print(rss_line(outcome))
        for line in rate_limit_lines(outcome):
            console.print(line)
        for message in outcome.warnings:
            console.print(f"[yellow]warning:[/yellow] {message}")
    console.print(f"machine: {machine_line}")
    text = markdown(outcomes, args, machine_line)
    console.rule("Markdown")
    print(text)
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="PostgreSQL database to (re)create for the run: DROPPED and created again (default %(default)s)",
    )
    parser.add_argument("--sqlite", action="store_true", help="also run the read scenarios on SQLite")
    parser.add_argument("--sqlite-only", action="store_true", help="only SQLite (no PostgreSQL needed)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds, the apps' order rotating: 3 puts each app once in each place (default 2)",
    )
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per app and scenario")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads for single requests (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per app (default 2)")
    parser.add_argument(
        "--scenarios", "--only", help="comma-separated parts of scenario names (default: all)"
    )
    parser.add_argument("--apps", default=",".join(APPS), help="which apps (default: all three)")
    parser.add_argument(
        "--departements",
        type=lambda text: [code.strip() for code in text.split(",") if code.strip()],
        help="only the referential's communes of these départements, e.g. 69,42 (default: all of them)",
    )
    parser.add_argument(
        "--agreements", type=int, default=datasets.NATIONAL_AGREEMENTS, help="signed agreements (%(default)s)"
    )
    parser.add_argument(
        "--positions",
        type=int,
        default=datasets.NATIONAL_POSITIONS,
        help="positions shared by the agreements (%(default)s)",
    )
    parser.add_argument(
        "--counsellors",
        type=int,
        default=datasets.NATIONAL_COUNSELLORS,
        help="counsellors holding the positions in turn, one contract each (%(default)s)",
    )
    parser.add_argument(
        "--registrations-per-workshop",
        type=int,
        default=REGISTRATIONS_PER_WORKSHOP,
        help="registrations per workshop on average (%(default)s)",
    )
    parser.add_argument(
        "--workshops",
        type=int,
        default=DEFAULT_WORKSHOPS,
        help="workshops of the PostgreSQL dataset (default %(default)s; 0: none, and no workshop or "
        "workshop statistics scenario); SQLite has none",
    )
    parser.add_argument(
        "--rate-limits",
        type=lambda text: [b.strip() for b in text.split(",") if b.strip()],
        default=[],
        metavar="memory,redis",
        help="also measure the service with its rate limits on (limits never reached), counters in memory "
        f"and/or in Redis at {REDIS_URL} (left out when it does not answer), on the one-workshop read",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--keep-database", action="store_true", help="keep the PostgreSQL database at the end"
    )
    parser.add_argument("--markdown", type=Path, help="also write the Markdown tables to this file")
    parser.add_argument(
        "--reuse-dataset",
        type=Path,
        metavar="FILE.json",
        help="keep the PostgreSQL database and write its dataset's summary to this file; when the file "
        "exists, run on the database as it is (built by an earlier run with the same file) instead",
    )
    parser.add_argument(
        "--cpu-passes",
        type=int,
        default=50,
        help="operations timed in-process per app and scenario for the CPU column (0: skip; default 50)",
    )
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        help="the apps connect through a PgBouncer (transaction mode) started on 127.0.0.1 for the run: "
        "the service with DATABASE_PGBOUNCER=true, the others with asyncpg's statement cache off",
    )
    parser.add_argument(
        "--pgbouncer-pool-size",
        type=int,
        default=20,
        help="PgBouncer's server connections (default %(default)s: one app's two workers' pools)",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if not args.database_url.startswith("postgresql"):
        parser.error("--database-url takes a postgresql+asyncpg:// URL (SQLite: --sqlite or --sqlite-only)")
    if SERVICE not in args.apps.split(","):
        parser.error("--apps must include service")
    if set(args.rate_limits) - set(RATE_LIMIT_BACKENDS):
        parser.error(f"--rate-limits takes {' and/or '.join(RATE_LIMIT_BACKENDS)}")
    if args.workshops < 0:
        parser.error("--workshops: 0 or more")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # SIGTERM and SIGHUP end the run like Ctrl-C does, through the `finally` blocks that stop the servers and
    # drop the database; SIGINT too when the run was started in the background (where it is ignored).
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.list:
        for scenario in SCENARIOS:
            steps = (
                ", ".join(f"{s.method} {s.path}" for s in scenario.steps)
                .replace("{{", "{")
                .replace("}}", "}")
            )
            console.print(
                f"{scenario.name}: {steps} [dim]({', '.join(sorted(scenario.apps))}; "
                f"{', '.join(sorted(scenario.databases))})[/dim]",
                highlight=False,
            )
        return
    if wrk.wrk_path() is None:
        console.print(f"[red]{wrk.INSTALL_HINT}[/red]")
        raise SystemExit(1)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="cnfs-load-") as tmp:
        work_dir = Path(tmp)
        urls = [] if args.sqlite_only else [args.database_url]
        if args.sqlite or args.sqlite_only:
            urls.append(f"sqlite+aiosqlite:///{work_dir / 'bench.db'}")
        machine_line = machine(urls)
        load_before = os.getloadavg()[0]
        if load_before > 1:
            console.print(
                f"[yellow]warning:[/yellow] load average {load_before:.1f}: other work is running, the "
                "figures will be noisy"
            )
        for url in urls:
            try:
                outcomes.append(run_database(args, url, work_dir))
            finally:
                if url.startswith("postgresql") and not args.keep_database and not args.reuse_dataset:
                    asyncio.run(datasets.drop_pg_database(url))
    # The benchmark itself loads the machine: the load average before it says how quiet the machine was.
    machine_line += f"; load average {load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after"
    text = print_report(outcomes, args, machine_line)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        console.print("interrupted: the servers are stopped")
        raise SystemExit(130) from None
