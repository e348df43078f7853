"""Alembic environment: async engine, the application's metadata, batch mode for SQLite, one process
migrating at a time."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from app.config import get_settings
from app.core.logging import configure_logging
from app.db import UTCDateTime, make_engine
from app.migration_lock import MIGRATION_LOCK_WAIT_SECONDS, take_migration_lock
from app.models import metadata

config = context.config
if config.attributes.get("configure_logger", True):
    # Run by the `alembic` command: the service's own log lines (LOG_LEVEL, LOG_JSON). `cnfs-api` and the
    # tests set their logging up themselves.
    _settings = get_settings()
    configure_logging(_settings.log_level, _settings.log_json)


def database_url() -> str:
    return str(
        config.attributes.get("database_url")
        or config.get_main_option("sqlalchemy.url")
        or get_settings().database_url
    )


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    # Migrations must not import application types: UTCDateTime is a plain timezone-aware DateTime.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(connection: Connection | None = None, **kwargs: Any) -> None:
    context.configure(
        render_item=_render_item,
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
        compare_server_default=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    # Before Alembic reads the revision; held until the migrations' transaction ends.
    take_migration_lock(connection)
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()
        if connection.dialect.name == "sqlite":
            # Foreign keys are off while tables are rebuilt (see make_engine): check them all at the end.
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"migration left rows with broken foreign keys: {broken[:10]}")


async def run_async_migrations() -> None:
    # On SQLite, a second process waits for the first one's write lock as long as it would wait for the
    # PostgreSQL lock.
    # Behind PgBouncer (transaction mode) too: the migrations run in one transaction, under a
    # transaction-level lock (app.migration_lock), and set nothing for the session.
    engine = make_engine(
        database_url(),
        foreign_keys=False,
        sqlite_busy_timeout_ms=MIGRATION_LOCK_WAIT_SECONDS * 1000,
        pgbouncer=config.attributes.get("pgbouncer"),
    )
    async with engine.connect() as connection:
        await connection.run_sync(_run_sync)
        await connection.commit()
    await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_sync(connection)
        return
    asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
