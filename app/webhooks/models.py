"""Webhook subscriptions, their territories, the deliveries queued for them and the fan-out cursor."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.audit import AuditSpec
from app.db import Base, TimestampedMixin, VersionedMixin, new_id


class SubscriptionStatus(StrEnum):
    active = "active"
    # Deliveries are still queued, but none is sent until the subscription is active again.
    paused = "paused"
    # The receiver answered 410 Gone (or an administrator said so): nothing is queued nor sent.
    disabled = "disabled"


class DeliveryStatus(StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    # Every attempt of the schedule failed, or the receiver answered 410: a manual retry sends it again.
    failed = "failed"


class WebhookSubscription(TimestampedMixin, VersionedMixin, Base):
    __tablename__ = "webhook_subscriptions"
    __table_args__ = (CheckConstraint("status IN ('active', 'paused', 'disabled')", name="status_known"),)

    __audit__: ClassVar[AuditSpec] = AuditSpec(
        "webhook_subscriptions",
        masked=frozenset({"secret", "previous_secret"}),
        ignored=frozenset({"starts_after_seq"}),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(String(2000))
    resources: Mapped[list[str]] = mapped_column(JSON)
    actions: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=SubscriptionStatus.active.value)
    # The signing secret (`whsec_` + base64): kept as it is, since the worker signs with it.
    secret: Mapped[str] = mapped_column(String(100))
    # The secret before the last rotation, which signs too until `previous_secret_expires_at`.
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column()
    # The feed's last serial number when the subscription was created: the changes written before it are
    # not delivered, however late the worker copies them.
    starts_after_seq: Mapped[int] = mapped_column(BigInteger)
    territories: Mapped[list[WebhookSubscriptionTerritory]] = relationship(
        lazy="raise", cascade="all, delete-orphan", order_by="WebhookSubscriptionTerritory.position"
    )


class WebhookSubscriptionTerritory(Base):
    """The territories a subscription is limited to (their subtrees); none: everywhere (admin only)."""

    __tablename__ = "webhook_subscription_territories"

    subscription_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), primary_key=True
    )
    # No foreign key, as in the change feed: a territory deleted later leaves the subscription as it was.
    territory_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    position: Mapped[int] = mapped_column()


class WebhookDelivery(Base):
    """One change to deliver to one subscription: the outbox row, with its attempts."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("subscription_id", "change_seq"),
        CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status_known"),
        # The worker's claim: pending deliveries by next attempt.
        Index(
            "ix_webhook_deliveries_pending",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        # The order per subscription and object: an earlier pending delivery holds the later ones back.
        Index(
            "ix_webhook_deliveries_object",
            "subscription_id",
            "object_id",
            "change_xid",
            "change_seq",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    subscription_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    # The change, as the feed gave it (its position in the feed and its item).
    change_xid: Mapped[int] = mapped_column(BigInteger)
    change_seq: Mapped[int] = mapped_column(BigInteger)
    resource: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[uuid.UUID] = mapped_column()
    action: Mapped[str] = mapped_column(String(16))
    object_version: Mapped[int] = mapped_column()
    territory_id: Mapped[uuid.UUID | None] = mapped_column()
    occurred_at: Mapped[datetime] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.pending.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    # A worker sending it holds it until then (a worker killed meanwhile lets it go when it passes).
    lease_until: Mapped[datetime | None] = mapped_column()
    lease_token: Mapped[uuid.UUID | None] = mapped_column()
    last_attempt_at: Mapped[datetime | None] = mapped_column()
    last_status_code: Mapped[int | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(String(200))
    delivered_at: Mapped[datetime | None] = mapped_column()
    # The last attempts: [{"at", "status_code", "error", "duration_ms"}], the latest last.
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column()


class WebhookFanout(Base):
    """One row: how far the change feed has been copied into deliveries (a cursor of the feed)."""

    __tablename__ = "webhook_fanout"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    after_xid: Mapped[int] = mapped_column(BigInteger)
    after_seq: Mapped[int] = mapped_column(BigInteger)
