"""personal data: a registration's personal data may be erased, the registration staying counted

`registrations.email` and `email_key` become nullable, and `anonymized_at` records when the registrant's
personal data (names, email, phone) were erased, by the registrant (`DELETE .../personal-data`) or by the
retention purge (`cnfs-api purge`). The row stays, with its status, attendance, age bracket and social
status, which the workshop's counters and its activity report count.

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-07 10:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("anonymized_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.alter_column("email", existing_type=sa.String(length=254), nullable=True)
        batch_op.alter_column("email_key", existing_type=sa.String(length=254), nullable=True)


def downgrade() -> None:
    # Erased registrations have no email left: they are given a placeholder address that names nobody
    # (the reserved `.invalid` domain, RFC 2606), unique per registration.
    op.execute(
        "UPDATE registrations SET email = 'erased-' || id || '@erased.invalid', "
        "email_key = 'erased-' || id || '@erased.invalid' WHERE email IS NULL OR email_key IS NULL"
    )
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.alter_column("email_key", existing_type=sa.String(length=254), nullable=False)
        batch_op.alter_column("email", existing_type=sa.String(length=254), nullable=False)
        batch_op.drop_column("anonymized_at")
