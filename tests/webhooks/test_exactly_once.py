"""Every committed change delivered exactly once (after dedup by `webhook-id`), none rolled back ever, in
order per object: writers race on separate connections while `cnfs-api webhooks deliver` processes are
killed with SIGKILL and restarted (two at once for a while), and the receiver answers 500 at first and now
and then afterwards. On PostgreSQL transactions commit out of order; on SQLite the processes share one
file, its writers one at a time."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
from sqlalchemy import select
from standardwebhooks import Webhook

from app.core.changes import FEED_ORDER, Change
from tests.conftest import THROUGH_PGBOUNCER
from tests.webhooks.conftest import World
from tests.webhooks.receiver import Received, Receiver

ROOT = Path(__file__).resolve().parents[2]
WRITERS = 4
CHANGES_PER_WRITER = 30
OBJECTS = 6
DEADLINE_SECONDS = 90


@contextmanager
def deliver(database_url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`cnfs-api webhooks deliver` as a process of its own; killed at the end if still running."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "WEBHOOK"))},
        # A run through PgBouncer (TEST_PGBOUNCER=1) hands the process its URL, hence the setting too.
        "DATABASE_PGBOUNCER": "true" if THROUGH_PGBOUNCER else "false",
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": database_url,
        "LOG_JSON": "false",
        "LOG_LEVEL": "WARNING",
        "WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        "WEBHOOK_RETRY_SCHEDULE_SECONDS": orjson.dumps([0.1] * 40).decode(),
        "WEBHOOK_TIMEOUT_SECONDS": "1",
        "WEBHOOK_POLL_INTERVAL_SECONDS": "0.05",
    }
    with log.open("ab") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "webhooks", "deliver"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


async def test_every_committed_change_exactly_once_through_kills_and_failures(
    world: World, receiver: Receiver, database_url: str, tmp_path: Path
) -> None:
    subscription = await world.subscribe(receiver.url)
    chance = random.Random(7)
    started = time.monotonic()

    def answer(_item: Received) -> tuple[int, dict[str, str]]:
        # 500 for the first two seconds, then one time in ten.
        if time.monotonic() - started < 2 or chance.random() < 0.1:
            return 500, {}
        return 204, {}

    receiver.answer = answer
    objects = [uuid.uuid4() for _ in range(OBJECTS)]
    versions = itertools.count(1)
    committed: set[tuple[str, int]] = set()
    rolled_back: set[tuple[str, int]] = set()

    async def writer(seed: int) -> None:
        pick = random.Random(seed)
        for _ in range(CHANGES_PER_WRITER):
            object_id, version = pick.choice(objects), next(versions)
            commit = pick.random() >= 0.15
            await world.change(object_id, version, commit=commit)
            (committed if commit else rolled_back).add((str(object_id), version))
            await asyncio.sleep(pick.random() * 0.03)

    log = tmp_path / "deliver.log"
    with deliver(database_url, log) as first:
        writers = asyncio.gather(*(writer(n) for n in range(WRITERS)))
        await asyncio.sleep(1.5)
        first.kill()  # SIGKILL, mid-way: its leases expire, others take over.
        first.wait(timeout=10)
        with deliver(database_url, log), deliver(database_url, log):
            await writers
            deadline = time.monotonic() + DEADLINE_SECONDS
            while time.monotonic() < deadline:
                got = {
                    (i.payload["data"]["id"], i.payload["data"]["version"])
                    for i in receiver.unique().values()
                }
                if got >= committed:
                    break
                await asyncio.sleep(0.2)
            # A moment more: anything sent twice or invented would show now.
            await asyncio.sleep(1)

    unique = receiver.unique()
    delivered = [(i.payload["data"]["id"], i.payload["data"]["version"]) for i in unique.values()]
    assert sorted(delivered) == sorted(committed), log.read_text()[-3000:]
    # Exactly once: one webhook-id per change, none of a rolled-back write.
    assert len(delivered) == len(set(delivered)) == len(committed)
    assert not set(delivered) & rolled_back
    everything = receiver.received()
    assert not {(i.payload["data"]["id"], i.payload["data"]["version"]) for i in everything} & rolled_back
    # A webhook-id sent again carries the same body; every request is signed with the subscription's secret.
    bodies: dict[str, bytes] = {}
    verifier = Webhook(subscription.secret)
    for item in everything:
        assert bodies.setdefault(item.webhook_id, item.body) == item.body
        assert verifier.verify(item.body, item.headers) == item.payload
    assert len(everything) > len(unique)  # the 500s and the kill made retries
    # In the feed's order per object (the feed's order is that of the transactions' keys, not of versions).
    async with world.sessions() as session:
        rows = (
            await session.execute(
                select(Change.object_id, Change.version)
                .where(Change.territory_id == world.territory.id)
                .order_by(*FEED_ORDER)
            )
        ).all()
    for object_id in objects:
        feed = [version for oid, version in rows if oid == object_id]
        arrived = [
            i.payload["data"]["version"] for i in unique.values() if i.payload["data"]["id"] == str(object_id)
        ]
        assert arrived == feed, object_id
