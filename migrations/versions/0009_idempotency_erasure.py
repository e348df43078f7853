"""idempotency: which objects a stored response shows, so that erasing them erases it

`idempotency_subjects` links a stored response to the objects whose personal data it shows (a counsellor
created, or each counsellor of a bulk upsert); anonymising a counsellor wipes the responses linked to it
and sets their `erased_at`, so that a retry with their key answers 410 rather than the erased data. The
responses stored before this revision have no links: they expire within the retention window (24 h).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 05:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "idempotency_subjects",
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("resource", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["idempotency_keys.id"],
            name=op.f("fk_idempotency_subjects_record_id_idempotency_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("record_id", "resource", "subject_id", name=op.f("pk_idempotency_subjects")),
    )
    with op.batch_alter_table("idempotency_subjects", schema=None) as batch_op:
        batch_op.create_index("ix_idempotency_subjects_subject", ["subject_id", "resource"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("idempotency_subjects", schema=None) as batch_op:
        batch_op.drop_index("ix_idempotency_subjects_subject")
    op.drop_table("idempotency_subjects")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_column("erased_at")
