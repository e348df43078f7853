"""The personal-data tests' world: the workshops tests' place, with the statistics rollup updated at each
statement (tests/stats/conftest.py says why)."""

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
