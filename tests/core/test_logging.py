"""The access log's lines (one per request, JSON): the keys operators read, the request's template and
never its query string (which may hold personal data), through the fast writer of these lines."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest

from app.config import Settings
from app.core.logging import ACCESS_LOGGER, configure_logging
from tests.helpers import app_client


@pytest.fixture
def stderr_json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    """JSON logs on the standard error that `capsys` captures."""
    root = logging.getLogger()
    handlers, level = root.handlers, root.level
    configure_logging("INFO", json_logs=True)
    try:
        yield
    finally:
        root.handlers, root.level = handlers, level


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
    lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines() if ACCESS_LOGGER in line]
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
    handler = next(h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler)
    assert handler.formatter is not None
    record = logging.getLogger("app").makeRecord(
        "app", logging.WARNING, __file__, 1, "something %s", ("happened",), None, extra={"status": 503}
    )
    line = orjson.loads(handler.formatter.format(record))
    assert line["event"] == "something happened"
    assert (line["level"], line["logger"], line["status"]) == ("warning", "app", 503)
