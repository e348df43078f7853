"""On PostgreSQL, transactions commit out of order: the feed must still give every committed change exactly
once. Two writers on separate connections, the later-started committing first, and readers in between."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.core import changes
from app.core.auth import Principal, Role
from app.core.changes import Change
from app.db import make_engine, make_sessionmaker
from tests.conftest import TEST_DATABASE_URL, postgres_only

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


async def _commit_change(sessions: async_sessionmaker[AsyncSession], tag: uuid.UUID) -> uuid.UUID:
    change_id = uuid.uuid4()
    async with sessions() as writer:
        await changes.record(
            writer, resource=RESOURCE, id=change_id, action="created", version=1, territory_id=tag
        )
        await writer.commit()
    return change_id


async def _seen_within(
    sessions: async_sessionmaker[AsyncSession], cursor: str, tag: uuid.UUID, wanted: int, seconds: float
) -> tuple[list[uuid.UUID], str]:
    """What the feed shows after `cursor`, polled until `wanted` changes came or `seconds` passed."""
    collected: list[uuid.UUID] = []
    deadline = time.monotonic() + seconds
    while True:
        async with sessions() as reader:
            seen, cursor = await _read_all(reader, cursor, tag)
            await reader.commit()
        collected += seen
        if len(collected) >= wanted or time.monotonic() > deadline:
            return collected, cursor
        await asyncio.sleep(0.05)


async def _start(sessions: async_sessionmaker[AsyncSession], tag: uuid.UUID) -> str:
    async with sessions() as reader:
        _, cursor = await _read_all(reader, changes.encode_cursor(0, 0), tag)
        await reader.commit()
    return cursor


@pytest.fixture
async def other_database(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine on another database of the same server, created for the test and dropped afterwards."""
    assert TEST_DATABASE_URL
    name = f"cnfs_feed_other_{uuid.uuid4().hex[:8]}"
    admin = make_engine(TEST_DATABASE_URL)
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    other = make_engine(
        make_url(settings.database_url).set(database=name).render_as_string(hide_password=False)
    )
    try:
        yield other
    finally:
        await other.dispose()
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def test_a_transaction_open_in_another_database_does_not_hold_the_feed_back(
    engine: AsyncEngine, other_database: AsyncEngine, tagged: uuid.UUID
) -> None:
    sessions = make_sessionmaker(engine)
    cursor = await _start(sessions, tagged)
    async with other_database.connect() as idle:
        # Idle in a transaction that wrote something (so it has a transaction id), in another database.
        await idle.execute(text("CREATE TABLE held (n int)"))
        await idle.execute(text("INSERT INTO held VALUES (1)"))
        change_id = await _commit_change(sessions, tagged)
        seen, _ = await _seen_within(sessions, cursor, tagged, 1, seconds=5)
        assert seen == [change_id]
        await idle.rollback()


async def test_a_transaction_of_this_database_that_wrote_nothing_does_not_hold_the_feed_back(
    engine: AsyncEngine, tagged: uuid.UUID
) -> None:
    sessions = make_sessionmaker(engine)
    cursor = await _start(sessions, tagged)
    async with engine.connect() as idle:
        await idle.execute(text("SELECT count(*) FROM changes"))  # in a transaction, idle, no id taken
        change_id = await _commit_change(sessions, tagged)
        seen, _ = await _seen_within(sessions, cursor, tagged, 1, seconds=5)
        assert seen == [change_id]
        await idle.rollback()


async def test_an_uncommitted_change_still_holds_the_feed_back_beside_another_database(
    engine: AsyncEngine, other_database: AsyncEngine, tagged: uuid.UUID
) -> None:
    """Leaving the other databases' transactions out never lets the feed skip one of its own: a change
    written but not committed holds back those committed after it, which then come in order."""
    sessions = make_sessionmaker(engine)
    cursor = await _start(sessions, tagged)
    async with other_database.connect() as idle, sessions() as first:
        await idle.execute(text("CREATE TABLE held (n int)"))
        first_id = uuid.uuid4()
        await changes.record(
            first, resource=RESOURCE, id=first_id, action="created", version=1, territory_id=tagged
        )
        second_id = await _commit_change(sessions, tagged)
        seen, cursor = await _seen_within(sessions, cursor, tagged, 1, seconds=0.5)
        assert seen == []
        await first.commit()
        seen, cursor = await _seen_within(sessions, cursor, tagged, 2, seconds=5)
        assert seen == [first_id, second_id]
        await idle.rollback()
    again, _ = await _seen_within(sessions, cursor, tagged, 1, seconds=0.3)
    assert again == []


IDLE = 3.0


@pytest.fixture
def short_idle(monkeypatch: pytest.MonkeyPatch) -> float:
    """`IDLE_WRITER_SECONDS` shortened for the test."""
    monkeypatch.setattr(changes, "IDLE_WRITER_SECONDS", IDLE)
    return IDLE


async def _write_something(conn: AsyncConnection) -> None:
    """A write outside the feed: the transaction takes an id, and no lock on `changes`."""
    await conn.execute(text("CREATE TEMPORARY TABLE IF NOT EXISTS held (n int)"))
    await conn.execute(text("INSERT INTO held VALUES (1)"))


async def test_a_transaction_of_this_database_that_wrote_no_change_holds_the_feed_back_a_bounded_time(
    engine: AsyncEngine, tagged: uuid.UUID, short_idle: float
) -> None:
    sessions = make_sessionmaker(engine)
    cursor = await _start(sessions, tagged)
    async with engine.connect() as idle:
        began = time.monotonic()  # before its transaction begins
        await _write_something(idle)
        change_id = await _commit_change(sessions, tagged)
        # It may still write a change keyed below this one: the feed waits for it...
        seen, cursor = await _seen_within(sessions, cursor, tagged, 1, seconds=0)
        if time.monotonic() - began < short_idle - 0.5:
            assert seen == []
        # ...until it has been open `IDLE_WRITER_SECONDS`.
        seen, _ = await _seen_within(sessions, cursor, tagged, 1, seconds=short_idle + 5)
        assert seen == [change_id]
        assert time.monotonic() - began >= short_idle
        await idle.rollback()


async def test_a_change_written_late_by_a_transaction_the_feed_stopped_waiting_for_is_not_skipped(
    engine: AsyncEngine, tagged: uuid.UUID, short_idle: float
) -> None:
    """A transaction takes its id, writes no change for longer than `IDLE_WRITER_SECONDS` (the feed moves on
    past changes committed after it began), then writes one and commits: the feed still gives it, after
    those, once. (Keyed past every reader that let its transaction go, it shows up once a transaction
    that began after it has ended: the next change here.)"""
    sessions = make_sessionmaker(engine)
    cursor = await _start(sessions, tagged)
    async with sessions() as late:
        await _write_something(await late.connection())
        later_id = await _commit_change(sessions, tagged)
        seen, cursor = await _seen_within(sessions, cursor, tagged, 1, seconds=short_idle + 5)
        assert seen == [later_id]
        late_id = uuid.uuid4()
        await changes.record(
            late, resource=RESOURCE, id=late_id, action="created", version=1, territory_id=tagged
        )
        await late.commit()
    next_id = await _commit_change(sessions, tagged)
    seen, cursor = await _seen_within(sessions, cursor, tagged, 2, seconds=5)
    assert seen == [late_id, next_id]
    again, _ = await _seen_within(sessions, cursor, tagged, 1, seconds=0.3)
    assert again == []


async def test_a_transaction_that_wrote_a_change_holds_the_feed_back_however_long_it_stays_open(
    engine: AsyncEngine, tagged: uuid.UUID, short_idle: float
) -> None:
    sessions = make_sessionmaker(engine)
    cursor = await _start(sessions, tagged)
    async with sessions() as first:
        first_id = uuid.uuid4()
        await changes.record(
            first, resource=RESOURCE, id=first_id, action="created", version=1, territory_id=tagged
        )
        second_id = await _commit_change(sessions, tagged)
        seen, cursor = await _seen_within(sessions, cursor, tagged, 1, seconds=short_idle + 1)
        assert seen == []
        await first.commit()
    seen, cursor = await _seen_within(sessions, cursor, tagged, 2, seconds=5)
    assert seen == [first_id, second_id]
