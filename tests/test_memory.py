"""What a worker holds: no library it does not use; SQLite's page cache per connection as configured.

`bench.memory` measures it (the libraries' floor layer by layer, the service's heap by package); these tests
keep what it measured from coming back unnoticed. Each import check runs in a fresh interpreter, as a worker
starts."""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.db import make_engine
from bench import memory
from tests.conftest import IS_POSTGRES

ROOT = Path(__file__).resolve().parents[1]


def _modules_after(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        cwd=ROOT,
        env=memory._env(),  # the settings bench.memory builds the apps with
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def _packages(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_a_worker_does_not_load_what_it_never_uses() -> None:
    """rich (structlog's pretty tracebacks; the lines format exceptions as plain text) and icalendar (until a
    calendar is asked for): about 8 MB in every worker."""
    loaded = _packages(_modules_after("import app.main\napp.main.preloaded_app()"))
    assert {"fastapi", "sqlalchemy"} <= loaded  # the check itself sees imports
    assert not loaded & {"rich", "pygments", "icalendar", "dateutil"}


def test_the_served_app_keeps_its_start_up_heap_out_of_the_collectors_reach() -> None:
    """One worker (uvicorn's factory) or several (gunicorn's preloading master): the app is built by
    `preloaded_app`, which freezes what building it made, so that the collector's full passes walk only what
    requests make (a fifth of a large CSV export's CPU time, `bench.csv_export`)."""
    from app.cli import server_command

    assert "app.main:preloaded_app" in server_command("127.0.0.1", 8000, 1, 75)
    assert "app.main:preloaded_app()" in server_command("127.0.0.1", 8000, 2, 75)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import gc, app.main\nbefore = gc.get_freeze_count()\napp.main.preloaded_app()\n"
            "print(before, gc.get_freeze_count(), len(gc.get_objects()))",
        ],
        cwd=ROOT,
        env=memory._env(),
        capture_output=True,
        text=True,
        check=True,
    )
    before, frozen, tracked = map(int, done.stdout.split()[-3:])
    assert before == 0
    # Most of the heap: the modules, routes, models and mappers (hundreds of thousands of objects).
    assert frozen > 100_000
    assert tracked < frozen / 10


def test_each_route_is_built_once_as_it_is_served() -> None:
    """An included router's routes are built again for every level they are included through (their
    dependants and validators: 6.6 MB of RSS for the service's three levels, `bench.memory`). The app serves
    the routes as they were declared, with their whole path, the caller's check and the documented operation
    id: nothing in its routing table is an included router, and every route is the one its router holds."""
    from fastapi.routing import APIRoute, iter_route_contexts
    from starlette.routing import Mount, Route

    from app.api import API_ROUTERS
    from app.core.auth import get_principal
    from app.core.routers import API_PREFIX
    from app.main import create_app

    app = create_app()
    # Routes, and the Mount of Swagger UI's own files.
    assert all(isinstance(route, (Route, Mount)) for route in app.router.routes)
    served = list(iter_route_contexts(app.router.routes))
    declared = [route for router in API_ROUTERS for route in router.routes]
    api_routes = [c.route for c in served if str(c.path).startswith(API_PREFIX)]
    assert len(declared) > 60
    assert [id(route) for route in api_routes] == [id(route) for route in declared]
    for route in api_routes:
        assert isinstance(route, APIRoute)
        assert route.dependencies[0].dependency is get_principal, route.path
        assert route.unique_id == route.name


def test_a_router_whose_handlers_the_app_would_not_run_is_refused() -> None:
    """The app takes its routers' routes, not their start-up and shutdown handlers: such a router is refused
    when the app is built rather than served without them."""
    from fastapi import APIRouter

    from app.core.routers import api_router, routes_of

    async def start() -> None:
        return None

    plain = api_router("/things", tags=["things"])
    assert routes_of([plain]) == []
    handled = APIRouter(prefix="/api/v1/things", on_startup=[start])
    with pytest.raises(TypeError, match="lifespan"):
        routes_of([plain, handled])


def test_rich_still_imports_after_the_logging_setup() -> None:
    """The CLI's progress bars: keeping rich out of structlog's import must not keep it out for good."""
    loaded = _modules_after("import app.core.logging\nimport rich.console\nrich.console.Console()")
    assert "rich.console" in loaded


def test_the_reference_app_loads_neither_the_orm_nor_fastapi() -> None:
    """The benchmark's reference is raw asyncpg, orjson and Starlette: sharing the service's search rules must
    not bring its ORM models (and their memory) along, or the memory column compares the wrong thing."""
    loaded = _packages(_modules_after("import bench.reference_app\nbench.reference_app.create_app()"))
    assert "starlette" in loaded
    assert not loaded & {"sqlalchemy", "fastapi", "pydantic"}


@pytest.mark.skipif(IS_POSTGRES, reason="SQLite's page cache")
async def test_sqlite_cache_kib_sets_each_connection_s_page_cache(app: FastAPI, tmp_path: Path) -> None:
    """Each connection keeps its own page cache: SQLITE_CACHE_KIB trades it for the searches' speed."""
    async with app.state.engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA cache_size"))).scalar_one() == -2000

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'cache.db'}", sqlite_cache_kib=256)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA cache_size"))).scalar_one() == -256
    finally:
        await engine.dispose()


def test_the_memory_tool_measures_a_layer_and_writes_its_tables() -> None:
    first = memory.LAYERS[0]
    measured = memory._run(memory._CHILD.format(modules=first.modules, build=first.build))
    assert int(measured["rss_kib"]) > 1024  # type: ignore[call-overload]
    assert int(measured["modules"]) > 10  # type: ignore[call-overload]
    text_ = memory.markdown([(first.name, 20.0, 150)], 55.0, [("sqlalchemy", 18.8), ("app", 8.7)], top=1)
    assert "| Python, asyncio | 20.0 | 150 |" in text_
    assert "| sqlalchemy | 18.80 |" in text_
    assert "| 1 other packages | 8.70 |" in text_


def test_every_app_the_memory_tool_builds_is_there() -> None:
    builds = [layer.build for layer in memory.LAYERS if layer.build]
    assert len(builds) == 3
    for build in builds:
        module, function = build.split(":")
        assert callable(getattr(importlib.import_module(module), function))
    for layer in memory.LAYERS:
        for name in layer.modules:
            assert importlib.util.find_spec(name) is not None, name


def test_the_memory_tool_counts_the_service_heap_by_package() -> None:
    total, packages = memory.heap()
    sizes = dict(packages)
    assert total > 20
    assert sizes["sqlalchemy"] > 5
    assert sizes["app"] > 1
    assert sizes.get("rich", 0) < 0.05  # its import is refused (app.core.logging), nothing loads
    assert sum(sizes.values()) == pytest.approx(total)
