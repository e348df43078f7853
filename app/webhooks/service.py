"""Rules of the webhooks domain: who may subscribe to what, secrets and their rotation, manual retries."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.changes.service import Resource
from app.config import Settings
from app.core import audit, changes
from app.core.auth import Principal, Role
from app.core.changes import Action
from app.core.pagination import PageRequest
from app.core.problems import Forbidden, NotFound, UnknownReference, ValidationFailed
from app.db import utcnow
from app.territories import service as territories
from app.webhooks import addresses
from app.webhooks import repository as repo
from app.webhooks.errors import WebhookUrlNotAllowed
from app.webhooks.models import (
    DeliveryStatus,
    SubscriptionStatus,
    WebhookDelivery,
    WebhookSubscription,
    WebhookSubscriptionTerritory,
)
from app.webhooks.schemas import (
    DeliveryRead,
    SubscriptionCreate,
    SubscriptionRead,
    SubscriptionUpdate,
    SubscriptionWithSecret,
)

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
ROLES = (Role.admin, Role.territory_manager)

# The resolver the URL checks use (tests replace it to play a DNS answer that changes).
resolver: addresses.Resolver = addresses.system_resolver


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _check_role(principal: Principal) -> None:
    if principal.role not in ROLES:
        raise Forbidden("webhook subscriptions are for admins and territory managers")


def to_read(subscription: WebhookSubscription) -> SubscriptionRead:
    return SubscriptionRead(
        id=subscription.id,
        url=subscription.url,
        resources=list(subscription.resources),
        actions=list(subscription.actions),
        territory_ids=[link.territory_id for link in subscription.territories],
        status=SubscriptionStatus(subscription.status),
        created_at=subscription.created_at,
        version=subscription.version,
    )


def with_secret(subscription: WebhookSubscription) -> SubscriptionWithSecret:
    return SubscriptionWithSecret(**to_read(subscription).model_dump(), secret=subscription.secret)


def change_item(delivery: Any) -> dict[str, Any]:
    """The change feed's item of a delivery (a row or a `WebhookDelivery`): the payload's `data`."""
    return {
        "cursor": changes.encode_cursor(delivery.change_xid, delivery.change_seq),
        "resource": delivery.resource,
        "id": delivery.object_id,
        "action": delivery.action,
        "version": delivery.object_version,
        "territory_id": delivery.territory_id,
        "occurred_at": delivery.occurred_at,
    }


def delivery_read(delivery: WebhookDelivery) -> DeliveryRead:
    return DeliveryRead(
        id=delivery.id,
        subscription_id=delivery.subscription_id,
        type=f"{delivery.resource}.{delivery.action}",
        change=change_item(delivery),
        status=DeliveryStatus(delivery.status),
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code,
        next_attempt_at=delivery.next_attempt_at if delivery.status == DeliveryStatus.pending else None,
        delivered_at=delivery.delivered_at,
        attempt_log=delivery.attempt_log,
        created_at=delivery.created_at,
    )


async def check_url(url: str, settings: Settings) -> None:
    try:
        await addresses.check(url, addresses.parse_networks(settings.webhook_allowed_networks), resolver)
    except addresses.AddressRefused as exc:
        raise WebhookUrlNotAllowed(str(exc)) from None


async def _territories(
    session: AsyncSession, principal: Principal, territory_ids: Sequence[uuid.UUID] | None
) -> list[uuid.UUID]:
    """The subscription's territories, each within the caller's scope (422 `unknown_reference` otherwise);
    a territory manager's default to its key's territories."""
    if territory_ids is None:
        return [] if principal.is_admin else list(principal.territory_ids)
    unique = list(dict.fromkeys(territory_ids))
    if len(unique) != len(territory_ids):
        raise ValidationFailed("/territory_ids", "lists a territory twice")
    for index, territory_id in enumerate(unique):
        if not await territories.in_scope(session, territory_id, principal):
            raise UnknownReference(f"/territory_ids/{index}")
    if not unique and not principal.is_admin:
        raise ValidationFailed("/territory_ids", "a territory manager's subscription names its territories")
    return unique


def _distinct(pointer: str, values: Sequence[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValidationFailed(pointer, "lists a value twice")
    return list(values)


def _resources(values: Sequence[Resource] | None) -> list[str]:
    """Admins and territory managers both read every resource of their scope in the feed, counsellors and
    assignments included: a delivery carries the feed's item (ids and versions), no personal data."""
    return _distinct("/resources", [r.value for r in values or Resource])


def _actions(values: Sequence[Action] | None) -> list[str]:
    return _distinct(
        "/actions", [a.value for a in values] if values is not None else [a.value for a in Action]
    )


def _set_territories(subscription: WebhookSubscription, territory_ids: Sequence[uuid.UUID]) -> None:
    subscription.territories = [
        WebhookSubscriptionTerritory(territory_id=territory_id, position=index)
        for index, territory_id in enumerate(territory_ids)
    ]


async def create(
    session: AsyncSession, principal: Principal, data: SubscriptionCreate, settings: Settings
) -> WebhookSubscription:
    _check_role(principal)
    resources = _resources(data.resources)
    actions = _actions(data.actions)
    territory_ids = await _territories(session, principal, data.territory_ids)
    await check_url(data.url, settings)
    subscription = WebhookSubscription(
        url=data.url,
        resources=resources,
        actions=actions,
        status=SubscriptionStatus.active.value,
        secret=new_secret(),
        starts_after_seq=await repo.last_change_seq(session),
    )
    _set_territories(subscription, territory_ids)
    repo.add(session, subscription)
    await session.flush()
    return subscription


async def list_subscriptions(
    session: AsyncSession, principal: Principal, page: PageRequest
) -> tuple[list[SubscriptionRead], str | None, int | None]:
    _check_role(principal)
    rows, next_cursor, total = await repo.list_page(session, principal, page)
    return [to_read(s) for s in rows], next_cursor, total


async def get(
    session: AsyncSession, principal: Principal, subscription_id: uuid.UUID, *, for_update: bool = False
) -> WebhookSubscription:
    _check_role(principal)
    subscription = await repo.get(session, subscription_id, principal, for_update=for_update)
    if subscription is None:
        raise NotFound("no webhook subscription with this id among yours")
    return subscription


async def update(
    session: AsyncSession,
    principal: Principal,
    subscription: WebhookSubscription,
    patch: SubscriptionUpdate,
    settings: Settings,
) -> WebhookSubscription:
    """`subscription` comes from `get(..., for_update=True)`."""
    changed = patch.changes()
    for field in ("url", "resources", "actions", "status"):
        if field in changed and changed[field] is None:
            raise ValidationFailed(f"/{field}", "cannot be null")
    if "resources" in changed:
        subscription.resources = _resources(patch.resources)
    if "actions" in changed:
        subscription.actions = _actions(patch.actions)
    if "territory_ids" in changed:
        ids = await _territories(session, principal, patch.territory_ids or [])
        _set_territories(subscription, ids)
    if "url" in changed:
        assert patch.url is not None
        await check_url(patch.url, settings)
        subscription.url = patch.url
    if "status" in changed:
        assert patch.status is not None
        subscription.status = patch.status.value
    subscription.updated_at = utcnow()
    await session.flush()
    return subscription


async def delete(session: AsyncSession, subscription: WebhookSubscription) -> None:
    await repo.purge_subscription_deliveries(session, subscription.id)
    await repo.delete_subscription(session, subscription)
    await session.flush()


async def rotate_secret(
    session: AsyncSession, subscription: WebhookSubscription, settings: Settings
) -> WebhookSubscription:
    """A new secret; the one it replaces signs too for WEBHOOK_SECRET_GRACE_HOURS (a receiver verifies
    either while it switches)."""
    subscription.previous_secret = subscription.secret
    subscription.previous_secret_expires_at = utcnow() + timedelta(hours=settings.webhook_secret_grace_hours)
    subscription.secret = new_secret()
    subscription.updated_at = utcnow()
    await session.flush()
    return subscription


async def list_deliveries(
    session: AsyncSession, subscription: WebhookSubscription, page: PageRequest
) -> tuple[list[DeliveryRead], str | None, int | None]:
    rows, next_cursor, total = await repo.list_deliveries(session, subscription.id, page)
    return [delivery_read(d) for d in rows], next_cursor, total


async def retry_delivery(
    session: AsyncSession, subscription: WebhookSubscription, delivery_id: uuid.UUID
) -> DeliveryRead:
    """The delivery is due again now (pending), whatever became of it: one more attempt, with the same
    `webhook-id`; a failed one that fails again is failed again."""
    delivery = await repo.get_delivery(session, subscription.id, delivery_id, for_update=True)
    if delivery is None:
        raise NotFound("no delivery with this id in this subscription")
    before = delivery.status
    delivery.status = DeliveryStatus.pending.value
    delivery.next_attempt_at = utcnow()
    await session.flush()
    # Deliveries are the worker's bookkeeping, not an audited model: an operator's retry is recorded here.
    await audit.record_write(
        session,
        resource="webhook_deliveries",
        resource_id=delivery.id,
        changes={"status": {"before": before, "after": delivery.status}},
    )
    return delivery_read(delivery)
