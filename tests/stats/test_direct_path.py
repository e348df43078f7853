"""The direct twins of `GET /stats/positions` and `GET /stats/workshops` answer exactly as the routes do
(`same_answers`, tests/conftest.py): each grouping and filter, a range with partial months at its edges,
with and without a key (statistical confidentiality), and the requests they hand over (an unknown
parameter, a value the route refuses)."""

from __future__ import annotations

import re
import uuid

import httpx

from app.core.direct import statement_observers
from tests.conftest import SameAnswers
from tests.stats.helpers import STATS, workshop_with
from tests.workshops.helpers import Place


async def test_workshop_statistics(
    same_answers: SameAnswers, client: httpx.AsyncClient, place: Place
) -> None:
    admin = place.admin
    await workshop_with(
        client,
        admin,
        place.lyon_position["id"],
        "2026-01-31T23:30:00Z",
        themes=["email", "sante"],
        capacity=2,
        people=(("douze_dix_huit", "scolarise"), (None, None)),
        present=(0, 1),
        walk_ins={"total": 1, "age_brackets": {"soixante_dix_plus": 1}, "social_statuses": {"retraite": 1}},
    )
    await workshop_with(
        client, admin, place.rhone_position["id"], "2026-03-10T09:00:00Z", people=((None, None),), seed=1
    )
    url = f"{STATS}/workshops"
    rhone = str(place.tree.rhone.id)
    for params in (
        {},
        {"group_by": "theme"},
        {"group_by": "month", "from": "2026-01-01", "to": "2026-12-31"},
        {"group_by": "territory", "from": "2026-01-15", "to": "2026-03-20"},
        {"group_by": "level", "within": rhone},
        {"territory_id": str(place.tree.lyon.id), "group_by": "theme"},
    ):
        anonymous = await same_answers(url, params=params)
        assert anonymous.status_code == 200
        assert (await same_answers(url, params=params, headers=admin)).status_code == 200
    total = (await same_answers(url, params={"group_by": "theme"}, headers=admin)).json()["totals"]
    assert (total["held"], total["attendees"]) == (1, 3)
    # Values the route refuses, and a parameter it does not declare: the route answers.
    for params in ({"group_by": "week"}, {"from": "2026-13-01"}, {"unknown": "1"}):
        assert (await same_answers(url, params=params, direct=False)).status_code == 422
    assert (await same_answers(url, params={"from": "2026-02-01", "to": "2026-01-01"})).status_code == 422
    assert (await same_answers(url, params={"within": str(uuid.uuid4())})).status_code == 422


async def test_position_statistics(same_answers: SameAnswers, place: Place) -> None:
    url = f"{STATS}/positions"
    for params in (
        {},
        {"group_by": "territory"},
        {"group_by": "kind"},
        {"group_by": "territory", "within": str(place.tree.rhone.id)},
    ):
        assert (await same_answers(url, params=params)).status_code == 200
        assert (await same_answers(url, params=params, headers=place.admin)).status_code == 200
    assert (await same_answers(url, params={"group_by": "x"}, direct=False)).status_code == 422
    # The programme is read through the ORM: the route answers.
    unknown = await same_answers(url, params={"programme_id": str(uuid.uuid4())}, direct=False)
    assert unknown.status_code == 422


async def test_a_direct_answer_reads_the_same_few_statements(client: httpx.AsyncClient, place: Place) -> None:
    sent: list[str] = []
    statement_observers.append(sent.append)
    try:
        params = {
            "from": "2025-01-15",
            "to": "2025-12-10",
            "group_by": "theme",
            "within": str(place.tree.rhone.id),
        }
        response = await client.get(f"{STATS}/workshops", params=params)
        assert response.status_code == 200, response.text
        # The subtree's path, the whole months from the rollup, the two partial months from the workshops.
        assert len(sent) == 4, sent
        assert not any(re.search(r"(FROM|JOIN)\s+registrations\b", s, re.IGNORECASE) for s in sent), sent
        sent.clear()
        response = await client.get(f"{STATS}/positions", params={"group_by": "kind"})
        assert response.status_code == 200, response.text
        assert len(sent) == 2, sent
    finally:
        statement_observers.remove(sent.append)
