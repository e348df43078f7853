"""positions, counsellors, assignments, change feed

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-29 09:18:55.374329
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "changes",
        sa.Column(
            "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("xid", sa.BigInteger(), nullable=False),
        sa.Column("resource", sa.String(length=32), nullable=False),
        sa.Column("object_id", sa.Uuid(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("territory_id", sa.Uuid(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_changes")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("changes", schema=None) as batch_op:
        batch_op.create_index("ix_changes_xid_seq", ["xid", "seq"], unique=False)

    op.create_table(
        "counsellors",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("territory_id", sa.Uuid(), nullable=False),
        sa.Column("external_ref", sa.String(length=64), nullable=True),
        sa.Column("first_name", sa.String(length=100), nullable=True),
        sa.Column("last_name", sa.String(length=100), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("training_label", sa.String(length=16), nullable=True),
        sa.Column("training_hours", sa.Integer(), nullable=True),
        sa.Column("certified_on", sa.Date(), nullable=True),
        sa.Column("pix_level", sa.Integer(), nullable=True),
        sa.Column("anonymized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "pix_level IS NULL OR pix_level BETWEEN 1 AND 3", name=op.f("ck_counsellors_pix_level_known")
        ),
        sa.CheckConstraint(
            "training_hours IS NULL OR training_hours > 0",
            name=op.f("ck_counsellors_training_hours_positive"),
        ),
        sa.ForeignKeyConstraint(
            ["territory_id"],
            ["territories.id"],
            name=op.f("fk_counsellors_territory_id_territories"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_counsellors")),
        sa.UniqueConstraint(
            "territory_id", "external_ref", name=op.f("uq_counsellors_territory_id_external_ref")
        ),
    )
    with op.batch_alter_table("counsellors", schema=None) as batch_op:
        batch_op.create_index("ix_counsellors_created_at", ["created_at", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_counsellors_territory_id"), ["territory_id"], unique=False)
        batch_op.create_index("ix_counsellors_updated_at", ["updated_at", "id"], unique=False)

    op.create_table(
        "positions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("agreement_id", sa.Uuid(), nullable=False),
        sa.Column("territory_id", sa.Uuid(), nullable=False),
        sa.Column("agreement_territory_id", sa.Uuid(), nullable=False),
        sa.Column("external_ref", sa.String(length=64), nullable=True),
        sa.Column("typology", sa.String(length=16), nullable=False),
        sa.Column("opened_on", sa.Date(), nullable=False),
        sa.Column("closed_on", sa.Date(), nullable=True),
        sa.Column("close_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint("typology IN ('conum', 'coordinateur')", name=op.f("ck_positions_typology_known")),
        sa.ForeignKeyConstraint(
            ["agreement_id"],
            ["agreements.id"],
            name=op.f("fk_positions_agreement_id_agreements"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["agreement_territory_id"],
            ["territories.id"],
            name=op.f("fk_positions_agreement_territory_id_territories"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["territory_id"],
            ["territories.id"],
            name=op.f("fk_positions_territory_id_territories"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_positions")),
        sa.UniqueConstraint(
            "agreement_territory_id",
            "external_ref",
            name=op.f("uq_positions_agreement_territory_id_external_ref"),
        ),
    )
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_positions_agreement_id_closed_on", ["agreement_id", "closed_on"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_positions_agreement_territory_id"), ["agreement_territory_id"], unique=False
        )
        batch_op.create_index("ix_positions_created_at", ["created_at", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_positions_territory_id"), ["territory_id"], unique=False)
        batch_op.create_index("ix_positions_updated_at", ["updated_at", "id"], unique=False)

    op.create_table(
        "assignments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("position_id", sa.Uuid(), nullable=False),
        sa.Column("counsellor_id", sa.Uuid(), nullable=False),
        sa.Column("contract_type", sa.String(length=8), nullable=False),
        sa.Column("started_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=True),
        sa.Column("ended_on", sa.Date(), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "contract_type IN ('CDD', 'CDI', 'CDP', 'PEC')", name=op.f("ck_assignments_contract_type_known")
        ),
        sa.CheckConstraint(
            "(ended_on IS NULL) = (end_reason IS NULL)", name=op.f("ck_assignments_end_has_reason")
        ),
        sa.CheckConstraint(
            "ended_on IS NULL OR ended_on >= started_on", name=op.f("ck_assignments_ended_after_start")
        ),
        sa.CheckConstraint(
            "ends_on IS NULL OR ends_on >= started_on", name=op.f("ck_assignments_ends_after_start")
        ),
        sa.ForeignKeyConstraint(
            ["counsellor_id"],
            ["counsellors.id"],
            name=op.f("fk_assignments_counsellor_id_counsellors"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["position_id"],
            ["positions.id"],
            name=op.f("fk_assignments_position_id_positions"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assignments")),
    )
    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_assignments_counsellor_id_started_on", ["counsellor_id", "started_on"], unique=False
        )
        batch_op.create_index("ix_assignments_created_at", ["created_at", "id"], unique=False)
        batch_op.create_index(
            "ix_assignments_position_id_started_on", ["position_id", "started_on"], unique=False
        )

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_foreign_key(
            batch_op.f("fk_api_keys_counsellor_id_counsellors"),
            "counsellors",
            ["counsellor_id"],
            ["id"],
            ondelete="RESTRICT",
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_api_keys_counsellor_id_counsellors"), type_="foreignkey")

    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.drop_index("ix_assignments_position_id_started_on")
        batch_op.drop_index("ix_assignments_created_at")
        batch_op.drop_index("ix_assignments_counsellor_id_started_on")

    op.drop_table("assignments")
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.drop_index("ix_positions_updated_at")
        batch_op.drop_index(batch_op.f("ix_positions_territory_id"))
        batch_op.drop_index("ix_positions_created_at")
        batch_op.drop_index(batch_op.f("ix_positions_agreement_territory_id"))
        batch_op.drop_index("ix_positions_agreement_id_closed_on")

    op.drop_table("positions")
    with op.batch_alter_table("counsellors", schema=None) as batch_op:
        batch_op.drop_index("ix_counsellors_updated_at")
        batch_op.drop_index(batch_op.f("ix_counsellors_territory_id"))
        batch_op.drop_index("ix_counsellors_created_at")

    op.drop_table("counsellors")
    with op.batch_alter_table("changes", schema=None) as batch_op:
        batch_op.drop_index("ix_changes_xid_seq")

    op.drop_table("changes")
