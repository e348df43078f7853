"""Rate limits per key and per address, public registration stricter; memory and Redis storage."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import delete

from app.api_keys import service as api_keys
from app.api_keys.models import ApiKey
from app.api_keys.schemas import ApiKeyCreate
from app.config import Settings
from app.core.auth import Role
from app.db import make_engine, make_sessionmaker
from app.main import create_app
from tests.helpers import assert_problem
from tests.processes import redis_server

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def _redis_answers() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@asynccontextmanager
async def limited_client(settings: Settings, **limits: object) -> AsyncIterator[httpx.AsyncClient]:
    """An app of its own with rate limits on, called from an address of its own (so that counters kept in
    Redis by an earlier run never meet this one)."""
    # A generous Redis timeout unless the test is about it: a busy machine must not skip the counting.
    limits = {"rate_limit_redis_timeout_seconds": 5.0, **limits}
    app = create_app(settings.model_copy(update={"rate_limits_enabled": True, **limits}))
    address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(address, 4242))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def _assert_limited(response: httpx.Response, limit: int) -> None:
    assert_problem(response, 429, "rate_limited")
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["ratelimit-limit"] == str(limit)
    assert response.headers["ratelimit-remaining"] == "0"
    assert 1 <= int(response.headers["ratelimit-reset"]) <= 60


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> dict[str, object]:
    if request.param == "redis":
        if not _redis_answers():
            pytest.skip(f"no Redis server at {REDIS_HOST}:{REDIS_PORT}")
        return {"redis_url": f"redis://{REDIS_HOST}:{REDIS_PORT}/0"}
    return {}


async def test_per_address_without_a_key(settings: Settings, storage: dict[str, object]) -> None:
    async with limited_client(settings, rate_limit_per_address="3/minute", **storage) as client:
        answers = [await client.get("/api/v1/referentials") for _ in range(4)]
        assert [a.status_code for a in answers[:3]] == [200] * 3
        _assert_limited(answers[3], 3)


async def test_public_registration_is_stricter(settings: Settings, storage: dict[str, object]) -> None:
    async with limited_client(settings, rate_limit_registration="2/minute", **storage) as client:
        url = f"/api/v1/workshops/{uuid.uuid4()}/registrations"
        body = {"first_name": "A", "last_name": "B", "email": "a@example.org"}
        answers = [await client.post(url, json=body) for _ in range(3)]
        assert [a.status_code for a in answers[:2]] == [404, 404]
        _assert_limited(answers[2], 2)
        # Other routes still answer from the same address.
        assert (await client.get("/api/v1/referentials")).status_code == 200


@asynccontextmanager
async def committed_key(settings: Settings) -> AsyncIterator[str]:
    """An admin key that really commits (the limited app reads through an engine of its own)."""
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    try:
        async with sessions() as session:
            created = await api_keys.create(session, ApiKeyCreate(name="rate limit test", role=Role.admin))
            await session.commit()
        assert created.key is not None
        yield created.key
    finally:
        async with sessions() as session:
            await session.execute(delete(ApiKey).where(ApiKey.id == created.id))
            await session.commit()
        await engine.dispose()


async def test_per_key(settings: Settings, storage: dict[str, object]) -> None:
    limited = limited_client(settings, rate_limit_per_key="2/minute", **storage)
    async with committed_key(settings) as key, limited as client:
        headers = {"Authorization": f"Bearer {key}"}
        answers = [await client.get("/api/v1/me", headers=headers) for _ in range(3)]
        assert [a.status_code for a in answers[:2]] == [200, 200]
        _assert_limited(answers[2], 2)
        # The limit is the key's: without it, the address still has its own allowance.
        assert (await client.get("/api/v1/referentials")).status_code == 200


async def test_unreachable_redis_lets_requests_through(settings: Settings) -> None:
    async with limited_client(
        settings, redis_url="redis://127.0.0.1:1/0", rate_limit_per_address="1/minute"
    ) as client:
        assert [(await client.get("/api/v1/referentials")).status_code for _ in range(2)] == [200, 200]


def test_limits_are_settings() -> None:
    with pytest.raises(ValueError, match="per period"):
        Settings(rate_limit_per_key="lots")
    with pytest.raises(ValueError, match="redis://"):
        Settings(redis_url="http://127.0.0.1")


@pytest.fixture
def own_redis() -> Iterator[tuple[int, str]]:
    """A redis-server of this test's own on a free loopback port (the test stops it with SIGSTOP): its pid
    and its URL. Resumed and terminated at the end, whatever happened."""
    with redis_server() as server:
        yield server


POOL = 2


REDIS_TIMEOUT = 4.0


async def test_a_hung_redis_neither_holds_requests_nor_database_connections(
    settings: Settings, own_redis: tuple[int, str]
) -> None:
    """Redis stopped (SIGSTOP: connections accepted, nothing answered): keyed requests, more at once than the
    database pool has connections, are all answered within the Redis timeout and a margin, none 503, and
    /readyz stays 200 meanwhile: no request holds a database connection while it waits for Redis."""
    pid, url = own_redis
    limited = limited_client(
        settings,
        redis_url=url,
        rate_limit_per_key="1000/minute",
        # Long enough that /readyz, asked meanwhile, is answered well before it on a loaded machine.
        rate_limit_redis_timeout_seconds=REDIS_TIMEOUT,
        database_pool_size=POOL,
        # Once Redis has timed out, the requests share the pool's connections: they may queue a while on a
        # busy machine. While they wait for Redis, they hold none (/readyz gets one at once).
        database_pool_timeout_seconds=5.0,
    )
    async with committed_key(settings) as key, limited as client:
        headers = {"Authorization": f"Bearer {key}"}
        assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        # Through a route (the session's connection) and through the direct path (its own connection).
        paths = ["/api/v1/me", "/api/v1/territories"] * (2 * POOL)
        keyed = [asyncio.create_task(client.get(path, headers=headers)) for path in paths]
        await asyncio.sleep(0.3)  # every keyed request is now waiting for Redis
        ready = await asyncio.wait_for(client.get("/readyz"), timeout=5)
        ready_after = time.monotonic() - started
        answers = await asyncio.wait_for(asyncio.gather(*keyed), timeout=REDIS_TIMEOUT + 10)
        elapsed = time.monotonic() - started
        assert [a.status_code for a in answers] == [200] * len(keyed), [a.text for a in answers]
        assert ready.status_code == 200, ready.text
        # Answered while the keyed requests wait for Redis (before its timeout), then every keyed one
        # within the timeout and a margin.
        assert ready_after < REDIS_TIMEOUT - 0.5, ready_after
        assert elapsed < REDIS_TIMEOUT + 2.5, elapsed
        # Afterwards Redis is left alone for a while: no request waits for it.
        started = time.monotonic()
        later = await asyncio.wait_for(client.get("/api/v1/me", headers=headers), timeout=5)
        assert later.status_code == 200
        assert time.monotonic() - started < 1.0
        metrics = (await client.get("/metrics")).text
        assert 'rate_limit_checks_skipped_total{reason="timeout"}' in metrics
        assert 'rate_limit_checks_skipped_total{reason="paused"}' in metrics


async def test_limits_are_checked_again_once_redis_answers(
    settings: Settings, own_redis: tuple[int, str]
) -> None:
    pid, url = own_redis
    limited = limited_client(
        settings, redis_url=url, rate_limit_per_key="3/minute", rate_limit_redis_timeout_seconds=1.0
    )
    async with committed_key(settings) as key, limited as client:
        headers = {"Authorization": f"Bearer {key}"}
        client_app = client._transport.app  # type: ignore[attr-defined]
        client_app.state.rate_limiter.pause = 0.5
        assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
        os.kill(pid, signal.SIGSTOP)
        try:
            stalled = await asyncio.wait_for(client.get("/api/v1/me", headers=headers), timeout=5)
            assert stalled.status_code == 200
        finally:
            os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(0.6)
        # The request let through may have been counted once Redis resumed, or not: the limit holds again.
        answers = [(await client.get("/api/v1/me", headers=headers)).status_code for _ in range(3)]
        assert answers[0] == 200
        assert answers[-1] == 429


async def test_an_unknown_key_is_counted_before_it_is_looked_up(settings: Settings) -> None:
    async with limited_client(settings, rate_limit_per_key="2/minute") as client:
        headers = {"Authorization": "Bearer cnfs_unknown" + uuid.uuid4().hex}
        answers = [await client.get("/api/v1/me", headers=headers) for _ in range(3)]
        assert [a.status_code for a in answers] == [401, 401, 429]


async def test_a_body_that_is_not_json_is_counted(settings: Settings, storage: dict[str, object]) -> None:
    """FastAPI refuses such a body before the route's dependencies: the limits are checked all the same
    (a flood of broken bodies is limited like any other), as on the public registration. Through the
    routes (the direct path counts a request before its twin reads the body)."""
    headers = {"Content-Type": "application/json"}
    storage = {**storage, "direct_path": False}
    async with limited_client(settings, rate_limit_registration="2/minute", **storage) as client:
        url = f"/api/v1/workshops/{uuid.uuid4()}/registrations"
        answers = [await client.post(url, content=b'{"first_name"', headers=headers) for _ in range(3)]
        assert [a.status_code for a in answers[:2]] == [422, 422]
        _assert_limited(answers[2], 2)
    async with limited_client(settings, rate_limit_per_address="3/minute", **storage) as client:
        answers = [await client.post("/api/v1/territories", content=b"[", headers=headers) for _ in range(4)]
        assert [a.status_code for a in answers[:3]] == [401, 401, 401]
        _assert_limited(answers[3], 3)
