"""Structured JSON logs (structlog), with the request id on every line."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson
import structlog

ACCESS_LOGGER = "app.access"


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


def configure_logging(level: str = "INFO", json_logs: bool = True) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(formatter) if json_logs else formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log prints query strings, which may hold personal data: ours replaces it.
    logging.getLogger("uvicorn.access").disabled = True
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
