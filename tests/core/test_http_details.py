"""HTTP details: no echo of an untrusted Host, trusted hosts, CORS refusals as problems, Cache-Control,
the keep-alive timeout."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.requests import Request
from typer.testing import CliRunner

from app.config import Settings, get_settings
from app.core.cache_control import PRIVATE, PUBLIC, cache_control_for
from app.core.pagination import next_page_url
from app.main import create_app
from tests.conftest import Tree
from tests.helpers import app_client, assert_problem


async def test_link_never_echoes_the_host(client: httpx.AsyncClient, tree: Tree) -> None:
    response = await client.get(
        "/api/v1/territories", params={"limit": "1"}, headers={"Host": "evil.example"}
    )
    link = response.headers["link"]
    assert "evil" not in link
    assert link.startswith("</api/v1/territories?")


def test_link_under_the_public_base_url(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"public_base_url": "https://api.example.fr"}))
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/territories",
        "query_string": b"limit=1",
        "headers": [(b"host", b"evil.example")],
        "app": app,
        "scheme": "http",
        "server": ("evil.example", 80),
    }
    url = next_page_url(Request(scope), "abc")
    assert url == "https://api.example.fr/api/v1/territories?limit=1&cursor=abc"


async def test_trailing_slash_is_not_redirected(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/territories/", headers={"Host": "evil.example"})
    assert_problem(response, 404, "not_found")
    assert "location" not in response.headers


async def test_allowed_hosts(settings: Settings) -> None:
    configured = settings.model_copy(update={"allowed_hosts": ["api.example.fr", "*.cnfs.example"]})
    async with app_client(configured) as client:
        refused = await client.get("/healthz", headers={"Host": "evil.example"})
        assert_problem(refused, 400, "invalid_host")
        for host in ("api.example.fr", "api.example.fr:8443", "v2.cnfs.example"):
            assert (await client.get("/healthz", headers={"Host": host})).status_code == 200, host


async def test_a_refused_cors_preflight_is_a_problem(client: httpx.AsyncClient) -> None:
    preflight = {"Access-Control-Request-Method": "GET"}
    refused = await client.options(
        "/api/v1/territories", headers={**preflight, "Origin": "https://evil.example"}
    )
    problem = assert_problem(refused, 400, "cors_refused")
    assert "origin" in problem["detail"]
    allowed = await client.options(
        "/api/v1/territories", headers={**preflight, "Origin": "https://app.example.fr"}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.fr"


async def test_cache_control_on_every_response(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    public = await client.get("/api/v1/territories")
    assert public.headers["cache-control"] == PUBLIC
    # Referentials set their own, longer max-age: it is kept.
    assert (await client.get("/api/v1/referentials")).headers["cache-control"].startswith("public")
    cases: list[tuple[str, str, dict[str, str] | None]] = [
        ("GET", "/api/v1/territories", admin),  # with a key: never in a shared cache
        ("GET", "/api/v1/me", admin),
        ("GET", "/api/v1/programmes", None),
        ("GET", "/api/v1/api-keys", admin),
        ("GET", "/api/v1/territories/00000000-0000-0000-0000-000000000000", None),  # 404
        ("POST", "/api/v1/territories", admin),  # 422
        ("GET", "/readyz", None),
        ("GET", "/api/v1/nothing", None),
    ]
    for method, url, headers in cases:
        response = await client.request(method, url, headers=headers, json={} if method == "POST" else None)
        assert response.headers["cache-control"] == PRIVATE, (method, url, response.status_code)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("GET", "/api/v1/territories/x", 200, False), PUBLIC),
        (("HEAD", "/api/v1/referentials", 304, False), PUBLIC),
        (("GET", "/api/v1/territories", 200, True), PRIVATE),
        (("GET", "/api/v1/territories", 404, False), PRIVATE),
        (("POST", "/api/v1/territories", 201, False), PRIVATE),
        (("GET", "/api/v1/positions", 200, False), PRIVATE),
    ],
)
def test_cache_control_rule(args: tuple[Any, ...], expected: str) -> None:
    assert cache_control_for(*args) == expected


def test_serve_keeps_idle_connections_75_seconds(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from app import cli as cli_module
    from app.cli import cli

    seen: dict[str, Any] = {}

    def execv(_path: str, argv: list[str]) -> None:
        # `serve` hands over to the server's command line: read its keep-alive option.
        option = "--timeout-keep-alive" if "--timeout-keep-alive" in argv else "--keep-alive"
        seen["timeout_keep_alive"] = int(argv[argv.index(option) + 1])
        seen["argv"] = argv

    monkeypatch.setattr(cli_module.os, "execv", execv)
    # `serve --workers 2` sets the metrics' directory in its environment before the (here pretended) exec.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cnfs.db'}")
    monkeypatch.setenv("SECRET_KEY", "k" * 40)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        result = runner.invoke(cli, ["serve", "--port", "0", "--no-demo"])
        assert result.exit_code == 0, result.output
        assert seen["timeout_keep_alive"] == 75
        monkeypatch.setenv("KEEP_ALIVE_TIMEOUT_SECONDS", "120")
        get_settings.cache_clear()
        assert runner.invoke(cli, ["serve", "--port", "0", "--no-demo"]).exit_code == 0
        assert seen["timeout_keep_alive"] == 120
        # Several workers: gunicorn forks them from one loaded application, with the same keep-alive.
        assert runner.invoke(cli, ["serve", "--port", "0", "--no-demo", "--workers", "2"]).exit_code == 0
        assert seen["timeout_keep_alive"] == 120
        assert seen["argv"][1:4] == ["-m", "gunicorn", "app.main:preloaded_app()"]
        assert "--preload" in seen["argv"]
    finally:
        get_settings.cache_clear()
