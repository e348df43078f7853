"""The shared world of the positions, counsellors and change feed tests."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import KeyMaker, Tree
from tests.positions.helpers import World, build_world


@pytest.fixture
async def world(client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, make_key: KeyMaker) -> World:
    return await build_world(client, admin, tree, make_key)
