"""Prometheus metrics: requests per route template, domain events counted once committed, the database pool,
and the /metrics exposition (one process, or every worker of `cnfs-api serve --workers N`).

Several workers: `cnfs-api serve` gives gunicorn's workers a shared directory (PROMETHEUS_MULTIPROC_DIR,
prometheus_client's multiprocess mode), where each writes its values; a scrape of any worker reads them all,
so that one scrape counts every worker's requests (`app.core.gunicorn_config` forgets a dead worker's
gauges). Counters survive a worker's restart.

Domain events (a registration confirmed, a bulk's items) are counted when the request's transaction commits:
`on_commit(session, child)` keeps them in the session's `info`, and the ORM session's `after_commit` event
(or `DirectSession.finish`) applies them; a rollback drops them, so that a write that did not happen is
never counted. Refusals and reads are counted where they happen."""

from __future__ import annotations

import asyncio
import hmac
import os
from collections import Counter as Tally
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import event
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from app.core.problems import NotFound, Unauthenticated

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The statuses counted apart: a client that sent a stale version (412) or none (428).
_PRECONDITION_STATUSES = frozenset({412, 428})
_PENDING = "metrics_on_commit"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _multiprocess_dir() -> str | None:
    """The shared directory of the workers' values, when this process runs in multiprocess mode:
    prometheus_client chose where its values live when it was first imported (from the variable then), and
    a variable set later (a test that runs `serve` in-process) changes nothing."""
    from prometheus_client import values

    if getattr(values.ValueClass, "__name__", "") != "MmapedValue":
        return None
    return os.environ.get(MULTIPROCESS_ENV) or None


_MULTIPROCESS_DIR = _multiprocess_dir()


def multiprocess_dir() -> str | None:
    return _MULTIPROCESS_DIR


class Metrics:
    """One registry per application (tests build many apps in one process).

    Labels are bounded: the route template (never the raw path), the method, the status class (`2xx`), and
    for domain events a value from a closed set (an outcome, a problem `code`, a status)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "http_requests_total",
            "Requests answered, by method, route template and status class.",
            ("method", "handler", "status"),
            registry=registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer, by method and route template.",
            ("method", "handler"),
            buckets=_BUCKETS,
            registry=registry,
        )
        self.preconditions = Counter(
            "cnfs_precondition_failures_total",
            "Changes refused for their If-Match: 428 (none sent) and 412 (another version), by route "
            "template.",
            ("handler", "status"),
            registry=registry,
        )
        self.replays = Counter(
            "cnfs_idempotent_replays_total",
            "POSTs answered with the stored response of their Idempotency-Key (Idempotent-Replayed: true).",
            ("handler",),
            registry=registry,
        )
        self.registrations = Counter(
            "cnfs_registrations_total",
            "Workshop registrations committed, by status (confirmed, waitlisted).",
            ("status",),
            registry=registry,
        )
        self.registrations_refused = Counter(
            "cnfs_registrations_refused_total",
            "Workshop registrations refused by the rules, by problem code (workshop_full, workshop_closed, "
            "...).",
            ("code",),
            registry=registry,
        )
        self.bulk_items = Counter(
            "cnfs_bulk_items_total",
            "Items of the counsellors' bulk upserts, by their result's status (201 created, 200 updated or "
            "unchanged, 422 refused, 424 not applied), once their request committed or was refused.",
            ("status",),
            registry=registry,
        )
        self.change_feed_reads = Counter(
            "cnfs_change_feed_reads_total",
            "Reads of the change feed, by format (json, csv).",
            ("format",),
            registry=registry,
        )
        self.change_feed_items = Counter(
            "cnfs_change_feed_items_total",
            "Changes handed out by the change feed's JSON pages.",
            registry=registry,
        )
        self.replica_reads = Counter(
            "cnfs_replica_reads_total",
            "Reading requests of the operations that the read replica answers (DATABASE_READ_URL), by where "
            "they read: replica, or primary (the replica behind, unreachable, or left alone for a while).",
            ("database",),
            registry=registry,
        )
        # Gauges are the sum over the live workers (each writes its own in multiprocess mode), by pool:
        # primary (DATABASE_URL), replica (DATABASE_READ_URL, when set).
        self.pool_in_use = Gauge(
            "cnfs_db_pool_connections_in_use",
            "Database connections busy with a request (the pool's connections checked out, less those the "
            "direct path keeps idle between requests), by pool (primary, replica).",
            ("pool",),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.pool_waiting = Gauge(
            "cnfs_db_pool_waiting",
            "Requests waiting for a database connection, by pool (primary, replica).",
            ("pool",),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.pool_size = Gauge(
            "cnfs_db_pool_size",
            "Database connections each worker may open (DATABASE_POOL_SIZE), summed over the workers, by "
            "pool (primary, replica).",
            ("pool",),
            registry=registry,
            multiprocess_mode="livesum",
        )
        # Children are cached: `labels()` resolves and locks on every call, which is most of its cost.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._engines: dict[str, Any] = {"primary": None, "replica": None}
        self._sampled: set[str] = set()

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
        if status in _PRECONDITION_STATUSES:
            self.preconditions.labels(handler, str(status)).inc()

    def replayed(self, handler: str) -> None:
        self.replays.labels(handler).inc()

    # --- the database pool ---

    def watch_pool(self, engine: Any, replica: Any = None) -> None:
        """The engines whose pools the gauges show (the lifespan's: the primary's, and the replica's when
        there is one); None when they are disposed."""
        self._engines = {"primary": engine, "replica": replica}

    def sample_pool(self) -> None:
        from app.core.direct import kept_idle

        for name, engine in self._engines.items():
            if engine is None:
                if name == "primary" or name in self._sampled:
                    self.pool_in_use.labels(name).set(0)
                    self.pool_waiting.labels(name).set(0)
                    self.pool_size.labels(name).set(0)
                continue
            self._sampled.add(name)
            pool = engine.sync_engine.pool
            checked_out = pool.checkedout() if hasattr(pool, "checkedout") else 0
            self.pool_in_use.labels(name).set(max(0, checked_out - kept_idle(pool)))
            line = getattr(pool, "line", None)
            self.pool_waiting.labels(name).set(line().waiting() if line is not None else 0)
            self.pool_size.labels(name).set(pool.size() if hasattr(pool, "size") else 1)

    def read_on(self, database: str) -> None:
        """A reading request of the replica's operations read on `database` (replica, primary)."""
        self.replica_reads.labels(database).inc()

    # --- exposition ---

    def text(self) -> bytes:
        self.sample_pool()
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def response(self, request: Request) -> Response:
        settings = request.app.state.settings
        if not settings.metrics_enabled:
            raise NotFound("no route at this path")
        token = settings.metrics_token
        if token:
            scheme, _, sent = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), token.encode()):
                raise Unauthenticated(
                    "/metrics needs `Authorization: Bearer <METRICS_TOKEN>`",
                    error="invalid_token" if sent else None,
                )
        return Response(self.text(), media_type=CONTENT_TYPE_LATEST)


POOL_SAMPLE_SECONDS = 1.0


async def sample_pool(metrics: Metrics) -> None:
    """A worker's pool gauges, written every second (multiprocess mode: the scraped worker reads the
    others' values from their files)."""
    while True:
        metrics.sample_pool()
        await asyncio.sleep(POOL_SAMPLE_SECONDS)


# --- domain events counted at commit --------------------------------------------------------------------


def on_commit(session: Any, child: Any, amount: float = 1) -> None:
    """Counts `amount` on the metric `child` (a labelled Counter) when the session's transaction commits;
    nothing if it rolls back. `session` is the request's AsyncSession or DirectSession, called after the
    write it counts (in its transaction)."""
    session.info.setdefault(_PENDING, []).append((child, amount))


def on_commit_tally(session: Any, metric: Any, tally: Tally[str]) -> None:
    for label, amount in tally.items():
        if amount:
            on_commit(session, metric.labels(label), amount)


def committed(info: dict[str, Any]) -> None:
    """The transaction of the session whose `info` this is committed: its pending events are counted."""
    pending = info.pop(_PENDING, None)
    if pending:
        for child, amount in pending:
            child.inc(amount)


def rolled_back(info: dict[str, Any]) -> None:
    info.pop(_PENDING, None)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    committed(session.info)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous: Any) -> None:
    # The session's own transaction rolled back (not a savepoint inside it): what waited for its commit goes.
    if previous.parent is None:
        rolled_back(session.info)
