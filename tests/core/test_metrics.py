"""GET /metrics: requests per route template on both paths (direct and route), domain events counted by the
exact amounts and only once committed, the database pool's gauges, and who may read them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import literal, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.core import direct as direct_module
from app.core.direct import DirectSession
from app.core.metrics import Metrics, on_commit
from tests.conftest import KeyMaker, Tree
from tests.helpers import MERGE_PATCH, app_client, assert_problem
from tests.workshops.helpers import CHANGES, WORKSHOPS, build_place, create_workshop, register

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TERRITORIES = "/api/v1/territories"
REGISTRATIONS = "/api/v1/workshops/{workshop_id}/registrations"
BULK = "/api/v1/counsellors/bulk"


async def scrape(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> Samples:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every counter sample that changed, by how much (the histograms' sums and the gauges left out)."""
    return {
        key: after[key] - before.get(key, 0.0)
        for key in after
        if key[0].endswith(("_total", "_count")) and after[key] != before.get(key, 0.0)
    }


@pytest.fixture
def direct_answers() -> Iterator[list[str]]:
    """The names of the routes whose direct twin answered."""
    seen: list[str] = []
    direct_module.answer_observers.append(seen.append)
    try:
        yield seen
    finally:
        direct_module.answer_observers.remove(seen.append)


@pytest.mark.parametrize("path", ["direct", "route"])
async def test_requests_are_counted_alike_on_both_paths(
    path: str, client: httpx.AsyncClient, route_client: httpx.AsyncClient, direct_answers: list[str]
) -> None:
    used = client if path == "direct" else route_client
    before = await scrape(used)
    for _ in range(3):
        assert (await used.get(TERRITORIES, params={"limit": 5})).status_code == 200
    assert (await used.get(TERRITORIES, params={"limit": 0})).status_code == 422
    after = await scrape(used)
    assert direct_answers == (["territories_list"] * 3 if path == "direct" else [])
    handler = {"method": "GET", "handler": TERRITORIES}
    assert moved(before, after) == {
        ("http_requests_total", frozenset({**handler, "status": "2xx"}.items())): 3,
        ("http_requests_total", frozenset({**handler, "status": "4xx"}.items())): 1,
        ("http_request_duration_seconds_count", frozenset(handler.items())): 4,
        # The first scrape itself.
        (
            "http_requests_total",
            frozenset({"method": "GET", "handler": "/metrics", "status": "2xx"}.items()),
        ): 1,
        (
            "http_request_duration_seconds_count",
            frozenset({"method": "GET", "handler": "/metrics"}.items()),
        ): 1,
    }


async def test_registrations_counted_once_committed(
    client: httpx.AsyncClient,
    route_client: httpx.AsyncClient,
    admin: dict[str, str],
    tree: Tree,
    make_key: KeyMaker,
    direct_answers: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    place = await build_place(client, admin, tree, make_key)
    workshop = await create_workshop(
        client, place.admin, place.lyon_position["id"], capacity=1, waitlist_capacity=1
    )
    before = await scrape(client)
    # The direct path (no Idempotency-Key) confirms; the route (a key) waitlists; its replay is counted as
    # a replay, not as a registration; then the workshop is full.
    assert (await register(client, workshop["id"], 1)).json()["status"] == "confirmed"
    keyed = {"Idempotency-Key": "reg-2"}
    assert (await register(client, workshop["id"], 2, headers=keyed)).json()["status"] == "waitlisted"
    replay = await register(client, workshop["id"], 2, headers=keyed)
    assert replay.headers["idempotent-replayed"] == "true"
    assert_problem(await register(client, workshop["id"], 3), 409, "workshop_full")
    assert_problem(await register(route_client, workshop["id"], 1), 409, "already_registered")
    after = await scrape(client)
    assert direct_answers.count("workshops_register") == 2  # the confirmed one and the refused one
    assert (
        value(after, "cnfs_registrations_total", status="confirmed")
        - value(before, "cnfs_registrations_total", status="confirmed")
        == 1
    )
    assert (
        value(after, "cnfs_registrations_total", status="waitlisted")
        - value(before, "cnfs_registrations_total", status="waitlisted")
        == 1
    )
    assert (
        value(after, "cnfs_registrations_refused_total", code="workshop_full")
        - value(before, "cnfs_registrations_refused_total", code="workshop_full")
        == 1
    )
    route_samples = await scrape(route_client)
    assert value(route_samples, "cnfs_registrations_refused_total", code="already_registered") >= 1
    assert (
        value(after, "cnfs_idempotent_replays_total", handler=REGISTRATIONS)
        - value(before, "cnfs_idempotent_replays_total", handler=REGISTRATIONS)
        == 1
    )

    # A registration whose request fails after the service wrote it is rolled back, and not counted.
    other = await create_workshop(client, place.admin, place.lyon_position["id"])

    def broken(*_args: Any, **_kwargs: Any) -> str:
        raise RuntimeError("the answer could not be built")

    monkeypatch.setattr("app.workshops.router.path_for", broken)
    before = await scrape(client)
    before_route = await scrape(route_client)
    for used in (client, route_client):
        assert_problem(await register(used, other["id"], 7), 500, "internal_error")
    monkeypatch.undo()
    assert value(await scrape(client), "cnfs_registrations_total", status="confirmed") == value(
        before, "cnfs_registrations_total", status="confirmed"
    )
    assert value(await scrape(route_client), "cnfs_registrations_total", status="confirmed") == value(
        before_route, "cnfs_registrations_total", status="confirmed"
    )
    state = (await client.get(f"{WORKSHOPS}/{other['id']}", headers=place.admin)).json()
    assert state["registered_count"] == 0


async def test_on_commit_waits_for_the_commit(session: AsyncSession, connection: Any) -> None:
    metrics = Metrics()
    child = metrics.registrations.labels("confirmed")
    # Counted after the write, in its transaction.
    await session.execute(text("SELECT 1"))
    on_commit(session, child)
    await session.rollback()
    await session.commit()
    assert child._value.get() == 0
    await session.execute(text("SELECT 1"))
    on_commit(session, child, 2)
    await session.commit()
    assert child._value.get() == 2
    # The direct path's session: the same rule.
    for commit, expected in ((False, 2), (True, 3)):
        direct = DirectSession(connection, write=True)
        direct.begin_answer()
        on_commit(direct, child)
        await direct.execute(select(literal(1).label("one")))
        await direct.finish(commit=commit)
        await direct.close()
        assert child._value.get() == expected


async def test_preconditions_bulk_items_and_change_feed(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, make_key: KeyMaker
) -> None:
    place = await build_place(client, admin, tree, make_key)
    workshop = await create_workshop(client, place.admin, place.lyon_position["id"])
    url = f"{WORKSHOPS}/{workshop['id']}"
    manager = place.world.lyon_manager
    items = [
        {"external_ref": "M-1", "first_name": "Camille", "last_name": "Exemple", "email": "m1@example.org"},
        {"external_ref": "M-2", "first_name": "Dominique", "last_name": "Exemple", "email": "m2@example.org"},
        {"external_ref": "M-3", "first_name": "Sans", "last_name": "Courriel", "email": "broken"},
    ]
    before = await scrape(client)
    patch = {"Content-Type": MERGE_PATCH, **place.admin}
    assert_problem(
        await client.patch(url, content=b'{"capacity": 5}', headers=patch), 428, "precondition_required"
    )
    assert_problem(
        await client.patch(url, content=b'{"capacity": 5}', headers={**patch, "If-Match": '"99"'}),
        412,
        "precondition_failed",
    )
    first = await client.post(BULK, json={"items": items}, headers=manager)
    assert [r["status"] for r in first.json()["items"]] == [201, 201, 422]
    # The same again: the direct path's replay, which writes nothing.
    again = await client.post(BULK, json={"items": items}, headers=manager)
    assert [r["status"] for r in again.json()["items"]] == [200, 200, 422]
    rejected = await client.post(BULK, params={"atomic": "true"}, json={"items": items}, headers=manager)
    assert [r["status"] for r in assert_problem(rejected, 422, "bulk_rejected")["items"]] == [424, 424, 422]
    feed = await client.get(CHANGES, params={"limit": 3}, headers=place.admin)
    assert len(feed.json()["items"]) == 3
    csv = await client.get(CHANGES, headers={**place.admin, "Accept": "text/csv"})
    assert csv.status_code == 200
    after = await scrape(client)
    changed = {
        (name, dict(labels).get("status") or dict(labels).get("format") or ""): amount
        for (name, labels), amount in moved(before, after).items()
        if name.startswith("cnfs_")
    }
    assert changed == {
        ("cnfs_precondition_failures_total", "428"): 1,
        ("cnfs_precondition_failures_total", "412"): 1,
        ("cnfs_bulk_items_total", "201"): 2,
        ("cnfs_bulk_items_total", "200"): 2,
        ("cnfs_bulk_items_total", "422"): 3,
        ("cnfs_bulk_items_total", "424"): 2,
        ("cnfs_change_feed_reads_total", "json"): 1,
        ("cnfs_change_feed_reads_total", "csv"): 1,
        ("cnfs_change_feed_items_total", ""): 3,
    }
    assert (
        value(
            after, "cnfs_precondition_failures_total", handler="/api/v1/workshops/{workshop_id}", status="428"
        )
        >= 1
    )


async def test_rate_limited_requests(settings: Settings) -> None:
    limited = settings.model_copy(update={"rate_limits_enabled": True, "rate_limit_per_address": "3/minute"})
    async with app_client(limited) as client:
        statuses = [(await client.get(TERRITORIES)).status_code for _ in range(5)]
        samples = await scrape(client)
    assert statuses == [200, 200, 200, 429, 429]
    assert value(samples, "cnfs_rate_limited_total", limit="address") == 2
    assert value(samples, "cnfs_rate_limited_total", limit="key") == 0


async def test_pool_gauges(settings: Settings) -> None:
    small = settings.model_copy(update={"database_pool_size": 1, "database_pool_timeout_seconds": 10})
    app: FastAPI | None = None

    def keep(built: FastAPI) -> None:
        nonlocal app
        app = built

    async with app_client(small, keep) as client:
        assert app is not None
        idle = await scrape(client)
        assert value(idle, "cnfs_db_pool_connections_in_use", pool="primary") == 0
        assert value(idle, "cnfs_db_pool_waiting", pool="primary") == 0
        assert value(idle, "cnfs_db_pool_size", pool="primary") == 1
        engine = app.state.engine
        async with engine.connect() as held:
            await held.exec_driver_sql("SELECT 1")
            waiting = asyncio.create_task(client.get(TERRITORIES, params={"limit": 1}))
            pool = engine.sync_engine.pool
            for _ in range(200):
                if pool.line().waiting():
                    break
                await asyncio.sleep(0.01)
            busy = await scrape(client)
        assert (await waiting).status_code == 200
        assert value(busy, "cnfs_db_pool_connections_in_use", pool="primary") == 1
        assert value(busy, "cnfs_db_pool_waiting", pool="primary") == 1
        done = await scrape(client)
        # The connection the direct path keeps between requests is idle, not in use.
        assert value(done, "cnfs_db_pool_connections_in_use", pool="primary") == 0
        assert value(done, "cnfs_db_pool_waiting", pool="primary") == 0


async def test_metrics_can_be_turned_off_or_need_a_token(settings: Settings) -> None:
    async with app_client(settings.model_copy(update={"metrics_enabled": False})) as client:
        assert_problem(await client.get("/metrics"), 404, "not_found")
    token = "metrics-" + "t" * 24
    async with app_client(settings.model_copy(update={"metrics_token": token})) as client:
        refused = assert_problem(await client.get("/metrics"), 401, "unauthenticated")
        assert "METRICS_TOKEN" in refused["detail"]
        assert_problem(
            await client.get("/metrics", headers={"Authorization": "Bearer wrong-token-of-some-length"}),
            401,
            "unauthenticated",
        )
        samples = await scrape(client, headers={"Authorization": f"Bearer {token}"})
    assert value(samples, "cnfs_db_pool_size", pool="primary") >= 1
    assert Settings(metrics_token="").metrics_token is None
