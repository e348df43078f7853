"""workshops and registrations

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 10:22:49
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workshops",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("position_id", sa.Uuid(), nullable=False),
        sa.Column("counsellor_id", sa.Uuid(), nullable=True),
        sa.Column("territory_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("themes", sa.JSON(), nullable=False),
        sa.Column("themes_mask", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("venue", sa.JSON(), nullable=True),
        sa.Column("venue_commune_code", sa.String(length=5), nullable=True),
        sa.Column("venue_department_code", sa.String(length=3), nullable=True),
        sa.Column("venue_postcode", sa.String(length=5), nullable=True),
        sa.Column("venue_lat", sa.Float(), nullable=True),
        sa.Column("venue_lon", sa.Float(), nullable=True),
        sa.Column("online_url", sa.String(length=500), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("waitlist_capacity", sa.Integer(), nullable=False),
        sa.Column("registered_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("waitlisted_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("seats_left", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("walk_ins", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint("format IN ('in_person', 'remote')", name=op.f("ck_workshops_format_known")),
        sa.CheckConstraint(
            "status IN ('scheduled', 'cancelled', 'completed')", name=op.f("ck_workshops_status_known")
        ),
        sa.CheckConstraint(
            "capacity >= 0 AND waitlist_capacity >= 0", name=op.f("ck_workshops_capacities_positive")
        ),
        sa.CheckConstraint("duration_minutes > 0", name=op.f("ck_workshops_duration_positive")),
        sa.CheckConstraint(
            "registered_count >= 0 AND registered_count <= capacity",
            name=op.f("ck_workshops_registered_within_capacity"),
        ),
        sa.CheckConstraint(
            "seats_left = capacity - registered_count", name=op.f("ck_workshops_seats_left_consistent")
        ),
        sa.CheckConstraint(
            "waitlisted_count >= 0 AND waitlisted_count <= waitlist_capacity",
            name=op.f("ck_workshops_waitlisted_within_capacity"),
        ),
        sa.ForeignKeyConstraint(
            ["counsellor_id"],
            ["counsellors.id"],
            name=op.f("fk_workshops_counsellor_id_counsellors"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["position_id"],
            ["positions.id"],
            name=op.f("fk_workshops_position_id_positions"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["territory_id"],
            ["territories.id"],
            name=op.f("fk_workshops_territory_id_territories"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workshops")),
    )
    with op.batch_alter_table("workshops", schema=None) as batch_op:
        batch_op.create_index(
            "ix_workshops_commune_starts_at", ["venue_commune_code", "starts_at", "id"], unique=False
        )
        batch_op.create_index("ix_workshops_counsellor_id", ["counsellor_id"], unique=False)
        batch_op.create_index(
            "ix_workshops_department_starts_at", ["venue_department_code", "starts_at", "id"], unique=False
        )
        batch_op.create_index("ix_workshops_lat_lon", ["venue_lat", "venue_lon"], unique=False)
        batch_op.create_index("ix_workshops_position_id", ["position_id"], unique=False)
        batch_op.create_index(
            "ix_workshops_postcode_starts_at", ["venue_postcode", "starts_at", "id"], unique=False
        )
        batch_op.create_index("ix_workshops_starts_at", ["starts_at", "id"], unique=False)
        batch_op.create_index(
            "ix_workshops_territory_starts_at", ["territory_id", "starts_at", "id"], unique=False
        )

    op.create_table(
        "registrations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workshop_id", sa.Uuid(), nullable=False),
        sa.Column("first_name", sa.String(length=100), nullable=True),
        sa.Column("last_name", sa.String(length=100), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("email_key", sa.String(length=254), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("age_bracket", sa.String(length=32), nullable=True),
        sa.Column("social_status", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("waitlist_rank", sa.Integer(), nullable=True),
        sa.Column("attendance", sa.String(length=16), nullable=False),
        sa.Column("cancel_token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(status = 'waitlisted') = (waitlist_rank IS NOT NULL)",
            name=op.f("ck_registrations_rank_only_when_waitlisted"),
        ),
        sa.CheckConstraint(
            "attendance IN ('unknown', 'present', 'absent', 'excused')",
            name=op.f("ck_registrations_attendance_known"),
        ),
        sa.CheckConstraint(
            "status IN ('confirmed', 'waitlisted', 'cancelled')", name=op.f("ck_registrations_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["workshop_id"],
            ["workshops.id"],
            name=op.f("fk_registrations_workshop_id_workshops"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registrations")),
    )
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_registrations_workshop_id_created_at", ["workshop_id", "created_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_registrations_workshop_id_status_rank",
            ["workshop_id", "status", "waitlist_rank"],
            unique=False,
        )
        batch_op.create_index(
            "uq_registrations_workshop_id_email_key",
            ["workshop_id", "email_key"],
            unique=True,
            sqlite_where=sa.text("status != 'cancelled'"),
            postgresql_where=sa.text("status != 'cancelled'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_registrations_workshop_id_email_key",
            sqlite_where=sa.text("status != 'cancelled'"),
            postgresql_where=sa.text("status != 'cancelled'"),
        )
        batch_op.drop_index("ix_registrations_workshop_id_status_rank")
        batch_op.drop_index("ix_registrations_workshop_id_created_at")

    op.drop_table("registrations")
    with op.batch_alter_table("workshops", schema=None) as batch_op:
        batch_op.drop_index("ix_workshops_territory_starts_at")
        batch_op.drop_index("ix_workshops_starts_at")
        batch_op.drop_index("ix_workshops_postcode_starts_at")
        batch_op.drop_index("ix_workshops_position_id")
        batch_op.drop_index("ix_workshops_lat_lon")
        batch_op.drop_index("ix_workshops_department_starts_at")
        batch_op.drop_index("ix_workshops_counsellor_id")
        batch_op.drop_index("ix_workshops_commune_starts_at")

    op.drop_table("workshops")
