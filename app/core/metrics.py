"""Prometheus metrics per route template: request counts and latencies, and the /metrics exposition."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """One registry per application (tests build many apps in one process).

    Labels are bounded: the route template (never the raw path), the method and the status class (`2xx`),
    so that ids in paths cannot grow the number of series."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "Requests answered, by method, route template and status class.",
            ("method", "handler", "status"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer, by method and route template.",
            ("method", "handler"),
            buckets=_BUCKETS,
            registry=self.registry,
        )
        # Children are cached: `labels()` resolves and locks on every call, which is most of its cost.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, handler: str, status: int, seconds: float) -> None:
        if method not in _METHODS:
            method = "other"
        key = (method, handler, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, handler, f"{status // 100}xx"),
                self.duration.labels(method, handler),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def response(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
