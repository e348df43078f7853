"""The benchmark's workshops (`bench.workshops_dataset`) are rows the service could have written.

A small dataset (200 workshops, the Rhône's and the Ain's communes) is built in a database of its own, then
read back: through the service's own read model and repository (the counters against the registrations),
and checked against the rules of `app.workshops.service` (venue columns, theme mask, capacity, waitlist
ranks, addresses, tokens, the position's territory and counsellor), and its schema against a database that
only the migrations made. PostgreSQL only: the generator writes with COPY, and the SQLite dataset has no
workshops."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from bench import dataset, workshops_dataset
from tests.conftest import TEST_DATABASE_URL, postgres_only

pytestmark = postgres_only

WORKSHOPS = 200
AGREEMENTS, POSITIONS, COUNSELLORS = 10, 90, 130
TABLES = ("agreements", "positions", "counsellors", "assignments", "workshops", "registrations")


def _database_url(prefix: str) -> str:
    assert TEST_DATABASE_URL
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    return make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def built() -> Iterator[tuple[str, dataset.Dataset]]:
    url = _database_url("cnfs_bench_ws_test")
    try:
        yield (
            url,
            dataset.build(
                url,
                departements=("69", "01"),
                agreements=AGREEMENTS,
                positions=POSITIONS,
                counsellors=COUNSELLORS,
                workshops=WORKSHOPS,
                progress=False,
            ),
        )
    finally:
        asyncio.run(dataset.drop_pg_database(url))


async def _rows(url: str, sql: str) -> list[dict[str, Any]]:
    import asyncpg

    conn = await asyncpg.connect(dataset.asyncpg_dsn(url))
    try:
        return [dict(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def test_the_counters_agree_with_the_registrations(built: tuple[str, dataset.Dataset]) -> None:
    from app.db import make_engine, make_sessionmaker
    from app.workshops import repository
    from app.workshops.models import Workshop

    url, summary = built
    assert summary.workshops == WORKSHOPS
    assert summary.registrations > 0
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            workshops = list((await session.execute(select(Workshop))).scalars())
            assert len(workshops) == WORKSHOPS
            for w in workshops:
                confirmed, waitlisted = await repository.counts(session, w.id)
                assert (w.registered_count, w.waitlisted_count) == (confirmed, waitlisted), w.id
                assert w.seats_left == w.capacity - w.registered_count
                assert w.waitlisted_count <= w.waitlist_capacity
                ranks = (
                    await session.execute(
                        text(
                            "SELECT waitlist_rank FROM registrations WHERE workshop_id = :id"
                            " AND status = 'waitlisted' ORDER BY waitlist_rank"
                        ),
                        {"id": w.id},
                    )
                ).scalars()
                assert list(ranks) == list(range(1, w.waitlisted_count + 1))
                if w.status == "cancelled":
                    assert (w.registered_count, w.waitlisted_count) == (0, 0)
                    assert w.cancel_reason
    finally:
        await engine.dispose()


async def test_the_workshops_follow_the_service_rules(built: tuple[str, dataset.Dataset]) -> None:
    from app.workshops.schemas import Venue, WorkshopRead, theme_mask
    from app.workshops.service import department_of

    url, summary = built
    workshops = await _rows(
        url,
        "SELECT w.*, t.path AS territory_path, p.territory_id AS position_territory_id,"
        " (SELECT count(*) FROM assignments a WHERE a.position_id = w.position_id"
        " AND a.counsellor_id = w.counsellor_id) AS runs_it FROM workshops w"
        " JOIN positions p ON p.id = w.position_id JOIN territories t ON t.id = w.territory_id",
    )
    communes = {
        r["code"]: r
        for r in await _rows(url, "SELECT code, path, postcodes FROM territories WHERE kind = 'commune'")
    }
    for w in workshops:
        assert w["territory_id"] == w["position_territory_id"]
        assert w["counsellor_id"] is None or w["runs_it"] == 1
        themes = json.loads(w["themes"])
        assert 1 <= len(themes) <= 5
        assert w["themes_mask"] == theme_mask(themes)
        assert w["ends_at"] == w["starts_at"] + timedelta(minutes=w["duration_minutes"])
        assert w["created_at"] <= w["updated_at"]
        assert w["created_at"] < w["starts_at"]
        assert w["updated_at"] <= workshops_dataset.DATASET_NOW
        assert w["version"] >= 1
        if w["format"] == "in_person":
            venue = Venue.model_validate(json.loads(w["venue"]))
            assert (venue.commune_code, venue.postcode, venue.lat, venue.lon) == (
                w["venue_commune_code"],
                w["venue_postcode"],
                w["venue_lat"],
                w["venue_lon"],
            )
            assert w["venue_department_code"] == department_of(venue.commune_code)
            commune = communes[venue.commune_code]
            assert venue.postcode in commune["postcodes"].split()
            assert commune["path"].startswith(w["territory_path"])
            assert w["online_url"] is None
        else:
            assert w["venue"] is None
            assert w["venue_commune_code"] is None
            assert w["online_url"].startswith("https://")
        if w["status"] == "completed":
            walk_ins = json.loads(w["walk_ins"])
            assert sum(walk_ins["age_brackets"].values()) == walk_ins["total"]
        # What the API answers for it: the read model validates every stored value.
        read = {name: w[name] for name in WorkshopRead.model_fields}
        for name in ("themes", "venue", "walk_ins"):
            read[name] = json.loads(read[name]) if read[name] is not None else None
        WorkshopRead.model_validate(read)
    targets = [w for w in workshops if str(w["id"]) in summary.workshops_register_ids.split()]
    assert len(targets) == workshops_dataset.register_targets(WORKSHOPS) == 20
    assert {w["venue_commune_code"] for w in targets} == {summary.workshops_register_commune}
    others = [w for w in workshops if w["venue_commune_code"] == summary.workshops_register_commune]
    assert len(others) == len(targets)
    assert all(w["public"] and w["status"] == "scheduled" and w["registered_count"] == 0 for w in targets)


async def test_the_registrations_are_stored_as_the_service_stores_them(
    built: tuple[str, dataset.Dataset],
) -> None:
    from app.workshops.schemas import RegistrationCreate, RegistrationRead

    url, _ = built
    registrations = await _rows(
        url,
        "SELECT r.*, w.created_at AS workshop_created_at, w.starts_at FROM registrations r"
        " JOIN workshops w ON w.id = r.workshop_id",
    )
    assert registrations
    token_hash = re.compile(r"^[0-9a-f]{64}$")
    for r in registrations:
        RegistrationCreate.model_validate(
            {k: r[k] for k in ("first_name", "last_name", "email", "phone", "age_bracket", "social_status")}
        )
        RegistrationRead.model_validate({name: r[name] for name in RegistrationRead.model_fields})
        assert r["email_key"] == r["email"].lower()
        assert token_hash.match(r["cancel_token_hash"])
        assert (r["status"] == "waitlisted") == (r["waitlist_rank"] is not None)
        assert (
            r["workshop_created_at"] < r["created_at"] <= min(r["starts_at"], workshops_dataset.DATASET_NOW)
        )
        assert not r["email_key"].startswith("bench-w-")
    live = [(r["workshop_id"], r["email_key"]) for r in registrations if r["status"] != "cancelled"]
    assert len(live) == len(set(live))


async def test_the_schema_is_the_migrations(built: tuple[str, dataset.Dataset]) -> None:
    from alembic import command

    from app.cli import alembic_config

    url, _ = built
    fresh = _database_url("cnfs_bench_ws_schema")
    catalogue = (
        "SELECT 'index' AS kind, indexdef AS definition FROM pg_indexes"
        " WHERE tablename IN ('workshops', 'registrations', 'workshop_monthly_stats')"
        " UNION ALL SELECT 'constraint', conrelid::regclass::text || ' ' || conname || ' '"
        " || pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid IN ('workshops'::regclass, 'registrations'::regclass,"
        " 'workshop_monthly_stats'::regclass) ORDER BY 1, 2"
    )
    try:
        await dataset.recreate_pg_database(fresh)
        await asyncio.to_thread(command.upgrade, alembic_config(fresh), "head")
        assert await _rows(url, catalogue) == await _rows(fresh, catalogue)
    finally:
        await dataset.drop_pg_database(fresh)


async def test_the_rows_depend_on_the_seed_only(built: tuple[str, dataset.Dataset]) -> None:
    url, summary = built
    territories = await _rows(url, "SELECT id, kind, code, path, postcodes FROM territories")
    positions = await _rows(url, "SELECT id, territory_id, closed_on FROM positions ORDER BY created_at, id")
    assignments = await _rows(
        url, "SELECT position_id, counsellor_id, started_on, ended_on FROM assignments ORDER BY id"
    )
    runners, _, _ = workshops_dataset.plan(
        territories, positions, assignments, uuid.UUID(summary.departement_id)
    )
    first = workshops_dataset.Generator(runners, 7).chunk(3, 0, 50)
    again = workshops_dataset.Generator(runners, 7).chunk(3, 0, 50)
    other = workshops_dataset.Generator(runners, 8).chunk(3, 0, 50)
    assert first == again
    assert first != other
    # Exactly `REGISTRATIONS_PER_WORKSHOP` registrations per workshop on an even number of them.
    per_workshop = workshops_dataset.REGISTRATIONS_PER_WORKSHOP
    assert len(first.registrations) == per_workshop * len(first.workshops)


async def test_the_sizes_are_the_ones_asked(built: tuple[str, dataset.Dataset]) -> None:
    url, summary = built
    counts = (
        await _rows(
            url,
            "SELECT " + ", ".join(f"(SELECT count(*) FROM {t}) AS {t}" for t in TABLES),
        )
    )[0]
    targets = workshops_dataset.register_targets(WORKSHOPS)
    per_workshop = workshops_dataset.REGISTRATIONS_PER_WORKSHOP
    assert counts == {
        "agreements": AGREEMENTS,
        "positions": POSITIONS,
        "counsellors": COUNSELLORS,
        "assignments": COUNSELLORS,
        "workshops": WORKSHOPS,
        # The registration scenario's workshops have none yet.
        "registrations": per_workshop * (WORKSHOPS - targets),
    }
    assert (summary.positions, summary.counsellors, summary.registrations) == (
        POSITIONS,
        COUNSELLORS,
        counts["registrations"],
    )


async def test_the_contracts_follow_each_other(built: tuple[str, dataset.Dataset]) -> None:
    url, summary = built
    positions = {
        r["id"]: r
        for r in await _rows(
            url, "SELECT p.*, a.starts_on FROM positions p JOIN agreements a ON a.id = p.agreement_id"
        )
    }
    contracts: dict[Any, list[dict[str, Any]]] = {}
    for a in await _rows(url, "SELECT * FROM assignments ORDER BY started_on"):
        contracts.setdefault(a["position_id"], []).append(a)
    assert set(contracts) == set(positions)
    counsellors = [a["counsellor_id"] for held in contracts.values() for a in held]
    assert len(counsellors) == len(set(counsellors)) == COUNSELLORS
    end = dataset.HISTORY_END
    replaced = vacant = closed = 0
    for position_id, held in contracts.items():
        position = positions[position_id]
        assert position["starts_on"] <= position["opened_on"] < held[0]["started_on"]
        for before, after in itertools.pairwise(held):
            # Each contract ended (with a reason) before the next one started.
            assert before["ended_on"] is not None
            assert before["end_reason"] is not None
            assert before["ended_on"] < after["started_on"]
            replaced += 1
        last = held[-1]
        assert last["started_on"] <= end
        assert last["ended_on"] is None or last["ended_on"] <= end
        for a in held:
            assert a["ends_on"] is None or a["ends_on"] >= a["started_on"]
            assert (a["contract_type"] == "CDI") == (a["ends_on"] is None)
        if last["ended_on"] is not None:
            vacant += 1
        if position["closed_on"] is not None:
            closed += 1
            assert last["ended_on"] is not None
            assert last["ended_on"] < position["closed_on"] <= end
    assert replaced == COUNSELLORS - POSITIONS
    assert vacant > 0
    assert closed > 0
    # The scenarios' counsellor holds a position today.
    holding = [
        a for held in contracts.values() for a in held if str(a["counsellor_id"]) == summary.counsellor_id
    ]
    assert len(holding) == 1
    assert holding[0]["ended_on"] is None
    # A workshop is run by the counsellor whose contract covers its day, or by nobody while the position
    # was vacant.
    workshops = await _rows(url, "SELECT position_id, counsellor_id, starts_at FROM workshops")
    for w in workshops:
        day = w["starts_at"].date()
        covering = [
            a["counsellor_id"]
            for a in contracts[w["position_id"]]
            if a["started_on"] <= day and (a["ended_on"] is None or day <= a["ended_on"])
        ]
        assert covering == ([w["counsellor_id"]] if w["counsellor_id"] else []), w


async def test_the_attendees_are_the_present_registrations_and_the_walk_ins(
    built: tuple[str, dataset.Dataset],
) -> None:
    from app.referentials.data import AgeBracket, SocialStatus

    url, _ = built
    present: dict[Any, list[dict[str, Any]]] = {}
    for r in await _rows(
        url,
        "SELECT workshop_id, age_bracket, social_status FROM registrations"
        " WHERE attendance = 'present' AND status <> 'cancelled'",
    ):
        present.setdefault(r["workshop_id"], []).append(r)
    workshops = await _rows(url, "SELECT id, status, walk_ins, attendees, attendee_breakdown FROM workshops")
    reported = 0
    for w in workshops:
        if w["status"] != "completed":
            assert (w["attendees"], w["attendee_breakdown"], w["walk_ins"]) == (0, None, None)
            assert w["id"] not in present
            continue
        walk_ins = json.loads(w["walk_ins"])
        ages = dict.fromkeys((a.value for a in AgeBracket), 0)
        socials = dict.fromkeys((s.value for s in SocialStatus), 0)
        for name, n in walk_ins["age_brackets"].items():
            ages[name] += n
        for name, n in walk_ins["social_statuses"].items():
            socials[name] += n
        for r in present.get(w["id"], []):
            ages[r["age_bracket"] or "non_communique"] += 1
            socials[r["social_status"] or "non_communique"] += 1
        assert w["attendees"] == walk_ins["total"] + len(present.get(w["id"], []))
        assert json.loads(w["attendee_breakdown"]) == {"age_brackets": ages, "social_statuses": socials}
        reported += w["attendees"] > 0
    assert reported > 0


async def test_the_rollup_is_what_rebuild_computes(built: tuple[str, dataset.Dataset]) -> None:
    from app.db import make_engine
    from app.stats import rollup

    url, _ = built
    order = "SELECT * FROM workshop_monthly_stats ORDER BY territory_id, month, level, theme"
    loaded = await _rows(url, order)
    assert len(loaded) > WORKSHOPS // 2
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            await rollup.rebuild(conn)
            rebuilt = [dict(r._mapping) for r in await conn.execute(text(order))]
            await conn.rollback()
    finally:
        await engine.dispose()
    assert loaded == rebuilt
