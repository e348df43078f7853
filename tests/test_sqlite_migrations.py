"""SQLite migrations run with foreign keys off, so that a batch rebuild of a table loses no referring rows."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from alembic import command
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import text

from app.cli import alembic_config
from app.db import make_engine


def test_a_batch_rebuild_keeps_the_rows_that_refer_to_the_table() -> None:
    with tempfile.TemporaryDirectory(prefix="cnfs-batch-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'b.db'}"
        command.upgrade(alembic_config(url), "head")

        async def scenario() -> int:
            engine = make_engine(url)
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO territories (id, kind, code, name, name_sort, search_name, path,"
                        " created_at, updated_at, version) VALUES ('00000000000000000000000000000001',"
                        " 'region', '84', 'ARA', 'ara', 'ara', '/x/', '2026-01-01', '2026-01-01', 1)"
                    )
                )
                await conn.execute(
                    text(
                        "INSERT INTO api_keys (id, name, role, prefix, secret_hash, created_at) VALUES"
                        " ('00000000000000000000000000000002', 'k', 'viewer', 'cnfs_x', 'h', '2026-01-01')"
                    )
                )
                await conn.execute(
                    text(
                        "INSERT INTO api_key_territories VALUES"
                        " ('00000000000000000000000000000002', '00000000000000000000000000000001')"
                    )
                )
            await engine.dispose()

            # What a later migration in batch mode does: rebuild the referred table.
            migrations_engine = make_engine(url, foreign_keys=False)
            async with migrations_engine.begin() as conn:

                def rebuild(sync_conn: object) -> None:
                    ops = Operations(MigrationContext.configure(sync_conn))  # type: ignore[arg-type]
                    with ops.batch_alter_table("api_keys", recreate="always"):
                        pass

                await conn.run_sync(rebuild)
            await migrations_engine.dispose()

            engine = make_engine(url)
            async with engine.connect() as conn:
                count = (await conn.execute(text("SELECT count(*) FROM api_key_territories"))).scalar_one()
            await engine.dispose()
            return int(count)

        assert asyncio.run(scenario()) == 1
