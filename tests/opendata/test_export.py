"""The daily publication: `cnfs-api open-data export DIR` and the files it writes."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from app.cli import cli
from app.config import get_settings
from app.opendata import service
from tests.helpers import logging_restored
from tests.opendata.helpers import CSV_URL, errors_of_csv, errors_of_records
from tests.workshops.helpers import VENUE, Place, create_workshop

runner = CliRunner()
DAY = date(2026, 12, 7)
CSV_NAME = "2026-12-07_cnfs_lieux-de-mediation-numerique_france.csv"
JSON_NAME = "2026-12-07_cnfs_lieux-de-mediation-numerique_france.json"
POSITIONS_NAME = "2026-12-07_cnfs_stats-positions_france.csv"
WORKSHOPS_NAME = "2026-12-07_cnfs_stats-workshops_france.csv"
ALL_NAMES = sorted([CSV_NAME, JSON_NAME, POSITIONS_NAME, WORKSHOPS_NAME])


def names_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


async def test_the_files_of_a_day(
    client: httpx.AsyncClient, place: Place, session: AsyncSession, tmp_path: Path
) -> None:
    for venue in (VENUE, VENUE | {"name": "+33 Espace", "address": "2 rue Garibaldi"}):
        await create_workshop(client, place.admin, place.lyon_position["id"], venue=venue)
    report = await service.export_directory(session, tmp_path, DAY)

    assert [path.name for path in report.files] == ALL_NAMES
    assert names_in(tmp_path) == ALL_NAMES
    assert report.venues == 2
    assert report.skipped == {}
    written = (tmp_path / CSV_NAME).read_bytes()
    assert written == (await client.get(CSV_URL)).content
    assert errors_of_csv(written, tmp_path) == []
    records = json.loads((tmp_path / JSON_NAME).read_bytes())
    assert sorted(r["nom"] for r in records) == ["+33 Espace", "Médiathèque de la Part-Dieu"]
    assert errors_of_records(records) == []
    assert oct((tmp_path / CSV_NAME).stat().st_mode & 0o777) == "0o644"


def test_file_names_follow_the_standard() -> None:
    name = service.file_name(
        DAY, "Métropole de Lyon", "Auvergne-Rhône-Alpes", "lieux-de-mediation-numerique", "csv"
    )
    assert name == "2026-12-07_metropole-de-lyon_lieux-de-mediation-numerique_auvergne-rhone-alpes.csv"


def test_a_failed_write_leaves_the_previous_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "a.json"
    service.write_atomically({first: b"old csv", second: b"old json"})
    real_replace = os.replace
    calls: list[Any] = []

    def failing(source: Any, target: Any) -> None:
        calls.append(target)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError):
        service.write_atomically({first: b"new csv", second: b"new json"})
    monkeypatch.setattr(os, "replace", real_replace)
    assert calls == [first]
    assert first.read_bytes() == b"old csv"
    assert second.read_bytes() == b"old json"
    # No temporary file is left behind.
    assert names_in(tmp_path) == ["a.csv", "a.json"]


async def test_the_statistics_published_beside_the_venues_are_the_public_answers(
    client: httpx.AsyncClient, place: Place, session: AsyncSession, tmp_path: Path
) -> None:
    await create_workshop(client, place.admin, place.lyon_position["id"])
    files = await service.statistics_files(session, tmp_path, DAY, "cnfs", "france", threshold=11)
    assert sorted(path.name for path in files) == [POSITIONS_NAME, WORKSHOPS_NAME]
    # The same bytes as the statistics endpoints answer a caller without a key, as CSV.
    for name, path, params in (
        (POSITIONS_NAME, "/api/v1/stats/positions", {"group_by": "territory"}),
        (WORKSHOPS_NAME, "/api/v1/stats/workshops", {"group_by": "month"}),
    ):
        answer = await client.get(path, params=params, headers={"Accept": "text/csv"})
        assert answer.status_code == 200, answer.text
        assert files[tmp_path / name] == answer.content
    positions = files[tmp_path / POSITIONS_NAME].decode().splitlines()
    assert positions[0].startswith("territory_id,granted,open,occupied,vacant,closed,")
    assert positions[-1].startswith("total,")


@pytest.fixture
def cli_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="cnfs-opendata-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'cli.db'}"
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("SECRET_KEY", "cli-test-" + "x" * 32)
        get_settings.cache_clear()
        with logging_restored():
            yield url
        get_settings.cache_clear()


def test_export_command(cli_database: str, tmp_path: Path) -> None:
    target = tmp_path / "publication" / "daily"
    missing = runner.invoke(cli, ["open-data", "export", str(target)])
    assert missing.exit_code == 2
    assert missing.output.strip().startswith("cnfs-api: ")
    assert "cnfs-api migrate" in missing.output
    assert "Traceback" not in missing.output
    assert not target.exists()

    assert runner.invoke(cli, ["migrate"]).exit_code == 0
    done = runner.invoke(
        cli, ["open-data", "export", str(target), "--producer", "ANCT", "--territory", "Île-de-France"]
    )
    assert done.exit_code == 0, done.output
    names = names_in(target)
    assert len(names) == 4
    day = names[0][:10]
    assert names == [
        f"{day}_anct_lieux-de-mediation-numerique_ile-de-france.csv",
        f"{day}_anct_lieux-de-mediation-numerique_ile-de-france.json",
        f"{day}_anct_stats-positions_ile-de-france.csv",
        f"{day}_anct_stats-workshops_ile-de-france.csv",
    ]
    summary = done.output.strip().splitlines()[-1]
    assert summary == f"open data {day}: 0 venues written, 0 left out, into {', '.join(names)}"
    assert errors_of_csv((target / names[0]).read_bytes(), tmp_path) == []
    assert json.loads((target / names[1]).read_bytes()) == []

    refused = runner.invoke(cli, ["open-data", "export", str(target), "--producer", "!!"])
    assert refused.exit_code == 2
    assert "--producer" in refused.output

    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    failed = runner.invoke(cli, ["open-data", "export", str(blocked / "sub")])
    assert failed.exit_code == 1
    assert failed.output.startswith("cnfs-api: cannot write the open-data files into ")
    assert "Traceback" not in failed.output
