"""X-Forwarded-For and X-Forwarded-Proto are believed only from the proxies FORWARDED_ALLOW_IPS lists (none
by default): otherwise any client could choose the address its rate limits count against."""

from __future__ import annotations

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request

from app.config import Settings
from app.main import create_app

FORGED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


def _echo_client(app: FastAPI) -> None:
    @app.get("/test-client")
    async def client(request: Request) -> dict[str, str]:
        assert request.client is not None
        return {"host": request.client.host, "scheme": request.url.scheme}


async def _seen(settings: Settings, peer: str) -> dict[str, str]:
    app = create_app(settings)
    _echo_client(app)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/test-client", headers=FORGED)
    assert response.status_code == 200, response.text
    seen: dict[str, str] = response.json()
    return seen


async def test_not_believed_by_default(settings: Settings) -> None:
    assert settings.forwarded_allow_ips == ""
    assert await _seen(settings, "127.0.0.1") == {"host": "127.0.0.1", "scheme": "http"}


@pytest.mark.parametrize("allowed", ["127.0.0.1", "10.0.0.5, 127.0.0.0/8", "*"])
async def test_believed_from_a_listed_proxy(settings: Settings, allowed: str) -> None:
    listed = settings.model_copy(
        update={"forwarded_allow_ips": Settings(forwarded_allow_ips=allowed).forwarded_allow_ips}
    )
    assert await _seen(listed, "127.0.0.1") == {"host": "203.0.113.7", "scheme": "https"}


async def test_not_believed_from_another_address(settings: Settings) -> None:
    listed = settings.model_copy(update={"forwarded_allow_ips": "10.0.0.5"})
    assert await _seen(listed, "127.0.0.1") == {"host": "127.0.0.1", "scheme": "http"}


def test_the_servers_believe_nothing_themselves() -> None:
    """The application applies the rule, under uvicorn and under gunicorn alike: both servers' own
    defaults believe 127.0.0.1, so `serve` turns their handling off."""
    from app.cli import server_command

    uvicorn = server_command("127.0.0.1", 8000, 1, 75)
    assert "--no-proxy-headers" in uvicorn
    assert "--proxy-headers" not in uvicorn
    gunicorn = server_command("127.0.0.1", 8000, 2, 75)
    assert gunicorn[gunicorn.index("--forwarded-allow-ips") + 1] == ""


@pytest.mark.parametrize("wrong", ["localhost", "10.0.0.300", "10.0.0.1/33"])
def test_a_wrong_address_is_refused(wrong: str) -> None:
    with pytest.raises(ValueError, match="not an IP address or network"):
        Settings(forwarded_allow_ips=f"127.0.0.1,{wrong}")
