"""Schemathesis against the application's own OpenAPI document, in-process (ASGI), on a database of its own,
without a key and with an admin key: no 5xx, every response matches its documented status, media type and
schema, invalid input is refused, and operations that need a key refuse callers without one.

`FUZZ_MAX_EXAMPLES` (default 20) bounds the examples per operation and caller; the counts are printed at the
end of the pytest run."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from alembic import command
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, settings
from pydantic import ValidationError
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from sqlalchemy.engine import make_url

from app.api_keys import service as api_keys
from app.api_keys.schemas import ApiKeyCreate
from app.cli import alembic_config
from app.config import Settings
from app.core.auth import Role
from app.counsellors.schemas import BulkItem
from app.db import make_engine, make_sessionmaker
from app.main import create_app
from tests.conftest import IS_POSTGRES, TEST_DATABASE_URL, _create_pg_database, _drop_pg_database

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "20"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    missing_required_header,
    unsupported_method,
]
# Read by the terminal summary (conftest.py): what ran, per caller.
COUNTS: Counter[str] = Counter()


async def _admin_key(url: str) -> str:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            created = await api_keys.create(session, ApiKeyCreate(name="fuzz admin", role=Role.admin))
            await session.commit()
            return created.key
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def fuzz_database() -> Iterator[str]:
    """A migrated database for the fuzzing only: its writes are committed, unlike the other tests'."""
    if IS_POSTGRES:
        assert TEST_DATABASE_URL
        name = f"cnfs_fuzz_{uuid.uuid4().hex[:8]}"
        url = make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
        asyncio.run(_create_pg_database(TEST_DATABASE_URL, name))
        try:
            command.upgrade(alembic_config(url), "head")
            yield url
        finally:
            asyncio.run(_drop_pg_database(TEST_DATABASE_URL, name))
    else:
        with tempfile.TemporaryDirectory(prefix="cnfs-fuzz-") as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'fuzz.db'}"
            command.upgrade(alembic_config(url), "head")
            yield url


def _settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        secret_key="fuzz-secret-" + "x" * 32,
        log_json=False,
        log_level="CRITICAL",
        # Thousands of calls from one address in a minute; the 429 itself is documented and tested elsewhere.
        rate_limits_enabled=False,
    )


class AppProxy:
    """The ASGI app schemathesis calls: the schema is loaded when this module is imported (its
    parametrisation needs it), the app and its database only exist once the fixture has made them."""

    app: FastAPI | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.app is not None, "the fuzz_app fixture sets the application"
        await self.app(scope, receive, send)


PROXY = AppProxy()
# The document does not depend on the database: build it from an app that is never started.
schema = schemathesis.openapi.from_dict(create_app(_settings("sqlite+aiosqlite:///:memory:")).openapi())
schema.app = PROXY


@pytest.fixture(scope="module", autouse=True)
def fuzz_app(fuzz_database: str) -> Iterator[FastAPI]:
    PROXY.app = create_app(_settings(fuzz_database))
    yield PROXY.app
    # Schemathesis runs the app's lifespan in its own event loop thread and keeps it open: close it here.
    asgi.shutdown_lifespans()
    PROXY.app = None


@pytest.fixture(scope="module")
def admin_headers(fuzz_database: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {asyncio.run(_admin_key(fuzz_database))}"}


FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


BULK = "POST /api/v1/counsellors/bulk"


def _checks(case: Any) -> list[Any]:
    """The bulk upsert documents its items as `BulkItem` but takes any item and refuses each invalid one in
    its own result (207, that item's 422), so that one bad row of an HR export does not refuse the others:
    a request with invalid items is accepted by design. `_bulk_refuses_each_invalid_item` checks that
    instead of `negative_data_rejection`."""
    if case.operation.label == BULK:
        return [check for check in CHECKS if check is not negative_data_rejection]
    return CHECKS


def _bulk_refuses_each_invalid_item(case: Any, response: Any) -> None:
    if case.operation.label != BULK or response.status_code != 207:
        return
    items = case.body.get("items") if isinstance(case.body, dict) else None
    assert isinstance(items, list), case.body
    results = response.json()["items"]
    assert len(results) == len(items)
    for item, result in zip(items, results, strict=True):
        try:
            BulkItem.model_validate(item)
        except ValidationError:
            assert result["status"] == 422, (item, result)


def _needs_key(case: Any) -> bool:
    security = case.operation.definition.raw.get("security", [])
    return bool(security) and {} not in security


@schema.parametrize()
@FUZZ_SETTINGS
def test_anonymous(case: Any) -> None:
    response = case.call_and_validate(checks=_checks(case))
    _bulk_refuses_each_invalid_item(case, response)
    COUNTS["anonymous cases"] += 1
    COUNTS[f"anonymous {response.status_code // 100}xx"] += 1
    if _needs_key(case) and not case.headers.get("Authorization", "").startswith("Bearer "):
        # Without a key, an operation that needs one answers 401, unless the request is malformed (422) or
        # names no route (404, 405): never a success, never a 403, 409 or 412 that would tell something.
        assert response.status_code in (401, 404, 405, 422), (case.operation.label, response.status_code)
        COUNTS["anonymous refused for want of a key"] += response.status_code == 401


def _admin_checks(case: Any) -> list[Any]:
    """`_checks`, but for a case whose only headers were made invalid by leaving out or spoiling the
    `Authorization` that this test replaces with the admin key: the request that reaches the app may be a
    valid one (its other invalid part lost in the query string: `?external_ref=false` for an array, an
    extra parameter dropped), so its acceptance is no failure. The anonymous test keeps the check."""
    checks = [*_checks(case), ignored_auth]
    meta = getattr(case, "meta", None)
    header = meta.components.get(ParameterLocation.HEADER) if meta is not None else None
    only_authorization = {name.lower() for name in case.headers or {}} <= {"authorization"}
    if header is not None and header.mode == GenerationMode.NEGATIVE and only_authorization:
        return [check for check in checks if check is not negative_data_rejection]
    return checks


@schema.parametrize()
@FUZZ_SETTINGS
def test_admin(case: Any, admin_headers: dict[str, str]) -> None:
    response = case.call_and_validate(headers=admin_headers, checks=_admin_checks(case))
    _bulk_refuses_each_invalid_item(case, response)
    COUNTS["admin cases"] += 1
    COUNTS[f"admin {response.status_code // 100}xx"] += 1
