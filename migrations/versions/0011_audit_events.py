"""audit: the audit trail and the personal-data journal (`audit_events`), append-only

Every write records an event (actor, action, resource, the changed fields with personal values masked,
request id) and every answer that shows people records a journal line (`kind='read'`, `subject_ids`), in the
transaction of the write or of the answer (`app.core.audit`). The table refuses UPDATE and DELETE (a trigger
on both databases; TRUNCATE too on PostgreSQL) except inside the one purge of the journal: PostgreSQL's
`audit_purge(...)`, which sets a transaction-local flag the trigger lets through and records its own event;
SQLite's purge marks its transaction in `audit_purge_flag` (app.core.audit.purge_journal).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 10:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

_PG_FUNCTIONS = [
    """CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('cnfs.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$""",
    """CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()""",
    """CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()""",
    """CREATE FUNCTION audit_purge(
    before timestamptz, event_id uuid, action text, role text, key_id uuid, name text, request_id text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    purged bigint;
BEGIN
    PERFORM set_config('cnfs.audit_purge', 'on', true);
    DELETE FROM audit_events WHERE kind = 'read' AND occurred_at < before;
    GET DIAGNOSTICS purged = ROW_COUNT;
    PERFORM set_config('cnfs.audit_purge', 'off', true);
    INSERT INTO audit_events (id, occurred_at, kind, action, resource, resource_id, actor_key_id, actor_name,
                              actor_role, request_id, changes, subject_ids)
    VALUES (event_id, clock_timestamp(), 'write', action, 'audit_events', NULL, key_id, name, role, request_id,
            jsonb_build_object('purged', jsonb_build_object('before', NULL, 'after', purged),
                               'occurred_before', jsonb_build_object(
                                   'before', NULL,
                                   'after', to_char(before AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))),
            NULL);
    RETURN purged;
END
$$""",
]

_SQLITE_TRIGGERS = [
    """CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only (UPDATE refused)'); END""",
    """CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN NOT EXISTS (SELECT 1 FROM audit_purge_flag)
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only (DELETE refused)'); END""",
]


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("resource", sa.String(length=32), nullable=False),
        sa.Column("resource_id", sa.Uuid(), nullable=True),
        sa.Column("actor_key_id", sa.Uuid(), nullable=True),
        sa.Column("actor_name", sa.String(length=120), nullable=True),
        sa.Column("actor_role", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("changes", JSON_TYPE, nullable=True),
        sa.Column("subject_ids", JSON_TYPE, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_resource_id", ["resource_id", "id"])
        batch_op.create_index("ix_audit_events_actor_key_id", ["actor_key_id", "id"])
        batch_op.create_index("ix_audit_events_kind_occurred_at", ["kind", "occurred_at"])
        batch_op.create_index(
            "ix_audit_events_subject_ids",
            ["subject_ids"],
            postgresql_using="gin",
            postgresql_ops={"subject_ids": "jsonb_path_ops"},
            sqlite_where=sa.text("0"),
        )
    op.create_table(
        "audit_purge_flag",
        sa.Column("flag", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("flag", name=op.f("pk_audit_purge_flag")),
    )
    statements = _PG_FUNCTIONS if op.get_bind().dialect.name == "postgresql" else _SQLITE_TRIGGERS
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION audit_purge(timestamptz, uuid, text, text, uuid, text, text)")
        op.execute("DROP TRIGGER audit_events_no_truncate ON audit_events")
        op.execute("DROP TRIGGER audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION audit_events_append_only()")
    else:
        op.execute("DROP TRIGGER audit_events_no_delete")
        op.execute("DROP TRIGGER audit_events_no_update")
    op.drop_table("audit_purge_flag")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_subject_ids")
        batch_op.drop_index("ix_audit_events_kind_occurred_at")
        batch_op.drop_index("ix_audit_events_actor_key_id")
        batch_op.drop_index("ix_audit_events_resource_id")
    op.drop_table("audit_events")
