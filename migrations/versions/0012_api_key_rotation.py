"""api keys: rotation with a grace period, and when each key was last used

`api_keys` gains `previous_secret_hash` (the SHA-256 of the secret a rotation replaced, unique like
`secret_hash`, so that a key is found by either in one indexed lookup), `previous_secret_expires_at` (the
end of its grace period), `rotated_at` and `last_used_at` (kept to the minute, see app/api_keys/usage.py).

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-07 10:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("previous_secret_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_api_keys_previous_secret_hash"), ["previous_secret_hash"]
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_api_keys_previous_secret_hash"), type_="unique")
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("rotated_at")
        batch_op.drop_column("previous_secret_expires_at")
        batch_op.drop_column("previous_secret_hash")
