"""HTTP handlers of /webhook-subscriptions."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request, Response

from app.config import Settings
from app.core.auth import Principal, Role, require_roles
from app.core.idempotency import IdempotencyDep
from app.core.listing import PageDep
from app.core.pagination import set_link_header
from app.core.problems import problem_responses
from app.core.responses import created, model_response
from app.core.routers import api_router
from app.core.versioning import IF_MATCH_DOC, IfMatchHeader, not_modified, require_if_match
from app.db import SessionDep
from app.webhooks import service
from app.webhooks.schemas import (
    DeliveryPage,
    DeliveryRead,
    SubscriptionCreate,
    SubscriptionPage,
    SubscriptionRead,
    SubscriptionUpdate,
    SubscriptionWithSecret,
)

router = api_router("/webhook-subscriptions", tags=["webhooks"])

ManagerDep = Annotated[Principal, Depends(require_roles(Role.admin, Role.territory_manager))]

WHO = (
    "Admin (every subscription), and territory managers (the subscriptions whose territories all lie "
    "within theirs; another's is 404). Other roles → 403."
)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.get(
    "",
    response_model=SubscriptionPage,
    summary="List webhook subscriptions",
    description=WHO + " By id (keyset pagination). The secrets are never shown here.",
    responses=problem_responses(401, 403, 422),
)
async def webhook_subscriptions_list(
    request: Request, response: Response, session: SessionDep, principal: ManagerDep, page: PageDep
) -> SubscriptionPage:
    items, next_cursor, total = await service.list_subscriptions(session, principal, page)
    set_link_header(request, response, next_cursor)
    return SubscriptionPage(items=items, next_cursor=next_cursor, total=total)


@router.post(
    "",
    status_code=201,
    response_model=SubscriptionWithSecret,
    summary="Subscribe to changes",
    description=WHO + " Every change of the feed (`GET /changes`) committed from now on whose resource, "
    "action and territory match is POSTed to `url` under the Standard Webhooks specification: body "
    '`{"type": "<resource>.<action>", "timestamp", "data": <change feed item>}`, headers `webhook-id` '
    "(the same on every retry: ignore an id already processed), `webhook-timestamp` and "
    "`webhook-signature`. The answer shows the signing `secret` (`whsec_...`) this once. A URL that is not "
    "http(s) or resolves to an internal address → 422 `webhook_url_not_allowed`; a territory outside the "
    "caller's → 422 `unknown_reference`.",
    responses=problem_responses(401, 403, 422),
)
async def webhook_subscriptions_create(
    request: Request,
    session: SessionDep,
    principal: ManagerDep,
    idem: IdempotencyDep,
    body: SubscriptionCreate,
) -> Response:
    async def produce() -> Response:
        subscription = await service.create(session, principal, body, _settings(request))
        return created(
            request,
            service.with_secret(subscription),
            "webhook_subscriptions_get",
            version=subscription.version,
            subscription_id=str(subscription.id),
        )

    return await idem.run(produce, secret_fields=("secret",))


@router.get(
    "/{subscription_id}",
    response_model=SubscriptionRead,
    summary="Get a webhook subscription",
    description=WHO + " Answers `ETag`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def webhook_subscriptions_get(
    request: Request, session: SessionDep, principal: ManagerDep, subscription_id: uuid.UUID
) -> Response:
    subscription = await service.get(session, principal, subscription_id)
    return not_modified(request, subscription.version) or model_response(
        service.to_read(subscription), version=subscription.version
    )


@router.patch(
    "/{subscription_id}",
    response_model=SubscriptionRead,
    summary="Change a webhook subscription",
    description=WHO + " JSON Merge Patch. `status`: `paused` keeps queueing the deliveries and sends "
    "none until `active` again; `disabled` (also set when the receiver answers 410 Gone) queues none. "
    + IF_MATCH_DOC,
    responses=problem_responses(401, 403, 404, 412, 422, 428),
)
async def webhook_subscriptions_update(
    request: Request,
    session: SessionDep,
    principal: ManagerDep,
    subscription_id: uuid.UUID,
    body: SubscriptionUpdate,
    if_match: IfMatchHeader = None,
) -> Response:
    subscription = await service.get(session, principal, subscription_id, for_update=True)
    require_if_match(if_match, subscription.version)
    subscription = await service.update(session, principal, subscription, body, _settings(request))
    return model_response(service.to_read(subscription), version=subscription.version)


@router.delete(
    "/{subscription_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a webhook subscription",
    description=WHO + " Its deliveries, sent or not, go with it. " + IF_MATCH_DOC,
    responses=problem_responses(401, 403, 404, 412, 428),
)
async def webhook_subscriptions_delete(
    session: SessionDep, principal: ManagerDep, subscription_id: uuid.UUID, if_match: IfMatchHeader = None
) -> Response:
    subscription = await service.get(session, principal, subscription_id, for_update=True)
    require_if_match(if_match, subscription.version)
    await service.delete(session, subscription)
    return Response(status_code=204)


@router.post(
    "/{subscription_id}/rotate-secret",
    response_model=SubscriptionWithSecret,
    summary="Rotate a subscription's secret",
    description=WHO + " A new `secret`, shown this once. The previous one signs too for "
    "WEBHOOK_SECRET_GRACE_HOURS (24 h by default): `webhook-signature` then carries both signatures, and "
    "a receiver verifies with either while it switches.",
    responses=problem_responses(401, 403, 404, 422),
)
async def webhook_subscriptions_rotate_secret(
    request: Request, session: SessionDep, principal: ManagerDep, subscription_id: uuid.UUID
) -> Response:
    subscription = await service.get(session, principal, subscription_id, for_update=True)
    subscription = await service.rotate_secret(session, subscription, _settings(request))
    return model_response(service.with_secret(subscription), version=subscription.version)


@router.get(
    "/{subscription_id}/deliveries",
    response_model=DeliveryPage,
    summary="List a subscription's deliveries",
    description=WHO + " The latest first: each change queued for the subscription, its status (`pending`, "
    "`succeeded`, `failed` once the retry schedule is exhausted or the receiver answered 410), its "
    "attempts with their status codes, and when the next attempt is due.",
    responses=problem_responses(401, 403, 404, 422),
)
async def webhook_subscriptions_deliveries(
    request: Request,
    response: Response,
    session: SessionDep,
    principal: ManagerDep,
    page: PageDep,
    subscription_id: uuid.UUID,
) -> DeliveryPage:
    subscription = await service.get(session, principal, subscription_id)
    items, next_cursor, total = await service.list_deliveries(session, subscription, page)
    set_link_header(request, response, next_cursor)
    return DeliveryPage(items=items, next_cursor=next_cursor, total=total)


@router.post(
    "/{subscription_id}/deliveries/{delivery_id}/retry",
    response_model=DeliveryRead,
    summary="Send a delivery again",
    description=WHO + " The delivery is due again now, whatever its status: one more attempt, with the "
    "same `webhook-id` (a failed one that fails again is failed again). Sent once the subscription is "
    "`active`.",
    responses=problem_responses(401, 403, 404, 422),
)
async def webhook_subscriptions_delivery_retry(
    session: SessionDep, principal: ManagerDep, subscription_id: uuid.UUID, delivery_id: uuid.UUID
) -> Response:
    subscription = await service.get(session, principal, subscription_id)
    return model_response(await service.retry_delivery(session, subscription, delivery_id))
