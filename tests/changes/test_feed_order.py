"""On PostgreSQL, transactions commit out of order: the feed must still give every committed change exactly
once. Two writers on separate connections, the later-started committing first, and readers in between."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core import changes
from app.core.auth import Principal, Role
from app.core.changes import Change
from app.db import make_sessionmaker
from tests.conftest import postgres_only

pytestmark = postgres_only
ADMIN = Principal(role=Role.admin, name="feed test")
RESOURCE = "positions"


@pytest.fixture
async def tagged(engine: AsyncEngine) -> AsyncIterator[uuid.UUID]:
    """A territory id that tags this test's changes (committed), deleted afterwards."""
    tag = uuid.uuid4()
    yield tag
    async with make_sessionmaker(engine)() as session:
        await session.execute(delete(Change).where(Change.territory_id == tag))
        await session.commit()


async def _read_all(session: AsyncSession, after: str, tag: uuid.UUID) -> tuple[list[uuid.UUID], str]:
    seen = []
    while True:
        rows, next_after = await changes.read(session, ADMIN, after=after, resources=[RESOURCE], limit=200)
        seen += [r.object_id for r in rows if r.territory_id == tag]
        if next_after == after:
            return seen, after
        after = next_after


async def test_a_change_committed_out_of_order_is_never_skipped(
    engine: AsyncEngine, tagged: uuid.UUID
) -> None:
    sessions = make_sessionmaker(engine)
    async with sessions() as reader:
        _, cursor = await _read_all(reader, changes.encode_cursor(0, 0), tagged)
        await reader.commit()

    first_id, second_id = uuid.uuid4(), uuid.uuid4()
    async with sessions() as first, sessions() as second:
        # The first transaction writes (and so takes its transaction id) first...
        await changes.record(
            first, resource=RESOURCE, id=first_id, action="created", version=1, territory_id=tagged
        )
        # ...the second writes later and commits first.
        await changes.record(
            second, resource=RESOURCE, id=second_id, action="created", version=1, territory_id=tagged
        )
        await second.commit()

        # A reader in between must not move past the first, still running: it sees neither yet.
        async with sessions() as reader:
            seen, cursor_between = await _read_all(reader, cursor, tagged)
            await reader.commit()
        assert seen == []
        await first.commit()

    # Afterwards, both come, once each, in transaction order. Other transactions of the server (other
    # databases' tests, say) may hold the horizon back a moment: wait for it, a bounded time.
    collected: list[uuid.UUID] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(collected) < 2:
        async with sessions() as reader:
            seen, cursor_between = await _read_all(reader, cursor_between, tagged)
            await reader.commit()
        collected += seen
        await asyncio.sleep(0.05)
    assert collected == [first_id, second_id]
    async with sessions() as reader:
        again, _ = await _read_all(reader, cursor_between, tagged)
    assert again == []
