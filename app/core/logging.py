"""Structured JSON logs (structlog), with the request id on every line; the servers' (uvicorn, gunicorn) and
Alembic's lines go through the same formatter."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson

if "structlog" in sys.modules or "rich" in sys.modules:
    import structlog
else:
    # structlog imports rich, when it is installed (the CLI's progress bars), for its console renderer's
    # pretty tracebacks. The lines here format exceptions as plain text (`format_exc_info` below) and never
    # use them: keeping rich out of that import spares about 4 MB of RSS in every worker. structlog's own
    # rich formatters (`structlog.dev.rich_traceback`) then stay off for the whole process; rich itself
    # still imports normally afterwards.
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog
    finally:
        del sys.modules["rich"]

ACCESS_LOGGER = "app.access"
# Libraries that install handlers of their own (uvicorn's and gunicorn's logging set-ups, Alembic's
# alembic.ini) or keep their loggers apart: their records go to the root's handler instead, so that every
# line has one format.
SERVER_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.asgi",
    "gunicorn",
    "gunicorn.error",
    "gunicorn.access",
    "alembic",
    "sqlalchemy",
)
# Libraries whose debug and info lines may carry what the logs must not: aiosqlite logs each statement with
# its bound values (a registration's name and email) at DEBUG, httpx each request's URL at INFO (a webhook
# subscriber's, whose query string may hold a token), urllib3 its URLs and hpack the HTTP/2 headers it
# decodes at DEBUG; httpcore, asyncpg and the multipart parser (a form's body) are kept to the same rule.
# They log at WARNING and above whatever LOG_LEVEL: LOG_LEVEL=DEBUG adds the service's own debug lines,
# not theirs.
QUIET_LOGGERS = (
    "aiosqlite",
    "asyncpg",
    "httpx",
    "httpcore",
    "hpack",
    "urllib3",
    "multipart",
    "python_multipart",
)
# Keys that libraries pass as `extra` and that mean nothing in a JSON line (uvicorn's coloured copy of
# its message).
_DROPPED_EXTRAS = ("color_message",)


def _drop_extras(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in _DROPPED_EXTRAS:
        event.pop(key, None)
    return event


def _orjson_text(value: Any, **options: Any) -> str:
    """structlog's JSON lines serialised as the access log's are (orjson: no spaces), one format. What
    orjson refuses (an integer past 64 bits) goes through the standard library, in the same compact form."""
    default = options.get("default", str)
    try:
        return orjson.dumps(value, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value, default=default, separators=(",", ":"), ensure_ascii=False)


class ToRootHandler(logging.Handler):
    """Hands a record to the root logger's handlers. A library that keeps its logger apart
    (`propagate = False`, as gunicorn does for `gunicorn.error`, and uvicorn's gunicorn worker for
    `uvicorn.error`, copying gunicorn's handlers) still writes through the service's formatter."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger().handle(record)


class _Formatter(logging.Formatter):
    """structlog's formatter, but for the access log's lines in JSON, which are written straight with orjson.

    One line per request: through structlog's chain of processors and `json.dumps`, it took more of a worker's
    time than the statement of a small read. The line holds the same keys, in the same order."""

    def __init__(self, structured: logging.Formatter) -> None:
        super().__init__()
        self._structured = structured

    def format(self, record: logging.LogRecord) -> str:
        if record.name != ACCESS_LOGGER or record.exc_info:
            return self._structured.format(record)
        line = {
            "event": record.getMessage(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", None),
            "status": getattr(record, "status", None),
            "duration_ms": getattr(record, "duration_ms", None),
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
        }
        return orjson.dumps(line, default=str).decode()


# The servers' own lines (starting, stopping, a worker booted): few, and uvicorn ends its process with the
# signal it received right after its last line, before the writer thread or `logging.shutdown` could write
# a waiting batch.
_WRITTEN_AT_ONCE = frozenset({"uvicorn", "uvicorn.error", "gunicorn", "gunicorn.error"})


class _BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes the lines of INFO and below in batches: at most `interval` seconds after the first of them, or
    as soon as `capacity` lines wait; a WARNING or above, and the servers' lines (`_WRITTEN_AT_ONCE`), are
    written at once, after the lines before them.

    One write (and one system call) per batch instead of one per request: the access log's line had cost a
    small read a write of its own. The lines keep their order. A batch waits at most `interval` seconds
    (a thread of each process writes it), and whatever is left is written when the process exits
    (`logging.shutdown`); a process killed outright loses at most that last fraction of a second. A process
    about to fork writes its batch first, and the child starts with none (gunicorn forks its workers from a
    parent that loaded the application)."""

    def __init__(self, stream: Any, interval: float = 0.25, capacity: int = 512) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._interval = interval
        self._capacity = capacity
        self._writer: threading.Thread | None = None
        self._writer_pid: int | None = None
        self._closed = False
        ref = weakref.ref(self)

        def before_fork() -> None:
            handler = ref()
            if handler is not None:
                handler.flush()

        def in_child() -> None:
            handler = ref()
            if handler is not None:
                handler._lines.clear()

        os.register_at_fork(before=before_fork, after_in_child=in_child)

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held (`Handler.handle`).
        try:
            self._lines.append(self.format(record))
            if (
                record.levelno >= logging.WARNING
                or record.name in _WRITTEN_AT_ONCE
                or len(self._lines) >= self._capacity
            ):
                self._write()
            elif self._writer is None or self._writer_pid != os.getpid() or not self._writer.is_alive():
                # This process's writer: a forked worker has none of its parent's threads.
                self._writer_pid = os.getpid()
                self._writer = threading.Thread(target=self._run, name="log-writer", daemon=True)
                self._writer.start()
        except Exception:
            self.handleError(record)

    def _write(self) -> None:
        if self._lines:
            text = "\n".join(self._lines) + self.terminator
            self._lines.clear()
            self.stream.write(text)
            self.stream.flush()

    def flush(self) -> None:
        self.acquire()
        try:
            self._write()
        except Exception:
            # A write that fails (a closed or broken stream) loses that batch, as a failed line would;
            # the next batches are still attempted.
            logging.Handler.handleError(self, logging.makeLogRecord({"msg": "log batch lost"}))
        finally:
            self.release()

    def close(self) -> None:
        self.flush()
        self._closed = True
        super().close()

    def write_each_line(self) -> None:
        """From now on every line is written at once (what waits is written now)."""
        self.acquire()
        try:
            self._capacity = 1
        finally:
            self.release()
        self.flush()

    def _run(self) -> None:
        while not self._closed:
            time.sleep(self._interval)
            self.flush()


UNRAISABLE_LOGGER = "py.unraisable"


class _UnraisableToLog:
    """`sys.unraisablehook`: an exception that Python cannot raise (in a `__del__`, a weak reference's
    callback, a generator closed by the garbage collector) becomes an ERROR line with its traceback, where
    Python's default hook prints text on the standard error. A hook set before this one (an error
    tracker's, the test runner's) still gets it."""

    def __init__(self, previous: Callable[[sys.UnraisableHookArgs], object] | None) -> None:
        self.previous = previous

    def __call__(self, unraisable: sys.UnraisableHookArgs) -> None:
        try:
            message = unraisable.err_msg or "Exception ignored in"
            if unraisable.object is not None:
                try:
                    described = repr(unraisable.object)
                except Exception:
                    described = "<object repr() failed>"
                message = f"{message}: {described}"
            error = unraisable.exc_value
            logging.getLogger(UNRAISABLE_LOGGER).error(
                "%s",
                message,
                exc_info=(type(error), error, unraisable.exc_traceback) if error is not None else None,
            )
        finally:
            if self.previous is not None:
                self.previous(unraisable)


def _log_what_python_prints() -> None:
    """Warnings (SQLAlchemy's connection left to the garbage collector, a coroutine never awaited) and
    unraisable exceptions go through the logs: Python would print them on the standard error as text, among
    the JSON lines."""
    logging.captureWarnings(True)
    hook = sys.unraisablehook
    if not isinstance(hook, _UnraisableToLog):
        sys.unraisablehook = _UnraisableToLog(None if hook is sys.__unraisablehook__ else hook)


def stopping() -> None:
    """The process is stopping: its last lines are written at once, not batched. A server stopped by SIGTERM
    may end without `logging.shutdown` (uvicorn, once shut down, raises the signal it caught again, with
    the default action: the process dies at once), which would lose the last batch: the requests answered
    while it drained, its shutdown's own lines."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _BatchingHandler):
            handler.write_each_line()


def configure_logging(level: str = "INFO", json_logs: bool = True) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _drop_extras,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=_orjson_text)
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    # The lines name no source file: each record need not look it up (the optimisation of the logging
    # HOWTO; the caller's frame is the most costly, a walk up the stack). The thread and process ids stay
    # (under a microsecond a record): a formatter that prints them with `%(process)d` (gunicorn's) fails on
    # the None that `logProcesses = False` leaves, and its line is lost.
    logging._srcfile = None
    logging.logMultiprocessing = False
    handler = _BatchingHandler(sys.stderr)
    handler.setFormatter(_Formatter(formatter) if json_logs else formatter)
    root = logging.getLogger()
    for previous in root.handlers:
        if isinstance(previous, _BatchingHandler):
            previous.close()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in SERVER_LOGGERS:
        # Through the root's handler, and through it only (their own handlers went, and they do not
        # propagate, so that a line is not written twice).
        library = logging.getLogger(name)
        library.handlers = [ToRootHandler()]
        library.propagate = False
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    _log_what_python_prints()
    # uvicorn's access log prints query strings, which may hold personal data: ours replaces it.
    logging.getLogger("uvicorn.access").disabled = True
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
