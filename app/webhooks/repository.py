"""Every query of the webhooks domain: subscriptions, deliveries, the fan-out cursor, the worker's claims."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    not_,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, selectinload

from app.core.auth import Principal
from app.core.changes import Change
from app.core.pagination import PageRequest, SortKey, fetch_page, parse_uuid
from app.db import utcnow
from app.webhooks.models import (
    DeliveryStatus,
    SubscriptionStatus,
    WebhookDelivery,
    WebhookFanout,
    WebhookSubscription,
    WebhookSubscriptionTerritory,
)

_SUBSCRIPTION_KEYS = [SortKey("id", WebhookSubscription.id, parse=parse_uuid)]
_DELIVERY_KEYS = [SortKey("id", WebhookDelivery.id, desc=True, parse=parse_uuid)]


def visible(principal: Principal) -> ColumnElement[bool]:
    """Subscriptions the caller may see and change: all for admin; for a territory manager, those limited to
    territories that all lie within its own (a subscription of no territory sees everything: admin's)."""
    if principal.is_admin:
        return true()
    link = WebhookSubscriptionTerritory
    mine = link.subscription_id == WebhookSubscription.id
    return and_(
        exists().where(mine),
        not_(exists().where(mine, not_(principal.territory_clause(link.territory_id)))),
    )


def _with_territories(stmt: Select[Any]) -> Select[Any]:
    return stmt.options(selectinload(WebhookSubscription.territories))


async def get(
    session: AsyncSession, subscription_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> WebhookSubscription | None:
    stmt = _with_territories(
        select(WebhookSubscription).where(WebhookSubscription.id == subscription_id, visible(principal))
    )
    if for_update:
        stmt = stmt.with_for_update(of=WebhookSubscription).execution_options(populate_existing=True)
    found: WebhookSubscription | None = (await session.execute(stmt)).scalar_one_or_none()
    return found


async def list_page(
    session: AsyncSession, principal: Principal, page: PageRequest
) -> tuple[Sequence[WebhookSubscription], str | None, int | None]:
    stmt = _with_territories(select(WebhookSubscription).where(visible(principal)))
    return await fetch_page(session, stmt, _SUBSCRIPTION_KEYS, page, row_values=lambda s: [s.id])


async def last_change_seq(session: AsyncSession) -> int:
    """The greatest serial number of the change feed (0 when empty): one seek of its primary key."""
    return int((await session.execute(select(func.coalesce(func.max(Change.seq), 0)))).scalar_one())


def add(session: AsyncSession, subscription: WebhookSubscription) -> None:
    session.add(subscription)


async def delete_subscription(session: AsyncSession, subscription: WebhookSubscription) -> None:
    await session.delete(subscription)


# --- deliveries ----------------------------------------------------------------------------------------


async def list_deliveries(
    session: AsyncSession, subscription_id: uuid.UUID, page: PageRequest
) -> tuple[Sequence[WebhookDelivery], str | None, int | None]:
    stmt = select(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription_id)
    return await fetch_page(session, stmt, _DELIVERY_KEYS, page, row_values=lambda d: [d.id])


async def get_delivery(
    session: AsyncSession, subscription_id: uuid.UUID, delivery_id: uuid.UUID, *, for_update: bool = False
) -> WebhookDelivery | None:
    stmt = select(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id, WebhookDelivery.subscription_id == subscription_id
    )
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


# --- the worker: fan-out -------------------------------------------------------------------------------


async def lock_fanout(session: AsyncSession, *, skip_locked: bool) -> tuple[int, int] | None:
    """The fan-out cursor, locked until the transaction ends; None when another worker holds it (PostgreSQL;
    on SQLite the writing transaction already runs alone)."""
    stmt = select(WebhookFanout.after_xid, WebhookFanout.after_seq).where(WebhookFanout.id == 1)
    if skip_locked:
        stmt = stmt.with_for_update(skip_locked=True)
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else (int(row[0]), int(row[1]))


async def move_fanout(session: AsyncSession, xid: int, seq: int) -> None:
    await session.execute(
        update(WebhookFanout).where(WebhookFanout.id == 1).values(after_xid=xid, after_seq=seq)
    )


async def fanout_targets(session: AsyncSession) -> list[WebhookSubscription]:
    """The subscriptions changes are queued for: active and paused ones."""
    stmt = _with_territories(
        select(WebhookSubscription).where(
            WebhookSubscription.status.in_([SubscriptionStatus.active.value, SubscriptionStatus.paused.value])
        )
    )
    return list((await session.execute(stmt)).scalars().all())


async def insert_deliveries(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(WebhookDelivery), list(rows))


# --- the worker: claims and results --------------------------------------------------------------------


_CLAIM_COLUMNS = (
    WebhookDelivery.id,
    WebhookDelivery.subscription_id,
    WebhookDelivery.change_xid,
    WebhookDelivery.change_seq,
    WebhookDelivery.resource,
    WebhookDelivery.object_id,
    WebhookDelivery.action,
    WebhookDelivery.object_version,
    WebhookDelivery.territory_id,
    WebhookDelivery.occurred_at,
    WebhookDelivery.attempts,
    WebhookDelivery.attempt_log,
)


async def claim(
    session: AsyncSession,
    *,
    now: datetime,
    lease_until: datetime,
    token: uuid.UUID,
    limit: int,
    skip_locked: bool,
) -> list[Any]:
    """Up to `limit` deliveries due now, of active subscriptions, none held by another worker and none with an
    earlier delivery of the same object to the same subscription still pending, leased to `token` until
    `lease_until`; as rows of the delivery's columns and its subscription's url and secrets."""
    delivery = WebhookDelivery
    earlier = aliased(WebhookDelivery)
    held_back = exists().where(
        earlier.subscription_id == delivery.subscription_id,
        earlier.object_id == delivery.object_id,
        earlier.status == DeliveryStatus.pending.value,
        tuple_(earlier.change_xid, earlier.change_seq) < tuple_(delivery.change_xid, delivery.change_seq),
    )
    stmt = (
        select(delivery.id)
        .join(WebhookSubscription, WebhookSubscription.id == delivery.subscription_id)
        .where(
            delivery.status == DeliveryStatus.pending.value,
            delivery.next_attempt_at <= now,
            or_(delivery.lease_until.is_(None), delivery.lease_until <= now),
            WebhookSubscription.status == SubscriptionStatus.active.value,
            not_(held_back),
        )
        .order_by(delivery.next_attempt_at)
        .limit(limit)
    )
    if skip_locked:
        stmt = stmt.with_for_update(of=delivery, skip_locked=True)
    ids = list((await session.execute(stmt)).scalars().all())
    if not ids:
        return []
    await session.execute(
        update(delivery).where(delivery.id.in_(ids)).values(lease_until=lease_until, lease_token=token)
    )
    rows = await session.execute(
        select(
            *_CLAIM_COLUMNS,
            WebhookSubscription.url,
            WebhookSubscription.secret,
            WebhookSubscription.previous_secret,
            WebhookSubscription.previous_secret_expires_at,
        )
        .join(WebhookSubscription, WebhookSubscription.id == delivery.subscription_id)
        .where(delivery.id.in_(ids))
    )
    return list(rows.all())


_RESULT_FIELDS = (
    "status",
    "attempts",
    "attempt_log",
    "next_attempt_at",
    "last_attempt_at",
    "last_status_code",
    "last_error",
    "delivered_at",
)


@cache
def _record_statement() -> Any:
    """One UPDATE for a round's outcomes (executemany), each applied only if the worker still holds the
    lease (another worker may have taken an expired one over): built once."""
    table = WebhookDelivery.__table__
    assert isinstance(table, Table)
    values: dict[str, Any] = {
        name: bindparam(f"v_{name}", type_=table.c[name].type) for name in _RESULT_FIELDS
    }
    return (
        update(table)
        .where(
            table.c.id == bindparam("v_id", type_=table.c.id.type),
            table.c.lease_token == bindparam("v_token"),
        )
        .values(lease_until=None, lease_token=None, **values)
    )


async def record_results(
    session: AsyncSession, token: uuid.UUID, results: Sequence[tuple[uuid.UUID, dict[str, Any]]]
) -> None:
    rows = [
        {"v_id": delivery_id, "v_token": token, **{f"v_{name}": values.get(name) for name in _RESULT_FIELDS}}
        for delivery_id, values in results
    ]
    if rows:
        connection = await session.connection()
        await connection.execute(_record_statement(), rows)


async def still_failed_by(session: AsyncSession, delivery_id: uuid.UUID, at: datetime) -> bool:
    """Whether the delivery's last attempt is the one made at `at` (its outcome was recorded)."""
    stmt = select(exists().where(WebhookDelivery.id == delivery_id, WebhookDelivery.last_attempt_at == at))
    return bool((await session.execute(stmt)).scalar())


def id_before(moment: datetime) -> uuid.UUID:
    """The smallest UUID v7 of `moment`'s millisecond: every id made before it is smaller."""
    return uuid.UUID(int=(int(moment.timestamp() * 1000) << 80) | (7 << 76) | (2 << 62))


async def purge_deliveries(session: AsyncSession, before: datetime, limit: int) -> int:
    """Deletes up to `limit` deliveries made before `before` that are no longer pending (by their UUID v7
    ids: a range of the primary key); returns how many."""
    old = (
        select(WebhookDelivery.id)
        .where(WebhookDelivery.id < id_before(before), WebhookDelivery.status != DeliveryStatus.pending.value)
        .limit(limit)
    )
    ids = list((await session.execute(old)).scalars().all())
    if ids:
        await session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
    return len(ids)


async def disable_subscription(session: AsyncSession, subscription_id: uuid.UUID) -> None:
    """The receiver said 410 Gone: nothing more is queued nor sent (its version moves, like any change)."""
    await session.execute(
        update(WebhookSubscription)
        .where(
            WebhookSubscription.id == subscription_id,
            WebhookSubscription.status != SubscriptionStatus.disabled.value,
        )
        .values(
            status=SubscriptionStatus.disabled.value,
            version=WebhookSubscription.version + 1,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )


async def purge_subscription_deliveries(session: AsyncSession, subscription_id: uuid.UUID) -> None:
    await session.execute(delete(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription_id))
