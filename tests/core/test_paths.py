"""Prefix tests on materialised paths and search words (`app.core.paths`) select exactly the strings that
start with the prefix, on the test database (PostgreSQL's byte-order range, SQLite's GLOB)."""

from __future__ import annotations

import pytest
from sqlalchemy import column, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import String

from app.core.paths import bound_path_startswith, path_startswith, prefix_params
from tests.conftest import IS_POSTGRES

CANDIDATES = [
    "/a1/",
    "/a1/b2/",
    "/a1/b2/c3/",
    "/a1",
    "/a10/",
    "/a1-/",
    "/a2/",
    "/a0/",
    "/",
    "saint",
    "saint etienne",
    "sainte",
    "saints",
    "sain",
    "saint-",
    "sainu",
    "9",
    "9a",
    "a",
]


async def _matching(engine: AsyncEngine, prefix: str, bound: bool) -> list[str]:
    rows = union_all(*(select(literal(c, String()).label("s")) for c in CANDIDATES)).subquery()
    if bound:
        condition = bound_path_startswith(rows.c.s, "p")
        params = prefix_params("p", prefix)
    else:
        condition, params = path_startswith(rows.c.s, prefix), {}
    async with engine.connect() as connection:
        return sorted((await connection.execute(select(rows.c.s).where(condition), params)).scalars())


@pytest.mark.parametrize("bound", [False, True], ids=["literal", "bound"])
@pytest.mark.parametrize("prefix", ["/a1/", "/a1/b2/", "/", "saint", "saint ", "9", "sain"])
async def test_a_prefix_selects_exactly_the_strings_that_start_with_it(
    engine: AsyncEngine, prefix: str, bound: bool
) -> None:
    assert await _matching(engine, prefix, bound) == sorted(c for c in CANDIDATES if c.startswith(prefix))


def test_postgresql_tests_a_range_that_a_generic_plan_reads_from_the_index() -> None:
    from sqlalchemy.dialects import postgresql

    sql = str(
        select(column("path"))
        .where(bound_path_startswith(column("path"), "p"))
        .compile(dialect=postgresql.dialect())
    )
    assert "path ~>=~ %(p_prefix)s::VARCHAR AND path ~<~ (left(%(p_prefix)s::VARCHAR, -1) || chr(" in sql
    assert "LIKE" not in sql


@pytest.mark.skipif(not IS_POSTGRES, reason="needs PostgreSQL (TEST_DATABASE_URL)")
async def test_a_generic_plan_of_a_subtree_reads_the_path_index(engine: AsyncEngine) -> None:
    """The scope's subquery in a prepared statement's generic plan (planned once, without its parameters):
    an index range on `ix_territories_path`, not a filter on every territory."""
    from app.territories.models import Territory

    sql = str(
        select(Territory.id).where(bound_path_startswith(Territory.path, "p")).compile(engine.sync_engine)
    )
    async with engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        async with driver.transaction():
            await driver.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            await driver.execute("SET LOCAL enable_seqscan = off")
            await driver.execute(f"PREPARE subtree(varchar) AS {sql}")
            try:
                plan = "\n".join(r[0] for r in await driver.fetch("EXPLAIN EXECUTE subtree('/x/')"))
            finally:
                await driver.execute("DEALLOCATE subtree")
    assert "Index Cond" in plan, plan
    assert "ix_territories_path" in plan, plan
    assert "Filter" not in plan, plan
