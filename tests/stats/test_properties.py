"""Random sequences of workshop writes through the API (schedule, move, change level and themes, register,
cancel a registration, cancel, report attendance): afterwards the rollup the triggers kept equals its
rebuild, and every answer of GET /stats/workshops equals a naive recomputation from the rows."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from tests.stats.helpers import STATS, naive_workshops, query, rebuilt_rows, rollup_rows, someone
from tests.workshops.helpers import WORKSHOPS, Place, at, workshop_body

# Around month ends in UTC; the 2026 ones have started (attendance may be reported), the 2027 ones not.
INSTANTS = (
    "2026-03-31T23:59:00Z",
    "2026-04-01T00:00:00Z",
    "2026-04-20T10:00:00Z",
    "2027-01-31T23:30:00Z",
    "2027-02-01T00:15:00Z",
)
THEMES = (["email"], ["email", "sante"], ["sante", "bureautique", "parentalite"])
LEVELS = ("debutant", "intermediaire", "avance")
AGES = (None, "moins_de_douze", "soixante_dix_plus", "non_communique")
SOCIALS = (None, "retraite", "en_emploi")
ACCEPTED = {
    None,
    "workshop_full",
    "workshop_closed",
    "workshop_not_editable",
    "workshop_not_started",
    "already_registered",
}

index = st.integers(0, 20)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.integers(0, 1), st.sampled_from(range(len(THEMES))), index),
        st.tuples(st.just("register"), index, index, index),
        st.tuples(st.just("unregister"), index),
        st.tuples(st.just("move"), index, st.sampled_from(range(len(INSTANTS))), index),
        st.tuples(st.just("cancel"), index),
        st.tuples(st.just("report"), index, st.integers(0, 3), st.integers(0, 7)),
    ),
    min_size=1,
    max_size=14,
)

RANGES = ((None, None), (date(2026, 4, 1), date(2027, 1, 31)), (date(2026, 3, 31), date(2027, 2, 1)))


class Run:
    def __init__(self, client: httpx.AsyncClient, place: Place) -> None:
        self.client, self.place = client, place
        self.workshops: list[str] = []
        self.registrations: list[tuple[str, dict[str, Any]]] = []
        self.people = 0
        self.gone: set[str] = set()

    @property
    def admin(self) -> dict[str, str]:
        return self.place.admin

    def pick(self, n: int) -> str | None:
        return self.workshops[n % len(self.workshops)] if self.workshops else None

    async def etag(self, workshop_id: str) -> str:
        return (await self.client.get(f"{WORKSHOPS}/{workshop_id}", headers=self.admin)).headers["etag"]

    async def apply(self, op: tuple[Any, ...]) -> httpx.Response | None:
        name, *args = op
        if name == "create":
            position = (self.place.lyon_position, self.place.rhone_position)[args[0]]["id"]
            body = workshop_body(
                position,
                themes=THEMES[args[1]],
                level=LEVELS[args[2] % 3],
                starts_at=at(3),
                capacity=2,
                waitlist_capacity=1,
            )
            response = await self.client.post(WORKSHOPS, json=body, headers=self.admin)
            self.workshops.append(response.json()["id"])
            return response
        if name == "register" and (workshop := self.pick(args[0])):
            self.people += 1
            person = someone(self.people, AGES[args[1] % len(AGES)], SOCIALS[args[2] % len(SOCIALS)])
            response = await self.client.post(f"{WORKSHOPS}/{workshop}/registrations", json=person)
            if response.status_code == 201:
                self.registrations.append((workshop, response.json()))
            return response
        if name == "unregister" and self.registrations:
            workshop, registration = self.registrations[args[0] % len(self.registrations)]
            response = await self.client.delete(
                f"{WORKSHOPS}/{workshop}/registrations/{registration['id']}",
                headers={"X-Cancel-Token": registration["cancel_token"]},
            )
            if response.status_code == 204:
                self.gone.add(registration["id"])
            return response
        if name == "move" and (workshop := self.pick(args[0])):
            changes = {
                "starts_at": INSTANTS[args[1]],
                "level": LEVELS[args[2] % 3],
                "themes": THEMES[args[2] % 3],
            }
            headers = {**self.admin, "If-Match": await self.etag(workshop)}
            return await self.client.patch(f"{WORKSHOPS}/{workshop}", json=changes, headers=headers)
        if name == "cancel" and (workshop := self.pick(args[0])):
            response = await self.client.post(
                f"{WORKSHOPS}/{workshop}/cancel", json={"reason": "Annulé"}, headers=self.admin
            )
            if response.status_code == 200:
                self.gone |= {r["id"] for w, r in self.registrations if w == workshop}
            return response
        if name == "report" and (workshop := self.pick(args[0])):
            mine = [r for w, r in self.registrations if w == workshop and r["id"] not in self.gone]
            marks = ("present", "absent", "present", "excused")
            report = {
                "registrations": [
                    {"id": r["id"], "attendance": marks[(i + args[1]) % 4]} for i, r in enumerate(mine)
                ],
                "walk_ins": {
                    "total": args[2],
                    "age_brackets": {"soixante_dix_plus": args[2]} if args[2] else {},
                    "social_statuses": {"retraite": args[2] - args[2] // 2, "sans_emploi": args[2] // 2}
                    if args[2]
                    else {},
                },
            }
            return await self.client.put(
                f"{WORKSHOPS}/{workshop}/attendance", json=report, headers=self.admin
            )
        return None


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
async def test_the_rollup_and_the_answers_follow_every_write(
    client: httpx.AsyncClient,
    connection: AsyncConnection,
    session: AsyncSession,
    place: Place,
    ops: list[tuple[Any, ...]],
) -> None:
    example = await connection.begin_nested()
    try:
        run = Run(client, place)
        for op in ops:
            response = await run.apply(op)
            if response is not None and response.status_code >= 400:
                assert response.json()["code"] in ACCEPTED, (op, response.text)
        assert await rollup_rows(session) == await rebuilt_rows(session)
        for starts, ends in RANGES:
            for group_by in ("none", "theme", "month", "territory", "level"):
                params = query(starts=starts, ends=ends, group_by=group_by)
                answer = (await client.get(f"{STATS}/workshops", params=params, headers=place.admin)).json()
                assert answer == await naive_workshops(
                    session, starts=starts, ends=ends, group_by=group_by
                ), params
        within = {"within": str(place.tree.rhone.id), "group_by": "month"}
        answer = (await client.get(f"{STATS}/workshops", params=within, headers=place.admin)).json()
        assert answer == await naive_workshops(session, within=place.tree.rhone.id, group_by="month")
    finally:
        await example.rollback()
