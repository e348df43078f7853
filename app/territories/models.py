"""Territory rows. `path` is a materialised path of ids ("/<root>/.../<self>/") for subtree queries."""

from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, TimestampedMixin, VersionedMixin, new_id

NAME_SORT_LENGTH = 200


class Territory(TimestampedMixin, VersionedMixin, Base):
    __tablename__ = "territories"
    __table_args__ = (
        UniqueConstraint("kind", "code"),
        Index("ix_territories_path", "path", postgresql_ops={"path": "text_pattern_ops"}),
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
