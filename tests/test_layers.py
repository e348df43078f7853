"""The routers stay thin (STYLE.md): they parse, call one service function and answer; queries, sort keys
and pagination live in the service and the repository."""

from __future__ import annotations

import ast
import inspect
from types import ModuleType

import pytest

from app.agreements import router as agreements_router
from app.api_keys import router as api_keys_router
from app.changes import router as changes_router
from app.counsellors import router as counsellors_router
from app.positions import router as positions_router
from app.programmes import router as programmes_router
from app.referentials import router as referentials_router
from app.territories import router as territories_router
from app.webhooks import router as webhooks_router

QUERY_BUILDING = {"fetch_page", "parse_sort", "SortKey", "select", "Select"}
ENUMS = {
    "app.agreements.models.AgreementKind",
    "app.agreements.models.AgreementStatus",
    "app.positions.models.PositionStatus",
}


def _imports(module: ModuleType) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.ImportFrom):
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


ROUTERS = [
    territories_router,
    programmes_router,
    agreements_router,
    positions_router,
    counsellors_router,
    changes_router,
    api_keys_router,
    referentials_router,
    webhooks_router,
]


@pytest.mark.parametrize("module", ROUTERS, ids=lambda m: m.__name__.split(".")[1])
def test_a_router_builds_no_query(module: ModuleType) -> None:
    imported = _imports(module)
    assert not [name for name in imported if "repository" in name or name.startswith("sqlalchemy")]
    assert not [name for name in imported if name.rsplit(".", 1)[-1] in QUERY_BUILDING]
    # Only the enums that type query parameters come from the models, never a mapped class.
    assert {name for name in imported if ".models." in name} <= ENUMS
