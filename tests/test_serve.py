"""`cnfs-api serve` as an operator runs it, one worker (uvicorn) and two (gunicorn): every line it writes is
JSON when LOG_JSON is on (the migrations', the servers', gunicorn's when a worker is killed), and a client
on the same machine cannot choose its address with X-Forwarded-For."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def lines(self) -> list[dict[str, Any]]:
        """Every line written on stderr, each parsed as JSON (a line that is not JSON fails the test)."""
        text = self.log.read_text(encoding="utf-8")
        return [orjson.loads(line) for line in text.splitlines() if line.strip()]

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        return [int(pid) for pid in children.split()]


@contextmanager
def serve(tmp_path: Path, *args: str, **env: str) -> Iterator[Server]:
    """`python -m app.cli serve` on a SQLite file of its own, until it answers /healthz; stopped (SIGTERM,
    then SIGKILL) at the end."""
    port = _free_port()
    log = tmp_path / f"serve-{port}.log"
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "FORWARDED_", "RATE_"))},
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        "SECRET_KEY": "serve-test-" + "x" * 32,
        "LOG_JSON": "true",
        "LOG_LEVEL": "INFO",
        **env,
    }
    environment.pop("WEB_CONCURRENCY", None)
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--no-demo", *args],
            cwd=tmp_path,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    server = Server(process, port, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _statuses_from_forged_addresses(server: Server, count: int) -> list[int]:
    return [
        httpx.get(
            f"{server.url}/api/v1/territories",
            headers={"X-Forwarded-For": f"203.0.113.{n + 1}"},
            timeout=10,
        ).status_code
        for n in range(count)
    ]


def _wait_for(server: Server, found: Any, timeout: float = 15) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = server.lines()
        if any(found(line) for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def test_one_worker(tmp_path: Path) -> None:
    with serve(tmp_path, RATE_LIMIT_PER_ADDRESS="1/minute") as server:
        statuses = _statuses_from_forged_addresses(server, 3)
        assert httpx.get(f"{server.url}/nowhere?q=secret", timeout=10).status_code == 404
        lines = _wait_for(server, lambda line: line["event"] == "GET - 404")
    # X-Forwarded-For from 127.0.0.1 is not believed by default: the three requests share one address.
    assert statuses == [200, 429, 429]
    events = {(line["logger"], line["event"]) for line in lines}
    assert (
        "alembic.runtime.migration",
        "Running upgrade  -> 0001, foundation: territories, api keys, idempotency",
    ) in events
    assert any(
        logger == "uvicorn.error" and event.startswith("Uvicorn running on") for logger, event in events
    )
    assert ("app.access", "GET - 404") in events
    assert "secret" not in server.log.read_text()


def test_two_workers_and_one_killed(tmp_path: Path) -> None:
    with serve(tmp_path, "--workers", "2", RATE_LIMIT_PER_ADDRESS="1/minute") as server:
        # Each worker counts on its own (no Redis): one request per worker at most goes through.
        statuses = _statuses_from_forged_addresses(server, 6)
        victim = server.workers()[0]
        os.kill(victim, signal.SIGKILL)
        lines = _wait_for(server, lambda line: "SIGKILL" in line["event"])
    assert statuses.count(429) >= 4, statuses
    assert {
        "logger": "gunicorn.error",
        "level": "error",
        "event": f"Worker (pid:{victim}) was sent SIGKILL! Perhaps out of memory?",
    }.items() <= next(line for line in lines if "SIGKILL" in line["event"]).items()
    assert "Logging error" not in server.log.read_text()


def test_a_listed_proxy_is_believed(tmp_path: Path) -> None:
    with serve(tmp_path, RATE_LIMIT_PER_ADDRESS="1/minute", FORWARDED_ALLOW_IPS="127.0.0.1") as server:
        assert _statuses_from_forged_addresses(server, 3) == [200, 200, 200]
        # Without the header, the address is the proxy's own.
        assert [httpx.get(f"{server.url}/api/v1/territories", timeout=10).status_code for _ in range(2)] == [
            200,
            429,
        ]
