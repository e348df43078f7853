"""Rate limits per API key and per client address (public registration stricter), with the `limits` library:
counters in memory by default, in Redis when REDIS_URL is set (shared by every worker and replica).

`get_principal` calls `RateLimiter.check` once the caller is known: one counter increment per request (two
for a public registration), no dependency of its own. A refusal is 429 `rate_limited` with `Retry-After` and
the `RateLimit-Limit/Remaining/Reset` headers. When Redis cannot be reached the request goes through (the
limits protect the service; they must not take it down) and an error is logged."""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter

from app.core.problems import AppError

logger = logging.getLogger("app.ratelimit")

# The operation whose limit per client address is the stricter `registration` one.
REGISTRATION_OPERATIONS = frozenset({"workshops_register"})


class RateLimited(AppError):
    """Too many requests from this API key or this address: wait `Retry-After` seconds."""

    status, code, title = 429, "rate_limited", "Too many requests"


def parse_limit(value: str) -> RateLimitItem:
    """`"600/minute"`, `"10 per second"`, ... (the `limits` notation); ValueError otherwise."""
    return parse(value)


def make_storage(redis_url: str | None) -> Storage:
    if not redis_url:
        return MemoryStorage()
    scheme, sep, rest = redis_url.partition("://")
    return RedisStorage(f"async+{scheme}{sep}{rest}", implementation="redispy")


class RateLimiter:
    def __init__(
        self,
        *,
        per_key: str,
        per_address: str,
        registration: str,
        redis_url: str | None = None,
    ) -> None:
        self.per_key = parse_limit(per_key)
        self.per_address = parse_limit(per_address)
        self.registration = parse_limit(registration)
        self.storage = make_storage(redis_url)
        self._limiter = FixedWindowRateLimiter(self.storage)

    async def check(self, key_id: str | None, address: str, operation: str | None) -> None:
        """Counts this request against its caller's limits; 429 past one of them."""
        if key_id is not None:
            await self._hit(self.per_key, "key", key_id)
            return
        await self._hit(self.per_address, "address", address)
        if operation in REGISTRATION_OPERATIONS:
            await self._hit(self.registration, "registration", address)

    async def _hit(self, item: RateLimitItem, *identifiers: str) -> None:
        try:
            if await self._limiter.hit(item, *identifiers):
                return
            stats = await self._limiter.get_window_stats(item, *identifiers)
        except Exception as exc:
            logger.error("rate limit storage unavailable, request let through: %s", type(exc).__name__)
            return
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
