"""Webhook subscription and delivery API models, and the payload the receivers get."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import ConfigDict, Field, StringConstraints

from app.changes.service import Resource
from app.core.changes import Action
from app.core.pagination import Page
from app.core.schemas import InputModel, PatchModel, ReadModel
from app.core.types import FreeText
from app.webhooks.models import DeliveryStatus, SubscriptionStatus

Url = Annotated[FreeText, StringConstraints(min_length=8, max_length=2000)]

URL_DOC = (
    "Where the deliveries are POSTed: an absolute `https://` (or `http://`) URL whose host resolves only to "
    "public addresses (422 `webhook_url_not_allowed` otherwise: loopback, private, link-local and other "
    "internal addresses are refused unless WEBHOOK_ALLOWED_NETWORKS allows them)."
)
RESOURCES_DOC = "The change feed's resources to deliver (`resource` of the feed); all of them when omitted."
ACTIONS_DOC = "The actions to deliver; all of them (`created`, `updated`, `deleted`) when omitted."
TERRITORIES_DOC = (
    "Only changes of objects in these territories and their descendants. A territory manager's "
    "subscription names territories within its own (its key's territories when omitted); an admin's may "
    "name none: every change."
)

SUBSCRIPTION_CREATE: dict[str, Any] = {
    "url": "https://hooks.example.fr/cnfs",
    "resources": ["counsellors", "assignments"],
    "actions": ["created", "updated"],
    "territory_ids": ["019abc3e-0000-7000-8000-000000000002"],
}


class SubscriptionCreate(InputModel):
    url: Url = Field(description=URL_DOC, examples=["https://hooks.example.fr/cnfs"])
    resources: list[Resource] | None = Field(
        default=None, min_length=1, max_length=10, description=RESOURCES_DOC
    )
    actions: list[Action] | None = Field(default=None, min_length=1, max_length=3, description=ACTIONS_DOC)
    territory_ids: list[uuid.UUID] | None = Field(default=None, max_length=100, description=TERRITORIES_DOC)

    model_config = ConfigDict(json_schema_extra={"examples": [SUBSCRIPTION_CREATE]})


class SubscriptionUpdate(PatchModel):
    """Merge patch. `status` `paused` holds the deliveries (still queued) until it is `active` again;
    `disabled` stops queueing them."""

    url: Url | None = Field(default=None, description=URL_DOC)
    resources: list[Resource] | None = Field(default=None, min_length=1, max_length=10)
    actions: list[Action] | None = Field(default=None, min_length=1, max_length=3)
    territory_ids: list[uuid.UUID] | None = Field(default=None, max_length=100)
    status: SubscriptionStatus | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "paused"}]})


SUBSCRIPTION_READ: dict[str, Any] = {
    "id": "019abc3e-0000-7000-8000-0000000000a1",
    **SUBSCRIPTION_CREATE,
    "status": "active",
    "created_at": "2026-11-26T09:30:00Z",
    "version": 1,
}


class SubscriptionRead(ReadModel):
    id: uuid.UUID
    url: str
    resources: list[str]
    actions: list[str]
    territory_ids: list[uuid.UUID]
    status: SubscriptionStatus
    created_at: datetime
    version: int

    model_config = ConfigDict(json_schema_extra={"examples": [SUBSCRIPTION_READ]})


SECRET_EXAMPLE = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class SubscriptionWithSecret(SubscriptionRead):
    """A subscription as created or after a rotation: the only answers that show its secret."""

    secret: str | None = Field(
        description="The signing secret (`whsec_` + base64), shown this once: verify `webhook-signature` "
        "with it (any Standard Webhooks library: `Webhook(secret).verify(body, headers)`). Null in the "
        "replay of an `Idempotency-Key`: the secret is never stored with the answer.",
        examples=[SECRET_EXAMPLE],
    )

    model_config = ConfigDict(
        json_schema_extra={"examples": [{**SUBSCRIPTION_READ, "secret": SECRET_EXAMPLE}]}
    )


class SubscriptionPage(Page[SubscriptionRead]):
    """A page of webhook subscriptions."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [SUBSCRIPTION_READ], "next_cursor": None}]}
    )


ATTEMPT: dict[str, Any] = {
    "at": "2026-11-26T09:30:01Z",
    "status_code": 503,
    "error": None,
    "duration_ms": 120,
}


class Attempt(ReadModel):
    at: datetime
    status_code: int | None = Field(description="The receiver's HTTP status; null when none came back.")
    error: str | None = Field(description="Why no answer came back (timeout, refused address...).")
    duration_ms: int

    model_config = ConfigDict(json_schema_extra={"examples": [ATTEMPT]})


DELIVERY_READ: dict[str, Any] = {
    "id": "019abc3e-0000-7000-8000-0000000000d1",
    "subscription_id": SUBSCRIPTION_READ["id"],
    "type": "counsellors.updated",
    "change": {
        "cursor": "0.42",
        "resource": "counsellors",
        "id": "019abc3e-0000-7000-8000-000000000011",
        "action": "updated",
        "version": 3,
        "territory_id": "019abc3e-0000-7000-8000-000000000002",
        "occurred_at": "2026-11-26T09:30:00Z",
    },
    "status": "pending",
    "attempts": 1,
    "last_status_code": 503,
    "next_attempt_at": "2026-11-26T09:30:06Z",
    "delivered_at": None,
    "attempt_log": [ATTEMPT],
    "created_at": "2026-11-26T09:30:00Z",
}


class DeliveryRead(ReadModel):
    id: uuid.UUID = Field(description="Also the `webhook-id` header of every attempt (with a `msg_` prefix).")
    subscription_id: uuid.UUID
    type: str = Field(description="`<resource>.<action>`, as in the payload.")
    change: dict[str, Any] = Field(description="The change feed's item, the payload's `data`.")
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    next_attempt_at: datetime | None = Field(description="When the next attempt is due; null when none is.")
    delivered_at: datetime | None
    attempt_log: list[Attempt] = Field(description="The last attempts, the latest last.")
    created_at: datetime

    model_config = ConfigDict(json_schema_extra={"examples": [DELIVERY_READ]})


class DeliveryPage(Page[DeliveryRead]):
    """A page of deliveries, the latest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [DELIVERY_READ], "next_cursor": None}]}
    )
