"""`cnfs-api purge` on a database of its own (the demo's): a dry run changes nothing, a run erases, a second
run finds nothing; exit status 0 and one summary line each time."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from sqlalchemy import func, select

from app.cli import cli
from app.counsellors.models import Counsellor
from app.db import make_engine, make_sessionmaker
from app.stats.models import workshop_monthly_stats
from app.workshops.models import Registration
from tests.test_cli import cli_database, runner

__all__ = ["cli_database"]

SUMMARY = re.compile(
    r"purge(?P<dry> \(dry run, nothing changed\))?: (would erase|erased) (?P<registrations>\d+) "
    r"registrations' personal data, (?P<counsellors>\d+) counsellors anonymised, "
    r"(?P<journal>\d+) journal lines and (?P<responses>\d+) stored responses deleted"
)


def _state(url: str) -> tuple[int, int, list[Any]]:
    async def read() -> tuple[int, int, list[Any]]:
        engine = make_engine(url)
        async with make_sessionmaker(engine)() as session:
            erased = (
                await session.execute(
                    select(func.count())
                    .select_from(Registration)
                    .where(Registration.anonymized_at.is_not(None))
                )
            ).scalar_one()
            anonymised = (
                await session.execute(
                    select(func.count()).select_from(Counsellor).where(Counsellor.anonymized_at.is_not(None))
                )
            ).scalar_one()
            rollup = [tuple(r) for r in (await session.execute(select(workshop_monthly_stats))).all()]
        await engine.dispose()
        return int(erased), int(anonymised), sorted(rollup, key=str)

    return asyncio.run(read())


def _purge(*args: str) -> dict[str, str]:
    result = runner.invoke(cli, ["purge", *args])
    assert result.exit_code == 0, result.output
    found = SUMMARY.search(result.output)
    assert found, result.output
    return found.groupdict()


def test_purge_command(cli_database: str) -> None:
    assert runner.invoke(cli, ["migrate"]).exit_code == 0
    assert runner.invoke(cli, ["seed-demo"]).exit_code == 0
    erased, anonymised, rollup = _state(cli_database)
    assert erased == 0
    assert rollup
    # Two years on, the demo's past workshops are past retention.
    later = ["--now", "2029-01-15"]
    dry = _purge("--dry-run", *later)
    assert dry["dry"]
    assert int(dry["registrations"]) > 0
    assert _state(cli_database) == (0, anonymised, rollup)
    done = _purge(*later)
    assert not done["dry"]
    assert done["registrations"] == dry["registrations"]
    assert done["counsellors"] == dry["counsellors"]
    assert _state(cli_database) == (int(done["registrations"]), anonymised + int(done["counsellors"]), rollup)
    again = _purge(*later)
    assert (again["registrations"], again["counsellors"]) == ("0", "0")
