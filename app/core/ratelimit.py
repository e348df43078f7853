"""Rate limits per API key and per client address (public registration stricter), with the `limits` library:
counters in memory by default, in Redis when REDIS_URL is set (shared by every worker and replica).

`resolve_principal` calls `RateLimiter.check` before the request touches the database: one counter
increment per request (two for a public registration), no dependency of its own. A key is counted under a
digest of its secret (a secret names one key), so that its limit is checked before the key is looked up, and
no database connection is held while Redis answers. A refusal is 429 `rate_limited` with `Retry-After` and
the `RateLimit-Limit/Remaining/Reset` headers.

Redis is an outside call: the limits protect the service, they must not take it down. Each check is bounded
by `timeout` (RATE_LIMIT_REDIS_TIMEOUT_SECONDS: connecting, sending and reading, no retry). A Redis that
refuses, fails or does not answer in time lets the request through unchecked, logs one warning and counts it
in the `rate_limit_checks_skipped_total` metric; the limiter then leaves Redis alone for `pause` seconds
(every request goes through unchecked and counted, without waiting for it) before asking it again."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.util import WindowStats
from prometheus_client import CollectorRegistry, Counter

from app.core.problems import AppError

logger = logging.getLogger("app.ratelimit")

# The operation whose limit per client address is the stricter `registration` one.
REGISTRATION_OPERATIONS = frozenset({"workshops_register"})

# After a failed or late answer of Redis, requests go through unchecked this long before it is asked again.
PAUSE_AFTER_FAILURE_SECONDS = 5.0


class RateLimited(AppError):
    """Too many requests from this API key or this address: wait `Retry-After` seconds."""

    status, code, title = 429, "rate_limited", "Too many requests"


def parse_limit(value: str) -> RateLimitItem:
    """`"600/minute"`, `"10 per second"`, ... (the `limits` notation); ValueError otherwise."""
    return parse(value)


def key_reference(secret: str) -> str:
    """What a key is counted under: a digest of its secret, distinct from the one stored in the database."""
    return hashlib.blake2b(secret.encode(), digest_size=16, person=b"cnfs-ratelimit").hexdigest()


def make_storage(redis_url: str | None, timeout: float) -> Storage:
    if not redis_url:
        return MemoryStorage()
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    scheme, sep, rest = redis_url.partition("://")
    # redis-py waits forever on a silent server by default, and retries 3 times with a backoff: one try,
    # bounded, instead (the check is skipped rather than late).
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    return RedisStorage(f"async+{scheme}{sep}{rest}", implementation="redispy", **options)


class RateLimiter:
    def __init__(
        self,
        *,
        per_key: str,
        per_address: str,
        registration: str,
        redis_url: str | None = None,
        timeout: float = 0.5,
        pause: float = PAUSE_AFTER_FAILURE_SECONDS,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.per_key = parse_limit(per_key)
        self.per_address = parse_limit(per_address)
        self.registration = parse_limit(registration)
        self.storage = make_storage(redis_url, timeout)
        self.timeout = timeout
        self.pause = pause
        self._limiter = FixedWindowRateLimiter(self.storage)
        # Memory counters answer at once: only Redis is bounded in time.
        self._remote = redis_url is not None
        self._paused_until = 0.0
        self.skipped = Counter(
            "rate_limit_checks_skipped",
            "Requests let through without their rate limit checked, because the counters' storage failed "
            "(error), did not answer in time (timeout) or is left alone after a failure (paused).",
            ("reason",),
            registry=registry,
        )
        self.refused = Counter(
            "cnfs_rate_limited",
            "Requests refused by a rate limit (429), by limit (key, address, registration).",
            ("limit",),
            registry=registry,
        )

    async def check(self, key: str | None, address: str, operation: str | None) -> None:
        """Counts this request against its caller's limits (`key`: `key_reference` of its API key's
        secret, None without a key); 429 past one of them."""
        if key is not None:
            await self._hit(self.per_key, "key", key)
            return
        await self._hit(self.per_address, "address", address)
        if operation in REGISTRATION_OPERATIONS:
            await self._hit(self.registration, "registration", address)

    async def _hit(self, item: RateLimitItem, *identifiers: str) -> None:
        if self._paused_until and time.monotonic() < self._paused_until:
            self.skipped.labels("paused").inc()
            return
        try:
            if self._remote:
                async with asyncio.timeout(self.timeout):
                    stats = await self._count(item, identifiers)
            else:
                stats = await self._count(item, identifiers)
        except Exception as exc:
            self._fail(exc)
            return
        if self._paused_until:
            self._resume()
        if stats is None:
            return
        self.refused.labels(identifiers[0]).inc()
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"at most {item.amount} requests per {item.get_expiry()} s here: retry in {retry_after} s",
            headers={
                "Retry-After": str(retry_after),
                "RateLimit-Limit": str(item.amount),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(retry_after),
            },
        )

    async def _count(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> WindowStats | None:
        """Counts the request: None within the limit, else the window (when it resets)."""
        if await self._limiter.hit(item, *identifiers):
            return None
        return await self._limiter.get_window_stats(item, *identifiers)

    def _fail(self, exc: Exception) -> None:
        reason = "timeout" if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__ else "error"
        self.skipped.labels(reason).inc()
        already = self._paused_until != 0.0
        self._paused_until = time.monotonic() + self.pause
        if not already:
            logger.warning(
                "rate limit storage unavailable (%s: %s): requests go through unchecked, next try in %g s",
                reason,
                type(exc).__name__,
                self.pause,
            )

    def _resume(self) -> None:
        self._paused_until = 0.0
        logger.warning("rate limit storage answers again: limits checked again")
