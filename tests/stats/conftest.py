"""The statistics tests' world: the workshops tests' place (positions in Lyon and in the Rhône)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import KeyMaker, Tree
from tests.workshops.helpers import Place, build_place


@pytest.fixture
async def place(client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, make_key: KeyMaker) -> Place:
    return await build_place(client, admin, tree, make_key)
