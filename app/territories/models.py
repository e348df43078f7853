"""Territory rows. `path` is a materialised path of ids ("/<root>/.../<self>/") for subtree queries; the word
table serves the search, the alias table the former codes of communes."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.audit import AuditSpec
from app.db import Base, TimestampedMixin, VersionedMixin, new_id
from app.territories.search import NAME_SORT_LENGTH, TOKEN_LENGTH, search_name


def _search_name_of_the_row(context: Any) -> str:
    """For rows inserted without one (bulk inserts written before the search existed): from the name."""
    return search_name(str(context.get_current_parameters()["name"]))


class Territory(TimestampedMixin, VersionedMixin, Base):
    __audit__: ClassVar[AuditSpec] = AuditSpec("territories")
    __tablename__ = "territories"
    __table_args__ = (
        UniqueConstraint("kind", "code"),
        # A subtree's ids read from the index alone: the caller's scope on every scoped list is "territory_id
        # IN (the ids whose path starts with ...)" (app.core.paths).
        Index("ix_territories_path", "path", "id", postgresql_ops={"path": "text_pattern_ops"}),
        Index("ix_territories_name_sort", "name_sort", "id"),
        # Listing one kind (all communes...) in name order walks this index instead of sorting.
        Index("ix_territories_kind_name_sort", "kind", "name_sort", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))
    code: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    # Lower-case, accent-free copy of `name`, so that search and sort behave alike on SQLite and PostgreSQL.
    name_sort: Mapped[str] = mapped_column(String(NAME_SORT_LENGTH))
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("territories.id", ondelete="RESTRICT"), index=True
    )
    path: Mapped[str] = mapped_column(String(400))
    population: Mapped[int | None] = mapped_column()
    # The name's words, folded and joined by single spaces ("l isle d abeau"): the search ranks exact names
    # and names that start with the query on it.
    search_name: Mapped[str] = mapped_column(String(NAME_SORT_LENGTH), default=_search_name_of_the_row)
    # Communes of the official referential: their SIREN and La Poste postcodes (space-separated). Searched,
    # and checked by `check_commune`; not part of the API's territory shape. A région's or a département's
    # SIREN when the imported snapshot carried one (the dataset has none; app/territories/referential.py):
    # the open-data export's `pivot` for the counsellors they employ.
    siren: Mapped[str | None] = mapped_column(String(9))
    postcodes: Mapped[str | None] = mapped_column(String(200))


class TerritoryWord(Base):
    """One searchable word of a territory: a word of its name, its code, its SIREN or one of its postcodes.

    Word-by-word prefix search is a range scan of the (token) index on both databases."""

    __tablename__ = "territory_words"
    __table_args__ = (
        Index(
            "ix_territory_words_token",
            "token",
            "territory_id",
            postgresql_ops={"token": "text_pattern_ops"},
        ),
    )

    territory_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("territories.id", ondelete="CASCADE"), primary_key=True
    )
    token: Mapped[str] = mapped_column(String(TOKEN_LENGTH), primary_key=True)


class TerritoryAlias(Base):
    """A code that no longer names a territory of its own but still designates one: the former code of a
    commune merged into another, of a delegated or associated commune, or of a municipal arrondissement of
    Paris, Lyon or Marseille (`reason`)."""

    __tablename__ = "territory_aliases"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    territory_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("territories.id", ondelete="CASCADE"), index=True
    )
    reason: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(200))
