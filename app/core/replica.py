"""Read replicas (DATABASE_READ_URL): which reading requests a streaming replica answers, read-your-writes,
and what happens when the replica cannot be reached.

What reads from the replica: the GET requests of the operations in `REPLICA_OPERATIONS` (searches, lists
and single reads of territories, programmes, agreements, positions and workshops, the statistics, the
referentials and the open-data files), on the FastAPI route and on its direct twin alike, the caller's key
included (a key the replica does not know yet is looked up on the primary: `with_primary_keys`; a revoked
one is refused there once the replica has replayed its revocation). Everything else
reads and writes on the primary: writes; personal data (counsellors, assignments, registrations: their
reads are journalled, a write); the change feed (its horizon reads the primary's running transactions);
API keys and `/me`; the health checks.

Read-your-writes. After a write that succeeded, the same caller reads from the primary for
DATABASE_READ_PRIMARY_SECONDS: the caller is its API key (a digest of it, as the rate limits count it) or,
without a key, its address; the worker process that answered the write remembers it. The write's response
also sets a cookie (`cnfs_read_primary`, holding the time until which it applies) that sends the caller's
next reads to the primary whichever worker or instance answers them, for a client that keeps cookies (a
browser, an HTTP session). A caller that sends its next read through another connection without the
cookie may be answered by another worker: it may then read the replica's state, behind by the replication
lag (usually milliseconds). The cookie only ever sends reads to the primary, so a forged one costs nothing
but the primary's load.

The replica down. A replica that cannot be connected to (refused, timed out, starting up) is left alone for
DATABASE_READ_RETRY_SECONDS: its reads go to the primary meanwhile (one warning in the log), then it is
tried again. A request whose replica connection breaks in the middle of its answer is answered 503 with
Retry-After, as on the primary; the pool's other connections are checked before their next use, and the
next requests find the replica down and read from the primary."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.datastructures import MutableHeaders
from starlette.types import Scope

from app.core.auth import KeyResolver, Principal
from app.core.ratelimit import key_reference
from app.db import JOURNALED

logger = logging.getLogger("app.replica")

REPLICA_OPERATIONS = frozenset(
    {
        "territories_list",
        "territories_get_by_code",
        "territories_get",
        "programmes_list",
        "programmes_get",
        "agreements_list",
        "agreements_get",
        "agreements_amendments_list",
        "agreements_amendments_get",
        "positions_list",
        "positions_get",
        "workshops_list",
        "workshops_calendar",
        "workshops_get_calendar",
        "workshops_get",
        "stats_positions",
        "stats_workshops",
        "referentials_list",
        "referentials_get",
        "open_data_lieux_csv",
        "open_data_lieux_json",
    }
)
"""The operations whose GET reads from the replica: public or programme data, never personal data."""

PIN_COOKIE = "cnfs_read_primary"
_PIN_COOKIE_BYTES = PIN_COOKIE.encode() + b"="
READ_METHODS = frozenset({"GET", "HEAD"})
# Callers remembered at most (per worker process); the oldest are forgotten first.
MAX_PINNED = 50_000

REPLICA_DOWN = (sa_exc.DBAPIError, OSError, TimeoutError)
"""What connecting to the replica raises when it cannot be reached (SQLAlchemy's errors wrap the
driver's; a connect timeout is the builtin TimeoutError). The pool's own timeout (every connection in
use) is not among them: that is the 503 it always was."""


def caller_of(scope: Scope) -> str:
    """Who is asking, without the database: a digest of the API key, or the client's address."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            _scheme, _, secret = value.decode("latin-1").partition(" ")
            return "key:" + key_reference(secret.strip())
    client = scope.get("client")
    return "address:" + (client[0] if client else "unknown")


def _cookie_deadline(scope: Scope) -> float | None:
    for name, value in scope.get("headers", ()):
        if name == b"cookie" and _PIN_COOKIE_BYTES in value:
            for part in value.split(b";"):
                key, _, text = part.strip().partition(b"=")
                if key == _PIN_COOKIE_BYTES[:-1]:
                    try:
                        return float(text)
                    except ValueError:
                        return None
    return None


class ReadRouting:
    """The replica's engine and sessions, and which reading requests it answers (the module's docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        primary_seconds: float,
        retry_seconds: float,
    ) -> None:
        self.engine = engine
        self.sessionmaker = sessionmaker
        self.primary_seconds = primary_seconds
        self.retry_seconds = retry_seconds
        self._pinned: MutableMapping[str, float] = {}
        self._down_until = 0.0

    def serves(self, scope: Scope) -> bool:
        """Whether this request reads from the replica."""
        if scope["method"] not in READ_METHODS:
            return False
        route = scope.get("route")
        if getattr(route, "name", None) not in REPLICA_OPERATIONS:
            return False
        if getattr(getattr(route, "endpoint", None), JOURNALED, False):
            # An answer that shows people writes its journal line (app.core.audit): on the primary.
            return False
        now = time.monotonic()
        if now < self._down_until:
            return False
        if self._pinned:
            deadline = self._pinned.get(caller_of(scope))
            if deadline is not None:
                if now < deadline:
                    return False
                self._pinned.pop(caller_of(scope), None)
        cookie = _cookie_deadline(scope)
        return cookie is None or cookie <= time.time()

    def wrote(self, scope: Scope, headers: MutableHeaders) -> None:
        """A write succeeded: its caller reads from the primary for a while (this process remembers it;
        the cookie tells the others). `headers`: the response's, to set the cookie in."""
        if self.primary_seconds <= 0:
            return
        caller = caller_of(scope)
        pinned = self._pinned
        pinned.pop(caller, None)
        pinned[caller] = time.monotonic() + self.primary_seconds
        if len(pinned) > MAX_PINNED:
            for oldest in list(pinned)[: len(pinned) - MAX_PINNED]:
                del pinned[oldest]
        until = time.time() + self.primary_seconds
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        headers.append(
            "set-cookie",
            f"{PIN_COOKIE}={until:.3f}; Max-Age={max(1, round(self.primary_seconds))}; Path=/; "
            f"HttpOnly; SameSite=Lax{secure}",
        )

    def failed(self, error: BaseException) -> None:
        """The replica could not be reached: its reads go to the primary for `retry_seconds`."""
        now = time.monotonic()
        if now >= self._down_until:
            logger.warning(
                "the read replica cannot be reached (%s): reads go to the primary for %g s",
                type(error).__name__,
                self.retry_seconds,
            )
        self._down_until = now + self.retry_seconds


def with_primary_keys(
    resolve: KeyResolver, routing: ReadRouting, primary: Callable[[], async_sessionmaker[AsyncSession]]
) -> KeyResolver:
    """The key resolver of an application with a replica: a key the replica does not know (yet: created a
    moment ago) is looked up on the primary before the request is refused, so that a new key works at once.
    `primary`: the application's sessionmaker of the moment."""

    async def resolver(session: AsyncSession, secret: str) -> Principal | None:
        principal = await resolve(session, secret)
        if principal is not None:
            return principal
        # An AsyncSession names its sync engine; the direct path's session, its AsyncEngine.
        bound: Any = session.get_bind()
        if bound is not routing.engine and bound is not routing.engine.sync_engine:
            return None
        async with primary()() as on_primary:
            return await resolve(on_primary, secret)

    return resolver
