"""The open-data tests' world: the workshops' one (a Lyon position employed by the Métropole de Lyon, whose
code is its SIREN, and a Rhône position, whose département has no SIREN in the referential)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import KeyMaker, Tree
from tests.workshops.helpers import Place, build_place


@pytest.fixture
async def place(client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, make_key: KeyMaker) -> Place:
    return await build_place(client, admin, tree, make_key)
