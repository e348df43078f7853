"""workshops.sequence: the iCalendar SEQUENCE, raised only by the changes a calendar must show

RFC 5545 asks SEQUENCE to grow when the start, the end, the place or the status of an event change; the
workshop's `version` grows on every registration too, and calendars then showed updates that changed
nothing. Existing workshops start from their current version, so that no calendar sees a SEQUENCE go back.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "workshops", sa.Column("sequence", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.execute("UPDATE workshops SET sequence = version")


def downgrade() -> None:
    with op.batch_alter_table("workshops", schema=None) as batch_op:
        batch_op.drop_column("sequence")
