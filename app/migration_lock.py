"""The lock that lets one process at a time migrate a database: several replicas started at once migrate it
once; the others wait, then find its schema current."""

from __future__ import annotations

import logging
import time

from sqlalchemy import text
from sqlalchemy.engine import Connection

logger = logging.getLogger("app.migrations")

# PostgreSQL advisory locks are per database: "cnfs-api" in ASCII, one key for every release.
MIGRATION_LOCK_KEY = 0x636E66732D617069
# Longest wait for another process's migrations, then the migration fails (a migration that rewrites a
# large table takes minutes; a process that holds the lock for longer is stuck, not busy).
MIGRATION_LOCK_WAIT_SECONDS = 900


def take_migration_lock(connection: Connection, wait_seconds: float = MIGRATION_LOCK_WAIT_SECONDS) -> None:
    """Hold the migration lock until the end of the connection's transaction (its commit or rollback
    releases it, even when the process dies), before Alembic reads the schema's revision.

    PostgreSQL: a transaction-level advisory lock. The wait for it has its own bound (the service's
    `lock_timeout` and `statement_timeout`, made for requests, are lifted for this one statement).
    SQLite: the migration's transaction already holds the database's write lock from its first statement
    (`BEGIN IMMEDIATE`, see app.db), so the processes queue on it."""
    if connection.dialect.name != "postgresql":
        return
    if connection.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({MIGRATION_LOCK_KEY})").scalar():
        return
    logger.warning("another process is migrating the database: waiting for it (%g s at most)", wait_seconds)
    started = time.monotonic()
    previous = connection.exec_driver_sql(
        "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')"
    ).one()
    timeouts = text(
        "SELECT set_config('lock_timeout', :lock, true), set_config('statement_timeout', :run, true)"
    )
    connection.execute(timeouts, {"lock": f"{int(wait_seconds * 1000)}ms", "run": "0"})
    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
    connection.execute(timeouts, {"lock": previous[0], "run": previous[1]})
    logger.info("the other process finished migrating after %.1f s", time.monotonic() - started)
