"""`last_used_at` of API keys, kept to the minute without a write in any request's transaction.

The key lookup every authenticated request makes already reads `last_used_at`. When it is older than the
interval (a setting, 60 s by default) and this process has not just written it, a task started here writes
it on a connection of its own, after the request has its principal: the request neither waits for it nor
carries the write in its transaction (a read stays a read, a write's transaction holds no lock on the key).
The UPDATE is conditional (`last_used_at` older than the interval), so that the workers and replicas that
see the same stale value at the same instant write it once: at most one write per key and interval, whatever
the traffic. A failed write is logged (the key's id, never its secret) and forgotten: the next request after
the interval tries again."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api_keys import repository as repo
from app.core.auth import Principal
from app.db import utcnow

logger = logging.getLogger("app.api_keys")


class KeyUsage:
    """`app.state.key_used`: told of each request's key (`app.core.auth.KeyUsed`)."""

    def __init__(self, interval_seconds: int) -> None:
        self.interval = timedelta(seconds=interval_seconds)
        self.engine: AsyncEngine | None = None
        # key id → when this process last wrote it (monotonic): a burst of requests before the first write
        # commits starts one task, not one per request.
        self._written: dict[uuid.UUID, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def stop(self) -> None:
        """Waits (briefly) for the writes under way, at shutdown, before the engine is disposed of."""
        self.engine = None
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=5)
            for task in pending:
                task.cancel()

    def __call__(self, principal: Principal) -> None:
        engine = self.engine
        if engine is None or not self.interval or principal.key_id is None:
            return
        now = utcnow()
        if principal.last_used_at is not None and now - principal.last_used_at < self.interval:
            return
        seconds = time.monotonic()
        written = self._written.get(principal.key_id)
        if written is not None and seconds - written < self.interval.total_seconds():
            return
        if len(self._written) > 10_000:
            self._written.clear()
        self._written[principal.key_id] = seconds
        task = asyncio.get_running_loop().create_task(self._write(engine, principal.key_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, engine: AsyncEngine, key_id: uuid.UUID) -> None:
        now = utcnow()
        try:
            async with AsyncSession(engine) as session, session.begin():
                await repo.touch(session, key_id, now, now - self.interval)
        except Exception:
            logger.warning("recording when API key %s was last used failed", key_id, exc_info=True)
            self._written.pop(key_id, None)
