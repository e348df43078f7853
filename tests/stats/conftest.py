"""The statistics tests' world: the workshops tests' place (positions in Lyon and in the Rhône).

On PostgreSQL the rollup's triggers are deferred to the commit, and a test's transaction never commits: the
tests that read the rollup inside it make them immediate for that transaction (`SET CONSTRAINTS`), so that
each write updates the rollup at once, as the commit would. The deferred triggers themselves are tested over
committed data (test_concurrency.py)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.conftest import KeyMaker, Tree
from tests.stats.helpers import rollup_at_each_statement
from tests.workshops.helpers import Place, build_place


@pytest.fixture
async def place(
    client: httpx.AsyncClient,
    connection: AsyncConnection,
    admin: dict[str, str],
    tree: Tree,
    make_key: KeyMaker,
) -> Place:
    await rollup_at_each_statement(connection)
    return await build_place(client, admin, tree, make_key)
