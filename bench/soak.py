"""Soak and memory: a bounded mixed load on `cnfs-api serve` with N workers (PostgreSQL, loopback), then the
memory of 1, 2 and 4 workers beside the minimal FastAPI app's.

    .venv/bin/python -m bench.soak                       # 10 minutes, 2 workers, database cnfs_soak
    .venv/bin/python -m bench.soak --minutes 1 --memory-workers 1,2
    .venv/bin/python -m bench.soak --reuse-dataset /tmp/soak.json --markdown /tmp/soak.md

The soak: an asyncio client (httpx, `--concurrency` connections) sends, until `--minutes` have passed, a
mix of reads (a territory by code, lists with a key, one counsellor, one workshop), searches (territories by
name, workshops of the Rhône by theme), public registrations (unique emails, on 500 workshops of 10 000
seats), HR bulk upserts (50 counsellors, new ones and updates) and change feed reads (each client follows
the feed from where it was), with a scrape of /metrics every 5 s. Every answer's status is checked: an
answer that the scenario did not design (anything but 201 or 409 `workshop_full` for a registration, 207
for a bulk, 200 elsewhere) or a transport error is an error. The workers' RSS and PSS (from
/proc/<pid>/smaps_rollup) are read after a warm-up (the caches filled on first use) and at the end: the
growth between the two is what a leak would show. The warm-up lasts 30 s or more, in phases of 10 s on fresh
connections, until every worker has had at least half of an even split of its CPU time (`warm_up`): the
workers take connections from one socket unevenly, and a worker left cold would fill its caches during the
soak and show as growth. At the end, /metrics is compared with what the client
counted (registrations, bulk items, change feed reads): one scrape counts every worker's.

The memory table: the service (`cnfs-api serve --workers N`: gunicorn forking preloaded workers, or uvicorn
alone for 1) and the minimal FastAPI app (`uvicorn --workers N`), each started alone, warmed the same way
by the load's requests that both answer, then measured: the total PSS of the server's processes (its
master included) and the mean PSS per worker.

It builds a small dataset first (the Rhône's referential, agreements, positions, counsellors, 20 000
workshops; `bench.dataset`), in a fresh `cnfs_soak` database, unless `--reuse-dataset` names the JSON that
an earlier run saved. Everything it starts is stopped at the end, errors included. The CI never runs it."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench import dataset as datasets
from bench.load import Server, free_port, uvicorn_command, wait_ready
from bench.scenarios import MINIMAL, context

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/cnfs_soak"
BULK_ITEMS = 50
BULK_REFS = 2_000
SOAK_PREFIX = "SOAK-"
SCRAPE_SECONDS = 5.0
WARM_UP_SECONDS = 30.0
# The warm-up runs in phases, each on fresh connections: the server's workers take a client's connections
# from one listening socket, unevenly, and a worker that served few of them during the warm-up fills its
# caches during the soak instead, which the growth column would take for a leak.
WARM_UP_PHASE_SECONDS = 10.0
# Each worker must have had at least this share of an even split of the warm-up's CPU time...
WARM_UP_FAIR_SHARE = 0.5
# ...within this many times WARM_UP_SECONDS, or the run stops and says so.
WARM_UP_LIMIT = 3


@dataclass
class Tally:
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    registrations: Counter[str] = field(default_factory=Counter)
    bulk_items: Counter[str] = field(default_factory=Counter)
    feed_reads: int = 0

    def seen(self, kind: str, status: int, seconds: float) -> None:
        self.requests[kind] += 1
        self.statuses[(kind, status)] += 1
        self.latencies.setdefault(kind, []).append(seconds)

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.statuses += other.statuses
        self.errors += other.errors
        for kind, seconds in other.latencies.items():
            self.latencies.setdefault(kind, []).extend(seconds)
        self.registrations += other.registrations
        self.bulk_items += other.bulk_items
        self.feed_reads += other.feed_reads


class Load:
    """The mix: each call of `one()` sends one request, picked by weight, and checks its answer."""

    def __init__(self, values: dict[str, str], service: bool, worker: int) -> None:
        self.values = values
        self.service = service
        self.worker = worker
        self.rng = random.Random(worker)
        self.counter = itertools.count()
        self.register_ids = values["workshops_register_ids"].split()
        self.admin = {"Authorization": f"Bearer {values['key_admin']}"}
        self.manager = {"Authorization": f"Bearer {values['key_territory_manager']}"}
        self.after: str | None = None
        kinds: list[tuple[str, int]] = [
            ("territory by code", 10),
            ("agreements, admin", 6),
            ("positions, manager", 6),
            ("one counsellor", 6),
            ("one workshop", 10),
            ("search territories", 10),
            ("search workshops", 12),
            ("register", 15),
        ]
        if service:
            kinds += [("HR bulk", 2), ("change feed", 8)]
        self.kinds = [kind for kind, _ in kinds]
        self.weights = [weight for _, weight in kinds]

    async def one(self, client: httpx.AsyncClient, tally: Tally) -> None:
        kind = self.rng.choices(self.kinds, self.weights)[0]
        started = time.perf_counter()
        try:
            response, expected = await self._send(client, kind)
        except httpx.HTTPError as error:
            tally.errors[f"{kind}: {type(error).__name__}"] += 1
            return
        tally.seen(kind, response.status_code, time.perf_counter() - started)
        if response.status_code not in expected:
            tally.errors[f"{kind}: {response.status_code} {response.text[:120]}"] += 1
            return
        if kind == "register":
            body = response.json()
            tally.registrations[body.get("status") or body.get("code", "?")] += 1
        elif kind == "HR bulk":
            for item in response.json()["items"]:
                tally.bulk_items[str(item["status"])] += 1
        elif kind == "change feed":
            tally.feed_reads += 1
            self.after = response.json()["next_after"]

    async def _send(self, client: httpx.AsyncClient, kind: str) -> tuple[httpx.Response, set[int]]:
        v = self.values
        ok = {200}
        if kind == "territory by code":
            return await client.get(f"/api/v1/territories/commune/{v['commune_code']}"), ok
        if kind == "agreements, admin":
            return await client.get("/api/v1/agreements", params={"limit": 50}, headers=self.admin), ok
        if kind == "positions, manager":
            return await client.get("/api/v1/positions", params={"limit": 50}, headers=self.manager), ok
        if kind == "one counsellor":
            return await client.get(f"/api/v1/counsellors/{v['counsellor_id']}", headers=self.manager), ok
        if kind == "one workshop":
            return await client.get(f"/api/v1/workshops/{v['workshop_id']}"), ok
        if kind == "search territories":
            q = self.rng.choice(["villefranche saone", "st etienne", "lyon", "69123", "tarare"])
            return await client.get("/api/v1/territories", params={"q": q, "limit": 20}), ok
        if kind == "search workshops":
            search: dict[str, str | int] = {
                "department_code": "69",
                "theme": "insertion_professionnelle",
                "limit": 20,
            }
            return await client.get("/api/v1/workshops", params=search), ok
        if kind == "register":
            workshop = self.rng.choice(self.register_ids)
            email = f"soak-{self.worker}-{next(self.counter)}-{secrets.token_hex(3)}@example.org"
            body = {"first_name": "Dominique", "last_name": "Fictif", "email": email}
            # 409 workshop_full is designed (the seats of a workshop run out).
            return await client.post(f"/api/v1/workshops/{workshop}/registrations", json=body), {201, 409}
        if kind == "HR bulk":
            start = self.rng.randrange(BULK_REFS)
            items = [
                {
                    "external_ref": f"{SOAK_PREFIX}{(start + n) % BULK_REFS:05d}",
                    "first_name": "Dominique",
                    "last_name": "Fictif",
                    "email": "dominique.fictif@example.org",
                    "phone": self.rng.choice([None, "+33 4 00 00 00 00"]),
                }
                for n in range(BULK_ITEMS)
            ]
            return await client.post(
                "/api/v1/counsellors/bulk", json={"items": items}, headers=self.manager
            ), {207}
        if kind == "change feed":
            feed: dict[str, str | int] = {"limit": 50}
            if self.after:
                feed["after"] = self.after
            return await client.get("/api/v1/changes", params=feed, headers=self.admin), ok
        raise ValueError(kind)


async def drive(
    base_url: str, values: dict[str, str], seconds: float, concurrency: int, service: bool
) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def worker(n: int) -> None:
            load = Load(values, service, n)
            while time.monotonic() < deadline:
                await load.one(client, tally)

        async def scraper() -> None:
            while time.monotonic() < deadline:
                await asyncio.sleep(SCRAPE_SECONDS)
                try:
                    response = await client.get("/metrics")
                    tally.seen("metrics", response.status_code, 0.0)
                    if response.status_code != 200:
                        tally.errors[f"metrics: {response.status_code}"] += 1
                except httpx.HTTPError as error:
                    tally.errors[f"metrics: {type(error).__name__}"] += 1

        tasks = [worker(n) for n in range(concurrency)]
        if service:
            tasks.append(scraper())
        await asyncio.gather(*tasks)
    return tally


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) that process `pid` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def warm_up(
    server: Server, values: dict[str, str], concurrency: int, service: bool
) -> tuple[Tally, list[float]]:
    """At least WARM_UP_SECONDS of the load, in phases on fresh connections, until every worker has had at
    least WARM_UP_FAIR_SHARE of an even split of the CPU time spent: the tally, and each worker's CPU
    seconds. Stops the run (SystemExit) when WARM_UP_LIMIT times WARM_UP_SECONDS did not get there."""
    workers = server.workers()
    start = {pid: cpu_seconds(pid) for pid in workers}
    tally = Tally()
    spent = 0.0
    while True:
        tally.add(asyncio.run(drive(server.base_url, values, WARM_UP_PHASE_SECONDS, concurrency, service)))
        spent += WARM_UP_PHASE_SECONDS
        used = [cpu_seconds(pid) - start[pid] for pid in workers]
        even = sum(used) / len(used)
        if spent >= WARM_UP_SECONDS and min(used) >= WARM_UP_FAIR_SHARE * even:
            return tally, used
        if spent >= WARM_UP_LIMIT * WARM_UP_SECONDS:
            raise SystemExit(
                f"the warm-up did not reach every worker in {spent:g} s: CPU seconds per worker "
                + ", ".join(f"{seconds:.1f}" for seconds in used)
            )


# --- memory -----------------------------------------------------------------------------------------------


def smaps(pid: int) -> dict[str, int]:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields[name] = int(rest.split()[0])
    return fields


@dataclass
class Memory:
    """RSS and PSS (MB) of each worker, and the PSS of the server's processes together (its master too)."""

    workers: list[tuple[float, float]]
    total_pss: float

    @property
    def mean_pss(self) -> float:
        return statistics.fmean(pss for _, pss in self.workers)

    @property
    def mean_rss(self) -> float:
        return statistics.fmean(rss for rss, _ in self.workers)


def memory(server: Server) -> Memory:
    workers = server.workers()
    sizes = []
    for pid in workers:
        fields = smaps(pid)
        sizes.append((fields["Rss"] / 1024, fields["Pss"] / 1024))
    tree = set(workers) | {server.process.pid}
    total = sum(smaps(pid)["Pss"] for pid in tree) / 1024
    return Memory(sizes, total)


# --- servers ----------------------------------------------------------------------------------------------


def _environment(database_url: str, secret_key: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": secret_key,
        "LOG_LEVEL": "INFO",
        "LOG_JSON": "true",
        # Every request comes from one address: the rate limits would refuse most.
        "RATE_LIMITS_ENABLED": "false",
        "PYTHONPATH": str(ROOT),
    }
    for name in ("WEB_CONCURRENCY", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    return env


@contextmanager
def running(app: str, database_url: str, secret_key: str, workers: int, log_dir: Path) -> Iterator[Server]:
    """The service as an operator runs it (`cnfs-api serve`, its metrics' directory made by it), or the
    minimal app under uvicorn; stopped at the end."""
    port = free_port()
    log = log_dir / f"{app}-{workers}.log"
    if app == "service":
        command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", str(workers)]
        command += ["--no-migrate", "--no-demo"]
    else:
        command = uvicorn_command(app, port, workers)
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env=_environment(database_url, secret_key),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
        )
    server = Server(app, port, process, log, workers)
    try:
        wait_ready(server, workers, "/api/v1/territories?limit=1")
        yield server
    finally:
        server.stop()


# --- the runs ---------------------------------------------------------------------------------------------


@dataclass
class SoakResult:
    workers: int
    minutes: float
    tally: Tally
    warm: Memory
    end: Memory
    checks: list[tuple[str, float, float]]


def _counter(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def soak(args: argparse.Namespace, values: dict[str, str], secret_key: str, log_dir: Path) -> SoakResult:
    with running("service", args.database_url, secret_key, args.workers, log_dir) as server:
        print(f"warm-up: {WARM_UP_SECONDS:g} s or more, {args.concurrency} connections", flush=True)
        _, used = warm_up(server, values, args.concurrency, service=True)
        shares = ", ".join(f"{seconds:.1f}" for seconds in used)
        print(f"warm-up: CPU seconds per worker {shares}", flush=True)
        metrics_before = httpx.get(f"{server.base_url}/metrics", timeout=30).text
        warm = memory(server)
        print(f"soak: {args.minutes:g} min, {args.workers} workers", flush=True)
        tally = asyncio.run(drive(server.base_url, values, args.minutes * 60, args.concurrency, service=True))
        end = memory(server)
        metrics_after = httpx.get(f"{server.base_url}/metrics", timeout=30).text

    def moved(name: str, **labels: str) -> float:
        return _counter(metrics_after, name, **labels) - _counter(metrics_before, name, **labels)

    checks = [
        (
            "registrations confirmed",
            float(tally.registrations["confirmed"]),
            moved("cnfs_registrations_total", status="confirmed"),
        ),
        (
            "registrations refused workshop_full",
            float(tally.registrations["workshop_full"]),
            moved("cnfs_registrations_refused_total", code="workshop_full"),
        ),
        ("bulk items 201", float(tally.bulk_items["201"]), moved("cnfs_bulk_items_total", status="201")),
        ("bulk items 200", float(tally.bulk_items["200"]), moved("cnfs_bulk_items_total", status="200")),
        ("change feed reads", float(tally.feed_reads), moved("cnfs_change_feed_reads_total", format="json")),
    ]
    return SoakResult(args.workers, args.minutes, tally, warm, end, checks)


def memory_table(
    args: argparse.Namespace, values: dict[str, str], secret_key: str, log_dir: Path
) -> list[tuple[str, int, Memory]]:
    rows = []
    for workers in args.memory_workers:
        for app in ("service", MINIMAL):
            with running(app, args.database_url, secret_key, workers, log_dir) as server:
                warm, used = warm_up(server, values, 8, service=False)
                time.sleep(1)
                measured = memory(server)
            print(
                f"{app} x{workers}: {sum(warm.requests.values())} requests, "
                f"{sum(warm.errors.values())} errors, CPU seconds per worker "
                f"{', '.join(f'{seconds:.1f}' for seconds in used)}; "
                f"total PSS {measured.total_pss:.1f} MB, per worker {measured.mean_pss:.1f}",
                flush=True,
            )
            rows.append((app, workers, measured))
    return rows


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def markdown(result: SoakResult | None, rows: list[tuple[str, int, Memory]], command: str) -> str:
    lines = [f"Command: `{command}`", ""]
    if result is not None:
        t = result.tally
        total = sum(t.requests.values())
        seconds = result.minutes * 60
        lines += [
            f"Soak: {result.minutes:g} min, `cnfs-api serve --workers {result.workers}` on PostgreSQL, "
            f"{total} requests ({total / seconds:.0f}/s), errors other than designed ones: "
            f"**{sum(t.errors.values())}**.",
            "",
            "| requests | count | statuses | p50 (ms) | p99 (ms) |",
            "|---|---|---|---|---|",
        ]
        for kind, count in sorted(t.requests.items(), key=lambda item: -item[1]):
            statuses = ", ".join(
                f"{status}: {n}" for (k, status), n in sorted(t.statuses.items()) if k == kind
            )
            latencies = t.latencies.get(kind, [])
            lines.append(
                f"| {kind} | {count} | {statuses} | {_percentile(latencies, 0.5) * 1000:.1f} | "
                f"{_percentile(latencies, 0.99) * 1000:.1f} |"
            )
        lines += [
            "",
            "| worker | RSS after warm-up (MB) | RSS at the end | PSS after warm-up (MB) | PSS at the end "
            "| PSS growth |",
            "|---|---|---|---|---|---|",
        ]
        for n, ((rss0, pss0), (rss1, pss1)) in enumerate(
            zip(result.warm.workers, result.end.workers, strict=False), 1
        ):
            lines.append(
                f"| {n} | {rss0:.1f} | {rss1:.1f} | {pss0:.1f} | {pss1:.1f} | "
                f"{(pss1 / pss0 - 1) * 100:+.1f} % |"
            )
        lines += ["", "| /metrics against the client's count | client | /metrics |", "|---|---|---|"]
        lines += [f"| {name} | {client:g} | {scraped:g} |" for name, client, scraped in result.checks]
        if t.errors:
            lines += ["", "Errors: " + "; ".join(f"{e} ×{n}" for e, n in t.errors.most_common(10))]
    if rows:
        by = {(app, workers): m for app, workers, m in rows}
        lines += [
            "",
            "| workers | service: total PSS (MB) | service: PSS per worker | minimal FastAPI: total PSS "
            "| minimal: PSS per worker | per worker, service ÷ minimal |",
            "|---|---|---|---|---|---|",
        ]
        for workers in sorted({w for _, w, _ in rows}):
            s, m = by.get(("service", workers)), by.get((MINIMAL, workers))
            if s is None or m is None:
                continue
            lines.append(
                f"| {workers} | {s.total_pss:.1f} | {s.mean_pss:.1f} | {m.total_pss:.1f} | "
                f"{m.mean_pss:.1f} | {s.mean_pss / m.mean_pss:.2f} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="How long the soak runs (default 10).")
    parser.add_argument("--workers", type=int, default=2, help="The service's workers during the soak.")
    parser.add_argument("--concurrency", type=int, default=16, help="Connections of the client.")
    parser.add_argument(
        "--memory-workers",
        type=lambda text: [int(n) for n in text.split(",") if n],
        default=[1, 2, 4],
        help="The worker counts of the memory table (default 1,2,4; empty: no table).",
    )
    parser.add_argument("--no-soak", action="store_true", help="Only the memory table.")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--workshops", type=int, default=20_000)
    parser.add_argument("--reuse-dataset", type=Path, help="A dataset JSON saved by an earlier run.")
    parser.add_argument("--markdown", type=Path, help="Also write the tables here.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    saved: Path | None = args.reuse_dataset
    if saved is not None and saved.exists():
        built = datasets.Dataset(**json.loads(saved.read_text()))
    else:
        started = time.perf_counter()
        built = datasets.build(
            args.database_url,
            departements=["69"],
            agreements=40,
            positions=400,
            counsellors=600,
            workshops=args.workshops,
            registrations_per_workshop=2,
            progress=False,
        )
        print(f"dataset built in {time.perf_counter() - started:.0f} s", flush=True)
        if saved is not None:
            saved.write_text(json.dumps(built.to_json()))
    values = context(built.to_json())
    secret_key = secrets.token_hex(24)
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"cnfs-soak-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    result = None if args.no_soak else soak(args, values, secret_key, log_dir)
    rows = memory_table(args, values, secret_key, log_dir) if args.memory_workers else []
    command = "python -m bench.soak " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(result, rows, command.strip())
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    print(f"logs: {log_dir}")
    if result is not None and (result.tally.errors or any(a != b for _, a, b in result.checks)):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
