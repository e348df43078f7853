"""Request ids (accepted, replaced or generated, echoed everywhere) and the CORS allow-list."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.logging import ACCESS_LOGGER
from app.core.metrics import Metrics
from app.core.middleware import RequestMiddleware, valid_request_id
from tests.helpers import assert_problem

TERRITORIES = "/api/v1/territories"
ORIGIN = "https://app.example.fr"
EXPOSED = {"etag", "link", "location", "retry-after", "x-request-id"}


@pytest.mark.parametrize(
    "value",
    ["abc-123", "3f1c1a52-a1b5-4f4c-9f3c-5d3c2b1a0f9e", "x" * 128, "trace:42/7;a=b", "req 42"],
)
async def test_a_printable_request_id_is_echoed(client: httpx.AsyncClient, value: str) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": value})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == value


@pytest.mark.parametrize("value", ["x" * 129, "abc\x01def", "tab\there", "café"])
async def test_an_unacceptable_request_id_is_replaced(client: httpx.AsyncClient, value: str) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": value.encode("latin-1")})
    generated = response.headers["x-request-id"]
    assert generated != value
    assert valid_request_id(generated)
    assert len(generated) <= 128


async def test_a_request_id_is_generated_when_absent(client: httpx.AsyncClient) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")
    assert valid_request_id(first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_the_request_id_is_in_problem_bodies(client: httpx.AsyncClient) -> None:
    given = await client.get(TERRITORIES, params={"bogus": "1"}, headers={"X-Request-ID": "client-side-7"})
    assert assert_problem(given, 422, "validation_error")["request_id"] == "client-side-7"
    replaced = await client.get(TERRITORIES, params={"bogus": "1"}, headers={"X-Request-ID": "y" * 129})
    body = assert_problem(replaced, 422, "validation_error")
    assert body["request_id"] == replaced.headers["x-request-id"] != "y" * 129


def test_request_id_validator() -> None:
    assert valid_request_id("a")
    assert valid_request_id("~" * 128)
    assert not valid_request_id("")
    assert not valid_request_id("a" * 129)
    assert not valid_request_id("a\nb")
    assert not valid_request_id("a\x7fb")
    assert not valid_request_id("é")


async def test_preflight_from_an_allowed_origin(client: httpx.AsyncClient) -> None:
    response = await client.options(
        TERRITORIES,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key, x-request-id",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key", "if-match", "x-request-id"} <= allowed
    assert response.headers["x-request-id"]


async def test_preflight_for_a_patch_with_if_match(client: httpx.AsyncClient) -> None:
    response = await client.options(
        f"{TERRITORIES}/019abc3e-5f6a-7b8c-9d0e-1f2a3b4c5d6e",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "if-match, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN


async def test_responses_to_an_allowed_origin_expose_the_convention_headers(
    client: httpx.AsyncClient,
) -> None:
    # Access-Control-Expose-Headers belongs on the actual response (Fetch standard), not on the preflight.
    for response in (
        await client.get(TERRITORIES, headers={"Origin": ORIGIN}),
        await client.get("/api/v1/nowhere", headers={"Origin": ORIGIN}),
    ):
        assert response.headers["access-control-allow-origin"] == ORIGIN
        exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
        assert exposed >= EXPOSED | {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"}


async def test_another_origin_gets_no_cors_grant(client: httpx.AsyncClient) -> None:
    preflight = await client.options(
        TERRITORIES,
        headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    simple = await client.get(TERRITORIES, headers={"Origin": "https://evil.example.com"})
    assert simple.status_code == 200
    # Without Access-Control-Allow-Origin the browser hides the response from the page.
    assert "access-control-allow-origin" not in simple.headers


async def _requests_total(client: httpx.AsyncClient, **labels: str) -> float:
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "http_requests_total" and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def test_a_preflight_is_counted_and_logged_like_any_answer(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """CORS answers a preflight before any route runs: the grant (200) and the refusal (400 `cors_refused`,
    whose body gives a request id to quote) are counted under the template of the route asked for, and
    each has its access line with that request id."""
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    labels = {"method": "OPTIONS", "handler": f"{TERRITORIES}/{{territory_id}}"}
    before = [await _requests_total(client, **labels, status=status) for status in ("2xx", "4xx")]
    path = f"{TERRITORIES}/019abc3e-5f6a-7b8c-9d0e-1f2a3b4c5d6e"
    asked = {"Access-Control-Request-Method": "PATCH"}
    granted = await client.options(path, headers={**asked, "Origin": ORIGIN, "X-Request-ID": "pre-1"})
    refused = await client.options(
        path, headers={**asked, "Origin": "https://evil.example.com", "X-Request-ID": "pre-2"}
    )
    after = [await _requests_total(client, **labels, status=status) for status in ("2xx", "4xx")]
    assert granted.status_code == 200
    assert assert_problem(refused, 400, "cors_refused")["request_id"] == "pre-2"
    assert [a - b for a, b in zip(after, before, strict=True)] == [1.0, 1.0]
    lines = [
        (record.getMessage(), getattr(record, "request_id", None))
        for record in caplog.records
        if record.name == ACCESS_LOGGER and record.getMessage().startswith("OPTIONS")
    ]
    assert lines == [
        ("OPTIONS /api/v1/territories/{territory_id} 200", "pre-1"),
        ("OPTIONS /api/v1/territories/{territory_id} 400", "pre-2"),
    ]
    assert "019abc3e" not in caplog.text


async def test_a_public_answer_varies_by_origin_even_without_one(client: httpx.AsyncClient) -> None:
    """A shared cache keeps a public answer: it must not hand the answer to a request without Origin (no
    CORS headers) to a browser that sends one."""
    plain = await client.get("/api/v1/territories")
    assert "public" in plain.headers["cache-control"]
    # A list also varies by Accept (JSON or CSV).
    assert plain.headers["vary"] == "Accept, Origin"
    with_origin = await client.get(
        "/api/v1/territories/departement/69", headers={"Origin": "https://a.example"}
    )
    assert [field.strip() for field in with_origin.headers["vary"].split(",")].count("Origin") == 1
    private = await client.get("/api/v1/me")
    assert "public" not in private.headers.get("cache-control", "")
    assert "origin" not in private.headers.get("vary", "").lower()


async def _cancelled(inner: ASGIApp, started: asyncio.Event, method: str) -> list[Message]:
    """What RequestMiddleware sends for a request whose task is cancelled once `inner` sets `started` (as
    the server cancels what still runs at its shutdown deadline); the cancellation must go on."""
    app = RequestMiddleware(inner, max_body_size=1024, metrics=Metrics())
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    path = "/api/v1/workshops/x/registrations"
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
        "root_path": "",
        "http_version": "1.1",
        "app": None,
    }
    task = asyncio.create_task(app(scope, receive, send))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return sent


async def test_a_request_cancelled_as_the_server_stops_is_a_503_not_the_servers_500() -> None:
    """uvicorn cancels a request still running at its shutdown deadline, and answers a cancelled request
    that has not answered with a plain-text 500 of its own: the middleware answers first, a 503 problem
    that says to retry, and lets the cancellation go on."""
    started = asyncio.Event()

    async def waits_on_a_lock(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await asyncio.Event().wait()

    start, body = await _cancelled(waits_on_a_lock, started, "POST")
    assert start["status"] == 503
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    assert headers["content-type"] == "application/problem+json"
    assert headers["retry-after"] == "5"
    problem = json.loads(body["body"])
    assert problem["code"] == "service_unavailable"
    assert "retry" in problem["detail"]


async def test_a_cancelled_request_that_has_answered_is_left_to_the_server() -> None:
    """Once its answer has started, nothing more can be said: the cancellation goes on as it came."""
    started = asyncio.Event()

    async def streams(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        started.set()
        await asyncio.Event().wait()

    sent = await _cancelled(streams, started, "GET")
    assert [message["type"] for message in sent] == ["http.response.start"]
