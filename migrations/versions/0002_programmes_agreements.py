"""programmes, agreements, amendments

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 05:30:13.083925
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "programmes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("positions_target", sa.Integer(), nullable=False),
        sa.Column("budget_cents", sa.BigInteger(), nullable=False),
        sa.Column("subsidy_per_position_cents", sa.BigInteger(), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint("budget_cents >= 0", name=op.f("ck_programmes_budget_not_negative")),
        sa.CheckConstraint(
            "ends_on IS NULL OR ends_on >= starts_on", name=op.f("ck_programmes_dates_ordered")
        ),
        sa.CheckConstraint("positions_target >= 0", name=op.f("ck_programmes_positions_target_not_negative")),
        sa.CheckConstraint(
            "subsidy_per_position_cents >= 0", name=op.f("ck_programmes_subsidy_not_negative")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_programmes")),
        sa.UniqueConstraint("code", name=op.f("uq_programmes_code")),
    )
    op.create_table(
        "agreements",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("programme_id", sa.Uuid(), nullable=False),
        sa.Column("territory_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("positions_granted", sa.Integer(), nullable=False),
        sa.Column("subsidy_per_position_cents", sa.BigInteger(), nullable=False),
        sa.Column("signed_on", sa.Date(), nullable=True),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=True),
        sa.Column("terminated_on", sa.Date(), nullable=True),
        sa.Column("termination_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint("kind IN ('preliminary', 'convention')", name=op.f("ck_agreements_kind_known")),
        sa.CheckConstraint(
            "status IN ('draft', 'signed', 'terminated')", name=op.f("ck_agreements_status_known")
        ),
        sa.CheckConstraint(
            "ends_on IS NULL OR ends_on >= starts_on", name=op.f("ck_agreements_dates_ordered")
        ),
        sa.CheckConstraint(
            "positions_granted >= 0", name=op.f("ck_agreements_positions_granted_not_negative")
        ),
        sa.CheckConstraint(
            "subsidy_per_position_cents >= 0", name=op.f("ck_agreements_subsidy_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["programmes.id"],
            name=op.f("fk_agreements_programme_id_programmes"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["territory_id"],
            ["territories.id"],
            name=op.f("fk_agreements_territory_id_territories"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agreements")),
        sa.UniqueConstraint("programme_id", "reference", name=op.f("uq_agreements_programme_id_reference")),
    )
    with op.batch_alter_table("agreements", schema=None) as batch_op:
        batch_op.create_index("ix_agreements_created_at", ["created_at", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_agreements_territory_id"), ["territory_id"], unique=False)

    op.create_table(
        "amendments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("agreement_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("positions", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("reason_detail", sa.Text(), nullable=True),
        sa.Column("effective_on", sa.Date(), nullable=False),
        sa.Column("positions_before", sa.Integer(), nullable=False),
        sa.Column("positions_after", sa.Integer(), nullable=False),
        sa.Column("subsidy_total_before_cents", sa.BigInteger(), nullable=False),
        sa.Column("subsidy_total_after_cents", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('add_positions', 'withdraw_positions')", name=op.f("ck_amendments_kind_known")
        ),
        sa.CheckConstraint("positions > 0", name=op.f("ck_amendments_positions_positive")),
        sa.CheckConstraint("positions_after >= 0", name=op.f("ck_amendments_positions_after_not_negative")),
        sa.ForeignKeyConstraint(
            ["agreement_id"],
            ["agreements.id"],
            name=op.f("fk_amendments_agreement_id_agreements"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_amendments")),
    )
    with op.batch_alter_table("amendments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_amendments_agreement_id_created_at", ["agreement_id", "created_at", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("amendments", schema=None) as batch_op:
        batch_op.drop_index("ix_amendments_agreement_id_created_at")

    op.drop_table("amendments")
    with op.batch_alter_table("agreements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agreements_territory_id"))
        batch_op.drop_index("ix_agreements_created_at")

    op.drop_table("agreements")
    op.drop_table("programmes")
