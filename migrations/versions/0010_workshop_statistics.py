"""workshop statistics: per-workshop attendance figures and a monthly rollup kept by triggers

`workshops` gains `attendees` (present registrations + walk-ins) and `attendee_breakdown` (their age brackets
and social statuses, every value present), written with the activity report; existing completed workshops
are backfilled from their registrations and walk-ins. Stored per workshop, they no longer depend on the
registrations' personal data, which may be erased later.

`workshop_monthly_stats` sums them, with `held`, `cancelled` and `registrations`, per territory, month (UTC),
level and theme ('' for the row where each workshop counts once). Triggers on `workshops` (AFTER INSERT,
UPDATE, DELETE) add the new row's contribution and subtract the old one in the writing transaction, in one
INSERT ... ON CONFLICT DO UPDATE that touches the rows in key order (two writers never wait for each other
in opposite orders); an UPDATE that changes none of the contributing columns does nothing. On PostgreSQL
they are constraint triggers deferred to the commit (still inside the writing transaction), which shortens
the time a rollup row stays locked. The rollup is then filled from the workshops.

The SQL is written out here, with the referential values of this revision, rather than imported from the
application: a migration must keep meaning what it meant when it ran.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 08:00:00
"""

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AGE_BRACKETS = (
    "moins_de_douze",
    "douze_dix_huit",
    "dix_huit_vingt_quatre",
    "vingt_cinq_trente_neuf",
    "quarante_cinquante_neuf",
    "soixante_soixante_neuf",
    "soixante_dix_plus",
    "non_communique",
)
SOCIAL_STATUSES = ("scolarise", "sans_emploi", "en_emploi", "retraite", "non_communique")
NOT_GIVEN = "non_communique"
KEYS = ("territory_id", "month", "level", "theme")
COUNTS = ("held", "cancelled", "registrations", "attendees")
BREAKDOWN = tuple(("age_brackets", v, f"age_{v}") for v in AGE_BRACKETS) + tuple(
    ("social_statuses", v, f"social_{v}") for v in SOCIAL_STATUSES
)
METRICS = COUNTS + tuple(column for _, _, column in BREAKDOWN)
# What a workshop's contribution depends on: a change of anything else leaves the rollup alone.
CONTRIBUTING = (
    "territory_id",
    "starts_at",
    "level",
    "themes_mask",
    "status",
    "registered_count",
    "attendees",
)
JSON_CONTRIBUTING = ("themes", "attendee_breakdown")

# JSONB on PostgreSQL: its 13 counts are read from each row, and `json` would parse the text again for each.
BREAKDOWN_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
PG_FUNCTION = "workshop_monthly_stats_apply"
TRIGGERS = ("workshops_stats_insert", "workshops_stats_update", "workshops_stats_delete")


def _month(row: str, dialect: str) -> str:
    if dialect == "postgresql":
        return f"to_char({row}.starts_at AT TIME ZONE 'UTC', 'YYYY-MM')"
    # SQLite keeps the UTC instant as 'YYYY-MM-DD HH:MM:SS[.ffffff]'.
    return f"substr({row}.starts_at, 1, 7)"


def _share(row: str, group: str, value: str, dialect: str) -> str:
    if dialect == "postgresql":
        return f"COALESCE(({row}.attendee_breakdown #>> '{{{group},{value}}}')::integer, 0)"
    return f"COALESCE(json_extract({row}.attendee_breakdown, '$.{group}.{value}'), 0)"


def _metrics(row: str, dialect: str, sign: str = "") -> list[str]:
    values = [
        f"CASE WHEN {row}.status = 'completed' THEN {sign}1 ELSE 0 END",
        f"CASE WHEN {row}.status = 'cancelled' THEN {sign}1 ELSE 0 END",
        f"{sign}{row}.registered_count",
        f"{sign}{row}.attendees",
    ]
    values += [f"{sign}{_share(row, group, value, dialect)}" for group, value, _ in BREAKDOWN]
    return [f"{value} AS {name}" for value, name in zip(values, METRICS, strict=True)]


def _themes(row: str, dialect: str) -> str:
    """The theme keys a workshop counts under: '' and each of its themes."""
    # UNION, not UNION ALL: a theme listed twice counts once, as `themes_mask` (the partial months) counts it.
    if dialect == "postgresql":
        return f"(SELECT '' AS theme UNION SELECT json_array_elements_text({row}.themes))"
    return f"(SELECT '' AS theme UNION SELECT value FROM json_each({row}.themes))"


def _contribution(row: str, dialect: str, sign: str = "") -> str:
    columns = [
        f"{row}.territory_id AS territory_id",
        f"{_month(row, dialect)} AS month",
        f"{row}.level AS level",
    ]
    columns += ["t.theme AS theme", *_metrics(row, dialect, sign)]
    return f"SELECT {', '.join(columns)} FROM {_themes(row, dialect)} AS t"


def _upsert(contributions: str) -> str:
    sums = ", ".join(f"sum(c.{m})" for m in METRICS)
    keys = ", ".join(f"c.{k}" for k in KEYS)
    updates = ", ".join(f"{m} = workshop_monthly_stats.{m} + excluded.{m}" for m in METRICS)
    return (
        f"INSERT INTO workshop_monthly_stats ({', '.join(KEYS + METRICS)}) "
        f"SELECT {keys}, {sums} FROM ({contributions}) AS c WHERE true "
        f"GROUP BY {keys} ORDER BY {keys} "
        f"ON CONFLICT ({', '.join(KEYS)}) DO UPDATE SET {updates}"
    )


def _changed(dialect: str) -> str:
    if dialect == "postgresql":
        tests = [f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in CONTRIBUTING]
        # json has no equality operator: the texts are compared (`themes` is json; the breakdown jsonb).
        tests += [f"OLD.{c}::text IS DISTINCT FROM NEW.{c}::text" for c in JSON_CONTRIBUTING]
    else:
        tests = [f"OLD.{c} IS NOT NEW.{c}" for c in (*CONTRIBUTING, *JSON_CONTRIBUTING)]
    return " OR ".join(tests)


def _create_triggers(dialect: str) -> None:
    if dialect == "postgresql":
        new = _contribution("NEW", dialect)
        old = _contribution("OLD", dialect, "-")
        op.execute(
            f"""CREATE FUNCTION {PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_upsert(new)};
    ELSIF TG_OP = 'DELETE' THEN
        {_upsert(old)};
    ELSE
        {_upsert(f"{new} UNION ALL {old}")};
    END IF;
    RETURN NULL;
END
$$"""
        )
        # Deferred to the commit: a rollup row is then locked from the commit's start to its end, rather
        # than from the workshop's UPDATE through the rest of the request (its other statements, and the
        # waits of a busy event loop). Registrations on the workshops of one territory and month meet on
        # that row: deferring doubled their throughput (docs/statistics.md).
        op.execute(
            f"CREATE CONSTRAINT TRIGGER {TRIGGERS[0]} AFTER INSERT OR DELETE ON workshops "
            f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {PG_FUNCTION}()"
        )
        op.execute(
            f"CREATE CONSTRAINT TRIGGER {TRIGGERS[1]} AFTER UPDATE ON workshops "
            f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
            f"WHEN ({_changed(dialect)}) EXECUTE FUNCTION {PG_FUNCTION}()"
        )
        return
    new = _contribution("NEW", dialect)
    old = _contribution("OLD", dialect, "-")
    op.execute(f"CREATE TRIGGER {TRIGGERS[0]} AFTER INSERT ON workshops BEGIN {_upsert(new)}; END")
    op.execute(
        f"CREATE TRIGGER {TRIGGERS[1]} AFTER UPDATE ON workshops WHEN {_changed(dialect)} "
        f"BEGIN {_upsert(f'{new} UNION ALL {old}')}; END"
    )
    op.execute(f"CREATE TRIGGER {TRIGGERS[2]} AFTER DELETE ON workshops BEGIN {_upsert(old)}; END")


def _drop_triggers(dialect: str) -> None:
    if dialect == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGERS[0]} ON workshops")
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGERS[1]} ON workshops")
        op.execute(f"DROP FUNCTION IF EXISTS {PG_FUNCTION}()")
        return
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")


def _fill(dialect: str) -> None:
    """The rollup from every workshop (the same statement as app.stats.rollup.rebuild)."""
    month = _month("w", dialect)
    metrics = ", ".join(_metrics("w", dialect))
    every = (
        f"SELECT w.territory_id AS territory_id, {month} AS month, w.level AS level, '' AS theme, {metrics}"
    )
    if dialect == "postgresql":
        themed = f"SELECT w.territory_id, {month}, w.level, t.theme, {metrics} FROM workshops AS w "
        themed += "CROSS JOIN LATERAL json_array_elements_text(w.themes) AS t(theme)"
    else:
        themed = f"SELECT w.territory_id, {month}, w.level, t.value, {metrics} FROM workshops AS w, "
        themed += "json_each(w.themes) AS t"
    op.execute(_upsert(f"{every} FROM workshops AS w UNION ALL {themed}"))


def _themes_once(dialect: str) -> None:
    """A theme listed twice in a workshop (accepted until this revision) is kept once, in the order of its
    first mention: the statistics by theme count a workshop once in each of its themes."""
    if dialect == "postgresql":
        op.execute(
            "UPDATE workshops SET themes = (SELECT json_agg(theme ORDER BY first) FROM (SELECT theme, "
            "min(ord) AS first FROM json_array_elements_text(workshops.themes) WITH ORDINALITY AS x(theme, ord) "
            "GROUP BY theme) AS s) WHERE json_array_length(themes) > (SELECT count(DISTINCT theme) FROM "
            "json_array_elements_text(workshops.themes) AS y(theme))"
        )
    else:
        op.execute(
            "UPDATE workshops SET themes = (SELECT json_group_array(value) FROM (SELECT value, min(key) AS "
            "first FROM json_each(workshops.themes) GROUP BY value ORDER BY first)) WHERE "
            "json_array_length(themes) > (SELECT count(DISTINCT value) FROM json_each(workshops.themes))"
        )


def _backfill_attendance() -> None:
    """`attendees` and `attendee_breakdown` of the workshops that have an activity report."""
    bind = op.get_bind()
    walk_ins = bind.execute(sa.text("SELECT id, walk_ins FROM workshops WHERE walk_ins IS NOT NULL")).all()
    if not walk_ins:
        return
    present = bind.execute(
        sa.text(
            "SELECT workshop_id, age_bracket, social_status, count(*) FROM registrations "
            "WHERE attendance = 'present' AND status != 'cancelled' "
            "GROUP BY workshop_id, age_bracket, social_status"
        )
    ).all()
    people: dict[Any, list[tuple[str | None, str | None, int]]] = {}
    for workshop_id, age, social, count in present:
        people.setdefault(workshop_id, []).append((age, social, int(count)))
    # The id as the database returned it: compared untyped, it needs no conversion on either database.
    workshops = sa.table(
        "workshops",
        sa.column("id"),
        sa.column("attendees", sa.Integer()),
        sa.column("attendee_breakdown", BREAKDOWN_TYPE),
    )
    for workshop_id, report in walk_ins:
        if isinstance(report, str):
            report = json.loads(report)
        ages: Counter[str] = Counter(dict.fromkeys(AGE_BRACKETS, 0))
        socials: Counter[str] = Counter(dict.fromkeys(SOCIAL_STATUSES, 0))
        total = int(report.get("total") or 0)
        ages.update({k: int(v) for k, v in (report.get("age_brackets") or {}).items()})
        socials.update({k: int(v) for k, v in (report.get("social_statuses") or {}).items()})
        for age, social, count in people.get(workshop_id, []):
            total += count
            ages[age or NOT_GIVEN] += count
            socials[social or NOT_GIVEN] += count
        bind.execute(
            sa.update(workshops)
            .where(workshops.c.id == workshop_id)
            .values(
                attendees=total,
                attendee_breakdown={
                    "age_brackets": {v: ages[v] for v in AGE_BRACKETS},
                    "social_statuses": {v: socials[v] for v in SOCIAL_STATUSES},
                },
            )
        )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.add_column(
        "workshops", sa.Column("attendees", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.add_column("workshops", sa.Column("attendee_breakdown", BREAKDOWN_TYPE, nullable=True))
    op.create_table(
        "workshop_monthly_stats",
        sa.Column("territory_id", sa.Uuid(), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("theme", sa.String(length=64), nullable=False),
        *(sa.Column(name, sa.Integer(), server_default=sa.text("0"), nullable=False) for name in METRICS),
        sa.ForeignKeyConstraint(
            ["territory_id"],
            ["territories.id"],
            name=op.f("fk_workshop_monthly_stats_territory_id_territories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(*KEYS, name=op.f("pk_workshop_monthly_stats")),
    )
    with op.batch_alter_table("workshop_monthly_stats", schema=None) as batch_op:
        batch_op.create_index("ix_workshop_monthly_stats_month_theme", ["month", "theme"], unique=False)
    _themes_once(dialect)
    _backfill_attendance()
    _create_triggers(dialect)
    _fill(dialect)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    _drop_triggers(dialect)
    with op.batch_alter_table("workshop_monthly_stats", schema=None) as batch_op:
        batch_op.drop_index("ix_workshop_monthly_stats_month_theme")
    op.drop_table("workshop_monthly_stats")
    with op.batch_alter_table("workshops", schema=None) as batch_op:
        batch_op.drop_column("attendee_breakdown")
        batch_op.drop_column("attendees")
