"""The CSV export under measure: a search of 100 000-odd workshops as CSV, rows per second and peak memory.

    .venv/bin/python -m bench.csv_export                    # DROPS and recreates cnfs_bench_csv (PostgreSQL)
    .venv/bin/python -m bench.csv_export --reuse            # the database of an earlier run, as it is
    .venv/bin/python -m bench.csv_export --workshops 300000 --rounds 5 --markdown /tmp/csv.md

It builds the load benchmark's dataset (`bench.dataset`, with `--workshops` workshops:
`bench.workshops_dataset`, PostgreSQL only), then starts each app on 127.0.0.1 with one worker: the service
as `cnfs-api serve` runs it, and the reference app (`bench.reference_app`: Starlette, a raw asyncpg pool,
the same SQL in keyset batches of 1 000 rows in one REPEATABLE READ transaction, the stdlib `csv` writer).
For each:

1. a small export (`SMALL_QUERY`, a few thousand rows): warms the worker up, and its peak resident memory
   (`VmHWM`) afterwards is the baseline;
2. `--rounds` exports of `QUERY` (every public workshop of the Rhône since 2021: 125 067 of the default
   million), one after the other through one HTTP client reading the stream as it comes: rows per second
   (the median round), the worker's CPU time (rows per CPU second: what a shared machine's load does not
   blur), the body's SHA-256;
3. the worker's peak resident memory after them: an export that held its rows would raise it by the size
   of the answer (tens of megabytes); a streamed one leaves it where the small export left it.

The two apps' bodies must be the same bytes (a warning otherwise). Loopback only; bounded: each export
times out after `TIMEOUT_S`."""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from bench import dataset as datasets
from bench.load import LABELS, Server, start_server, wait_ready
from bench.scenarios import REFERENCE, SERVICE

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/cnfs_bench_csv"
PATH = "/api/v1/workshops"
QUERY = "department_code=69&from=2021-01-01T00:00:00Z"
SMALL_QUERY = "department_code=69&from=2027-11-01T00:00:00Z"
PROBE = "/api/v1/territories/commune/69123"
TIMEOUT_S = 120
console = Console() if sys.stdout.isatty() else Console(width=160)


@dataclass
class Export:
    rows: int
    seconds: float
    digest: str
    size: int
    cpu_seconds: float = 0.0


@dataclass
class Measured:
    app: str
    small_rows: int = 0
    exports: list[Export] = field(default_factory=list)
    rss_before_mb: float = 0.0
    hwm_small_mb: float = 0.0
    hwm_after_mb: float = 0.0

    @property
    def median(self) -> Export:
        return sorted(self.exports, key=lambda e: e.seconds)[len(self.exports) // 2]


def _status_kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def _memory_mb(server: Server, name: str) -> float:
    """The worker's `VmHWM` (peak resident set since it started) or `VmRSS`, in MB."""
    return max((_status_kib(pid, name) for pid in server.workers()), default=0) / 1024


def export(client: httpx.Client, query: str) -> Export:
    """One export read as a client reads a stream: chunk by chunk, nothing kept but a hash."""
    digest = hashlib.sha256()
    lines = size = 0
    started = time.perf_counter()
    with client.stream("GET", f"{PATH}?{query}", headers={"Accept": "text/csv"}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.read()[:500]!r}")
        for chunk in response.iter_raw():
            digest.update(chunk)
            # LF, not CRLF: a chunk may end between the two (no field of this export holds a line break).
            lines += chunk.count(b"\n")
            size += len(chunk)
    return Export(lines - 1, time.perf_counter() - started, digest.hexdigest(), size)


def measure(app: str, database_url: str, secret_key: str, work_dir: Path, rounds: int) -> Measured:
    server = start_server(app, database_url, secret_key, 1, work_dir)
    found = Measured(app)
    try:
        wait_ready(server, 1, PROBE)
        found.rss_before_mb = _memory_mb(server, "VmRSS")
        if not server.base_url.startswith("http://127.0.0.1:"):
            raise ValueError("the benchmark only drives servers on 127.0.0.1")
        with httpx.Client(base_url=server.base_url, timeout=TIMEOUT_S) as client:
            found.small_rows = export(client, SMALL_QUERY).rows
            found.hwm_small_mb = _memory_mb(server, "VmHWM")
            for index in range(rounds):
                ticks = server.cpu_ticks()
                done = export(client, QUERY)
                done.cpu_seconds = (server.cpu_ticks() - ticks) / os.sysconf("SC_CLK_TCK")
                found.exports.append(done)
                console.print(
                    f"  {LABELS[app]} round {index + 1}: {done.rows:,} rows in {done.seconds:.2f} s, "
                    f"{done.rows / done.seconds:,.0f} rows/s, {done.size / 1e6:.1f} MB, the worker's CPU "
                    f"{done.cpu_seconds:.2f} s"
                )
            found.hwm_after_mb = _memory_mb(server, "VmHWM")
    finally:
        server.stop()
    return found


def table(results: list[Measured]) -> list[list[str]]:
    rows = []
    for found in results:
        median = found.median
        rows.append(
            [
                LABELS[found.app],
                f"{median.rows:,}",
                f"{median.size / 1e6:.1f}",
                f"{median.seconds:.2f}",
                f"{median.rows / median.seconds:,.0f}",
                f"{median.cpu_seconds:.2f}",
                f"{median.rows / median.cpu_seconds:,.0f}" if median.cpu_seconds else "-",
                f"{found.rss_before_mb:.0f}",
                f"{found.hwm_small_mb:.0f}",
                f"{found.hwm_after_mb:.0f}",
            ]
        )
    return rows


HEADERS = [
    "app",
    "rows",
    "MB",
    "s (median)",
    "rows/s",
    "worker CPU (s)",
    "rows per CPU second",
    "RSS at start (MB)",
    "peak RSS after a small export (MB)",
    "peak RSS after the large ones (MB)",
]


def markdown(results: list[Measured], note: str) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in table(results)]
    return "\n".join(lines) + "\n\n" + note + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--workshops", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reuse", action="store_true", help="use the database as it is (no rebuild)")
    parser.add_argument("--apps", default=f"{SERVICE},{REFERENCE}")
    parser.add_argument("--markdown", type=Path, help="also write the Markdown table to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.database_url.startswith("postgresql"):
        sys.exit("the export benchmark runs on PostgreSQL (the workshops dataset is PostgreSQL's)")
    if not args.reuse:
        started = time.perf_counter()
        built = datasets.build(args.database_url, workshops=args.workshops, seed=args.seed)
        console.print(
            f"dataset: {built.workshops:,} workshops, built in {time.perf_counter() - started:.0f} s"
        )
    secret_key = secrets.token_hex(24)
    results = []
    with tempfile.TemporaryDirectory(prefix="cnfs-csv-bench-") as tmp:
        for app in args.apps.split(","):
            results.append(measure(app, args.database_url, secret_key, Path(tmp), args.rounds))
    digests = {found.app: {e.digest for e in found.exports} for found in results}
    if len({d for found in digests.values() for d in found}) != 1:
        console.print(f"[yellow]warning:[/yellow] the apps' CSV bodies differ: {digests}")
    view = Table(
        *HEADERS, title=f"GET {PATH}?{QUERY} with Accept: text/csv, one worker, {args.rounds} round(s)"
    )
    for row in table(results):
        view.add_row(*row)
    console.print(view)
    if args.markdown:
        note = (
            f"`GET {PATH}?{QUERY}`, `Accept: text/csv`, one worker per app, median of {args.rounds} "
            f"exports; the small export (`{SMALL_QUERY}`): {results[0].small_rows:,} rows."
        )
        args.markdown.write_text(markdown(results, note))


if __name__ == "__main__":
    main()
