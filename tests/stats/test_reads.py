"""How an answer is read: in one snapshot (one REPEATABLE READ, READ ONLY transaction on PostgreSQL), in a
few statements whatever the range, never from the registrations."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from tests.conftest import IS_POSTGRES
from tests.helpers import app_client
from tests.stats.helpers import STATS

_TIMEOUTS = "SELECT set_config('lock_timeout'"


async def test_a_statistics_answer_is_one_snapshot_of_a_few_statements(settings: Settings) -> None:
    # Through the routes (their direct twins read the same statements: tests/stats/test_direct_path.py).
    async with app_client(settings.model_copy(update={"direct_path": False})) as client:
        engine: AsyncEngine = client._transport.app.state.engine  # type: ignore[attr-defined]
        region = (await client.get("/api/v1/territories", params={"kind": "region", "limit": 1})).json()
        sent: list[str] = []
        began: list[Any] = []

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            sent.append(statement)

        @event.listens_for(engine.sync_engine, "begin")
        def begin(conn: Any) -> None:
            options = conn.get_execution_options()
            began.append(
                (
                    options.get("isolation_level"),
                    options.get("postgresql_readonly"),
                    options.get("sqlite_begin"),
                )
            )

        params = {"from": "2025-01-15", "to": "2025-12-10", "group_by": "theme"}
        if region["items"]:
            params["within"] = region["items"][0]["id"]
        response = await client.get(f"{STATS}/workshops", params=params)
        assert response.status_code == 200, response.text
        # The subtree's path (when there is a region), the whole months from the rollup, the two partial
        # months from the workshops (SQLite's BEGIN is a statement too; behind PgBouncer the transaction's
        # timeouts are one more, `app.db`).
        statements = [s for s in sent if not s.startswith(("BEGIN", _TIMEOUTS))]
        assert len(statements) == 3 + ("within" in params), sent
        assert not any(re.search(r"(FROM|JOIN)\s+registrations\b", s, re.IGNORECASE) for s in sent), sent
        if IS_POSTGRES:
            assert began == [("REPEATABLE READ", True, None)]
        else:
            assert began == [(None, None, "DEFERRED")]
        sent.clear()
        response = await client.get(f"{STATS}/positions", params={"group_by": "kind"})
        assert response.status_code == 200, response.text
        assert len([s for s in sent if not s.startswith(("BEGIN", _TIMEOUTS))]) == 2, sent
