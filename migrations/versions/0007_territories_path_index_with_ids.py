"""territories: the path index carries the ids

Every scoped list (agreements, positions, counsellors, workshops) keeps the rows whose territory is in the
caller's subtrees: "territory_id IN (SELECT id FROM territories WHERE path starts with ...)". With the id in
the path index, that subquery is read from the index alone; without it, PostgreSQL's plan for a prepared
statement read every territory by primary key and filtered them on their path.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 17:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("territories", schema=None) as batch_op:
        batch_op.drop_index("ix_territories_path")
        batch_op.create_index(
            "ix_territories_path", ["path", "id"], unique=False, postgresql_ops={"path": "text_pattern_ops"}
        )


def downgrade() -> None:
    with op.batch_alter_table("territories", schema=None) as batch_op:
        batch_op.drop_index("ix_territories_path")
        batch_op.create_index(
            "ix_territories_path", ["path"], unique=False, postgresql_ops={"path": "text_pattern_ops"}
        )
