"""The delivery worker in this process, against a receiver on a loopback port: signed deliveries of the
committed changes only, in order per object, the retry schedule on a fake clock, Retry-After, 410, pause,
rotation, and the SSRF check at delivery time."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from app.api_keys import service as api_keys
from app.api_keys.schemas import ApiKeyCreate
from app.config import DEFAULT_WEBHOOK_RETRY_SCHEDULE
from app.core.auth import Role
from app.webhooks import service
from app.webhooks.delivery import Worker, parse_retry_after, retry_delay
from app.webhooks.models import WebhookDelivery, WebhookSubscription
from tests.helpers import app_client, service_logs
from tests.webhooks.conftest import ADMIN, World
from tests.webhooks.receiver import Receiver


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _worker(world: World, clock: Callable[[], datetime] | None = None, **options: Any) -> Worker:
    return Worker(
        world.sessions,
        options.pop("settings", world.settings),
        clock=clock or Clock(),
        draw=lambda: 0.5,
        **options,
    )


async def _deliveries(world: World, subscription_id: uuid.UUID) -> list[WebhookDelivery]:
    async with world.sessions() as session:
        stmt = (
            select(WebhookDelivery)
            .where(WebhookDelivery.subscription_id == subscription_id)
            .order_by(WebhookDelivery.change_xid, WebhookDelivery.change_seq)
        )
        return list((await session.execute(stmt)).scalars().all())


async def _drain(worker: Worker, rounds: int = 20) -> None:
    for _ in range(rounds):
        queued, sent = await worker.run_once()
        if not queued and not sent:
            return


async def test_committed_changes_arrive_signed_once_and_rolled_back_never(
    world: World, receiver: Receiver
) -> None:
    subscription = await world.subscribe(receiver.url)
    first, second = uuid.uuid4(), uuid.uuid4()
    await world.change(first, 1)
    await world.change(second, 1, commit=False)
    await world.change(first, 2)
    await world.change(second, 3)
    worker = Worker(world.sessions, world.settings)
    try:
        await _drain(worker)
    finally:
        await worker.close()
    got = receiver.received()
    assert len(got) == 3
    verifier = Webhook(subscription.secret)
    for item in got:
        assert verifier.verify(item.body, item.headers) == item.payload
        assert item.headers["content-type"] == "application/json"
        assert item.headers["webhook-id"].startswith("msg_")
    # Different objects go at once; one object's changes in the feed's order.
    sent = [(p["type"], p["data"]["id"], p["data"]["version"]) for p in (i.payload for i in got)]
    assert sorted(sent) == sorted(
        [
            ("positions.created", str(first), 1),
            ("positions.updated", str(first), 2),
            ("positions.updated", str(second), 3),
        ]
    )
    assert [v for _, i, v in sent if i == str(first)] == [1, 2]
    payload = got[0].payload
    assert set(payload) == {"type", "timestamp", "data"}
    assert set(payload["data"]) == {
        "cursor",
        "resource",
        "id",
        "action",
        "version",
        "territory_id",
        "occurred_at",
    }
    assert payload["data"]["territory_id"] == str(world.territory.id)
    assert payload["timestamp"] == payload["data"]["occurred_at"]
    assert payload["timestamp"].endswith("Z")
    rows = await _deliveries(world, subscription.id)
    assert [(r.status, r.attempts, r.last_status_code) for r in rows] == [("succeeded", 1, 204)] * 3
    # Nothing more to send: another round sends nothing.
    worker = Worker(world.sessions, world.settings)
    try:
        assert await worker.run_once() == (0, 0)
    finally:
        await worker.close()
    assert len(receiver.received()) == 3


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_a_subscribers_url_is_not_logged(world: World, receiver: Receiver, level: str) -> None:
    """Its query string may hold the subscriber's token: the HTTP client's lines (httpx logs each request's
    URL at INFO, httpcore its steps at DEBUG) and the driver's (the URL bound to a statement) stay out."""
    with service_logs(level) as written:
        await world.subscribe(f"{receiver.url}?token=s3cr3t")
        await world.change(uuid.uuid4(), 1)
        worker = Worker(world.sessions, world.settings)
        try:
            await _drain(worker)
        finally:
            await worker.close()
        logging.getLogger("app").log(logging.getLevelName(level), "a line at %s", level)
        logged = written()
    assert len(receiver.received()) == 1
    assert f"a line at {level}" in logged
    assert "s3cr3t" not in logged


async def test_filters_by_resource_action_and_territory(world: World, receiver: Receiver) -> None:
    subscription = await world.subscribe(receiver.url, resources=["counsellors"], actions=["updated"])
    wanted = uuid.uuid4()
    await world.change(wanted, 1, resource="counsellors")  # created: not this action
    await world.change(wanted, 2, resource="counsellors")
    await world.change(uuid.uuid4(), 2, resource="positions")  # not this resource
    worker = _worker(world)
    try:
        await _drain(worker)
    finally:
        await worker.close()
    assert [(i.payload["type"], i.payload["data"]["version"]) for i in receiver.received()] == [
        ("counsellors.updated", 2)
    ]
    assert len(await _deliveries(world, subscription.id)) == 1


async def test_the_retry_schedule_on_a_fake_clock(world: World, receiver: Receiver) -> None:
    receiver.answer = lambda _r: (500, {})
    subscription = await world.subscribe(receiver.url)
    await world.change(uuid.uuid4(), 1)
    clock = Clock()
    worker = _worker(world, clock)
    delays = []
    try:
        await worker.run_once()
        for _ in DEFAULT_WEBHOOK_RETRY_SCHEDULE:
            (row,) = await _deliveries(world, subscription.id)
            assert row.status == "pending"
            assert row.next_attempt_at is not None
            delays.append((row.next_attempt_at - clock.now).total_seconds())
            # Not due a second before its time...
            clock.now = row.next_attempt_at - timedelta(seconds=1)
            assert await worker.send_due() == 0
            clock.now = row.next_attempt_at
            assert await worker.send_due() == 1
    finally:
        await worker.close()
    # draw() = 0.5: no jitter; the Standard Webhooks schedule.
    assert delays == [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
    (row,) = await _deliveries(world, subscription.id)
    assert (row.status, row.attempts, row.next_attempt_at) == ("failed", 10, None)
    assert [a["status_code"] for a in row.attempt_log] == [500] * 10
    assert len({i.webhook_id for i in receiver.received()}) == 1
    assert len(receiver.received()) == 10


def test_the_jitter_stays_within_ten_percent() -> None:
    schedule = DEFAULT_WEBHOOK_RETRY_SCHEDULE
    assert retry_delay(1, schedule, lambda: 0.0) == timedelta(seconds=4.5)
    assert retry_delay(1, schedule, lambda: 1.0) == timedelta(seconds=5.5)
    assert retry_delay(9, schedule, lambda: 0.5) == timedelta(hours=24)
    assert retry_delay(10, schedule, lambda: 0.5) is None


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    now = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == timedelta(seconds=120)
    assert parse_retry_after("Mon, 07 Dec 2026 09:10:00 GMT", now) == timedelta(minutes=10)
    assert parse_retry_after("999999999", now) == timedelta(hours=24)
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


async def test_retry_after_is_honoured(world: World, receiver: Receiver) -> None:
    receiver.answer = lambda _r: (503, {"Retry-After": "120"})
    subscription = await world.subscribe(receiver.url)
    await world.change(uuid.uuid4(), 1)
    clock = Clock()
    worker = _worker(world, clock)
    try:
        await worker.run_once()
        (row,) = await _deliveries(world, subscription.id)
        # The schedule says 5 s; the receiver asked for 120.
        assert row.next_attempt_at == clock.now + timedelta(seconds=120)
        clock.now += timedelta(seconds=119)
        assert await worker.send_due() == 0
        receiver.answer = lambda _r: (200, {})
        clock.now += timedelta(seconds=1)
        assert await worker.send_due() == 1
    finally:
        await worker.close()
    (row,) = await _deliveries(world, subscription.id)
    assert (row.status, row.attempts, [a["status_code"] for a in row.attempt_log]) == (
        "succeeded",
        2,
        [503, 200],
    )


async def test_410_disables_the_subscription(world: World, receiver: Receiver) -> None:
    receiver.answer = lambda _r: (410, {})
    subscription = await world.subscribe(receiver.url)
    await world.change(uuid.uuid4(), 1)
    worker = _worker(world)
    try:
        await _drain(worker)
        await world.change(uuid.uuid4(), 1)
        await _drain(worker)
    finally:
        await worker.close()
    async with world.sessions() as session:
        found = await session.get(WebhookSubscription, subscription.id)
        assert found is not None
        assert (found.status, found.version) == ("disabled", 2)
    rows = await _deliveries(world, subscription.id)
    # The first failed for good; the change after it was not queued.
    assert [(r.status, r.last_status_code) for r in rows] == [("failed", 410)]
    assert len(receiver.received()) == 1


async def test_a_failing_delivery_holds_back_later_ones_of_the_same_object(
    world: World, receiver: Receiver
) -> None:
    stuck, free = uuid.uuid4(), uuid.uuid4()
    receiver.answer = lambda r: (500, {}) if r.payload["data"]["id"] == str(stuck) else (204, {})
    subscription = await world.subscribe(receiver.url)
    await world.change(stuck, 1)
    await world.change(stuck, 2)
    await world.change(free, 1)
    await world.change(free, 2)
    clock = Clock()
    worker = _worker(world, clock)
    try:
        await _drain(worker)
        seen = [(i.payload["data"]["id"], i.payload["data"]["version"]) for i in receiver.received()]
        # The other object goes on; the stuck one's second change waits for its first.
        assert sorted(seen) == sorted([(str(stuck), 1), (str(free), 1), (str(free), 2)])
        receiver.answer = lambda _r: (204, {})
        clock.now += timedelta(seconds=6)
        await _drain(worker)
    finally:
        await worker.close()
    stuck_seen = [
        i.payload["data"]["version"] for i in receiver.received() if i.payload["data"]["id"] == str(stuck)
    ]
    assert stuck_seen == [1, 1, 2]
    assert {r.status for r in await _deliveries(world, subscription.id)} == {"succeeded"}


async def test_a_paused_subscription_queues_and_sends_once_active(world: World, receiver: Receiver) -> None:
    subscription = await world.subscribe(receiver.url)
    async with world.sessions() as session:
        found = await session.get(WebhookSubscription, subscription.id)
        assert found is not None
        found.status = "paused"
        await session.commit()
    await world.change(uuid.uuid4(), 1)
    worker = _worker(world)
    try:
        await _drain(worker)
        assert receiver.received() == []
        assert [r.status for r in await _deliveries(world, subscription.id)] == ["pending"]
        async with world.sessions() as session:
            found = await session.get(WebhookSubscription, subscription.id)
            assert found is not None
            found.status = "active"
            await session.commit()
        await _drain(worker)
    finally:
        await worker.close()
    assert len(receiver.received()) == 1


async def test_during_a_rotation_both_secrets_sign(world: World, receiver: Receiver) -> None:
    subscription = await world.subscribe(receiver.url)
    old = subscription.secret
    async with world.sessions() as session:
        found = await service.get(session, ADMIN, subscription.id, for_update=True)
        new = (await service.rotate_secret(session, found, world.settings)).secret
        await session.commit()
    await world.change(uuid.uuid4(), 1)
    worker = Worker(world.sessions, world.settings)
    try:
        await _drain(worker)
    finally:
        await worker.close()
    (item,) = receiver.received()
    assert len(item.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(item.body, item.headers) == item.payload
    # Once the grace period is over, only the new one signs.
    async with world.sessions() as session:
        found = await session.get(WebhookSubscription, subscription.id)
        assert found is not None
        found.previous_secret_expires_at = datetime.now(UTC) - timedelta(seconds=1)
        await session.commit()
    await world.change(uuid.uuid4(), 1)
    worker = Worker(world.sessions, world.settings)
    try:
        await _drain(worker)
    finally:
        await worker.close()
    last = receiver.received()[-1]
    assert len(last.headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(last.body, last.headers)
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(old).verify(last.body, last.headers)


async def test_an_address_that_turns_internal_is_refused_at_delivery(
    world: World, receiver: Receiver
) -> None:
    answers = {"address": "93.184.215.14"}

    async def resolve(host: str, port: int) -> list[str]:
        assert host == "hooks.example.test"
        return [answers["address"]]

    strict = world.settings.model_copy(update={"webhook_allowed_networks": []})
    original = service.resolver
    service.resolver = resolve
    try:
        port = receiver.url.split(":")[2].split("/")[0]
        subscription = await world.subscribe(f"http://hooks.example.test:{port}/hook", settings=strict)
    finally:
        service.resolver = original
    # The name now resolves to the loopback address (where the receiver listens): nothing is sent there.
    answers["address"] = "127.0.0.1"
    await world.change(uuid.uuid4(), 1)
    worker = _worker(world, settings=strict, resolver=resolve)
    try:
        await _drain(worker)
    finally:
        await worker.close()
    assert receiver.received() == []
    (row,) = await _deliveries(world, subscription.id)
    assert row.status == "pending"
    assert row.attempts == 1
    assert row.last_status_code is None
    assert row.last_error is not None
    assert "127.0.0.1" in row.last_error
    assert row.last_error.startswith("refused")


async def test_the_deliveries_route_and_a_manual_retry(world: World, receiver: Receiver) -> None:
    receiver.answer = lambda _r: (500, {})
    subscription = await world.subscribe(receiver.url, settings=world.settings)
    await world.change(uuid.uuid4(), 1)
    clock = Clock()
    worker = _worker(world, clock)
    try:
        await _drain(worker)
        async with world.sessions() as session:
            key = (await api_keys.create(session, ApiKeyCreate(name="webhooks test", role=Role.admin))).key
            await session.commit()
        headers = {"Authorization": f"Bearer {key}"}
        async with app_client(world.settings) as client:
            listed = await client.get(
                f"/api/v1/webhook-subscriptions/{subscription.id}/deliveries", headers=headers
            )
            assert listed.status_code == 200, listed.text
            (item,) = listed.json()["items"]
            assert item["status"] == "pending"
            assert item["attempts"] == 1
            assert item["last_status_code"] == 500
            assert item["type"] == "positions.created"
            assert item["next_attempt_at"] == (clock.now + timedelta(seconds=5)).isoformat().replace(
                "+00:00", "Z"
            )
            assert [a["status_code"] for a in item["attempt_log"]] == [500]
            receiver.answer = lambda _r: (200, {})
            retried = await client.post(
                f"/api/v1/webhook-subscriptions/{subscription.id}/deliveries/{item['id']}/retry",
                headers=headers,
            )
            assert retried.status_code == 200, retried.text
            assert retried.json()["status"] == "pending"
        # Due now (the real clock), before its scheduled retry.
        real = Worker(world.sessions, world.settings)
        try:
            assert await real.send_due() == 1
        finally:
            await real.close()
    finally:
        await worker.close()
    (row,) = await _deliveries(world, subscription.id)
    assert (row.status, row.attempts) == ("succeeded", 2)
    assert len({i.webhook_id for i in receiver.received()}) == 1


async def test_the_service_delivers_too_when_asked(world: World, receiver: Receiver) -> None:
    """WEBHOOKS_DELIVER_IN_SERVE: each process of `serve` runs the worker in its lifespan."""
    await world.subscribe(receiver.url)
    settings = world.settings.model_copy(update={"webhooks_deliver_in_serve": True})
    async with app_client(settings):
        await world.change(uuid.uuid4(), 1)
        for _ in range(400):  # 20 s at most
            if receiver.unique():
                break
            await asyncio.sleep(0.05)
    assert [i.payload["type"] for i in receiver.unique().values()] == ["positions.created"]
    # Without the setting, nothing runs in the service.
    async with app_client(world.settings):
        await world.change(uuid.uuid4(), 2)
        await asyncio.sleep(0.5)
    assert len(receiver.received()) == 1


async def test_changes_written_before_the_subscription_are_not_delivered(
    world: World, receiver: Receiver
) -> None:
    """However late the worker copies the feed: no worker runs between these writes."""
    before, after = uuid.uuid4(), uuid.uuid4()
    await world.change(before, 1)
    await world.subscribe(receiver.url)
    await world.change(after, 1)
    worker = _worker(world)
    try:
        await _drain(worker)
    finally:
        await worker.close()
    assert [i.payload["data"]["id"] for i in receiver.received()] == [str(after)]


async def test_old_deliveries_are_purged_pending_ones_kept(world: World, receiver: Receiver) -> None:
    done_id, failing_id = uuid.uuid4(), uuid.uuid4()
    receiver.answer = lambda r: (500, {}) if r.payload["data"]["id"] == str(failing_id) else (204, {})
    subscription = await world.subscribe(receiver.url)
    await world.change(done_id, 1)
    await world.change(failing_id, 1)
    worker = Worker(world.sessions, world.settings)
    try:
        await _drain(worker)
        assert await worker.purge() == 0  # not old yet
        later = Clock()
        later.now = datetime.now(UTC) + timedelta(
            days=world.settings.webhook_delivery_retention_days, hours=1
        )
        old = _worker(world, later)
        try:
            assert await old.purge() == 1
        finally:
            await old.close()
    finally:
        await worker.close()
    rows = await _deliveries(world, subscription.id)
    assert [(str(r.object_id), r.status) for r in rows] == [(str(failing_id), "pending")]
