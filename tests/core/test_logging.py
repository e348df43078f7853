"""The access log's lines (one per request, JSON): the keys operators read, the request's template and
never its query string (which may hold personal data), through the fast writer of these lines."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from app.config import Settings
from app.core.logging import ACCESS_LOGGER, _BatchingHandler, configure_logging
from tests.helpers import add_route, app_client, written_json_lines
from tests.helpers import stderr_json_logs as json_logs


@pytest.fixture
def stderr_json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    """JSON logs on the standard error that `capsys` captures."""
    with json_logs():
        yield


def _written(capsys: pytest.CaptureFixture[str]) -> str:
    """What the logs wrote, their pending batch included."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    return capsys.readouterr().err


async def test_an_access_line_per_request(
    settings: Settings, stderr_json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    async with app_client(settings.model_copy(update={"log_level": "INFO", "log_json": True})) as client:
        logging.getLogger().setLevel(logging.INFO)
        capsys.readouterr()
        response = await client.get(
            "/api/v1/territories",
            params={"q": "camille.exemple@example.org"},
            headers={"X-Request-ID": "r-1"},
        )
    lines = [orjson.loads(line) for line in _written(capsys).splitlines() if ACCESS_LOGGER in line]
    assert response.status_code == 200
    assert len(lines) == 1
    line = lines[0]
    assert list(line) == ["event", "level", "logger", "request_id", "status", "duration_ms", "timestamp"]
    assert line["event"] == "GET /api/v1/territories 200"
    assert (line["level"], line["logger"], line["request_id"], line["status"]) == (
        "info",
        ACCESS_LOGGER,
        "r-1",
        200,
    )
    assert isinstance(line["duration_ms"], float)
    assert line["timestamp"].endswith("Z")
    assert "example.org" not in orjson.dumps(line).decode()


def test_other_lines_go_through_structlog(stderr_json_logs: None) -> None:
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler))
    assert handler.formatter is not None
    record = logging.getLogger("app").makeRecord(
        "app", logging.WARNING, __file__, 1, "something %s", ("happened",), None, extra={"status": 503}
    )
    line = orjson.loads(handler.formatter.format(record))
    assert line["event"] == "something happened"
    assert (line["level"], line["logger"], line["status"]) == ("warning", "app", 503)


@pytest.fixture
def batching_logger() -> Iterator[Callable[..., tuple[logging.Logger, _BatchingHandler]]]:
    made: list[tuple[logging.Logger, _BatchingHandler]] = []

    def make(name: str, **options: Any) -> tuple[logging.Logger, _BatchingHandler]:
        handler = _BatchingHandler(sys.stderr, **options)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
        made.append((logger, handler))
        return logger, handler

    yield make
    for logger, handler in made:
        logger.removeHandler(handler)
        logger.propagate = True
        handler.close()


def test_lines_are_written_in_batches_in_their_order(
    capsys: pytest.CaptureFixture[str],
    batching_logger: Callable[..., tuple[logging.Logger, _BatchingHandler]],
) -> None:
    """INFO lines wait for their batch (one write for many requests); a WARNING writes the batch at once,
    after the lines before it."""
    logger, _handler = batching_logger("tests.batching.order", interval=3600)
    capsys.readouterr()
    logger.info("first")
    logger.info("second")
    assert capsys.readouterr().err == ""
    logger.warning("third")
    assert capsys.readouterr().err == "first\nsecond\nthird\n"


def test_a_waiting_batch_is_written_by_the_writer_thread(
    capsys: pytest.CaptureFixture[str],
    batching_logger: Callable[..., tuple[logging.Logger, _BatchingHandler]],
) -> None:
    logger, _handler = batching_logger("tests.batching.timer", interval=0.05)
    capsys.readouterr()
    logger.info("waiting")
    deadline = time.monotonic() + 10
    written = ""
    while not written and time.monotonic() < deadline:
        time.sleep(0.02)
        written = capsys.readouterr().err
    assert written == "waiting\n"


def test_a_forked_child_does_not_write_its_parents_batch(
    capsys: pytest.CaptureFixture[str],
    batching_logger: Callable[..., tuple[logging.Logger, _BatchingHandler]],
) -> None:
    """The parent writes its batch before the fork; the child starts with none (gunicorn's preloaded
    parent and its workers)."""
    logger, handler = batching_logger("tests.batching.fork", interval=3600)
    capsys.readouterr()
    logger.info("before the fork")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0 if not handler._lines else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert capsys.readouterr().err == "before the fork\n"


def test_a_full_batch_is_written_without_waiting(
    capsys: pytest.CaptureFixture[str],
    batching_logger: Callable[..., tuple[logging.Logger, _BatchingHandler]],
) -> None:
    logger, handler = batching_logger("tests.batching.full", interval=3600, capacity=3)
    capsys.readouterr()
    for n in range(4):
        logger.info("line %d", n)
    assert capsys.readouterr().err == "line 0\nline 1\nline 2\n"
    handler.flush()
    assert capsys.readouterr().err == "line 3\n"


def test_a_servers_line_is_written_at_once(
    capsys: pytest.CaptureFixture[str],
    batching_logger: Callable[..., tuple[logging.Logger, _BatchingHandler]],
) -> None:
    """uvicorn ends its process with the signal it received right after its last line ("Finished server
    process"), before a waiting batch could be written: its lines, and the batch before them, go at once."""
    access, handler = batching_logger("tests.batching.server", interval=3600)
    server = logging.getLogger("uvicorn.error")
    saved = (list(server.handlers), server.propagate, server.level)
    server.handlers, server.propagate = [handler], False
    server.setLevel(logging.INFO)
    try:
        capsys.readouterr()
        access.info("GET /healthz 200")
        assert capsys.readouterr().err == ""
        server.info("Finished server process")
        assert capsys.readouterr().err == "GET /healthz 200\nFinished server process\n"
    finally:
        server.handlers, server.propagate = saved[0], saved[1]
        server.setLevel(saved[2])


@pytest.fixture
def server_loggers() -> Iterator[None]:
    """The loggers that uvicorn's and gunicorn's set-ups change, restored after the test."""
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error", "alembic")
    saved = {
        name: (
            list(logging.getLogger(name).handlers),
            logging.getLogger(name).propagate,
            logging.getLogger(name).disabled,
            logging.getLogger(name).level,
        )
        for name in names
    }
    try:
        yield
    finally:
        for name, (handlers, propagate, disabled, level) in saved.items():
            library = logging.getLogger(name)
            library.handlers, library.propagate, library.disabled = handlers, propagate, disabled
            library.setLevel(level)


def test_a_formatter_that_prints_the_process_id_still_works(stderr_json_logs: None) -> None:
    """gunicorn's own format is `%(asctime)s [%(process)d] [%(levelname)s] %(message)s`: its "worker was sent
    SIGKILL" line must not become a `--- Logging error ---`."""
    record = logging.getLogger("gunicorn.error").makeRecord(
        "gunicorn.error", logging.ERROR, __file__, 1, "Worker (pid:%s) was sent SIGKILL!", (42,), None
    )
    line = logging.Formatter("[%(process)d] [%(thread)d] %(message)s").format(record)
    assert line.startswith(f"[{os.getpid()}] [")
    assert line.endswith("Worker (pid:42) was sent SIGKILL!")


def test_server_and_migration_lines_are_json_like_the_others(
    server_loggers: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """uvicorn configures its loggers before it loads the application, gunicorn gives its own a text
    handler and keeps it apart, Alembic's lines are plain: after the service's set-up, all are JSON."""
    import logging.config

    from uvicorn.config import LOGGING_CONFIG

    root = logging.getLogger()
    handlers, level = root.handlers, root.level
    logging.config.dictConfig(LOGGING_CONFIG)
    gunicorn = logging.getLogger("gunicorn.error")
    text_handler = logging.StreamHandler(sys.stderr)
    text_handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] [%(levelname)s] %(message)s"))
    gunicorn.handlers, gunicorn.propagate = [text_handler], False
    try:
        configure_logging("INFO", json_logs=True)
        capsys.readouterr()
        logging.getLogger("uvicorn.error").info(
            "Started server process [%d]",
            7,
            extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"},
        )
        gunicorn.error("Worker (pid:%s) was sent SIGKILL! Perhaps out of memory?", 8)
        logging.getLogger("alembic.runtime.migration").info("Running upgrade 0001 -> 0002, programmes")
        written = _written(capsys)
    finally:
        root.handlers, root.level = handlers, level
    lines = [orjson.loads(line) for line in written.splitlines()]
    assert [(line["logger"], line["level"], line["event"]) for line in lines] == [
        ("uvicorn.error", "info", "Started server process [7]"),
        ("gunicorn.error", "error", "Worker (pid:8) was sent SIGKILL! Perhaps out of memory?"),
        ("alembic.runtime.migration", "info", "Running upgrade 0001 -> 0002, programmes"),
    ]
    assert all("color_message" not in line and line["timestamp"].endswith("Z") for line in lines)


async def test_a_request_without_an_api_route_is_logged_without_its_path(
    settings: Settings, stderr_json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The OpenAPI document and Swagger UI's files are served by routes that are not the API's: their
    line names that route's template; a 404 that matches nothing says `-`, never its path (which may hold
    a name) nor its query string."""
    async with app_client(settings.model_copy(update={"log_level": "INFO", "log_json": True})) as client:
        logging.getLogger().setLevel(logging.INFO)
        capsys.readouterr()
        statuses = [
            (await client.get(path)).status_code
            for path in (
                "/openapi.json",
                "/static-offline-docs/swagger-ui.css",
                "/nowhere/camille?email=camille.exemple@example.org",
                "/api/v1/territories/departement/69",
            )
        ]
    events = [orjson.loads(line)["event"] for line in _written(capsys).splitlines() if ACCESS_LOGGER in line]
    assert statuses == [200, 200, 404, 404]
    assert events == [
        "GET /openapi.json 200",
        "GET /static-offline-docs/{path} 200",
        "GET - 404",
        # A route's 404 (no such territory) keeps the route's template: never the values of its path.
        "GET /api/v1/territories/{kind}/{code} 404",
    ]


def test_values_orjson_refuses_still_make_a_json_line(stderr_json_logs: None) -> None:
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler))
    assert handler.formatter is not None
    record = logging.getLogger("app").makeRecord(
        "app", logging.INFO, __file__, 1, "counted", (), None, extra={"total": 2**70, "by_year": {2026: 3}}
    )
    line = handler.formatter.format(record)
    assert orjson.loads(line)["total"] == 2**70
    assert '"by_year":{"2026":3}' in line


def test_warnings_and_unraisable_exceptions_are_json_lines_too() -> None:
    """Python prints a warning (SQLAlchemy's connection left to the garbage collector, a coroutine never
    awaited) and an exception it cannot raise (in a `__del__`, a callback) on the standard error, as text:
    with the service's set-up they are log lines, JSON like the others."""
    script = textwrap.dedent(
        """
        import gc
        import warnings

        from app.core.logging import configure_logging

        configure_logging("INFO", json_logs=True)
        warnings.warn("a warning's message", RuntimeWarning)

        class Faulty:
            def __del__(self):
                raise ValueError("raised by a finaliser")

        Faulty()

        async def never_awaited():
            pass

        never_awaited()
        gc.collect()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if not _is_json(line)] == []
    lines = [orjson.loads(line) for line in done.stderr.splitlines()]
    assert len(lines) == 3, lines
    warning, unraisable, coroutine = lines
    assert (warning["logger"], warning["level"]) == ("py.warnings", "warning")
    assert "RuntimeWarning: a warning's message" in warning["event"]
    assert (unraisable["logger"], unraisable["level"]) == ("py.unraisable", "error")
    assert unraisable["event"].startswith("Exception ignored in: <")
    assert "Faulty" in unraisable["event"]
    assert "ValueError: raised by a finaliser" in unraisable["exception"]
    assert (coroutine["logger"], coroutine["level"]) == ("py.warnings", "warning")
    assert "coroutine 'never_awaited' was never awaited" in coroutine["event"]


def _is_json(line: str) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def _add_database_failures(app: FastAPI) -> None:
    """Routes whose database fails: a bug (500), an outage (503), a conflict (409), each logged."""

    async def bad_sql(thing_id: str) -> None:
        raise ProgrammingError("SELECT secret_column", {}, Exception('column "secret_column" does not exist'))

    async def lost(thing_id: str) -> None:
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    async def conflict(thing_id: str) -> None:
        raise IntegrityError("INSERT INTO things", {}, Exception("duplicate key"))

    add_route(app, "/things/{thing_id}/bad-sql", bad_sql)
    add_route(app, "/things/{thing_id}/lost", lost)
    add_route(app, "/things/{thing_id}/conflict", conflict)


async def test_every_line_of_a_request_has_its_request_id(
    settings: Settings, stderr_json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lines a request's failures write (a 500's traceback, a lost database, a conflict) carry its
    request id, as its access line does, so that the id a client quotes finds them; a line written once
    the request has ended carries none."""
    update = {"log_level": "INFO", "log_json": True}
    async with app_client(settings.model_copy(update=update), _add_database_failures) as client:
        capsys.readouterr()
        statuses = [
            (await client.get(f"/things/t/{name}", headers={"X-Request-ID": "r-9"})).status_code
            for name in ("bad-sql", "lost", "conflict")
        ]
        logging.getLogger("app.problems").warning("after the request")
    lines = written_json_lines(capsys)
    assert statuses == [500, 503, 409]
    problems = [line for line in lines if line["logger"] == "app.problems"]
    assert [(line["level"], line["request_id"]) for line in problems[:3]] == [
        ("error", "r-9"),
        ("error", "r-9"),
        ("warning", "r-9"),
    ]
    assert "ProgrammingError" in problems[0]["exception"]
    assert problems[3]["event"] == "after the request"
    assert "request_id" not in problems[3]
    assert len(problems) == 4


async def test_error_lines_name_the_route_template_not_the_path(
    settings: Settings, stderr_json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A path's values (an id, a name) never reach the logs: an error line names its route's template."""
    update = {"log_level": "INFO", "log_json": True}
    async with app_client(settings.model_copy(update=update), _add_database_failures) as client:
        capsys.readouterr()
        for name in ("bad-sql", "conflict"):
            await client.get(f"/things/camille-exemple/{name}")
    lines = written_json_lines(capsys)
    assert [line["event"] for line in lines if line["logger"] == "app.problems"] == [
        "unhandled error on GET /things/{thing_id}/bad-sql",
        "integrity error on GET /things/{thing_id}/conflict",
    ]
    # (httpx, the test's client, logs the URL it asked for.)
    assert "camille" not in orjson.dumps([line for line in lines if line["logger"] != "httpx"]).decode()
