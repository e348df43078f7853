"""The business answers of positions and assignments, checked against a model written here from the rules of
API.md and docs/api-changes.md alone (no application code): a seeded random walk of openings, new opening
days, assignments, ends and closings, with days drawn near every boundary; the answer to each write (status,
problem code and pointer) is predicted, and at checkpoints every derived read (a position's status and current
assignment, the `status` filter, `active`, a position's history, the agreement's counts, the counsellor's
current assignment) is compared with the model, through the app with its direct path and through the routes.

The direct-path parity tests compare two paths that run the same service code, so a wrong rule answers the
same on both; this file compares both with the rules."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.agreements.helpers import AGREEMENTS, create_signed, merge_patch
from tests.conftest import KeyMaker, bearer
from tests.helpers import assert_problem, items
from tests.positions.helpers import (
    ASSIGNMENTS,
    COUNSELLORS,
    POSITIONS,
    World,
    create_counsellor,
    end_assignment,
    post_assignment,
    post_position,
)

TODAY = datetime.now(UTC).date()
LONG_AGO = date(2021, 3, 1)  # the world's agreements start on it and never end


def day(offset: int) -> date:
    return TODAY + timedelta(days=offset)


# --- the model: API.md, "Dates" and "Assignments", and docs/api-changes.md ------------------------------


@dataclass
class Held:
    """An assignment: it covers D when started ≤ D and (not ended or D ≤ ended)."""

    id: str
    position: str
    counsellor: str
    started: date
    ended: date | None = None

    def covers(self, on: date) -> bool:
        return self.started <= on and (self.ended is None or on <= self.ended)


@dataclass
class Post:
    id: str
    agreement: str
    opened: date
    closed: date | None = None


@dataclass
class Deal:
    """A signed agreement: its period and the positions it grants."""

    id: str
    starts: date
    ends: date | None
    granted: int


@dataclass
class Model:
    deals: list[Deal]
    counsellors: list[str]
    anonymised: str
    posts: list[Post] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)

    def deal(self, post: Post) -> Deal:
        return next(d for d in self.deals if d.id == post.agreement)

    def of_post(self, post: Post) -> list[Held]:
        return sorted((h for h in self.held if h.position == post.id), key=lambda h: h.started)

    def of_counsellor(self, counsellor: str) -> list[Held]:
        return [h for h in self.held if h.counsellor == counsellor]

    def status(self, post: Post) -> str:
        if post.closed is not None:
            return "closed"
        return "occupied" if any(h.covers(TODAY) for h in self.of_post(post)) else "vacant"

    def current(self, post: Post) -> str | None:
        if self.status(post) != "occupied":
            return None
        return next(h.id for h in self.of_post(post) if h.covers(TODAY))

    def counsellor_current(self, counsellor: str) -> str | None:
        return next((h.id for h in self.of_counsellor(counsellor) if h.covers(TODAY)), None)

    # What each write must answer: (status, problem code, pointer); the order of the checks is the API's.

    def open(self, deal: Deal, opened: date) -> tuple[int, str | None, str | None]:
        if opened < deal.starts or (deal.ends is not None and opened > deal.ends):
            return 422, "validation_error", "/opened_on"
        if sum(1 for p in self.posts if p.agreement == deal.id and p.closed is None) >= deal.granted:
            return 409, "agreement_positions_exhausted", None
        return 201, None, None

    def reopen(self, post: Post, opened: date) -> tuple[int, str | None, str | None]:
        if post.closed is not None:
            return 409, "position_closed", None
        deal = self.deal(post)
        if opened == post.opened:
            return 200, None, None
        if opened < deal.starts or (deal.ends is not None and opened > deal.ends):
            return 422, "validation_error", "/opened_on"
        if any(h.started < opened for h in self.of_post(post)):
            return 422, "validation_error", "/opened_on"
        return 200, None, None

    def assign(self, post: Post, counsellor: str, started: date) -> tuple[int, str | None, str | None]:
        # A new assignment lasts until it is ended: it meets every assignment not ended before `started`.
        def meets(h: Held) -> bool:
            return h.ended is None or h.ended >= started

        deal = self.deal(post)
        if started < post.opened or (deal.ends is not None and started > deal.ends):
            return 422, "validation_error", "/started_on"
        if post.closed is not None:
            return 409, "position_closed", None
        if counsellor == self.anonymised:
            return 409, "counsellor_anonymized", None
        if any(meets(h) for h in self.of_post(post)):
            return 409, "position_occupied", None
        if any(meets(h) for h in self.of_counsellor(counsellor)):
            return 409, "counsellor_already_assigned", None
        return 201, None, None

    def end(self, held: Held, ended: date) -> tuple[int, str | None, str | None]:
        if ended < held.started:
            return 422, "validation_error", "/ended_on"
        if held.ended is not None:
            return 409, "assignment_already_ended", None
        return 200, None, None

    def close(self, post: Post, closed: date) -> tuple[int, str | None, str | None]:
        if closed < post.opened:
            return 422, "validation_error", "/closed_on"
        if post.closed is not None:
            return 409, "position_closed", None
        if any(h.ended is None or h.ended > closed for h in self.of_post(post)):
            return 409, "position_occupied", None
        return 200, None, None


def _iso(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _check(response: httpx.Response, expected: tuple[int, str | None, str | None], what: str) -> None:
    status, code, pointer = expected
    if code is None:
        assert response.status_code == status, (what, response.text)
    else:
        assert_problem(response, status, code, pointer)


# --- the walk -------------------------------------------------------------------------------------------


class Walk:
    def __init__(
        self, rng: random.Random, client: httpx.AsyncClient, world: World, model: Model, log: list[str]
    ) -> None:
        self.rng, self.client, self.world, self.model, self.log = rng, client, world, model, log

    def near(self, *anchors: date | None) -> date:
        """A day at a boundary, one day off it, or anywhere in the fortnight around today."""
        days = [a for a in anchors if a is not None]
        if days and self.rng.random() < 0.8:
            return self.rng.choice(days) + timedelta(days=self.rng.choice((-1, 0, 0, 1)))
        return day(self.rng.randint(-7, 7))

    async def open(self) -> None:
        deal = self.rng.choice(self.model.deals)
        opened = self.near(deal.starts, deal.ends, TODAY, day(-5))
        expected = self.model.open(deal, opened)
        self.log.append(f"open {deal.id[-4:]} on {opened}: {expected}")
        response = await post_position(self.client, self.world.admin, deal.id, opened_on=opened.isoformat())
        _check(response, expected, self.log[-1])
        if response.status_code == 201:
            self.model.posts.append(Post(response.json()["id"], deal.id, opened))

    async def reopen(self, post: Post) -> None:
        deal = self.model.deal(post)
        first = self.model.of_post(post)[0].started if self.model.of_post(post) else None
        opened = self.near(deal.starts, deal.ends, first, post.opened)
        expected = self.model.reopen(post, opened)
        self.log.append(f"reopen {post.id[-4:]} on {opened}: {expected}")
        url = f"{POSITIONS}/{post.id}"
        version = (await self.client.get(url, headers=self.world.admin)).json()["version"]
        response = await merge_patch(
            self.client, self.world.admin, url, {"opened_on": opened.isoformat()}, if_match=f'"{version}"'
        )
        _check(response, expected, self.log[-1])
        if response.status_code == 200:
            post.opened = opened

    async def assign(self, post: Post) -> None:
        erased = self.rng.random() < 0.1
        counsellor = self.model.anonymised if erased else self.rng.choice(self.model.counsellors)
        ends = [h.ended for h in self.model.held if counsellor == h.counsellor or h.position == post.id]
        started = self.near(post.opened, self.model.deal(post).ends, TODAY, *ends)
        expected = self.model.assign(post, counsellor, started)
        self.log.append(f"assign {counsellor[-4:]} to {post.id[-4:]} from {started}: {expected}")
        response = await post_assignment(
            self.client, self.world.admin, post.id, counsellor, started.isoformat()
        )
        _check(response, expected, self.log[-1])
        if response.status_code == 201:
            body = response.json()
            held = Held(body["id"], post.id, counsellor, started)
            assert (body["started_on"], body["ended_on"], body["active"]) == (
                started.isoformat(),
                None,
                held.covers(TODAY),
            ), self.log[-1]
            self.model.held.append(held)

    async def end(self, held: Held) -> None:
        ended = self.near(held.started, TODAY, held.started + timedelta(days=self.rng.randint(1, 5)))
        expected = self.model.end(held, ended)
        self.log.append(f"end {held.id[-4:]} on {ended}: {expected}")
        response = await end_assignment(self.client, self.world.admin, held.id, ended.isoformat())
        _check(response, expected, self.log[-1])
        if response.status_code == 200:
            held.ended = ended
            body = response.json()
            assert (body["ended_on"], body["active"]) == (ended.isoformat(), held.covers(TODAY)), self.log[-1]

    async def close(self, post: Post) -> None:
        ends = [h.ended for h in self.model.of_post(post)]
        closed = self.near(post.opened, TODAY, *ends)
        expected = self.model.close(post, closed)
        self.log.append(f"close {post.id[-4:]} on {closed}: {expected}")
        response = await self.client.post(
            f"{POSITIONS}/{post.id}/close",
            json={"closed_on": closed.isoformat(), "reason": "Fin du poste."},
            headers=self.world.admin,
        )
        _check(response, expected, self.log[-1])
        if response.status_code == 200:
            post.closed = closed
            assert response.json()["status"] == "closed", self.log[-1]

    async def step(self) -> None:
        """One write: openings and new opening days now and then, assignments and ends mostly, a closing
        rarely."""
        posts = self.model.posts
        running = [p for p in posts if p.closed is None]
        unended = [h for h in self.model.held if h.ended is None]
        roll = self.rng.random()
        if not posts or roll < 0.12:
            await self.open()
        elif roll < 0.22:
            await self.reopen(self.rng.choice(posts))
        elif 0.6 <= roll < 0.92 and unended:
            await self.end(self.rng.choice(unended if self.rng.random() < 0.9 else self.model.held))
        elif roll < 0.92:
            # Mostly the open positions: a closed one answers only `position_closed`.
            await self.assign(self.rng.choice(running if running and self.rng.random() < 0.85 else posts))
        else:
            await self.close(self.rng.choice(posts))


async def _all(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], **params: str
) -> list[dict[str, Any]]:
    response = await http.get(url, params={**params, "limit": "200"}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    return items(response)


async def _check_reads(http: httpx.AsyncClient, world: World, viewer: dict[str, str], model: Model) -> None:
    admin = world.admin
    for post in model.posts:
        got = (await http.get(f"{POSITIONS}/{post.id}", headers=admin)).json()
        current = got["current_assignment"]["id"] if got["current_assignment"] else None
        assert (got["status"], current, got["opened_on"], got["closed_on"]) == (
            model.status(post),
            model.current(post),
            post.opened.isoformat(),
            _iso(post.closed),
        ), post.id
        seen = (await http.get(f"{POSITIONS}/{post.id}", headers=viewer)).json()
        assert (seen["status"], seen["current_assignment"]) == (model.status(post), None)
        history = await _all(http, f"{POSITIONS}/{post.id}/assignments", admin)
        assert [(h["id"], h["ended_on"], h["active"]) for h in history] == [
            (h.id, _iso(h.ended), h.covers(TODAY)) for h in model.of_post(post)
        ]
    for status in ("vacant", "occupied", "closed"):
        listed = {p["id"] for p in await _all(http, POSITIONS, admin, status=status)}
        assert listed == {p.id for p in model.posts if model.status(p) == status}, status
    for active in (True, False):
        listed = {a["id"] for a in await _all(http, ASSIGNMENTS, admin, active=str(active).lower())}
        assert listed == {h.id for h in model.held if h.covers(TODAY) is active}, active
    for held in model.held:
        assert (await http.get(f"{ASSIGNMENTS}/{held.id}", headers=admin)).json()["active"] is held.covers(
            TODAY
        )
    for deal in model.deals:
        got = (await http.get(f"{AGREEMENTS}/{deal.id}", headers=admin)).json()
        mine = [p for p in model.posts if p.agreement == deal.id]
        assert (got["positions_open"], got["positions_occupied"]) == (
            sum(1 for p in mine if p.closed is None),
            sum(1 for p in mine if model.status(p) == "occupied"),
        ), deal.id
    for counsellor in model.counsellors:
        got = (await http.get(f"{COUNSELLORS}/{counsellor}", headers=admin)).json()
        current = got["current_assignment"]["id"] if got["current_assignment"] else None
        assert current == model.counsellor_current(counsellor), counsellor


STEPS = 80


# Seeds 5 and 8 each meet every boundary the walk aims at (an end today, a start on an opening day or on the
# day a counsellor's last assignment ends, an opening a day outside the agreement); 10 is one more walk.
@pytest.mark.parametrize("seed", [5, 8, 10])
async def test_positions_and_assignments_follow_the_rules(
    client: httpx.AsyncClient,
    route_client: httpx.AsyncClient,
    world: World,
    make_key: KeyMaker,
    seed: int,
) -> None:
    admin, tree = world.admin, world.tree
    bounded = await create_signed(
        client,
        admin,
        world.lyon["programme_id"],
        tree.rhone.id,
        reference="R-BOUNDED",
        positions_granted=3,
        starts_on=day(-8).isoformat(),
        ends_on=day(3).isoformat(),
    )
    counsellors = [
        (await create_counsellor(client, admin, tree.lyon_metro.id, external_ref=f"C-{i}"))["id"]
        for i in range(4)
    ]
    erased = await client.post(f"{COUNSELLORS}/{counsellors[3]}/anonymize", headers=admin)
    assert erased.status_code == 200, erased.text
    model = Model(
        deals=[
            Deal(world.lyon["id"], LONG_AGO, None, 3),
            Deal(world.rhone["id"], LONG_AGO, None, 2),
            Deal(bounded["id"], day(-8), day(3), 3),
        ],
        counsellors=counsellors[:3],
        anonymised=counsellors[3],
    )
    viewer = bearer(await make_key("viewer", [tree.ara]))
    log: list[str] = []
    walk = Walk(random.Random(seed), client, world, model, log)
    for step in range(1, STEPS + 1):
        await walk.step()
        if step % 20 == 0:
            for http in (client, route_client):
                await _check_reads(http, world, viewer, model)
    answered = {entry.rsplit(": ", 1)[1] for entry in log}
    # The walk reached the rules it is meant to check, not only the happy path.
    assert len(model.held) >= 3, log
    assert len(answered) >= 6, log
