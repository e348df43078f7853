"""Where a worker's memory goes: the libraries' floor, layer by layer, and the service's own heap by package.

    .venv/bin/python -m bench.memory
    .venv/bin/python -m bench.memory --markdown /tmp/memory.md

Each row of the first table is a fresh interpreter that imports the layers of the stack down to its own (a
"+" row adds one to those above it; the three apps' workers all run under uvicorn, with uvloop and
httptools), then prints its resident memory (RSS) and its number of modules. An app's row also builds the
app (`create_app`; the service as its workers get it, `preloaded_app`), which the rows below it do not.
What a layer's row holds, every app on that layer holds: it is the floor below which no worker on that
stack can go, whatever the application does.

RSS counts every page a process maps. Under `cnfs-api serve --workers N` (gunicorn `--preload`), the workers
are forked from a process that built the app, and share most of these pages with it: `bench.load` reports
each worker's PSS and USS beside its RSS, after its run.

The second table is the service's Python heap once the app is built (`create_app`), by package: the
memory that tracemalloc sees allocated, and not freed, while each package's modules load, its loads of
other packages counted to those; what a module's body builds counts to its package (the validators of the
service's pydantic models and the mappers of its ORM classes count to `app`). tracemalloc sees Python's
allocators only: the interpreter, the extensions' own memory (pydantic-core's validators, in Rust) and
their code pages are in the first table's RSS, not here. A worker's RSS after a load adds its connections,
the caches that fill on first use (compiled SQL, prepared statements, the SQLite page cache of each
connection) and the allocator's free lists.

It needs no database: the apps are built, not started."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
console = Console() if sys.stdout.isatty() else Console(width=160)

SERVER = ["uvicorn", "uvloop", "httptools"]
REFERENCE_STACK = ["starlette.applications", "starlette.routing", "asyncpg", "aiosqlite", "orjson"]
PYDANTIC = ["pydantic"]
FASTAPI = ["fastapi"]
ORM = ["sqlalchemy.ext.asyncio", "sqlalchemy.orm", "sqlalchemy.dialects.postgresql.asyncpg"]
SERVICE_LIBRARIES = [
    "gunicorn.app.base",
    "uvicorn_worker",
    "app.core.logging",  # structlog, as the service imports it
    "prometheus_client",
    "limits.aio.strategies",
    "pydantic_settings",
    "asgi_correlation_id",
    "uuid_utils",
    "stdnum.fr.siren",
]


@dataclass(frozen=True)
class Layer:
    name: str
    modules: list[str]
    build: str | None = None  # "module:function" called after the imports


LAYERS = [
    Layer("Python, asyncio", ["asyncio"]),
    Layer("+ the server (uvicorn, uvloop, httptools)", SERVER),
    Layer("+ the reference's libraries (Starlette, asyncpg, aiosqlite, orjson)", REFERENCE_STACK),
    Layer("reference app, built", [], "bench.reference_app:create_app"),
    Layer("+ pydantic", PYDANTIC),
    Layer("+ FastAPI", FASTAPI),
    Layer("minimal FastAPI app, built", [], "bench.minimal_fastapi_app:create_app"),
    Layer("+ SQLAlchemy's async ORM and its asyncpg dialect", ORM),
    Layer(
        "+ the service's other libraries (gunicorn, logs, metrics, rate limits, settings)", SERVICE_LIBRARIES
    ),
    Layer("service, built as its workers get it", [], "app.main:preloaded_app"),
]

_CHILD = """
import importlib, json, sys
for name in {modules!r}:
    importlib.import_module(name)
build = {build!r}
if build:
    module, function = build.split(":")
    getattr(importlib.import_module(module), function)()
rss = 0
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        rss = int(line.split()[1])
print(json.dumps({{"rss_kib": rss, "modules": len(sys.modules)}}))
"""

_HEAP = """
import collections, gc, importlib._bootstrap as bootstrap, json, tracemalloc

gc.disable()  # a collection during one import would take earlier packages' garbage off the importing one
tracemalloc.start(1)
own = collections.Counter()
stack = []  # [package, traced memory when its module began loading, what its nested loads took]
find_and_load = bootstrap._find_and_load


def traced_find_and_load(name, import_):
    # Every first load of a module goes through here: import statements, from-imports of submodules,
    # importlib.import_module and the lazy imports of a package's __getattr__ alike.
    stack.append([name.split(".")[0], tracemalloc.get_traced_memory()[0], 0])
    try:
        return find_and_load(name, import_)
    finally:
        package, start, nested = stack.pop()
        taken = tracemalloc.get_traced_memory()[0] - start
        own[package] += taken - nested
        if stack:
            stack[-1][2] += taken


bootstrap._find_and_load = traced_find_and_load
start = tracemalloc.get_traced_memory()[0]
import app.main

app.main.create_app()
bootstrap._find_and_load = find_and_load
total = tracemalloc.get_traced_memory()[0] - start
own["(building the app)"] += total - sum(own.values())
print(json.dumps({"total": total, "packages": own.most_common()}))
"""


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "ERROR"}
    # The apps are built, not started: no connection is opened. The same settings on every machine.
    env["DATABASE_URL"] = "sqlite+aiosqlite:///./data/cnfs.db"
    env.pop("PYTHONTRACEMALLOC", None)
    return env


def _run(code: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"the measurement failed:\n{done.stderr[-2000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def floor(repeat: int) -> list[tuple[str, float, int]]:
    """(layer, RSS in MB, modules) for each layer: the lowest of `repeat` fresh interpreters."""
    rows = []
    imported: list[str] = []
    for layer in LAYERS:
        imported += layer.modules
        code = _CHILD.format(modules=imported, build=layer.build)
        runs = [_run(code) for _ in range(repeat)]
        best = min(runs, key=lambda r: int(r["rss_kib"]))  # type: ignore[call-overload]
        rows.append((layer.name, int(best["rss_kib"]) / 1024, int(best["modules"])))  # type: ignore[call-overload]
    return rows


def heap() -> tuple[float, list[tuple[str, float]]]:
    """The service's Python heap once built (MB), and each package's share of it (MB)."""
    result = _run(_HEAP)
    packages = [(str(name), int(size) / 2**20) for name, size in result["packages"]]  # type: ignore[attr-defined]
    return int(result["total"]) / 2**20, packages  # type: ignore[call-overload]


def markdown(
    rows: list[tuple[str, float, int]], total: float, packages: list[tuple[str, float]], top: int
) -> str:
    lines = ["| layer | RSS (MB) | modules |", "|---|---|---|"]
    lines += [f"| {name} | {rss:.1f} | {modules} |" for name, rss, modules in rows]
    lines += ["", f"The service's Python heap once built: {total:.1f} MB.", ""]
    lines += ["| package | MB |", "|---|---|"]
    shown = packages[:top]
    lines += [f"| {name} | {size:.2f} |" for name, size in shown]
    rest = packages[top:]
    lines += [f"| {len(rest)} other packages | {sum(size for _, size in rest):.2f} |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repeat", type=int, default=3, help="interpreters per layer, the lowest kept")
    parser.add_argument("--top", type=int, default=15, help="packages shown in the heap table")
    parser.add_argument("--markdown", type=Path, help="also write the Markdown tables to this file")
    args = parser.parse_args(argv)

    rows = floor(args.repeat)
    table = Table(title="A worker's memory, layer by layer (fresh interpreters)")
    for column in ("layer", "RSS (MB)", "modules"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for name, rss, modules in rows:
        table.add_row(name, f"{rss:.1f}", str(modules))
    console.print(table)

    total, packages = heap()
    table = Table(title=f"The service's Python heap once built: {total:.1f} MB, by package")
    table.add_column("package")
    table.add_column("MB", justify="right")
    for name, size in packages[: args.top]:
        table.add_row(name, f"{size:.2f}")
    rest = packages[args.top :]
    table.add_row(f"{len(rest)} other packages", f"{sum(size for _, size in rest):.2f}")
    console.print(table)
    if args.markdown:
        args.markdown.write_text(markdown(rows, total, packages, args.top))


if __name__ == "__main__":
    main()
