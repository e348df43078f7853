"""Migration 0010: existing activity reports are backfilled into `attendees` and `attendee_breakdown`, the
rollup is filled from the existing workshops, the triggers keep it from then on; it downgrades and
upgrades again. At head, the triggers are in place (a later batch rebuild of `workshops` on SQLite would
drop them silently: this says so)."""

from __future__ import annotations

import json

from alembic import command

from app.cli import alembic_config
from tests.conftest import IS_POSTGRES
from tests.test_migrations import _fresh_database, _run_sql, _tables
from tests.workshops.test_sequence_migration import NOW, POSITION, TERRITORY, WORKSHOP, _insert_workshop

DONE = "0190aaaa-0000-7000-8000-000000000009"
REGISTRATIONS = [f"0190aaaa-0000-7000-8000-00000000010{n}" for n in range(4)]


def i(ident: str) -> str:
    return f"'{ident if IS_POSTGRES else ident.replace('-', '')}'"


def _insert_completed(url: str) -> None:
    """A completed workshop of March 2026 with two themes, one listed twice (accepted before 0010): 2
    walk-ins, 4 registrations of which 2 present
    (one without a bracket nor a status), one absent, one present but cancelled (not counted)."""
    true = "true" if IS_POSTGRES else "1"
    walk_ins = json.dumps(
        {
            "total": 2,
            "age_brackets": {"soixante_dix_plus": 2},
            "social_statuses": {"retraite": 1, "en_emploi": 1},
        }
    )
    _run_sql(
        url,
        "INSERT INTO workshops (id, position_id, territory_id, title, themes, themes_mask, level, format,"
        " online_url, starts_at, ends_at, duration_minutes, capacity, waitlist_capacity, registered_count,"
        " waitlisted_count, seats_left, status, public, walk_ins, created_at, updated_at, version) VALUES"
        f' ({i(DONE)}, {i(POSITION)}, {i(TERRITORY)}, \'Atelier\', \'["email", "sante", "email"]\', 257,'
        " 'avance',"
        " 'remote', 'https://v.example.org/x', '2026-03-31 23:30:00', '2026-04-01 01:30:00', 120, 10, 0, 3,"
        f" 0, 7, 'completed', {true}, '{walk_ins}', {NOW}, {NOW}, 4)",
    )
    people = [
        ("confirmed", "present", "'moins_de_douze'", "'scolarise'"),
        ("confirmed", "present", "NULL", "NULL"),
        ("confirmed", "absent", "'retraite'", "'retraite'"),
        ("cancelled", "present", "'moins_de_douze'", "'scolarise'"),
    ]
    for n, (status, attendance, age, social) in enumerate(people):
        _run_sql(
            url,
            "INSERT INTO registrations (id, workshop_id, email, email_key, age_bracket, social_status,"
            " status, attendance, cancel_token_hash, created_at, updated_at) VALUES"
            f" ({i(REGISTRATIONS[n])}, {i(DONE)}, 'p{n}@example.org', 'p{n}@example.org', {age}, {social},"
            f" '{status}', '{attendance}', 'h', {NOW}, {NOW})",
        )


def _rollup(url: str) -> list[tuple[object, ...]]:
    return _run_sql(
        url,
        "SELECT month, level, theme, held, cancelled, registrations, attendees, age_moins_de_douze,"
        " age_soixante_dix_plus, age_non_communique, social_retraite, social_non_communique"
        " FROM workshop_monthly_stats ORDER BY month, level, theme",
    )


def test_0010_backfills_and_fills_the_rollup() -> None:
    url, cleanup = _fresh_database()
    try:
        config = alembic_config(url)
        command.upgrade(config, "0009")
        _insert_workshop(url, version=2)
        _insert_completed(url)
        command.upgrade(config, "0010")
        rows = dict(_run_sql(url, "SELECT id, attendees FROM workshops"))
        assert sorted(rows.values()) == [0, 4]
        # The theme listed twice is kept once, in the order of its first mention.
        (themes,) = _run_sql(url, f"SELECT themes FROM workshops WHERE id = {i(DONE)}")[0]
        assert (json.loads(themes) if isinstance(themes, str) else themes) == ["email", "sante"]
        (breakdown,) = _run_sql(url, "SELECT attendee_breakdown FROM workshops WHERE attendees = 4")[0]
        breakdown = json.loads(breakdown) if isinstance(breakdown, str) else breakdown
        assert breakdown["age_brackets"] == {
            "moins_de_douze": 1,
            "douze_dix_huit": 0,
            "dix_huit_vingt_quatre": 0,
            "vingt_cinq_trente_neuf": 0,
            "quarante_cinquante_neuf": 0,
            "soixante_soixante_neuf": 0,
            "soixante_dix_plus": 2,
            "non_communique": 1,
        }
        assert breakdown["social_statuses"] == {
            "scolarise": 1,
            "sans_emploi": 0,
            "en_emploi": 1,
            "retraite": 1,
            "non_communique": 1,
        }
        # (month, level, theme, held, cancelled, registrations, attendees, ages..., socials...)
        done = (1, 0, 3, 4, 1, 2, 1, 1, 1)
        assert _rollup(url) == [
            ("2026-03", "avance", "", *done),
            ("2026-03", "avance", "email", *done),
            ("2026-03", "avance", "sante", *done),
            ("2026-12", "debutant", "", 0, 0, 3, 0, 0, 0, 0, 0, 0),
            ("2026-12", "debutant", "email", 0, 0, 3, 0, 0, 0, 0, 0, 0),
        ]
        # From now on the triggers keep it: the scheduled workshop is cancelled.
        _run_sql(
            url,
            "UPDATE workshops SET status = 'cancelled', registered_count = 0, seats_left = 10"
            f" WHERE id = {i(WORKSHOP)}",
        )
        assert _rollup(url)[3:] == [
            ("2026-12", "debutant", "", 0, 1, 0, 0, 0, 0, 0, 0, 0),
            ("2026-12", "debutant", "email", 0, 1, 0, 0, 0, 0, 0, 0, 0),
        ]
        command.downgrade(config, "0009")
        assert "workshop_monthly_stats" not in _tables(url)
        # The triggers went with it: workshops are written as before.
        _run_sql(url, f"UPDATE workshops SET status = 'scheduled' WHERE id = {i(WORKSHOP)}")
        command.upgrade(config, "head")
        assert _rollup(url)[3] == ("2026-12", "debutant", "", 0, 0, 0, 0, 0, 0, 0, 0, 0)
    finally:
        cleanup()  # type: ignore[operator]


def test_the_triggers_are_in_place_at_head(database_url: str) -> None:
    if IS_POSTGRES:
        found = _run_sql(
            database_url,
            "SELECT tgname FROM pg_trigger"
            " WHERE tgrelid = 'workshops'::regclass AND tgdeferrable AND tginitdeferred",
        )
    else:
        found = _run_sql(
            database_url, "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'workshops'"
        )
    names = {name for (name,) in found}
    expected = {"workshops_stats_insert", "workshops_stats_update"}
    assert names >= (expected if IS_POSTGRES else expected | {"workshops_stats_delete"})
