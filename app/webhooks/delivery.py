"""The delivery worker: copies the change feed into deliveries, then sends them as Standard Webhooks.

Never lost, never invented. The change feed (`app.core.changes`) is written in the same transaction as every
change and read below a horizon that no change still to come can fall behind: it is the outbox. A write
pays nothing more for webhooks. The worker moves one cursor over the feed (`webhook_fanout`) and, in the
same transaction, inserts one delivery per change and matching subscription: a change rolled back never
reaches the feed, hence never a delivery; a committed one reaches it, and the cursor passes it only in the
transaction that queues its deliveries. Several workers may run: the cursor's row is locked (PostgreSQL
`FOR UPDATE SKIP LOCKED`: one fans out, the others go on sending; SQLite runs writing transactions one at a
time anyway).

Sending. A worker claims due deliveries in a short transaction (`FOR UPDATE SKIP LOCKED` on PostgreSQL),
leasing them to itself for twice the HTTP timeout, and commits before sending: no transaction stays open
during an HTTP call (it would hold the feed's horizon back). It then records each outcome, if it still holds
the lease. A worker killed meanwhile leaves its leases to expire; the delivery is then sent again, with the
same `webhook-id`: delivery is at least once, and exactly once for a receiver that ignores an id it has
already processed, as the Standard Webhooks specification asks receivers to.

Order. A delivery is not claimed while an earlier delivery of the same object to the same subscription is
still pending (being sent, or failing and waiting for its next try): changes of one object arrive in the
feed's order; different objects go on. A delivery that has failed for good (the schedule is exhausted, or
410) stops holding the later ones back.

Retries: the schedule of WEBHOOK_RETRY_SCHEDULE_SECONDS (the specification's: 5 s, 5 min, 30 min, 2 h, 5 h,
10 h, 14 h, 20 h, 24 h), each delay jittered by ±10 %, never sooner than the receiver's `Retry-After`. A
receiver answering 410 Gone disables its subscription. Redirects are not followed (a failure)."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook

from app.config import Settings
from app.core import changes
from app.core.auth import Principal, Role
from app.core.responses import dumps
from app.db import new_id, utcnow
from app.territories import service as territories
from app.webhooks import addresses, service
from app.webhooks import repository as repo
from app.webhooks.models import DeliveryStatus, WebhookSubscription

logger = logging.getLogger("app.webhooks")

FEED_READER = Principal(role=Role.admin, name="webhooks")
FANOUT_BATCH = 1000
# The attempts a delivery keeps in its log (the count goes on).
LOG_LENGTH = 20
MAX_RETRY_AFTER = timedelta(hours=24)
JITTER = 0.1
USER_AGENT = "cnfs-api-webhooks/1"
# The most of a receiver's answer read (the rest is not: the connection is then closed rather than reused).
MAX_ANSWER_BYTES = 64 * 1024
# Old deliveries are deleted by each worker once an hour, this many per transaction.
PURGE_EVERY_SECONDS = 3600.0
PURGE_BATCH = 1000


@dataclass(frozen=True)
class Outcome:
    at: datetime
    status_code: int | None
    error: str | None
    retry_after: timedelta | None
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def retry_delay(attempts: int, schedule: Sequence[float], draw: Callable[[], float]) -> timedelta | None:
    """The wait after the `attempts`-th failed attempt (1 for the first), jittered by ±10 %; None when the
    schedule is exhausted."""
    if attempts > len(schedule):
        return None
    return timedelta(seconds=schedule[attempts - 1] * (1 + JITTER * (2 * draw() - 1)))


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """`Retry-After` as seconds or as an HTTP date; None when absent or unreadable. At most 24 h."""
    if not value:
        return None
    value = value.strip()
    delay: timedelta | None
    if value.isdigit():
        delay = timedelta(seconds=int(value))
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        delay = max(when - now, timedelta(0))
    return min(delay, MAX_RETRY_AFTER)


def payload(row: Any) -> bytes:
    """`{type, timestamp, data}`: the change feed's item (ids, versions, a territory; no personal data)."""
    return dumps(
        {
            "type": f"{row.resource}.{row.action}",
            "timestamp": row.occurred_at,
            "data": service.change_item(row),
        }
    )


def signature(row: Any, message_id: str, at: datetime, body: str) -> str:
    """`webhook-signature`: one `v1,...` per secret, the previous one too during its grace period."""
    signatures = [Webhook(row.secret).sign(message_id, at, body)]
    expires = row.previous_secret_expires_at
    if row.previous_secret and expires is not None and expires > at:
        signatures.append(Webhook(row.previous_secret).sign(message_id, at, body))
    return " ".join(signatures)


def _matches(
    subscription: WebhookSubscription, paths: Sequence[str], row: Any, change_path: str | None
) -> bool:
    if row.seq <= subscription.starts_after_seq:
        return False
    if row.resource not in subscription.resources or row.action not in subscription.actions:
        return False
    if not subscription.territories:
        return True
    return change_path is not None and any(change_path.startswith(path) for path in paths)


class Worker:
    """Fans the feed out and sends what is due. `clock` and `draw` (the jitter's random number) are the
    tests' to replace; `resolver` too (DNS)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        draw: Callable[[], float] = random.random,
        resolver: addresses.Resolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.clock = clock
        self.draw = draw
        self.resolver = resolver
        self.networks = addresses.parse_networks(settings.webhook_allowed_networks)
        self.timeout = settings.webhook_timeout_seconds
        self.lease = timedelta(seconds=2 * self.timeout + 1)
        self._purged_at: float | None = None
        self.client = httpx.AsyncClient(
            timeout=self.timeout,
            follow_redirects=False,
            # No proxy from the environment: the address checked is the address connected to.
            trust_env=False,
            transport=transport,
            headers={"user-agent": USER_AGENT},
        )

    async def close(self) -> None:
        await self.client.aclose()

    def _postgres(self, session: AsyncSession) -> bool:
        return session.get_bind().dialect.name == "postgresql"

    # --- fan-out -----------------------------------------------------------------------------------------

    async def fan_out(self) -> tuple[int, bool]:
        """One batch of the feed into deliveries: (deliveries queued, whether the feed has more now)."""
        async with self.sessionmaker() as session, session.begin():
            cursor = await repo.lock_fanout(session, skip_locked=self._postgres(session))
            if cursor is None:
                return 0, False
            rows, next_after = await changes.read(
                session,
                FEED_READER,
                after=changes.encode_cursor(*cursor),
                resources=None,
                limit=FANOUT_BATCH,
            )
            if not rows:
                return 0, False
            subscriptions = await repo.fanout_targets(session)
            queued = await self._queue(session, subscriptions, rows) if subscriptions else []
            await repo.insert_deliveries(session, queued)
            await repo.move_fanout(session, *changes.decode_cursor(next_after))
        return len(queued), len(rows) == FANOUT_BATCH

    async def _queue(
        self, session: AsyncSession, subscriptions: Sequence[WebhookSubscription], rows: Sequence[Any]
    ) -> list[dict[str, Any]]:
        wanted = {link.territory_id for s in subscriptions for link in s.territories}
        if wanted:
            wanted |= {row.territory_id for row in rows if row.territory_id is not None}
        found = await territories.get_many(session, list(wanted)) if wanted else []
        path = {t.id: t.path for t in found}
        scopes = [
            (s, [path[link.territory_id] for link in s.territories if link.territory_id in path])
            for s in subscriptions
        ]
        now = self.clock()
        queued = []
        for row in rows:
            change_path = path.get(row.territory_id) if row.territory_id is not None else None
            for subscription, paths in scopes:
                if _matches(subscription, paths, row, change_path):
                    queued.append(
                        {
                            "id": new_id(),
                            "subscription_id": subscription.id,
                            "change_xid": row.xid,
                            "change_seq": row.seq,
                            "resource": row.resource,
                            "object_id": row.object_id,
                            "action": row.action,
                            "object_version": row.version,
                            "territory_id": row.territory_id,
                            "occurred_at": row.occurred_at,
                            "status": DeliveryStatus.pending.value,
                            "attempts": 0,
                            "next_attempt_at": now,
                            "attempt_log": [],
                            "created_at": now,
                        }
                    )
        return queued

    # --- sending -----------------------------------------------------------------------------------------

    async def send_due(self) -> int:
        """Claims the deliveries due now (up to WEBHOOK_CONCURRENCY), sends them at once, records the
        outcomes; returns how many were attempted."""
        now = self.clock()
        token = uuid.uuid4()
        async with self.sessionmaker() as session, session.begin():
            claimed = await repo.claim(
                session,
                now=now,
                lease_until=now + self.lease,
                token=token,
                limit=self.settings.webhook_concurrency,
                skip_locked=self._postgres(session),
            )
        if not claimed:
            return 0
        outcomes = await asyncio.gather(*(self._attempt(row) for row in claimed))
        async with self.sessionmaker() as session, session.begin():
            pairs = list(zip(claimed, outcomes, strict=True))
            await repo.record_results(
                session, token, [(row.id, self._result(row, out)) for row, out in pairs]
            )
            for row, outcome in pairs:
                if outcome.status_code == 410 and await repo.still_failed_by(session, row.id, outcome.at):
                    await repo.disable_subscription(session, row.subscription_id)
        return len(claimed)

    def _result(self, row: Any, outcome: Outcome) -> dict[str, Any]:
        attempts = row.attempts + 1
        entry = {
            "at": outcome.at.isoformat().replace("+00:00", "Z"),
            "status_code": outcome.status_code,
            "error": outcome.error,
            "duration_ms": outcome.duration_ms,
        }
        values: dict[str, Any] = {
            "attempts": attempts,
            "attempt_log": [*list(row.attempt_log or [])[-(LOG_LENGTH - 1) :], entry],
            "last_attempt_at": outcome.at,
            "last_status_code": outcome.status_code,
            "last_error": outcome.error[:200] if outcome.error else None,
            "status": DeliveryStatus.pending.value,
            "delivered_at": None,
        }
        if outcome.succeeded:
            return values | {
                "status": DeliveryStatus.succeeded.value,
                "delivered_at": outcome.at,
                "next_attempt_at": None,
            }
        delay = (
            None
            if outcome.status_code == 410
            else retry_delay(attempts, self.settings.webhook_retry_schedule_seconds, self.draw)
        )
        if delay is None:
            return values | {"status": DeliveryStatus.failed.value, "next_attempt_at": None}
        if outcome.retry_after is not None:
            delay = max(delay, outcome.retry_after)
        return values | {"next_attempt_at": outcome.at + delay}

    async def _attempt(self, row: Any) -> Outcome:
        at = self.clock()
        started = time.perf_counter()

        def done(status: int | None, error: str | None, retry_after: timedelta | None = None) -> Outcome:
            elapsed = int((time.perf_counter() - started) * 1000)
            return Outcome(at, status, error, retry_after, elapsed)

        try:
            async with asyncio.timeout(self.timeout):
                target = await addresses.check(row.url, self.networks, self.resolver or service.resolver)
        except addresses.AddressRefused as exc:
            return done(None, f"refused: {exc}")
        except TimeoutError:
            return done(None, "timeout resolving the host")
        body = payload(row)
        message_id = f"msg_{row.id}"
        headers = {
            "content-type": "application/json",
            "host": target.host_header,
            "webhook-id": message_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signature(row, message_id, at, body.decode()),
        }
        url = target.url_for(row.url, target.addresses[0])
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            async with self.client.stream(
                "POST", url, content=body, headers=headers, extensions=extensions
            ) as response:
                # Read (a bounded part of) the answer, so that the connection goes back to the pool.
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read > MAX_ANSWER_BYTES:
                        break
                retry_after = parse_retry_after(response.headers.get("retry-after"), at)
                return done(response.status_code, None, retry_after)
        except httpx.TimeoutException:
            return done(None, "timeout")
        except httpx.HTTPError as exc:
            return done(None, type(exc).__name__)

    # --- retention ---------------------------------------------------------------------------------------

    async def purge(self) -> int:
        """Deletes the deliveries no longer pending made more than WEBHOOK_DELIVERY_RETENTION_DAYS ago, in
        batches; returns how many."""
        before = self.clock() - timedelta(days=self.settings.webhook_delivery_retention_days)
        total = 0
        while True:
            async with self.sessionmaker() as session, session.begin():
                purged = await repo.purge_deliveries(session, before, PURGE_BATCH)
            total += purged
            if purged < PURGE_BATCH:
                return total

    async def _purge_now_and_then(self) -> None:
        now = time.monotonic()
        if self._purged_at is None or now - self._purged_at >= PURGE_EVERY_SECONDS:
            self._purged_at = now
            purged = await self.purge()
            if purged:
                logger.info("purged %d old webhook deliveries", purged)

    # --- the loop ----------------------------------------------------------------------------------------

    async def run_once(self) -> tuple[int, int]:
        """Fans out what the feed has and sends what is due once: (queued, attempted)."""
        queued, more = await self.fan_out()
        while more:
            extra, more = await self.fan_out()
            queued += extra
        return queued, await self.send_due()

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: fan out, send, and when there was nothing to do, wait a poll interval."""
        interval = self.settings.webhook_poll_interval_seconds
        while not stop.is_set():
            busy = False
            try:
                await self._purge_now_and_then()
                _, more = await self.fan_out()
                sent = await self.send_due()
                busy = more or sent > 0
            except Exception as exc:
                # A lost database, a lock timeout...: the next round tries again.
                logger.warning("webhook delivery round failed: %s", type(exc).__name__)
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)


async def run_worker(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, stop: asyncio.Event
) -> None:
    worker = Worker(sessionmaker, settings)
    try:
        await worker.run(stop)
    finally:
        await worker.close()
