"""counsellors: no index of its own on territory_id

The unique (territory_id, external_ref) index starts with territory_id: it serves every lookup by employer
and the foreign key's checks. The single-column index was redundant: one more index to write on every
insert, and one the planner could pick for a lookup by (territory_id, external_ref), reading all of an
employer's counsellors instead of one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 15:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("counsellors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_counsellors_territory_id"))


def downgrade() -> None:
    with op.batch_alter_table("counsellors", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_counsellors_territory_id"), ["territory_id"], unique=False)
