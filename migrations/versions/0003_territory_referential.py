"""territory referential: search words, former codes, SIREN and postcodes of communes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 09:40:00.000000
"""

import re
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _words(text: str) -> list[str]:
    # A frozen copy of app.territories.search.words at the time of this migration (a migration must not
    # depend on application code that may change after it).
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    folded = stripped.casefold().replace("œ", "oe").replace("æ", "ae")
    return re.findall(r"[a-z0-9]+", folded)


def _backfill() -> None:
    """Existing territories get their search name and their words (name and code)."""
    bind = op.get_bind()
    territories = sa.table(
        "territories",
        sa.column("id", sa.Uuid()),
        sa.column("code", sa.String()),
        sa.column("name", sa.String()),
        sa.column("search_name", sa.String()),
    )
    words = sa.table("territory_words", sa.column("territory_id", sa.Uuid()), sa.column("token", sa.String()))
    rows = bind.execute(sa.select(territories.c.id, territories.c.code, territories.c.name)).all()
    if not rows:
        return
    bind.execute(
        territories.update()
        .where(territories.c.id == sa.bindparam("b_id"))
        .values(search_name=sa.bindparam("b_sn")),
        [{"b_id": r.id, "b_sn": " ".join(_words(r.name))[:200]} for r in rows],
    )
    tokens = [
        {"territory_id": r.id, "token": token[:64]}
        for r in rows
        for token in sorted(set(_words(r.name)) | {r.code.lower()})
    ]
    bind.execute(words.insert(), tokens)


def upgrade() -> None:
    with op.batch_alter_table("territories", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("search_name", sa.String(length=200), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("siren", sa.String(length=9), nullable=True))
        batch_op.add_column(sa.Column("postcodes", sa.String(length=200), nullable=True))
    with op.batch_alter_table("territories", schema=None) as batch_op:
        batch_op.alter_column("search_name", server_default=None)

    op.create_table(
        "territory_words",
        sa.Column("territory_id", sa.Uuid(), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["territory_id"],
            ["territories.id"],
            name=op.f("fk_territory_words_territory_id_territories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("territory_id", "token", name=op.f("pk_territory_words")),
    )
    with op.batch_alter_table("territory_words", schema=None) as batch_op:
        batch_op.create_index(
            "ix_territory_words_token",
            ["token", "territory_id"],
            unique=False,
            postgresql_ops={"token": "text_pattern_ops"},
        )

    op.create_table(
        "territory_aliases",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("territory_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["territory_id"],
            ["territories.id"],
            name=op.f("fk_territory_aliases_territory_id_territories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("kind", "code", name=op.f("pk_territory_aliases")),
    )
    with op.batch_alter_table("territory_aliases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_territory_aliases_territory_id"), ["territory_id"], unique=False)

    _backfill()


def downgrade() -> None:
    with op.batch_alter_table("territory_aliases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_territory_aliases_territory_id"))
    op.drop_table("territory_aliases")

    with op.batch_alter_table("territory_words", schema=None) as batch_op:
        batch_op.drop_index("ix_territory_words_token", postgresql_ops={"token": "text_pattern_ops"})
    op.drop_table("territory_words")

    with op.batch_alter_table("territories", schema=None) as batch_op:
        batch_op.drop_column("postcodes")
        batch_op.drop_column("siren")
        batch_op.drop_column("search_name")
