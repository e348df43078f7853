"""Personal data stays out of the logs, and lists of personal data cost a constant number of queries."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from tests.helpers import items
from tests.positions.helpers import (
    ASSIGNMENTS,
    COUNSELLORS,
    PERSON,
    World,
    assign,
    create_counsellor,
    create_position,
    day,
)


async def test_no_personal_data_in_the_logs(
    client: httpx.AsyncClient, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # The application's own loggers at their most talkative (the client's and the driver's debug logs are
    # not the service's).
    caplog.set_level(logging.DEBUG, logger="app")
    caplog.set_level(logging.INFO, logger="sqlalchemy")
    body = {**PERSON, "first_name": "Zéphyrine", "email": "zephyrine.secrete@example.org"}
    await client.put(f"{COUNSELLORS}/by-ref/REF-SECRETE", json=body, headers=world.lyon_manager)
    await client.put(
        f"{COUNSELLORS}/by-ref/REF-SECRETE", json={**body, "email": "bad"}, headers=world.lyon_manager
    )
    await client.post(
        f"{COUNSELLORS}/bulk",
        json={
            "items": [{**body, "external_ref": "REF-SECRETE"}, {**body, "external_ref": "X", "phone": "?"}]
        },
        headers=world.lyon_manager,
    )
    # A duplicate reference at the database level (a direct POST racing nothing: the check answers first).
    await client.post(
        COUNSELLORS,
        json={**body, "territory_id": str(world.tree.lyon_metro.id), "external_ref": "REF-SECRETE"},
        headers=world.lyon_manager,
    )
    text = "\n".join(
        f"{r.getMessage()} {r.__dict__}" for r in caplog.records if r.name.startswith(("app", "sqlalchemy"))
    )
    assert "POST /api/v1/counsellors/bulk 207" in text
    for secret in ("Zéphyrine", "zephyrine", "secrete", "REF-SECRETE", "Exemple"):
        assert secret not in text


async def test_personal_lists_make_a_constant_number_of_queries(
    client: httpx.AsyncClient, world: World, count_queries: Any
) -> None:
    counts: dict[str, list[int]] = {COUNSELLORS: [], ASSIGNMENTS: []}
    for round_ in range(2):
        for i in range(2):
            counsellor = await create_counsellor(
                client, world.admin, world.tree.lyon_metro.id, external_ref=f"{round_}-{i}"
            )
            position = await create_position(client, world.admin, world.lyon["id"]) if round_ == 0 else None
            if position is not None:
                await assign(client, world.admin, position["id"], counsellor["id"], started_on=day(-1))
        for url in counts:
            with count_queries() as counter:
                response = await client.get(url, headers=world.lyon_manager)
            assert items(response)
            counts[url].append(counter.count)
    for url, seen in counts.items():
        assert seen[0] == seen[1], (url, seen)
