"""Agreement and amendment rows. An agreement's subsidy total is derived, never stored."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import ClassVar

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.audit import AuditSpec
from app.db import Base, TimestampedMixin, VersionedMixin, new_id, utcnow


class AgreementKind(StrEnum):
    preliminary = "preliminary"
    convention = "convention"


class AgreementStatus(StrEnum):
    draft = "draft"
    signed = "signed"
    terminated = "terminated"


class AmendmentKind(StrEnum):
    add_positions = "add_positions"
    withdraw_positions = "withdraw_positions"


# A draft already reserves its positions in the programme; a terminated agreement frees them.
LIVE_STATUSES = (AgreementStatus.draft.value, AgreementStatus.signed.value)


def subsidy_total(positions: int, subsidy_per_position_cents: int) -> int:
    return positions * subsidy_per_position_cents


class Agreement(TimestampedMixin, VersionedMixin, Base):
    __audit__: ClassVar[AuditSpec] = AuditSpec("agreements")
    __tablename__ = "agreements"
    __table_args__ = (
        UniqueConstraint("programme_id", "reference"),
        CheckConstraint("positions_granted >= 0", name="positions_granted_not_negative"),
        CheckConstraint("subsidy_per_position_cents >= 0", name="subsidy_not_negative"),
        CheckConstraint("ends_on IS NULL OR ends_on >= starts_on", name="dates_ordered"),
        CheckConstraint("status IN ('draft', 'signed', 'terminated')", name="status_known"),
        CheckConstraint("kind IN ('preliminary', 'convention')", name="kind_known"),
        Index("ix_agreements_created_at", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    programme_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programmes.id", ondelete="RESTRICT"))
    territory_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("territories.id", ondelete="RESTRICT"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    positions_granted: Mapped[int] = mapped_column()
    subsidy_per_position_cents: Mapped[int] = mapped_column(BigInteger)
    signed_on: Mapped[date | None] = mapped_column()
    starts_on: Mapped[date] = mapped_column()
    ends_on: Mapped[date | None] = mapped_column()
    terminated_on: Mapped[date | None] = mapped_column()
    termination_reason: Mapped[str | None] = mapped_column(Text)

    @property
    def subsidy_total_cents(self) -> int:
        return subsidy_total(self.positions_granted, self.subsidy_per_position_cents)


class Amendment(Base):
    """Immutable: the record of one change of an agreement's positions, with the figures before and after."""

    __audit__: ClassVar[AuditSpec] = AuditSpec("amendments")

    __tablename__ = "amendments"
    __table_args__ = (
        CheckConstraint("positions > 0", name="positions_positive"),
        CheckConstraint("positions_after >= 0", name="positions_after_not_negative"),
        CheckConstraint("kind IN ('add_positions', 'withdraw_positions')", name="kind_known"),
        Index("ix_amendments_agreement_id_created_at", "agreement_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    agreement_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agreements.id", ondelete="RESTRICT"))
    kind: Mapped[str] = mapped_column(String(32))
    positions: Mapped[int] = mapped_column()
    reason: Mapped[str] = mapped_column(String(64))
    reason_detail: Mapped[str | None] = mapped_column(Text)
    effective_on: Mapped[date] = mapped_column()
    positions_before: Mapped[int] = mapped_column()
    positions_after: Mapped[int] = mapped_column()
    subsidy_total_before_cents: Mapped[int] = mapped_column(BigInteger)
    subsidy_total_after_cents: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
