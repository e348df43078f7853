"""The load benchmark's reference and minimal FastAPI apps keep answering like the service.

Each scenario of `bench.scenarios` runs in-process (httpx ASGITransport) against the three apps on a small
dataset of `bench.dataset` (the referential's communes of three départements, among them the Rhône and the
Loire, so that the searches find Villefranche-sur-Saône, Saint-Étienne and Lyon), built in a database of its
own (the apps open their own connections, so they cannot share a test's rolled-back transaction): same
statuses, same JSON (cursor values aside), same ETag and Link headers. A change of the service's answers then
shows here, not as a silently unfair benchmark."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from bench import dataset, inprocess, scenarios, wrk
from tests.conftest import IS_POSTGRES, TEST_DATABASE_URL

DEPARTEMENTS = ("69", "42", "01")
# Enough that the Rhône's search has upcoming workshops of its theme (PostgreSQL; SQLite gets none).
WORKSHOPS = 2000
SIZES: dict[str, Any] = {"departements": DEPARTEMENTS, "agreements": 30, "positions": 150, "counsellors": 220}


@pytest.fixture(scope="module")
def bench_data() -> Iterator[tuple[str, dict[str, str]]]:
    if IS_POSTGRES:
        assert TEST_DATABASE_URL
        name = f"cnfs_bench_test_{uuid.uuid4().hex[:8]}"
        url = make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
        try:
            built = dataset.build(url, **SIZES, workshops=WORKSHOPS, progress=False)
            yield url, scenarios.context(built.to_json())
        finally:
            asyncio.run(dataset.drop_pg_database(url))
    else:
        with tempfile.TemporaryDirectory(prefix="cnfs-bench-test-") as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
            built = dataset.build(url, **SIZES)
            yield url, scenarios.context(built.to_json())


async def test_the_reference_apps_answer_like_the_service(bench_data: tuple[str, dict[str, str]]) -> None:
    url, values = bench_data
    database = scenarios.POSTGRESQL if url.startswith("postgresql") else scenarios.SQLITE
    checked = [s for s in scenarios.SCENARIOS if database in s.databases]
    assert checked
    async with inprocess.open_apps(url, "bench-test-secret-" + "x" * 32) as apps:
        for scenario in checked:
            measured = await inprocess.measure(apps, scenario, values, passes=1)
            expected = [step.expect for step in scenario.steps]
            for app, answers in measured.answers.items():
                assert [a.status for a in answers] == expected, (scenario.name, app)
            assert inprocess.differences(scenario, measured.answers) == []
            # A reference that runs more statements than the service no longer shows what the service could
            # reach: when the service gets leaner, make `bench.shared` as lean.
            for app in scenario.apps - {scenarios.SERVICE}:
                assert measured.statements[app] <= measured.statements[scenarios.SERVICE]


async def test_a_list_page_has_a_cursor_a_link_and_a_cpu_time_in_every_app(
    bench_data: tuple[str, dict[str, str]],
) -> None:
    url, values = bench_data
    communes = next(s for s in scenarios.SCENARIOS if s.name.startswith("communes"))
    async with inprocess.open_apps(url, "bench-test-secret-" + "x" * 32) as apps:
        measured = await inprocess.measure(apps, communes, values, passes=1)
        await inprocess.cpu_cost(apps, communes, values, measured, passes=10)
    assert set(measured.cpu_ms) == set(scenarios.APPS)
    # Each app costs more than the stub that answers the same bytes (the difference is clamped at 0, so
    # a measurement that missed the app's work reads 0), and a page of 50 rows costs far less than a second.
    assert all(0 < ms < 1000 for ms in measured.cpu_ms.values()), measured.cpu_ms
    for answers in measured.answers.values():
        assert answers[0].body["next_cursor"]
        assert answers[0].link
        assert len(answers[0].body["items"]) == 50


def test_wrk_output_is_read() -> None:
    output = """Running 2s test @ http://127.0.0.1:8000/api/v1/territories
  2 threads and 32 connections
  Latency Distribution
     50%    6.21ms
     75%    8.00ms
     90%   12.00ms
     99%    1.02s
  9386 requests in 2.01s, 3.50MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   4669.65
BENCH ops=4000 failures=2
"""
    result = wrk.parse(output)
    assert result.requests == 9386
    assert result.p50_ms == pytest.approx(6.21)
    assert result.p99_ms == pytest.approx(1020)
    assert result.errors == 5
    assert result.throughput == pytest.approx(4000 / 2.01)


def test_the_cycle_script_carries_every_step() -> None:
    writes = next(s for s in scenarios.SCENARIOS if len(s.steps) > 1)
    values = dict.fromkeys(("programme_id", "write_territory_id", "key_admin"), "x")
    steps = [scenarios.fill(s, values) for s in writes.steps]
    script = wrk.cycle_script(steps, "n1")
    assert script.count("method = ") == len(steps)
    assert '"/api/v1/agreements/{id}/sign"' in script
    assert "{unique}" in script


async def test_the_search_scenarios_find_what_they_are_named_after(
    bench_data: tuple[str, dict[str, str]],
) -> None:
    url, values = bench_data
    expected = {"villefranche": "Villefranche-sur-Saône", "st etienne": "Saint-Étienne", "69123": "Lyon"}
    async with inprocess.open_apps(url, "bench-test-secret-" + "x" * 32) as apps:
        for fragment, name in expected.items():
            scenario = next(s for s in scenarios.SCENARIOS if "search" in s.name and fragment in s.name)
            measured = await inprocess.measure(apps, scenario, values, passes=1)
            for answers in measured.answers.values():
                names = [item["name"] for item in answers[0].body["items"]]
                # The agglomeration of Villefranche matches whole words too, and is more populated.
                assert name in names[:2], (scenario.name, names)


async def test_the_rate_limited_rows_are_answered_and_timed(bench_data: tuple[str, dict[str, str]]) -> None:
    url, values = bench_data
    if not url.startswith("postgresql"):
        pytest.skip("the workshops are PostgreSQL only")
    row = next(s for s in scenarios.SCENARIOS if s.rate_limits == "memory")
    secret = "bench-test-secret-" + "x" * 32
    async with (
        inprocess.open_apps(url, secret, (scenarios.SERVICE,), rate_limits="memory") as limited,
        inprocess.open_apps(url, secret, (scenarios.SERVICE,)) as unlimited,
    ):
        measured = await inprocess.measure(limited, row, values, passes=1)
        assert [a.status for a in measured.answers[scenarios.SERVICE]] == [200]
        on, off = await inprocess.cpu_in_turns(limited, unlimited, row, values, measured, passes=10, turns=2)
    assert 0 < on < 1000, on
    assert 0 < off < 1000, off


async def test_the_open_data_scenario_exports_venues(bench_data: tuple[str, dict[str, str]]) -> None:
    url, values = bench_data
    if not url.startswith("postgresql"):
        pytest.skip("the workshops are PostgreSQL only")
    scenario = next(s for s in scenarios.SCENARIOS if s.name == scenarios.OPEN_DATA_JSON)
    async with inprocess.open_apps(url, "bench-test-secret-" + "x" * 32) as apps:
        measured = await inprocess.measure(apps, scenario, values, passes=1)
    for app, answers in measured.answers.items():
        records = answers[0].body
        # Métropoles and EPCI employ counsellors here: their venues have a pivot and are published.
        assert len(records) > 10, (app, len(records))
        assert {r["dispositif_programmes_nationaux"] for r in records} == {"Conseillers numériques"}
        assert len({r["id"] for r in records}) == len(records)
    assert inprocess.differences(scenario, measured.answers) == []


def test_the_reference_masks_a_registrations_audit_event_as_the_service_does() -> None:
    """The reference writes the audit event of a registration, as the service does in the same transaction
    (without it, the reference's registration was a statement lighter than the contract allows)."""
    from app.core.audit import spec_for
    from app.workshops import models  # noqa: F401  (declares the registrations' audit spec)
    from bench import shared

    spec = spec_for("registrations")
    assert spec is not None
    assert spec.masked == shared.REGISTRATION_MASKED


def test_the_replica_benchmark_names_scenarios_that_exist() -> None:
    """`bench.replica` picks its scenarios by name from the load benchmark's: a renamed one fails here
    rather than leaving its row out."""
    from bench import replica
    from bench.scenarios import SCENARIOS

    assert set(replica.SCENARIOS) <= {scenario.name for scenario in SCENARIOS}
