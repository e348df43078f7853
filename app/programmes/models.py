"""Programme rows. What a programme has committed is not stored: it is summed from its live agreements."""

from __future__ import annotations

import uuid
from datetime import date
from typing import ClassVar

from sqlalchemy import BigInteger, CheckConstraint, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.audit import AuditSpec
from app.db import Base, TimestampedMixin, VersionedMixin, new_id


class Programme(TimestampedMixin, VersionedMixin, Base):
    __audit__: ClassVar[AuditSpec] = AuditSpec("programmes")
    __tablename__ = "programmes"
    __table_args__ = (
        UniqueConstraint("code"),
        CheckConstraint("positions_target >= 0", name="positions_target_not_negative"),
        CheckConstraint("budget_cents >= 0", name="budget_not_negative"),
        CheckConstraint("subsidy_per_position_cents >= 0", name="subsidy_not_negative"),
        CheckConstraint("ends_on IS NULL OR ends_on >= starts_on", name="dates_ordered"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    positions_target: Mapped[int] = mapped_column()
    # 250 M€ is 25 000 000 000 cents: beyond a 32-bit integer.
    budget_cents: Mapped[int] = mapped_column(BigInteger)
    subsidy_per_position_cents: Mapped[int] = mapped_column(BigInteger)
    starts_on: Mapped[date] = mapped_column()
    ends_on: Mapped[date | None] = mapped_column()
