"""The webhooks tests' world: committed rows (the worker runs its own transactions), a territory of their
own, a receiver on a loopback port, and settings that allow loopback."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.core import changes
from app.core.auth import Principal, Role
from app.core.changes import Change
from app.db import make_sessionmaker
from app.territories import service as territories
from app.territories.codes import TerritoryKind
from app.territories.models import Territory
from app.territories.schemas import TerritoryCreate
from app.webhooks import service
from app.webhooks.models import WebhookSubscription
from app.webhooks.schemas import SubscriptionCreate
from tests.webhooks.receiver import Receiver, receiving

ADMIN = Principal(role=Role.admin, name="webhooks test")
LOOPBACK = ["127.0.0.0/8", "::1/128"]


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "webhook_allowed_networks": LOOPBACK,
            "webhook_timeout_seconds": 2.0,
            "webhook_poll_interval_seconds": 0.05,
        }
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as receiver:
        yield receiver


@dataclass
class World:
    """Committed rows of one test, removed at its end."""

    sessions: async_sessionmaker[AsyncSession]
    settings: Settings
    territory: Territory
    subscriptions: list[Any] = field(default_factory=list)

    async def subscribe(self, url: str, settings: Settings | None = None, **body: Any) -> WebhookSubscription:
        async with self.sessions() as session:
            data = SubscriptionCreate(url=url, territory_ids=[self.territory.id], **body)
            subscription = await service.create(session, ADMIN, data, settings or self.settings)
            await session.commit()
        self.subscriptions.append(subscription.id)
        return subscription

    async def change(
        self, object_id: Any, version: int, *, commit: bool = True, resource: str = "positions"
    ) -> None:
        """One change of the feed in a transaction of its own, committed or rolled back."""
        async with self.sessions() as session:
            await changes.record(
                session,
                resource=resource,
                id=object_id,
                action="updated" if version > 1 else "created",
                version=version,
                territory_id=self.territory.id,
            )
            if commit:
                await session.commit()
            else:
                await session.rollback()


@pytest.fixture
async def world(engine: AsyncEngine, hook_settings: Settings) -> AsyncIterator[World]:
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        territory = await territories.create(
            session,
            TerritoryCreate(
                kind=TerritoryKind.commune, code=f"01{random.randrange(1000):03d}", name="Webhookville"
            ),
        )
        await session.commit()
    world = World(sessions, hook_settings, territory)
    try:
        yield world
    finally:
        async with sessions() as session:
            if world.subscriptions:
                await session.execute(
                    delete(WebhookSubscription).where(WebhookSubscription.id.in_(world.subscriptions))
                )
            await session.execute(delete(Change).where(Change.territory_id == territory.id))
            found = await territories.get(session, territory.id)
            await territories.delete(session, found)
            await session.commit()
