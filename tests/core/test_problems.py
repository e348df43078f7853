"""The one error format: RFC 9457 problems for routing, validation, size, database and unexpected errors."""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm.exc import StaleDataError

from app.config import Settings
from app.core.idempotency import IdempotencyRecord
from app.db import SessionDep
from app.ops.router import expected_head
from tests.conftest import Tree
from tests.helpers import add_route, app_client, assert_problem

TERRITORIES = "/api/v1/territories"
REGION = {"kind": "region", "code": "84", "name": "Auvergne-Rhône-Alpes"}


async def test_unknown_route_is_a_not_found_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/no-such-thing", headers={"X-Request-ID": "probe-404"})
    body = assert_problem(response, 404, "not_found")
    assert body["request_id"] == "probe-404"
    assert body["instance"] == "/api/v1/no-such-thing"
    assert body["title"] == "Not found"


async def test_unknown_route_outside_the_api_is_a_problem_too(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/nothing-here"), 404, "not_found")


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_known_route_with_another_method_is_405_with_allow(
    client: httpx.AsyncClient, method: str
) -> None:
    response = await client.request(method, TERRITORIES)
    body = assert_problem(response, 405, "method_not_allowed")
    assert method in body["detail"]
    # Allow names every method of the resource, not only those of the first route matching the path.
    assert sorted(m.strip() for m in response.headers["allow"].split(",")) == ["GET", "POST"]


async def test_405_on_an_item_path_lists_its_methods(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{TERRITORIES}/019abc3e-5f6a-7b8c-9d0e-1f2a3b4c5d6e")
    assert_problem(response, 405, "method_not_allowed")
    assert sorted(m.strip() for m in response.headers["allow"].split(",")) == ["DELETE", "GET", "PATCH"]


async def test_malformed_json_is_a_validation_error(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.post(
        TERRITORIES, content=b'{"kind": "region", ', headers={**admin, "Content-Type": "application/json"}
    )
    body = assert_problem(response, 422, "validation_error")
    # The pointer designates the whole document (RFC 6901 ""), not a character offset posing as a field.
    assert body["errors"][0]["pointer"] == ""
    assert "JSON" in body["errors"][0]["detail"]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"[1, 2]", "application/json"), (b'"text"', "application/json"), (b'{"kind": "region"}', "text/plain")],
)
async def test_a_body_that_is_not_a_json_object_points_at_the_document(
    client: httpx.AsyncClient, admin: dict[str, str], content: bytes, content_type: str
) -> None:
    response = await client.post(
        TERRITORIES, content=content, headers={**admin, "Content-Type": content_type}
    )
    body = assert_problem(response, 422, "validation_error")
    assert [e["pointer"] for e in body["errors"]] == [""]
    assert body["detail"] == "the body must be a JSON object (Content-Type: application/json)"


async def test_wrong_type_points_at_the_field(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.post(TERRITORIES, json={**REGION, "population": "many"}, headers=admin)
    body = assert_problem(response, 422, "validation_error", pointer="/population")
    assert len(body["errors"]) == 1
    assert body["errors"][0]["detail"]


async def test_missing_field_points_at_it(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.post(TERRITORIES, json={"kind": "region", "code": "84"}, headers=admin)
    assert_problem(response, 422, "validation_error", pointer="/name")


async def test_unknown_body_field_is_rejected_with_its_pointer(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post(TERRITORIES, json={**REGION, "colour": "red"}, headers=admin)
    body = assert_problem(response, 422, "validation_error", pointer="/colour")
    assert body["errors"] == [{"pointer": "/colour", "detail": "unknown field"}]


async def test_unknown_query_parameter_is_rejected(client: httpx.AsyncClient) -> None:
    response = await client.get(TERRITORIES, params={"kind": "region", "knid": "commune", "zzz": "1"})
    body = assert_problem(response, 422, "validation_error")
    assert [e["pointer"] for e in body["errors"]] == ["/query/knid", "/query/zzz"]


async def test_invalid_query_value_points_at_the_parameter(client: httpx.AsyncClient) -> None:
    response = await client.get(TERRITORIES, params={"parent_id": "not-a-uuid"})
    assert_problem(response, 422, "validation_error", pointer="/query/parent_id")


# --- body size -------------------------------------------------------------------------------------


def _big_territory(size: int) -> bytes:
    return json.dumps({**REGION, "name": "x" * size}).encode()


async def test_body_over_one_mebibyte_is_413(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    body = _big_territory(int(1.1 * 1024 * 1024))
    response = await client.post(
        TERRITORIES, content=body, headers={**admin, "Content-Type": "application/json"}
    )
    problem = assert_problem(response, 413, "payload_too_large")
    assert problem["title"] == "Request body too large"


async def test_streamed_body_over_the_limit_is_413(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the limit is enforced while reading.
        yield b'{"kind": "region", "code": "84", "name": "'
        for _ in range(12):
            yield b"x" * 100_000
        yield b'"}'

    response = await client.post(
        TERRITORIES, content=chunks(), headers={**admin, "Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")


@pytest.mark.parametrize(("method", "path"), [("POST", "/api/v1/nowhere"), ("GET", "/healthz")])
async def test_declared_length_over_the_limit_is_413_even_where_the_body_is_not_read(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(
        method, path, content=b"{}", headers={"Content-Length": str(2 * 1024 * 1024)}
    )
    assert_problem(response, 413, "payload_too_large")


async def test_body_at_the_limit_is_accepted(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    # Just under 1 MiB goes through to validation (the name is too long: 422, not 413).
    body = _big_territory(1024 * 1024 - 100)
    assert len(body) <= 1024 * 1024
    response = await client.post(
        TERRITORIES, content=body, headers={**admin, "Content-Type": "application/json"}
    )
    assert_problem(response, 422, "validation_error", pointer="/name")


# --- errors raised by handlers, on an app of their own -------------------------------------------


def _add_failing_routes(app: FastAPI) -> None:
    async def boom() -> None:
        raise RuntimeError("secret detail")

    async def integrity() -> None:
        raise IntegrityError("INSERT INTO secret_table", {}, Exception("duplicate key secret_constraint"))

    async def duplicate(session: SessionDep) -> None:
        # A real unique violation from the driver: the same (caller, key) twice.
        for _ in range(2):
            session.add(
                IdempotencyRecord(
                    caller="test-duplicate", key="k", fingerprint="f", status_code=200, headers={}, body=b""
                )
            )
        await session.flush()

    async def pool_exhausted() -> None:
        raise PoolTimeoutError("QueuePool limit of size 10 overflow 10 reached, connection timed out")

    async def connection_reset() -> None:
        raise ConnectionResetError("connection to 10.0.0.7 reset")

    async def connection_lost() -> None:
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    async def bad_sql() -> None:
        raise ProgrammingError("SELECT secret_column", {}, Exception('column "secret_column" does not exist'))

    async def stale() -> None:
        raise StaleDataError(
            "UPDATE statement on table 'territories' expected to update 1 row(s); 0 were matched"
        )

    class _DriverError(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__(f"driver error {sqlstate}")
            self.sqlstate = sqlstate

    def raising_sqlstate(sqlstate: str) -> Callable[[], Awaitable[None]]:
        async def route() -> None:
            raise DBAPIError("UPDATE secret_table", {}, _DriverError(sqlstate))

        return route

    async def name_not_resolved() -> None:
        raise socket.gaierror(-2, "Name or service not known")

    async def connect_timeout() -> None:
        raise TimeoutError

    for sqlstate in ("55P03", "40P01", "40001", "57014", "57P03", "53300", "08006", "42703"):
        add_route(app, f"/sqlstate/{sqlstate}", raising_sqlstate(sqlstate))
    add_route(app, "/name-not-resolved", name_not_resolved)
    add_route(app, "/connect-timeout", connect_timeout)
    add_route(app, "/boom", boom)
    add_route(app, "/integrity", integrity)
    add_route(app, "/duplicate", duplicate, methods=["POST"])
    add_route(app, "/pool-exhausted", pool_exhausted)
    add_route(app, "/connection-reset", connection_reset)
    add_route(app, "/connection-lost", connection_lost)
    add_route(app, "/bad-sql", bad_sql)
    add_route(app, "/stale", stale)


async def test_unexpected_exception_is_a_500_problem_without_internals(settings: Settings) -> None:
    async with app_client(settings, _add_failing_routes) as client:
        response = await client.get("/boom", headers={"X-Request-ID": "trace-500"})
    body = assert_problem(response, 500, "internal_error")
    assert response.headers["x-request-id"] == "trace-500"
    assert body["request_id"] == "trace-500"
    assert "secret detail" not in response.text
    assert "RuntimeError" not in response.text
    assert "errors" not in body


async def test_500_carries_a_generated_request_id(settings: Settings) -> None:
    async with app_client(settings, _add_failing_routes) as client:
        response = await client.get("/boom")
    body = assert_problem(response, 500, "internal_error")
    assert len(body["request_id"]) >= 16


async def test_integrity_error_is_a_409_conflict(settings: Settings) -> None:
    async with app_client(settings, _add_failing_routes) as client:
        response = await client.get("/integrity")
    assert_problem(response, 409, "conflict")
    assert "secret" not in response.text
    assert "INSERT" not in response.text


async def test_unique_violation_from_the_database_is_a_409_conflict(settings: Settings) -> None:
    async with app_client(settings, _add_failing_routes) as client:
        response = await client.post("/duplicate")
    assert_problem(response, 409, "conflict")
    assert "idempotency_keys" not in response.text


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/pool-exhausted", 503, "service_unavailable"),
        ("/connection-reset", 503, "service_unavailable"),
        ("/connection-lost", 503, "service_unavailable"),
        ("/bad-sql", 500, "internal_error"),
        ("/name-not-resolved", 503, "service_unavailable"),
        ("/connect-timeout", 503, "service_unavailable"),
        # Lock timeout, deadlock, serialisation failure, statement timeout, server starting up, too many
        # connections, connection failure: "retry later". An undefined column is a bug: 500.
        ("/sqlstate/55P03", 503, "service_unavailable"),
        ("/sqlstate/40P01", 503, "service_unavailable"),
        ("/sqlstate/40001", 503, "service_unavailable"),
        ("/sqlstate/57014", 503, "service_unavailable"),
        ("/sqlstate/57P03", 503, "service_unavailable"),
        ("/sqlstate/53300", 503, "service_unavailable"),
        ("/sqlstate/08006", 503, "service_unavailable"),
        ("/sqlstate/42703", 500, "internal_error"),
        ("/stale", 412, "precondition_failed"),
    ],
)
async def test_database_errors_map_to_problems(settings: Settings, path: str, status: int, code: str) -> None:
    async with app_client(settings, _add_failing_routes) as client:
        response = await client.get(path)
    assert_problem(response, status, code)
    if status == 503:
        assert int(response.headers["retry-after"]) > 0
    for secret in ("secret", "10.0.0.7", "QueuePool", "territories", "SELECT"):
        assert secret not in response.text


async def test_access_log_has_the_route_template_not_the_query(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.access")
    await client.get(
        f"{TERRITORIES}/019abc3e-5f6a-7b8c-9d0e-1f2a3b4c5d6e",
        params={"email": "jeanne.dupont@example.fr"},
        headers={"X-Request-ID": "log-me"},
    )
    lines = [r for r in caplog.records if r.name == "app.access"]
    assert [r.getMessage() for r in lines] == ["GET /api/v1/territories/{territory_id} 422"]
    assert lines[0].request_id == "log-me"  # type: ignore[attr-defined]
    assert lines[0].status == 422  # type: ignore[attr-defined]
    assert "dupont" not in caplog.text
    assert "019abc3e" not in caplog.text


# --- database unreachable ------------------------------------------------------------------------

UNREACHABLE = [
    pytest.param("postgresql+asyncpg://postgres@127.0.0.1:1/nope", id="postgres-closed-port"),
    pytest.param("postgresql+asyncpg://postgres@localhost:1/nope", id="postgres-closed-port-by-name"),
    pytest.param("sqlite+aiosqlite:////nonexistent-dir/cnfs/test.db", id="sqlite-unreadable-path"),
]


@pytest.mark.parametrize("url", UNREACHABLE)
async def test_lost_database_is_503_with_retry_after(settings: Settings, url: str) -> None:
    down = settings.model_copy(update={"database_url": url, "database_pool_timeout_seconds": 1.0})
    async with app_client(down) as client:
        listing = await client.get(TERRITORIES, headers={"X-Request-ID": "db-down"})
        ready = await client.get("/readyz")
        alive = await client.get("/healthz")
    body = assert_problem(listing, 503, "service_unavailable")
    assert int(listing.headers["retry-after"]) > 0
    assert body["request_id"] == "db-down"
    assert "127.0.0.1" not in listing.text
    assert "nonexistent" not in listing.text
    assert ready.status_code == 503
    assert int(ready.headers["retry-after"]) > 0
    assert ready.json()["status"] == "unavailable"
    assert ready.json()["database"] == "unreachable"
    assert alive.status_code == 200


async def test_readyz_on_a_database_that_was_never_migrated(settings: Settings, tmp_path: Path) -> None:
    empty = settings.model_copy(update={"database_url": f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"})
    async with app_client(empty) as client:
        ready = await client.get("/readyz")
        listed = await client.get("/api/v1/territories")
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "database": "ok",
        "schema_revision": None,
        "expected_revision": expected_head(),
    }
    # A missing table is not "retry later": the database answers, the schema is wrong; /readyz says why.
    assert_problem(listed, 500, "internal_error")
    assert "retry-after" not in listed.headers


def _details(response: httpx.Response) -> dict[str, str]:
    body = assert_problem(response, 422, "validation_error")
    return {e["pointer"]: e["detail"] for e in body["errors"]}


async def test_the_same_rule_says_the_same_thing_on_every_resource(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    """Clear, stable messages a frontend can show, at the field's pointer: an empty name, a malformed email,
    a bad date, a UUID, an enum, a bound; never pydantic's list wording nor a regular expression."""
    counsellors = "/api/v1/counsellors"
    person = {"first_name": "", "last_name": "Exemple", "email": "not-an-email"}
    lyon = str(tree.lyon_metro.id)
    put = _details(
        await client.put(f"{counsellors}/by-ref/M-1", json={**person, "territory_id": lyon}, headers=admin)
    )
    post = _details(
        await client.post(
            counsellors, json={**person, "territory_id": lyon, "external_ref": ""}, headers=admin
        )
    )
    bulk = await client.post(
        f"{counsellors}/bulk",
        json={
            "items": [{**person, "territory_id": lyon, "external_ref": "M-2", "training": {"pix_level": 4}}]
        },
        headers=admin,
    )
    assert bulk.status_code == 207, bulk.text
    item = {e["pointer"]: e["detail"] for e in bulk.json()["items"][0]["problem"]["errors"]}
    registration = _details(
        await client.post(
            f"/api/v1/workshops/{uuid.uuid4()}/registrations",
            json={**person, "last_name": "x" * 101},
        )
    )
    position = _details(
        await client.post(
            "/api/v1/positions",
            json={"agreement_id": "nope", "opened_on": "2021-13-01", "external_ref": ""},
            headers=admin,
        )
    )
    empty = "must not be empty"
    email = "must be an email address, such as camille@example.org"
    assert put == {"/first_name": empty, "/email": email}
    assert post == {"/first_name": empty, "/email": email, "/external_ref": empty}
    assert item == {
        "/items/0/first_name": empty,
        "/items/0/email": email,
        "/items/0/training/pix_level": "must be at most 3",
    }
    assert registration == {
        "/first_name": empty,
        "/email": email,
        "/last_name": "must have at most 100 characters",
    }
    assert position == {
        "/agreement_id": "must be a UUID, such as 019abc3e-0000-7000-8000-000000000002",
        "/opened_on": "must be a date: YYYY-MM-DD",
        "/external_ref": empty,
    }
    everything = json.dumps([put, post, item, registration, position])
    assert "^" not in everything
    assert "after validation" not in everything
    missing = _details(await client.post(counsellors, json={"territory_id": lyon}, headers=admin))
    assert missing == {"/first_name": "is required", "/last_name": "is required"}
    listed = _details(await client.post(f"{counsellors}/bulk", json={"items": []}, headers=admin))
    assert listed == {"/items": "must have at least 1 item"}


def test_a_cancelled_statement_says_which_cause_in_the_log() -> None:
    """57014 is PostgreSQL's answer both to its statement_timeout and to a cancel request: the log line
    tells them apart (their texts are fixed, they hold no value)."""
    from sqlalchemy.exc import OperationalError

    from app.core.problems import unavailable_reason

    class QueryCanceledError(Exception):
        sqlstate = "57014"

    timed_out = OperationalError(
        "SELECT", None, QueryCanceledError("canceling statement due to statement timeout")
    )
    cancelled = OperationalError(
        "SELECT", None, QueryCanceledError("canceling statement due to user request")
    )
    assert unavailable_reason(timed_out) == "QueryCanceledError (SQLSTATE 57014, statement_timeout)"
    assert unavailable_reason(cancelled) == "QueryCanceledError (SQLSTATE 57014, a cancel request)"


def test_a_pooler_met_without_the_setting_is_a_503_whose_log_line_says_what_to_set() -> None:
    """Behind PgBouncer without DATABASE_PGBOUNCER=true (a process the start-up check did not see, or a
    PgBouncer swapped in under a running one), PgBouncer's refusal of the timeouts sent at connect and the
    named statements met on another server session are 503s, not 500s, and the log line names the setting.
    A protocol violation of another kind keeps its plain line."""
    from sqlalchemy.exc import DBAPIError

    from app.core.problems import is_transient, unavailable_reason

    class DriverError(Exception):
        def __init__(self, message: str, sqlstate: str) -> None:
            super().__init__(message)
            self.sqlstate = sqlstate

    refused = DBAPIError("", None, DriverError("unsupported startup parameter: lock_timeout", "08P01"))
    missing = DBAPIError(
        "", None, DriverError('prepared statement "__asyncpg_stmt_3__" does not exist', "26000")
    )
    duplicate = DBAPIError(
        "", None, DriverError('prepared statement "__asyncpg_stmt_1__" already exists', "42P05")
    )
    for error in (refused, missing, duplicate):
        assert is_transient(error)
        assert "set DATABASE_PGBOUNCER=true" in unavailable_reason(error)
    assert "PgBouncer refused a start-up parameter" in unavailable_reason(refused)
    # With the setting already on, the same errors are not the configuration's: the line says so.
    for error in (refused, missing, duplicate):
        with_setting = unavailable_reason(error, pgbouncer=True)
        assert "DATABASE_PGBOUNCER=true" in with_setting
        assert "report it" in with_setting
        assert "set DATABASE_PGBOUNCER" not in with_setting
    other = DBAPIError("", None, DriverError("invalid message format", "08P01"))
    assert unavailable_reason(other) == "DriverError (SQLSTATE 08P01)"
