"""Two `cnfs-api serve` processes on one PostgreSQL database, as two replicas behind a load balancer: the
guarantees hold across them as within one. Capacity is never exceeded by registrations spread over both; an
Idempotency-Key used on one is replayed (or, in flight, refused) by the other; the change feed read through
both gives every change written through both exactly once; a key revoked through one is refused by both at
the next request; a cursor made by one is read by the other (the shared SECRET_KEY); the rate limits count
across both through one Redis."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.config import Settings
from tests.conftest import bearer
from tests.helpers import app_client, assert_problem
from tests.processes import (
    SECRET_KEY,
    Database,
    create_remote_workshop,
    needs_postgres,
    position_in,
    postgres_database,
    redis_server,
    remote_workshop,
    row_locked,
    wait_until_blocked,
)
from tests.test_serve import Server, serve
from tests.workshops.helpers import CHANGES, WORKSHOPS, person

pytestmark = [needs_postgres, pytest.mark.processes]


@dataclass(frozen=True)
class Pair:
    database: Database
    one: Server
    other: Server
    position_id: str

    @property
    def admin(self) -> dict[str, str]:
        return self.database.admin


@pytest.fixture(scope="module")
def database() -> Iterator[Database]:
    with postgres_database("cnfs_two") as database:
        yield database


@pytest.fixture(scope="module")
def pair(database: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    # A registration waits for its workshop's row lock behind the others: long waits are allowed, what is
    # proven is the outcome.
    env = database.server_env(DATABASE_LOCK_TIMEOUT_MS="30000", DATABASE_POOL_TIMEOUT_SECONDS="30")
    with ExitStack() as stack:
        one = stack.enter_context(serve(tmp_path_factory.mktemp("one"), **env))
        other = stack.enter_context(serve(tmp_path_factory.mktemp("other"), **env))

        async def position() -> str:
            async with httpx.AsyncClient(base_url=one.url, timeout=30) as client:
                return await position_in(client, database)

        yield Pair(database, one, other, asyncio.run(position()))


@pytest.fixture
async def clients(pair: Pair) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(base_url=pair.one.url, timeout=60) as one,
        httpx.AsyncClient(base_url=pair.other.url, timeout=60) as other,
    ):
        yield one, other


async def test_capacity_is_never_exceeded_by_registrations_spread_over_both(
    pair: Pair, clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    """40 people register for 5 seats and 2 waitlist places, half through each process: one through each
    first (so that both have written a seat, however unequal their speed), then the other 38 at once."""
    one, other = clients
    workshop = await create_remote_workshop(
        one, pair.database, pair.position_id, capacity=5, waitlist_capacity=2
    )
    url = f"{WORKSHOPS}/{workshop['id']}/registrations"
    answers = [await one.post(url, json=person(0)), await other.post(url, json=person(1))]
    answers += await asyncio.gather(
        *((one if n % 2 else other).post(url, json=person(n)) for n in range(2, 40))
    )
    outcomes: dict[str, int] = {}
    for answer in answers:
        key = answer.json()["status"] if answer.status_code == 201 else answer.json()["code"]
        outcomes[key] = outcomes.get(key, 0) + 1
        if answer.status_code != 201:
            assert_problem(answer, 409, "workshop_full")
    assert outcomes == {"confirmed": 5, "waitlisted": 2, "workshop_full": 33}
    # Both processes answered some of the seats.
    confirmed_by = {answer.url.port for answer in answers if answer.status_code == 201}
    assert len(confirmed_by) == 2, confirmed_by
    for client in (one, other):
        read = (await client.get(f"{WORKSHOPS}/{workshop['id']}")).json()
        assert (read["registered_count"], read["waitlisted_count"], read["seats_left"]) == (5, 2, 0)
    connection = await pair.database.connect()
    try:
        rows = await connection.fetch(
            "SELECT status, waitlist_rank FROM registrations WHERE workshop_id = $1 ORDER BY waitlist_rank",
            uuid.UUID(workshop["id"]),
        )
    finally:
        await connection.close()
    assert [(row["status"], row["waitlist_rank"]) for row in rows] == [
        ("waitlisted", 1),
        ("waitlisted", 2),
        *[("confirmed", None)] * 5,
    ]


async def test_an_idempotency_key_is_replayed_and_refused_in_flight_by_the_other_process(
    pair: Pair, clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    one, other = clients
    workshop = await create_remote_workshop(one, pair.database, pair.position_id, capacity=5)
    url = f"{WORKSHOPS}/{workshop['id']}/registrations"
    key = {"Idempotency-Key": f"inscription-{uuid.uuid4()}"}

    first = await one.post(url, json=person(1), headers=key)
    assert first.status_code == 201, first.text
    replayed = await other.post(url, json=person(1), headers=key)
    assert replayed.status_code == 201, replayed.text
    assert replayed.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert replayed.headers["location"] == first.headers["location"]
    # The stored response keeps no cancel token (a secret shown once); everything else is the same.
    assert {**replayed.json(), "cancel_token": None} == {**first.json(), "cancel_token": None}
    assert_problem(await other.post(url, json=person(2), headers=key), 422, "idempotency_key_reused")

    # In flight: the first use of another key waits (on the workshop's row lock, held by the test) in one
    # process while it is used again through the other.
    key = {"Idempotency-Key": f"inscription-{uuid.uuid4()}"}
    async with row_locked(pair.database, "workshops", workshop["id"]) as holder:
        pending = asyncio.create_task(one.post(url, json=person(3), headers=key))
        await wait_until_blocked(holder)
        in_use = await other.post(url, json=person(3), headers=key)
        assert_problem(in_use, 409, "idempotency_key_in_use")
        assert in_use.headers["retry-after"] == "1"
    answered = await asyncio.wait_for(pending, 30)
    assert answered.status_code == 201, answered.text
    again = await other.post(url, json=person(3), headers=key)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == answered.json()["id"]
    read = (await other.get(f"{WORKSHOPS}/{workshop['id']}")).json()
    assert read["registered_count"] == 2


async def test_the_change_feed_read_through_both_gives_every_change_written_through_both_once(
    pair: Pair, clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    """Writers on both processes create workshops while a reader pages through `GET /changes`, each page
    from the other process than the last (the cursor of one read by the other)."""
    one, other = clients
    writes = 40
    written: list[str] = []
    done = asyncio.Event()

    async def write(client: httpx.AsyncClient, n: int) -> None:
        body = remote_workshop(pair.position_id, title=f"Atelier {n}")
        response = await client.post(WORKSHOPS, json=body, headers=pair.admin)
        assert response.status_code == 201, response.text
        workshop_id = response.json()["id"]
        written.append(workshop_id)
        # Changed at once through the other process: its version 2 must come after its version 1.
        changed = await (other if client is one else one).patch(
            f"{WORKSHOPS}/{workshop_id}",
            content=orjson.dumps({"title": f"Atelier {n}, changé"}),
            headers={**pair.admin, "Content-Type": "application/merge-patch+json", "If-Match": '"1"'},
        )
        assert changed.status_code == 200, changed.text

    async def writers() -> None:
        try:
            # Eight at a time, spread over both processes: their transactions commit in any order.
            for start in range(0, writes, 8):
                await asyncio.gather(*(write(one if n % 2 else other, n) for n in range(start, start + 8)))
        finally:
            done.set()

    seen: list[tuple[str, int]] = []
    cursors: list[str] = []

    async def reader() -> None:
        after: str | None = None
        readers = itertools.cycle((one, other))
        while True:
            finished = done.is_set()
            params: dict[str, Any] = {"resource": "workshops", "limit": 7}
            if after is not None:
                params["after"] = after
            page = await next(readers).get(CHANGES, params=params, headers=pair.admin)
            assert page.status_code == 200, page.text
            body = page.json()
            for item in body["items"]:
                seen.append((item["id"], item["version"]))
                cursors.append(item["cursor"])
            after = body["next_after"]
            if finished and not body["items"]:
                return
            if not body["items"]:
                await asyncio.sleep(0.02)

    await asyncio.gather(writers(), reader())
    made = [(id, version) for id in written for version in (1, 2)]
    mine = [change for change in seen if change in set(made)]
    # Every change written is read, once; nothing is read twice.
    assert sorted(mine) == sorted(made)
    assert len(seen) == len(set(seen))
    assert len(cursors) == len(set(cursors))
    # In order: each workshop's creation before its change, whichever process wrote each.
    for workshop_id in written:
        assert [version for id, version in mine if id == workshop_id] == [1, 2], workshop_id


async def test_a_key_revoked_through_one_is_refused_by_both(
    pair: Pair, clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    one, other = clients
    created = await one.post(
        "/api/v1/api-keys",
        json={"name": "revoked soon", "role": "viewer", "territory_ids": [str(pair.database.region_id)]},
        headers=pair.admin,
    )
    assert created.status_code == 201, created.text
    key = bearer(created.json()["key"])
    for client in (one, other):
        me = await client.get("/api/v1/me", headers=key)
        assert me.status_code == 200, me.text
        assert me.json()["name"] == "revoked soon"
    revoked = await other.delete(f"/api/v1/api-keys/{created.json()['id']}", headers=pair.admin)
    assert revoked.status_code == 204, revoked.text
    for client in (one, other):
        assert_problem(await client.get("/api/v1/me", headers=key), 401, "unauthenticated")


async def test_a_cursor_made_by_one_is_read_by_the_other(
    pair: Pair, clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    one, other = clients
    for n in range(3):
        await create_remote_workshop(one, pair.database, pair.position_id, title=f"Page {n}")
    params = {"limit": "2", "within": str(pair.database.region_id)}
    first = await one.get(WORKSHOPS, params=params, headers=pair.admin)
    assert first.status_code == 200, first.text
    cursor = first.json()["next_cursor"]
    assert cursor
    second = await other.get(WORKSHOPS, params={**params, "cursor": cursor}, headers=pair.admin)
    assert second.status_code == 200, second.text
    ids = [w["id"] for w in first.json()["items"]]
    assert second.json()["items"]
    assert not {w["id"] for w in second.json()["items"]} & set(ids)
    # A process with another SECRET_KEY refuses it: the secret is what the processes must share.
    stranger = Settings(database_url=pair.database.url, secret_key="another-secret-" + "y" * 32)
    async with app_client(stranger) as client:
        refused = await client.get(WORKSHOPS, params={**params, "cursor": cursor}, headers=pair.admin)
    assert_problem(refused, 422, "invalid_cursor")


def test_the_rate_limits_count_across_both_through_one_redis(database: Database, tmp_path: Path) -> None:
    """Without a shared Redis each process counts on its own (tests/test_serve.py); with one, the limit is
    the deployment's: 4 requests a minute from one address, whichever process answers them."""
    with redis_server() as (_, redis_url), ExitStack() as stack:
        env = database.server_env(
            SECRET_KEY=SECRET_KEY,
            RATE_LIMITS_ENABLED="true",
            REDIS_URL=redis_url,
            RATE_LIMIT_PER_ADDRESS="4/minute",
            RATE_LIMIT_REDIS_TIMEOUT_SECONDS="5",
        )
        servers = []
        for name in ("one", "other"):
            (tmp_path / name).mkdir()
            servers.append(stack.enter_context(serve(tmp_path / name, **env)))
        answers = [httpx.get(f"{servers[n % 2].url}/api/v1/territories", timeout=10) for n in range(8)]
    assert [answer.status_code for answer in answers] == [200] * 4 + [429] * 4
    for answer in answers[4:]:
        assert_problem(answer, 429, "rate_limited")
        assert answer.headers["ratelimit-limit"] == "4"
        assert answer.headers["ratelimit-remaining"] == "0"
