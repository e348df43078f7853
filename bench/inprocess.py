"""The three apps in-process (httpx ASGITransport): SQL statements and CPU time per request, answers compared.

Counting: for the service, SQLAlchemy's `before_cursor_execute` (every statement), the statements of the
direct path (`app.core.direct.statement_observers`) and its transactions' BEGIN and COMMIT
(`transaction_observers`), plus the round trips that
never reach a cursor on PostgreSQL (BEGIN, COMMIT or ROLLBACK, and the pool's pre-ping at checkout); for the
reference and minimal apps, the calls on their connections (plus BEGIN and COMMIT around a transaction)."""

from __future__ import annotations

import re
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from asgi_lifespan import LifespanManager
from sqlalchemy import event

from app.core.direct import statement_observers, transaction_observers
from bench.scenarios import APPS, MINIMAL, REFERENCE, SERVICE, Scenario, Step, fill


@dataclass
class Counter:
    statements: int = 0
    round_trips: int = 0

    def reset(self) -> None:
        self.statements = self.round_trips = 0


@dataclass
class Answer:
    status: int
    body: Any
    etag: str | None
    link: bool
    raw: bytes = field(repr=False, default=b"")


class _CountingConnection:
    def __init__(self, conn: Any, counter: Counter) -> None:
        self._conn = conn
        self._counter = counter

    def _count(self) -> None:
        self._counter.statements += 1
        self._counter.round_trips += 1

    async def fetch(self, *args: Any) -> Any:
        self._count()
        return await self._conn.fetch(*args)

    async def fetchrow(self, *args: Any) -> Any:
        self._count()
        return await self._conn.fetchrow(*args)

    async def execute(self, *args: Any) -> Any:
        self._count()
        return await self._conn.execute(*args)

    @asynccontextmanager
    async def transaction(self, *args: Any, **kwargs: Any) -> AsyncIterator[None]:
        self._counter.round_trips += 2
        async with self._conn.transaction(*args, **kwargs):
            yield


class _CountingDatabase:
    """The reference apps' database, counting the statements run through it."""

    def __init__(self, db: Any, counter: Counter) -> None:
        self._db = db
        self._counter = counter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[_CountingConnection]:
        async with self._db.acquire() as conn:
            yield _CountingConnection(conn, self._counter)


def _count_service(engine: Any, counter: Counter) -> tuple[Callable[[str], None], Callable[[str], None]]:
    sync_engine = engine.sync_engine
    postgres = sync_engine.dialect.name == "postgresql"

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _statement(*_args: Any) -> None:
        statement = str(_args[2]).lstrip().upper()
        counter.round_trips += 1
        if not statement.startswith(("BEGIN", "SAVEPOINT", "RELEASE")):
            counter.statements += 1

    if postgres:

        @event.listens_for(sync_engine, "begin")
        def _begin(*_args: Any) -> None:
            counter.round_trips += 1

        @event.listens_for(sync_engine, "checkout")
        def _checkout(*_args: Any) -> None:
            if getattr(sync_engine.pool, "_pre_ping", False):
                counter.round_trips += 1

    @event.listens_for(sync_engine, "commit")
    def _commit(*_args: Any) -> None:
        counter.round_trips += 1

    def _direct(_statement: str) -> None:
        # The direct path's statements, on the driver's connection (app.core.direct).
        counter.statements += 1
        counter.round_trips += 1

    statement_observers.append(_direct)

    def _transaction(_statement: str) -> None:
        counter.round_trips += 1

    transaction_observers.append(_transaction)

    @event.listens_for(sync_engine, "rollback")
    def _rollback(*_args: Any) -> None:
        counter.round_trips += 1

    return _direct, _transaction


@dataclass
class InProcessApp:
    name: str
    client: httpx.AsyncClient
    counter: Counter


@asynccontextmanager
async def open_apps(
    database_url: str, secret_key: str, apps: tuple[str, ...] = APPS, rate_limits: str | None = None
) -> AsyncIterator[dict[str, InProcessApp]]:
    """The apps on `database_url`, started (lifespan) and wrapped for counting; the service with its rate
    limits on (`rate_limits`: their backend, see `bench.scenarios.rate_limit_settings`) or off."""
    from app.config import Settings
    from app.main import create_app
    from bench import minimal_fastapi_app, reference_app

    async with AsyncExitStack() as stack:
        opened: dict[str, InProcessApp] = {}
        for name in apps:
            counter = Counter()
            asgi: Any
            if name == SERVICE:
                asgi = create_app(
                    Settings(
                        database_url=database_url,
                        secret_key=secret_key,
                        log_level="WARNING",
                        log_json=False,
                        # Every request of a benchmark comes from one address.
                        rate_limits_enabled=False,
                        # The open-data scenarios measure the export, as the reference runs it.
                        open_data_cache_seconds=0,
                    ).model_copy(update=_rate_limit_fields(rate_limits))
                )
            elif name == REFERENCE:
                asgi = reference_app.create_app(database_url, secret_key)
            else:
                asgi = minimal_fastapi_app.create_app(database_url, secret_key)
            await stack.enter_async_context(LifespanManager(asgi))
            if name == SERVICE:
                observers = _count_service(asgi.state.engine, counter)
                stack.callback(statement_observers.remove, observers[0])
                stack.callback(transaction_observers.remove, observers[1])
            else:
                asgi.state.db = _CountingDatabase(asgi.state.db, counter)
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=asgi, raise_app_exceptions=False),
                    base_url="http://127.0.0.1",
                )
            )
            opened[name] = InProcessApp(name, client, counter)
        yield opened


def _rate_limit_fields(backend: str | None) -> dict[str, Any]:
    if backend is None:
        return {}
    from bench.scenarios import rate_limit_settings

    settings = rate_limit_settings(backend)
    return {
        "rate_limits_enabled": True,
        "rate_limit_per_key": settings["RATE_LIMIT_PER_KEY"],
        "rate_limit_per_address": settings["RATE_LIMIT_PER_ADDRESS"],
        "rate_limit_registration": settings["RATE_LIMIT_REGISTRATION"],
        "redis_url": settings.get("REDIS_URL"),
    }


def answer(response: httpx.Response) -> Answer:
    body: Any = None
    if response.content:
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = response.text
    return Answer(
        response.status_code, body, response.headers.get("etag"), "link" in response.headers, response.content
    )


async def run_cycle(client: httpx.AsyncClient, steps: list[Step], unique: str) -> list[Answer]:
    """One pass over a scenario's steps (as the wrk script does it)."""
    answers: list[Answer] = []
    last_id = ""
    for step in steps:
        path = step.path.replace("{id}", last_id)
        body = step.body.replace("{unique}", unique) if step.body is not None else None
        response = await client.request(step.method, path, headers=step.headers, content=body)
        answers.append(answer(response))
        if isinstance(answers[-1].body, dict):
            last_id = str(answers[-1].body.get("id", ""))
    return answers


def normalise(value: Any, volatile: frozenset[str]) -> Any:
    """Cursor values and volatile fields compared by presence only."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "next_cursor" and item is not None:
                out[key] = "<cursor>"
            elif key in volatile and item is not None:
                out[key] = f"<{key}>"
            else:
                out[key] = normalise(item, volatile)
        return out
    if isinstance(value, list):
        return [normalise(v, volatile) for v in value]
    return value


def differences(scenario: Scenario, answers: dict[str, list[Answer]]) -> list[str]:
    """What the reference and minimal apps answer differently from the service, step by step."""
    found: list[str] = []
    base = answers.get(SERVICE)
    if base is None:
        return found
    for name, theirs in answers.items():
        if name == SERVICE:
            continue
        for index, (mine, other) in enumerate(zip(base, theirs, strict=True)):
            where = f"{scenario.name}, step {index + 1}, {name}"
            if mine.status != other.status:
                found.append(f"{where}: status {other.status}, the service {mine.status}")
                continue
            if mine.etag != other.etag:
                found.append(f"{where}: ETag {other.etag!r}, the service {mine.etag!r}")
            if mine.link != other.link:
                found.append(
                    f"{where}: Link header {'present' if other.link else 'absent'} unlike the service"
                )
            if mine.status < 300 and normalise(mine.body, scenario.volatile) != normalise(
                other.body, scenario.volatile
            ):
                found.append(f"{where}: JSON differs: {_first_difference(mine.body, other.body)}")
    return found


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return f"{path or '/'}: fields {list(b)} vs the service's {list(a)}"
        for key in a:
            if a[key] != b[key]:
                return _first_difference(a[key], b[key], f"{path}/{key}")
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(b)} items vs the service's {len(a)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{path}/{i}")
    return f"{path}: {b!r} vs the service's {a!r}"


@dataclass
class Measured:
    """Per app: statements and round trips per operation, and the answers of the last pass."""

    statements: dict[str, float] = field(default_factory=dict)
    round_trips: dict[str, float] = field(default_factory=dict)
    answers: dict[str, list[Answer]] = field(default_factory=dict)
    # CPU milliseconds per operation spent in this process, the client's share taken out (see `cpu_cost`).
    cpu_ms: dict[str, float] = field(default_factory=dict)
    # For a row with the rate limits on: the service's CPU time without them, measured in turns with it.
    baseline_cpu_ms: float | None = None


_ID = re.compile(rb'"id":"([0-9a-f-]+)"')


async def _lean_cycle(client: httpx.AsyncClient, steps: list[Step], unique: str) -> None:
    """`run_cycle` without reading the answers beyond the id the next step needs."""
    last_id = ""
    for index, step in enumerate(steps):
        path = step.path.replace("{id}", last_id)
        body = step.body.replace("{unique}", unique) if step.body is not None else None
        response = await client.request(step.method, path, headers=step.headers, content=body)
        if index + 1 < len(steps):
            found = _ID.search(response.content)
            last_id = found.group(1).decode() if found else ""


def _stub(answers: list[Answer]) -> Any:
    """An ASGI app that answers the recorded answers in turn, doing nothing else: the client's own cost."""
    turn = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal turn
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body", False):
            pass
        answer = answers[turn % len(answers)]
        turn += 1
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer.raw)).encode())]
        if answer.etag:
            headers.append((b"etag", answer.etag.encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.raw})

    return app


def timed_from(scenario: Scenario) -> int:
    """The first step that counts: the last one for a sequential scenario (the steps before it prepare it,
    as the HR bulk's first request prepares its replay), else the first."""
    return len(scenario.steps) - 1 if scenario.driver == "sequential" else 0


async def _cpu_per_cycle(
    client: httpx.AsyncClient, steps: list[Step], passes: int, unique: Callable[[], str], first: int = 0
) -> float:
    spent = 0.0
    for _ in range(passes):
        value = unique()
        if first:
            await _lean_cycle(client, steps[:first], value)
        started = time.process_time()
        await _lean_cycle(client, steps[first:], value)
        spent += time.process_time() - started
    return spent * 1000 / passes


async def cpu_cost(
    apps: dict[str, InProcessApp],
    scenario: Scenario,
    values: dict[str, str],
    measured: Measured,
    *,
    passes: int = 50,
    unique: Callable[[], str] = lambda: uuid.uuid4().hex[:12],
) -> None:
    """CPU time per operation of each app in-process (the process's CPU time, so it holds on a busy machine,
    unlike throughput): the driver's own cost, measured against a stub that answers the same bytes, is
    subtracted. It covers the web layer, the driver and the serialisation; not PostgreSQL's work (another
    process), but SQLite's (it runs in-process)."""
    steps = [fill(s, values) for s in scenario.steps]
    first = timed_from(scenario)
    warm = min(5, passes)
    recorded = measured.answers.get(SERVICE) or next(iter(measured.answers.values()))
    transport = httpx.ASGITransport(app=_stub(recorded))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as stub:
        await _cpu_per_cycle(stub, steps, warm, unique, first)
        baseline = await _cpu_per_cycle(stub, steps, passes, unique, first)
    for name, app in apps.items():
        if name not in scenario.apps:
            continue
        await _cpu_per_cycle(app.client, steps, warm, unique, first)
        spent = await _cpu_per_cycle(app.client, steps, passes, unique, first)
        measured.cpu_ms[name] = max(spent - baseline, 0.0)


async def cpu_in_turns(
    first: dict[str, InProcessApp],
    second: dict[str, InProcessApp],
    scenario: Scenario,
    values: dict[str, str],
    measured: Measured,
    *,
    passes: int = 100,
    turns: int = 5,
) -> tuple[float, float]:
    """The service's CPU time per operation in two configurations (`first`, `second`: each a service opened
    by `open_apps`), `passes` operations each in turn, `turns` times: the median of each. Measured in turns,
    a difference smaller than the noise of one measurement (the rate limiter's cost) still shows."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(turns):
        for apps, spent in zip((first, second), times, strict=True):
            one = Measured(answers=measured.answers)
            await cpu_cost(apps, scenario, values, one, passes=passes)
            spent.append(one.cpu_ms[SERVICE])
    return statistics.median(times[0]), statistics.median(times[1])


async def measure(
    apps: dict[str, InProcessApp],
    scenario: Scenario,
    values: dict[str, str],
    *,
    passes: int = 3,
    unique: Callable[[], str] = lambda: uuid.uuid4().hex[:12],
) -> Measured:
    """Runs the scenario `passes` times on each app; counts from the last passes (the first warms caches),
    the steps that only prepare a sequential scenario's timed one left out."""
    steps = [fill(s, values) for s in scenario.steps]
    first = timed_from(scenario)
    measured = Measured()
    for name, app in apps.items():
        if name not in scenario.apps:
            continue
        await run_cycle(app.client, steps, "warm-" + unique())
        app.counter.reset()
        for _ in range(passes):
            value = unique()
            prepared: list[Answer] = []
            if first:
                counted = (app.counter.statements, app.counter.round_trips)
                prepared = await run_cycle(app.client, steps[:first], value)
                app.counter.statements, app.counter.round_trips = counted
            measured.answers[name] = prepared + await run_cycle(app.client, steps[first:], value)
        measured.statements[name] = app.counter.statements / passes
        measured.round_trips[name] = app.counter.round_trips / passes
    return measured


__all__ = ["MINIMAL", "REFERENCE", "SERVICE", "Measured", "differences", "measure", "open_apps"]
