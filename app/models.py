"""Imports every model so that Base.metadata knows the whole schema (Alembic autogenerate, checks)."""

from app.agreements.models import Agreement, Amendment
from app.api_keys.models import ApiKey, api_key_territories
from app.core.audit import AuditEvent, purge_flag
from app.core.changes import Change
from app.core.idempotency import IdempotencyRecord
from app.counsellors.models import Counsellor
from app.db import Base
from app.positions.models import Assignment, Position
from app.programmes.models import Programme
from app.stats.models import workshop_monthly_stats
from app.territories.models import Territory, TerritoryAlias, TerritoryWord
from app.webhooks.models import (
    WebhookDelivery,
    WebhookFanout,
    WebhookSubscription,
    WebhookSubscriptionTerritory,
)
from app.workshops.models import Registration, Workshop

metadata = Base.metadata

__all__ = [
    "Agreement",
    "Amendment",
    "ApiKey",
    "Assignment",
    "AuditEvent",
    "Change",
    "Counsellor",
    "IdempotencyRecord",
    "Position",
    "Programme",
    "Registration",
    "Territory",
    "TerritoryAlias",
    "TerritoryWord",
    "WebhookDelivery",
    "WebhookFanout",
    "WebhookSubscription",
    "WebhookSubscriptionTerritory",
    "Workshop",
    "api_key_territories",
    "metadata",
    "purge_flag",
    "workshop_monthly_stats",
]
