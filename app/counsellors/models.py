"""Counsellor rows: personal data. Anonymisation empties the personal columns and keeps the row, so that
assignments, positions and statistics keep counting."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import ClassVar

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.audit import AuditSpec
from app.db import Base, TimestampedMixin, VersionedMixin, new_id


class Counsellor(TimestampedMixin, VersionedMixin, Base):
    # The audit trail (app.core.audit): its writes are recorded, these fields masked.
    __audit__: ClassVar[AuditSpec] = AuditSpec(
        "counsellors", masked=frozenset({"first_name", "last_name", "email", "phone", "external_ref"})
    )
    __tablename__ = "counsellors"
    __table_args__ = (
        # HR systems key their counsellors by `external_ref` within the employer territory.
        UniqueConstraint("territory_id", "external_ref"),
        CheckConstraint("pix_level IS NULL OR pix_level BETWEEN 1 AND 3", name="pix_level_known"),
        CheckConstraint("training_hours IS NULL OR training_hours > 0", name="training_hours_positive"),
        Index("ix_counsellors_created_at", "created_at", "id"),
        Index("ix_counsellors_updated_at", "updated_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    # The employer. No index of its own: the unique (territory_id, external_ref) index starts with it.
    territory_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("territories.id", ondelete="RESTRICT"))
    external_ref: Mapped[str | None] = mapped_column(String(64))
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(32))
    training_label: Mapped[str | None] = mapped_column(String(16))
    training_hours: Mapped[int | None] = mapped_column()
    certified_on: Mapped[date | None] = mapped_column()
    pix_level: Mapped[int | None] = mapped_column()
    anonymized_at: Mapped[datetime | None] = mapped_column()
