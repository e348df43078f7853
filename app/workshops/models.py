"""Workshop and registration rows.

A workshop keeps its registration counters (`registered_count`, `waitlisted_count`, `seats_left`) on its own
row, written only under the row's lock together with the registrations themselves; CHECK constraints make the
database refuse any state where they disagree with the capacity. The venue is stored twice: whole, as the JSON
object the API returns, and split into indexed columns that the search filters on."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import JSON, CheckConstraint, Float, ForeignKey, Index, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.audit import AuditSpec
from app.db import Base, TimestampedMixin, VersionedMixin, new_id


class WorkshopStatus(StrEnum):
    scheduled = "scheduled"
    cancelled = "cancelled"
    completed = "completed"


class WorkshopFormat(StrEnum):
    in_person = "in_person"
    remote = "remote"


class RegistrationStatus(StrEnum):
    confirmed = "confirmed"
    waitlisted = "waitlisted"
    cancelled = "cancelled"


class Workshop(TimestampedMixin, VersionedMixin, Base):
    __audit__: ClassVar[AuditSpec] = AuditSpec("workshops")
    __tablename__ = "workshops"
    __table_args__ = (
        CheckConstraint("status IN ('scheduled', 'cancelled', 'completed')", name="status_known"),
        CheckConstraint("format IN ('in_person', 'remote')", name="format_known"),
        CheckConstraint("duration_minutes > 0", name="duration_positive"),
        CheckConstraint("capacity >= 0 AND waitlist_capacity >= 0", name="capacities_positive"),
        CheckConstraint(
            "registered_count >= 0 AND registered_count <= capacity", name="registered_within_capacity"
        ),
        CheckConstraint(
            "waitlisted_count >= 0 AND waitlisted_count <= waitlist_capacity",
            name="waitlisted_within_capacity",
        ),
        CheckConstraint("seats_left = capacity - registered_count", name="seats_left_consistent"),
        # The public search: a département's upcoming workshops, in date order (the theme is a bit mask
        # checked on each row); then by territory, commune and postcode; the bounding box of `near`.
        Index("ix_workshops_department_starts_at", "venue_department_code", "starts_at", "id"),
        Index("ix_workshops_starts_at", "starts_at", "id"),
        Index("ix_workshops_territory_starts_at", "territory_id", "starts_at", "id"),
        Index("ix_workshops_commune_starts_at", "venue_commune_code", "starts_at", "id"),
        Index("ix_workshops_postcode_starts_at", "venue_postcode", "starts_at", "id"),
        Index("ix_workshops_lat_lon", "venue_lat", "venue_lon"),
        Index("ix_workshops_position_id", "position_id"),
        Index("ix_workshops_counsellor_id", "counsellor_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    position_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("positions.id", ondelete="RESTRICT"))
    counsellor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("counsellors.id", ondelete="RESTRICT"))
    # The position's territory, copied when the workshop is created (scoping reads it on every list).
    territory_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("territories.id", ondelete="RESTRICT"))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    themes: Mapped[list[str]] = mapped_column(JSON)
    # One bit per theme (`schemas.theme_mask`): "any of these themes" is one AND on the row, on both
    # databases.
    themes_mask: Mapped[int] = mapped_column()
    level: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(16))
    venue: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    venue_commune_code: Mapped[str | None] = mapped_column(String(5))
    venue_department_code: Mapped[str | None] = mapped_column(String(3))
    venue_postcode: Mapped[str | None] = mapped_column(String(5))
    venue_lat: Mapped[float | None] = mapped_column(Float)
    venue_lon: Mapped[float | None] = mapped_column(Float)
    online_url: Mapped[str | None] = mapped_column(String(500))
    starts_at: Mapped[datetime] = mapped_column()
    ends_at: Mapped[datetime] = mapped_column()
    duration_minutes: Mapped[int] = mapped_column()
    capacity: Mapped[int] = mapped_column()
    waitlist_capacity: Mapped[int] = mapped_column()
    registered_count: Mapped[int] = mapped_column(server_default=text("0"))
    waitlisted_count: Mapped[int] = mapped_column(server_default=text("0"))
    seats_left: Mapped[int] = mapped_column()
    status: Mapped[str] = mapped_column(String(16))
    public: Mapped[bool] = mapped_column()
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    # The activity report's anonymous part: {"total", "age_brackets", "social_statuses"}.
    walk_ins: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Who came, written with the activity report from the present registrations and the walk-ins: the
    # statistics read these (and the rollup the database keeps from them, app.stats.models), never the
    # registrations, whose personal data may be erased later.
    attendees: Mapped[int] = mapped_column(server_default=text("0"))
    # {"age_brackets": {<value>: n}, "social_statuses": {<value>: n}}, every referential value present.
    # JSONB on PostgreSQL: the statistics read its 13 counts from each row, and `json` would parse the
    # whole text again for each of them (5 times slower over a month of workshops).
    attendee_breakdown: Mapped[dict[str, Any] | None] = mapped_column(
        JSON().with_variant(JSONB(), "postgresql")
    )
    # The iCalendar SEQUENCE (RFC 5545 3.8.7.4): raised by the changes a calendar must show (start, end,
    # place, cancellation), not by a registration, which raises `version` only.
    sequence: Mapped[int] = mapped_column(server_default=text("0"))


class Registration(TimestampedMixin, Base):
    """A person booked on a workshop. Personal data: read by the organiser, its managers and admins only."""

    # The audit trail (app.core.audit): its writes are recorded, these fields masked.
    __audit__: ClassVar[AuditSpec] = AuditSpec(
        "registrations",
        masked=frozenset({"first_name", "last_name", "email", "email_key", "phone", "cancel_token_hash"}),
    )

    __tablename__ = "registrations"
    __table_args__ = (
        CheckConstraint("status IN ('confirmed', 'waitlisted', 'cancelled')", name="status_known"),
        CheckConstraint("attendance IN ('unknown', 'present', 'absent', 'excused')", name="attendance_known"),
        CheckConstraint(
            "(status = 'waitlisted') = (waitlist_rank IS NOT NULL)", name="rank_only_when_waitlisted"
        ),
        # One live registration per email and workshop (a cancelled one may register again).
        Index(
            "uq_registrations_workshop_id_email_key",
            "workshop_id",
            "email_key",
            unique=True,
            sqlite_where=text("status != 'cancelled'"),
            postgresql_where=text("status != 'cancelled'"),
        ),
        Index("ix_registrations_workshop_id_status_rank", "workshop_id", "status", "waitlist_rank"),
        Index("ix_registrations_workshop_id_created_at", "workshop_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    workshop_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workshops.id", ondelete="CASCADE"))
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    # Null once the registrant's personal data were erased (`anonymized_at`).
    email: Mapped[str | None] = mapped_column(String(254))
    # The address folded to lower case: the same person twice is the same key.
    email_key: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(32))
    age_bracket: Mapped[str | None] = mapped_column(String(32))
    social_status: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    waitlist_rank: Mapped[int | None] = mapped_column()
    attendance: Mapped[str] = mapped_column(String(16))
    # SHA-256 of the cancel token, which only the registrant ever sees (once).
    cancel_token_hash: Mapped[str] = mapped_column(String(64))
    # When the names, email and phone were erased (app.personal_data): the row stays, anonymous, with what
    # the counters and the activity report count (status, attendance, age bracket, social status).
    anonymized_at: Mapped[datetime | None] = mapped_column(default=None)
