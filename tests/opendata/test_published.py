"""The open-data files a worker serves: built once per `OPEN_DATA_CACHE_SECONDS` by one request, however
many ask at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.opendata import service
from tests.helpers import app_client

RECORD: dict[str, Any] = {"id": "00000000-0000-5000-8000-000000000001", "nom": "Médiathèque"}


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the exports the routes run; each takes a while, so that requests overlap it."""
    calls: list[int] = []

    async def lieux(session: AsyncSession, *args: Any, **kwargs: Any) -> service.Export:
        calls.append(len(calls))
        await asyncio.sleep(0.2)
        return service.Export([{**RECORD, "nom": f"Médiathèque {len(calls)}"}])

    monkeypatch.setattr(service, "lieux", lieux)
    return calls


@pytest.mark.parametrize(("path", "name"), [("csv", "csv"), ("json", "json")])
async def test_requests_at_once_share_one_export_then_its_files(
    settings: Settings, builds: list[int], path: str, name: str
) -> None:
    url = f"/api/v1/open-data/lieux-mediation-numerique.{path}"
    async with app_client(settings.model_copy(update={"open_data_cache_seconds": 60})) as client:
        answers = await asyncio.gather(*(client.get(url) for _ in range(8)))
        assert [a.status_code for a in answers] == [200] * 8
        assert len(builds) == 1
        assert len({a.content for a in answers}) == 1
        assert "Médiathèque 1" in answers[0].text
        # Served again without a new export while it is fresh.
        again = await client.get(url)
        assert again.content == answers[0].content
        assert len(builds) == 1


async def test_an_expired_export_is_built_again(settings: Settings, builds: list[int]) -> None:
    url = "/api/v1/open-data/lieux-mediation-numerique.json"
    async with app_client(settings.model_copy(update={"open_data_cache_seconds": 0.3})) as client:
        first = await client.get(url)
        await asyncio.sleep(0.4)
        second = await client.get(url)
    assert len(builds) == 2
    assert "Médiathèque 1" in first.text
    assert "Médiathèque 2" in second.text


async def test_a_cancelled_build_leaves_the_next_request_to_build(builds: list[int]) -> None:
    published = service.Published(60)

    async def build() -> bytes:
        builds.append(0)
        await asyncio.sleep(10)
        return b"never"

    task = asyncio.create_task(published.get("json", build))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def quick() -> bytes:
        return b"[]"

    assert await published.get("json", quick) == b"[]"
    assert await published.get("json", build) == b"[]"


async def test_without_the_cache_every_request_builds(settings: Settings, builds: list[int]) -> None:
    url = "/api/v1/open-data/lieux-mediation-numerique.csv"
    async with app_client(settings) as client:
        await client.get(url)
        await client.get(url)
    assert len(builds) == 2


async def test_requests_waiting_for_a_build_hold_no_database_connection(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten readers arrive while the files are being built (a few seconds at the programme's scale): only
    the building request holds a connection, so the rest of the service keeps answering."""
    real = service.lieux

    async def slow(session: AsyncSession, *args: Any, **kwargs: Any) -> service.Export:
        await asyncio.sleep(1.5)
        return await real(session, *args, **kwargs)

    monkeypatch.setattr(service, "lieux", slow)
    small_pool = settings.model_copy(
        update={"open_data_cache_seconds": 60, "database_pool_size": 2, "database_pool_timeout_seconds": 1}
    )
    url = "/api/v1/open-data/lieux-mediation-numerique.json"
    async with app_client(small_pool) as client:
        exports = [asyncio.create_task(client.get(url)) for _ in range(10)]
        await asyncio.sleep(0.3)
        other = await client.get("/api/v1/programmes")
        assert other.status_code == 200, other.text
        assert [(await e).status_code for e in exports] == [200] * 10
