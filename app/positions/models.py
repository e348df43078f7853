"""Position and assignment rows. A position's status is derived from `closed_on` and its assignments, never
stored: it cannot drift from the contracts."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import ClassVar

from sqlalchemy import (
    CheckConstraint,
    ColumnElement,
    Date,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.audit import AuditSpec
from app.db import Base, TimestampedMixin, VersionedMixin, new_id


class PositionStatus(StrEnum):
    vacant = "vacant"
    occupied = "occupied"
    closed = "closed"


class Position(TimestampedMixin, VersionedMixin, Base):
    __audit__: ClassVar[AuditSpec] = AuditSpec("positions")
    __tablename__ = "positions"
    __table_args__ = (
        # `external_ref` is unique within the agreement's territory (NULLs aside, on both databases).
        UniqueConstraint("agreement_territory_id", "external_ref"),
        CheckConstraint("typology IN ('conum', 'coordinateur')", name="typology_known"),
        Index("ix_positions_agreement_id_closed_on", "agreement_id", "closed_on"),
        Index("ix_positions_created_at", "created_at", "id"),
        Index("ix_positions_updated_at", "updated_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    agreement_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agreements.id", ondelete="RESTRICT"))
    # Where the counsellor works: the agreement's territory or a descendant.
    territory_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("territories.id", ondelete="RESTRICT"), index=True
    )
    # The agreement's territory, copied (it never changes once the agreement is signed) so that the database
    # itself keeps `external_ref` unique within it.
    agreement_territory_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("territories.id", ondelete="RESTRICT"), index=True
    )
    external_ref: Mapped[str | None] = mapped_column(String(64))
    typology: Mapped[str] = mapped_column(String(16))
    opened_on: Mapped[date] = mapped_column()
    closed_on: Mapped[date | None] = mapped_column()
    close_reason: Mapped[str | None] = mapped_column(Text)


class Assignment(TimestampedMixin, VersionedMixin, Base):
    """A counsellor holding a position from `started_on` to `ended_on` (inclusive; null while it lasts)."""

    __audit__: ClassVar[AuditSpec] = AuditSpec("assignments")

    __tablename__ = "assignments"
    __table_args__ = (
        CheckConstraint("contract_type IN ('CDD', 'CDI', 'CDP', 'PEC')", name="contract_type_known"),
        CheckConstraint("ended_on IS NULL OR ended_on >= started_on", name="ended_after_start"),
        CheckConstraint("ends_on IS NULL OR ends_on >= started_on", name="ends_after_start"),
        CheckConstraint("(ended_on IS NULL) = (end_reason IS NULL)", name="end_has_reason"),
        Index("ix_assignments_position_id_started_on", "position_id", "started_on"),
        Index("ix_assignments_counsellor_id_started_on", "counsellor_id", "started_on"),
        Index("ix_assignments_created_at", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    position_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("positions.id", ondelete="RESTRICT"))
    counsellor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("counsellors.id", ondelete="RESTRICT"))
    contract_type: Mapped[str] = mapped_column(String(8))
    started_on: Mapped[date] = mapped_column()
    ends_on: Mapped[date | None] = mapped_column()
    ended_on: Mapped[date | None] = mapped_column()
    end_reason: Mapped[str | None] = mapped_column(String(32))


def covers(day: date | ColumnElement[date]) -> ColumnElement[bool]:
    """The assignment covers `day` (API.md, "Dates": `ended_on` is inclusive); `day` may be a bound
    parameter."""
    return and_(
        Assignment.started_on <= day,
        (Assignment.ended_on.is_(None)) | (Assignment.ended_on >= day),
    )


def overlaps(started_on: date, ended_on: date | None) -> ColumnElement[bool]:
    """The assignment shares at least one day with [started_on, ended_on] (None: open-ended)."""
    clause: ColumnElement[bool] = (Assignment.ended_on.is_(None)) | (Assignment.ended_on >= started_on)
    if ended_on is not None:
        clause = and_(clause, Assignment.started_on <= ended_on)
    return clause


def today() -> date:
    """The day every derived status is computed for: UTC, like every date of the API."""
    return datetime.now(UTC).date()


# `today()` as a bound parameter, evaluated when each statement runs: a SELECT list built once (a
# `ReadColumns`) must not keep the day it was built on.
TODAY = bindparam("today", type_=Date(), callable_=today)
