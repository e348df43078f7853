"""Assertions and builders shared by every test package."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, redirect_stderr
from typing import Any

import httpx
import orjson
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.core.logging import configure_logging
from app.core.problems import PROBLEM_BASE
from app.db import TransactionRoute
from app.main import create_app

PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "code", "request_id"}
MERGE_PATCH = "application/merge-patch+json"
_LINK_NEXT = re.compile(r'^<([^>]+)>;\s*rel="next"$')


def assert_problem(
    response: httpx.Response, status: int, code: str, pointer: str | None = None
) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and code (and an error at `pointer`, if given)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["type"] == f"{PROBLEM_BASE}{code}"
    assert body["title"]
    assert body["detail"]
    assert body["instance"] == response.request.url.path
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    if pointer is not None:
        assert pointer in [e["pointer"] for e in body["errors"]], body
    return body


def next_link(response: httpx.Response) -> str | None:
    """The target of the `Link: <...>; rel="next"` header, or None."""
    header = response.headers.get("link")
    if header is None:
        return None
    match = _LINK_NEXT.match(header)
    assert match, header
    return match.group(1)


def items(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["items"]
    return result


def ids(response: httpx.Response) -> list[str]:
    return [item["id"] for item in items(response)]


@asynccontextmanager
async def app_client(
    settings: Settings, setup: Callable[[FastAPI], None] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A fresh app with its own lifespan (own engine), for tests that must not share the test transaction."""
    app = create_app(settings)
    if setup is not None:
        setup(app)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


BLOCKED_WITHIN_SECONDS = 10.0


async def backend_pid(session: AsyncSession) -> int:
    """The PostgreSQL backend of the session's connection (which the session keeps until it commits)."""
    return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def wait_until_blocked(session: AsyncSession, pid: int, task: asyncio.Task[Any]) -> None:
    """Returns once backend `pid` waits on a lock that another backend holds (`pg_blocking_pids`).

    Fails if `task` ends first (it was not held back: the lock is missing) or if it never waits. Unlike a
    sleep followed by `not task.done()`, this holds however slow the machine is."""
    engine = session.bind
    assert isinstance(engine, AsyncEngine)
    deadline = asyncio.get_running_loop().time() + BLOCKED_WITHIN_SECONDS
    async with engine.connect() as observer:
        await observer.execution_options(isolation_level="AUTOCOMMIT")
        while True:
            assert not task.done(), "the competitor finished without waiting on the lock"
            blockers = (
                await observer.execute(text("SELECT pg_blocking_pids(:pid)"), {"pid": pid})
            ).scalar_one()
            if blockers:
                return
            assert asyncio.get_running_loop().time() < deadline, "the competitor never waited on a lock"
            await asyncio.sleep(0.01)


def add_route(app: FastAPI, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
    """A test route on `app`, able to use the request's database session (`SessionDep`)."""
    app.router.add_api_route(path, endpoint, route_class_override=TransactionRoute, **options)


@contextmanager
def stderr_json_logs() -> Iterator[None]:
    """JSON logs on the standard error (which `capsys` captures), the root logger restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers, root.level
    configure_logging("INFO", json_logs=True)
    try:
        yield
    finally:
        root.handlers, root.level = handlers, level


def written_json_lines(capsys: Any) -> list[dict[str, Any]]:
    """The JSON lines the logs wrote (`stderr_json_logs`), their pending batch included."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    return [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]


@contextmanager
def logging_restored() -> Iterator[None]:
    """The root logger's handlers and level, and the library loggers that `configure_logging` takes over,
    as they were: a command run in-process (CliRunner) sets the service's logging up on a stream that is
    closed once the command returns."""
    from app.core.logging import QUIET_LOGGERS, SERVER_LOGGERS

    root = logging.getLogger()
    saved = [(root, list(root.handlers), root.level, root.propagate)] + [
        (lib, list(lib.handlers), lib.level, lib.propagate)
        for lib in (logging.getLogger(name) for name in (*SERVER_LOGGERS, *QUIET_LOGGERS))
    ]
    try:
        yield
    finally:
        for handler in root.handlers:
            if all(handler is not kept for kept in saved[0][1]):
                # Its stream is closed: what it still holds cannot be written anywhere.
                pending = getattr(handler, "_lines", None)
                if pending is not None:
                    pending.clear()
                handler.close()
        for logger, handlers, level, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)


@contextmanager
def service_logs(level: str) -> Iterator[Callable[[], str]]:
    """The service's logging as `configure_logging` sets it up (JSON lines, `level`), its handler writing to
    a buffer instead of the standard error: every record that reaches the root logger's handler, libraries'
    included. Yields a function that returns what was written so far, the waiting batch included; the
    logging is put back as it was afterwards."""
    buffer = io.StringIO()
    with logging_restored():
        with redirect_stderr(buffer):
            configure_logging(level, json_logs=True)

        def written() -> str:
            for handler in logging.getLogger().handlers:
                handler.flush()
            return buffer.getvalue()

        yield written
