"""A webhook receiver on a loopback port, in a thread: it logs every request and answers as told."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

Answer = tuple[int, dict[str, str]]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    # What the receiver answered.
    status: int = 0

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    url: str = ""
    log: list[Received] = field(default_factory=list)
    # The answer to a request (given what came): 204 by default.
    answer: Callable[[Received], Answer] = lambda _received: (204, {})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.log)

    def unique(self) -> dict[str, Received]:
        """The first request of each `webhook-id` answered 2xx: what a receiver that ignores an id it has
        already processed processes."""
        first: dict[str, Received] = {}
        for item in self.received():
            if 200 <= item.status < 300:
                first.setdefault(item.webhook_id, item)
        return first

    def wait_for(self, count: int, timeout: float = 20) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.unique()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.received()


@contextmanager
def receiving(path: str = "/hook") -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            item = Received(
                {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length), time.time()
            )
            status, headers = receiver.answer(item)
            item.status = status
            with receiver.lock:
                receiver.log.append(item)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
