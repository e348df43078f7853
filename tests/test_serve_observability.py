"""`cnfs-api serve` as an operator runs it: every line it writes, from the start to a SIGTERM, is one JSON
object with the common keys and without personal data or secrets; with several workers, one scrape of /metrics
counts every worker's requests and gauges, also after a worker was killed."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.test_serve import Server, serve

COMMON_KEYS = {"event", "level", "logger", "timestamp"}
SECRET = "cnfs_" + "S" * 40
EMAIL = "camille.exemple@example.org"


def _counter(server: Server, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def _raw(server: Server, data: bytes) -> None:
    """Bytes that are not HTTP: the server's own error line."""
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
        sock.sendall(data)
        with contextlib.suppress(OSError):
            sock.recv(1024)


def _requests(server: Server) -> None:
    api = f"{server.url}/api/v1"
    assert httpx.get(f"{api}/territories", params={"limit": 2}, timeout=10).status_code == 200
    assert httpx.get(f"{api}/territories", params={"q": EMAIL}, timeout=10).status_code == 200
    assert (
        httpx.get(f"{api}/me", headers={"Authorization": f"Bearer {SECRET}"}, timeout=10).status_code == 401
    )
    assert httpx.get(f"{api}/territories", params={"limit": "x"}, timeout=10).status_code == 422
    registration = {"first_name": "Camille", "last_name": "Exemple", "email": EMAIL}
    answer = httpx.post(
        f"{api}/workshops/019abc3e-5f6a-7b8c-9d0e-1f2a3b4c5d6e/registrations", json=registration
    )
    assert answer.status_code == 404
    _raw(server, b"NOT HTTP AT ALL\r\n\r\n")


def _assert_json_lines(log: Path) -> list[dict[str, Any]]:
    text = log.read_text(encoding="utf-8")
    lines = []
    for line in text.splitlines():
        assert line.strip(), "an empty line"
        parsed = orjson.loads(line)
        assert isinstance(parsed, dict), line
        assert parsed.keys() >= COMMON_KEYS, line
        assert parsed["level"] in {"debug", "info", "warning", "error", "critical"}, line
        assert parsed["timestamp"].endswith("Z"), line
        lines.append(parsed)
    # No personal data, no secrets: the key sent, the query string's email, the registrant, SECRET_KEY.
    for secret in (SECRET, EMAIL, "Exemple", "serve-test-"):
        assert secret not in text
    assert "Traceback (most recent call last)" not in text
    return lines


@pytest.mark.parametrize("workers", [1, 2])
def test_every_line_is_json_until_sigterm(tmp_path: Path, workers: int) -> None:
    with serve(tmp_path, "--workers", str(workers)) as server:
        _requests(server)
        pids = server.workers() if workers > 1 else [server.process.pid]
        server.process.send_signal(signal.SIGTERM)
        # uvicorn stops gracefully, then ends as the signal says (-15); gunicorn's arbiter exits 0.
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    lines = _assert_json_lines(server.log)
    events = [(line["logger"], line["event"]) for line in lines]
    assert ("app.cli", f"Swagger UI: {server.url}/docs") in events
    assert ("app.access", "GET /api/v1/territories 200") in events
    assert ("app.access", "POST /api/v1/workshops/{workshop_id}/registrations 404") in events
    assert any(event == "Invalid HTTP request received." for _, event in events), events
    access = [line for line in lines if line["logger"] == "app.access"]
    assert all(isinstance(line["request_id"], str) and line["request_id"] for line in access)
    assert {line["status"] for line in access} >= {200, 401, 404, 422}
    if workers == 1:
        # uvicorn's shutdown lines, written before it ends its process with the signal.
        assert ("uvicorn.error", "Application shutdown complete.") in events
        assert any(event.startswith("Finished server process") for _, event in events), events
    else:
        # gunicorn writes its warnings and errors (`--log-level warning`): its workers' last access lines.
        assert len(pids) == workers


def _served_by(directory: Path, pids: list[int], labels: dict[str, str]) -> dict[int, float]:
    """The requests each worker has counted, read from its own file in the metrics' directory."""
    served = {}
    for pid in pids:
        with tempfile.TemporaryDirectory() as alone:
            for file in directory.glob(f"counter_{pid}.db"):
                shutil.copy(file, alone)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=alone)  # type: ignore[no-untyped-call]
            value = registry.get_sample_value("http_requests_total", labels)
        served[pid] = value or 0.0
    return served


def test_two_workers_are_counted_together(tmp_path: Path) -> None:
    # No directory given (an empty variable): `serve` makes one.
    environment = {"TMPDIR": str(tmp_path), "DATABASE_POOL_SIZE": "3", "PROMETHEUS_MULTIPROC_DIR": ""}
    with serve(tmp_path, "--workers", "2", **environment) as server:
        made = list(tmp_path.glob("cnfs-api-metrics-*"))
        assert len(made) == 1, made
        territories = {"method": "GET", "handler": "/api/v1/territories", "status": "2xx"}
        sent = 0
        # A connection of its own each: the two workers take them as they come, until each has served some.
        while sent < 20 or min(_served_by(made[0], server.workers(), territories).values()) == 0:
            assert sent < 400, _served_by(made[0], server.workers(), territories)
            response = httpx.get(f"{server.url}/api/v1/territories", params={"limit": 1}, timeout=10)
            assert response.status_code == 200
            sent += 1
        served = _served_by(made[0], server.workers(), territories)
        assert sum(served.values()) == sent, served
        # Whichever worker answers the scrape, it counts the other's requests too.
        scrapes = [_counter(server, "http_requests_total", **territories) for _ in range(6)]
        assert scrapes == [float(sent)] * 6
        # Each live worker adds its pool (written every second by each).
        deadline = time.monotonic() + 10
        while _counter(server, "cnfs_db_pool_size", pool="primary") != 6.0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _counter(server, "cnfs_db_pool_size", pool="primary") == 6.0
        victim = server.workers()[0]
        assert _served_by(made[0], [victim], territories)[victim] > 0
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (victim in server.workers() or len(server.workers()) < 2) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        # The killed worker's requests stay counted; its gauges are gone, its replacement's came.
        assert _counter(server, "http_requests_total", **territories) == float(sent)
        assert _counter(server, "cnfs_db_pool_size", pool="primary") == 6.0
    # The directory `serve` made goes with the server.
    assert list(tmp_path.glob("cnfs-api-metrics-*")) == []
