"""API key rows; only a SHA-256 of the secret is stored."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar

from sqlalchemy import Column, ForeignKey, String, Table
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.audit import AuditSpec
from app.db import Base, new_id, utcnow
from app.territories.models import Territory

api_key_territories = Table(
    "api_key_territories",
    Base.metadata,
    Column("api_key_id", ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True),
    Column("territory_id", ForeignKey("territories.id", ondelete="RESTRICT"), primary_key=True, index=True),
)


class ApiKey(Base):
    # The audit trail (app.core.audit): its writes are recorded, these fields masked.
    __audit__: ClassVar[AuditSpec] = AuditSpec(
        "api_keys", masked=frozenset({"secret_hash", "previous_secret_hash"})
    )
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(32))
    prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The secret a rotation replaced, accepted until `previous_secret_expires_at` (its grace period).
    previous_secret_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column()
    rotated_at: Mapped[datetime | None] = mapped_column()
    # Kept to the minute, outside the requests' transactions (app/api_keys/usage.py).
    last_used_at: Mapped[datetime | None] = mapped_column()
    counsellor_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("counsellors.id", ondelete="RESTRICT"), index=True
    )
    expires_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    territories: Mapped[list[Territory]] = relationship(secondary=api_key_territories, lazy="raise")
