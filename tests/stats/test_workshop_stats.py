"""GET /stats/workshops: each figure, each grouping and filter, date edges in UTC, against a naive
recomputation from the rows; statistical confidentiality for callers without a key; the rollup the
triggers keep equals its rebuild."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.helpers import assert_problem
from tests.stats.helpers import (
    STATS,
    naive_workshops,
    query,
    rebuilt_rows,
    rollup_rows,
    workshop_with,
)
from tests.workshops.helpers import WORKSHOPS, Place

URL = f"{STATS}/workshops"


@dataclass
class Scene:
    place: Place
    january: dict[str, Any]  # 2026-01-31 23:30 UTC (already February in Paris): held, 4 attendees
    february: dict[str, Any]  # 2026-02-01 00:30 UTC: held, 1 walk-in
    cancelled: dict[str, Any]  # 2026-02-15: cancelled
    march: dict[str, Any]  # 2026-03-10, in the Rhône: scheduled, 1 registration


@pytest.fixture
async def scene(client: httpx.AsyncClient, place: Place) -> Scene:
    admin, lyon, rhone = place.admin, place.lyon_position["id"], place.rhone_position["id"]
    january = await workshop_with(
        client,
        admin,
        lyon,
        "2026-01-31T23:30:00Z",
        themes=["email", "sante"],
        capacity=2,
        waitlist_capacity=2,
        # Two confirmed, two waitlisted (one of whom cancels): 2 registrations.
        people=(
            ("vingt_cinq_trente_neuf", "retraite"),
            (None, None),
            ("douze_dix_huit", "scolarise"),
            ("douze_dix_huit", "scolarise"),
        ),
        cancelled=(3,),
        present=(0, 1),
        walk_ins={
            "total": 2,
            "age_brackets": {"soixante_dix_plus": 2},
            "social_statuses": {"retraite": 1, "non_communique": 1},
        },
        seed=1,
    )
    february = await workshop_with(
        client,
        admin,
        lyon,
        "2026-02-01T00:30:00Z",
        themes=["email"],
        level="avance",
        walk_ins={"total": 1, "age_brackets": {"moins_de_douze": 1}, "social_statuses": {"scolarise": 1}},
        seed=2,
    )
    cancelled = await workshop_with(
        client, admin, lyon, "2026-02-15T10:00:00Z", people=((None, None),), cancel=True, seed=3
    )
    march = await workshop_with(
        client, admin, rhone, "2026-03-10T09:00:00Z", people=(("soixante_dix_plus", None),), seed=4
    )
    return Scene(place, january, february, cancelled, march)


async def get(client: httpx.AsyncClient, headers: dict[str, str] | None = None, **params: Any) -> Any:
    response = await client.get(URL, params=query(**params), headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_figures(client: httpx.AsyncClient, scene: Scene) -> None:
    body = await get(client, scene.place.admin)
    assert body["items"] == []
    totals = body["totals"]
    assert (totals["held"], totals["cancelled"], totals["registrations"], totals["attendees"]) == (2, 1, 3, 5)
    # The registrant who gave no bracket nor status counts as `non_communique`; every value is present.
    assert totals["age_brackets"] == {
        "moins_de_douze": 1,
        "douze_dix_huit": 0,
        "dix_huit_vingt_quatre": 0,
        "vingt_cinq_trente_neuf": 1,
        "quarante_cinquante_neuf": 0,
        "soixante_soixante_neuf": 0,
        "soixante_dix_plus": 2,
        "non_communique": 1,
    }
    assert totals["social_statuses"] == {
        "scolarise": 1,
        "sans_emploi": 0,
        "en_emploi": 0,
        "retraite": 2,
        "non_communique": 2,
    }


async def test_group_by_theme_counts_a_workshop_in_each_of_its_themes_and_once_in_totals(
    client: httpx.AsyncClient, scene: Scene
) -> None:
    body = await get(client, scene.place.admin, group_by="theme")
    items = {item["theme"]: item for item in body["items"]}
    assert len(items) == len(body["items"]) == 19
    assert (items["email"]["held"], items["email"]["attendees"]) == (2, 5)
    assert (items["sante"]["held"], items["sante"]["attendees"]) == (1, 4)
    assert items["insertion_professionnelle"]["cancelled"] == 1
    assert items["insertion_professionnelle"]["registrations"] == 1
    assert items["bureautique"]["held"] == 0
    assert (body["totals"]["held"], body["totals"]["attendees"]) == (2, 5)


async def test_group_by_month_takes_months_in_utc(client: httpx.AsyncClient, scene: Scene) -> None:
    body = await get(client, scene.place.admin, group_by="month")
    assert [(i["month"], i["held"], i["cancelled"], i["registrations"]) for i in body["items"]] == [
        ("2026-01", 1, 0, 2),
        ("2026-02", 1, 1, 0),
        ("2026-03", 0, 0, 1),
    ]


async def test_group_by_territory_and_level(client: httpx.AsyncClient, scene: Scene) -> None:
    tree = scene.place.tree
    body = await get(client, scene.place.admin, group_by="territory")
    by_territory = {i["territory_id"]: (i["held"], i["registrations"]) for i in body["items"]}
    assert by_territory == {str(tree.lyon.id): (2, 2), str(tree.rhone.id): (0, 1)}
    assert [i["territory_id"] for i in body["items"]] == sorted(by_territory)
    body = await get(client, scene.place.admin, group_by="level")
    assert [(i["level"], i["held"], i["attendees"]) for i in body["items"]] == [
        ("debutant", 1, 4),
        ("intermediaire", 0, 0),
        ("avance", 1, 1),
    ]


@pytest.mark.parametrize(
    ("starts", "ends", "held", "cancelled", "registrations"),
    [
        (date(2026, 1, 31), date(2026, 1, 31), 1, 0, 2),  # one day, the last of January (UTC)
        (date(2026, 2, 1), date(2026, 2, 1), 1, 0, 0),  # the first of February
        (date(2026, 2, 1), date(2026, 2, 28), 1, 1, 0),  # a whole month
        (date(2026, 1, 31), date(2026, 3, 1), 2, 1, 2),  # two edges around a whole month
        (date(2026, 1, 15), date(2026, 2, 10), 2, 0, 2),  # the end of one month, the start of the next
        (date(2026, 2, 2), None, 0, 1, 1),  # from only
        (None, date(2026, 1, 31), 1, 0, 2),  # to only, the last day of a month
        (None, date(2026, 2, 14), 2, 0, 2),  # to only, within a month
        (date(2026, 4, 1), date(2026, 12, 31), 0, 0, 0),  # nothing
    ],
)
async def test_date_range(
    client: httpx.AsyncClient,
    session: AsyncSession,
    scene: Scene,
    starts: date | None,
    ends: date | None,
    held: int,
    cancelled: int,
    registrations: int,
) -> None:
    body = await get(client, scene.place.admin, starts=starts, ends=ends)
    totals = body["totals"]
    assert (totals["held"], totals["cancelled"], totals["registrations"]) == (held, cancelled, registrations)
    for group_by in ("none", "theme", "month", "territory", "level"):
        answer = await get(client, scene.place.admin, starts=starts, ends=ends, group_by=group_by)
        assert answer == await naive_workshops(session, starts=starts, ends=ends, group_by=group_by), group_by


async def test_territory_filters(client: httpx.AsyncClient, session: AsyncSession, scene: Scene) -> None:
    tree = scene.place.tree
    cases: list[dict[str, Any]] = [
        {"territory_id": tree.lyon.id},
        {"territory_id": tree.rhone.id},
        {"territory_id": tree.toulouse.id},
        {"within": tree.rhone.id},  # the Rhône itself (the root is included), not the Métropole de Lyon
        {"within": tree.lyon_metro.id},
        {"within": tree.ara.id},
        {"within": tree.ara.id, "territory_id": tree.rhone.id},
        {"within": tree.lyon_metro.id, "starts": date(2026, 2, 1), "ends": date(2026, 3, 31)},
    ]
    expected_held = [2, 0, 0, 0, 2, 2, 0, 1]
    for params, held in zip(cases, expected_held, strict=True):
        for group_by in ("none", "theme", "month", "territory", "level"):
            answer = await get(client, scene.place.admin, group_by=group_by, **params)
            assert answer == await naive_workshops(session, group_by=group_by, **params), (params, group_by)
            assert answer["totals"]["held"] == held, params
    rhone = await get(client, scene.place.admin, within=tree.rhone.id)
    assert rhone["totals"]["registrations"] == 1


async def test_the_rollup_equals_its_rebuild(
    client: httpx.AsyncClient, session: AsyncSession, scene: Scene
) -> None:
    kept = await rollup_rows(session)
    assert kept == await rebuilt_rows(session)
    # 4 workshops: 4 rows where each counts once, and one per (workshop, theme) with a figure.
    assert sum(key[3] == "" for key in kept) == 4
    # Moving a workshop to another month and level moves its figures; the old row goes back to zero.
    await _patch(client, scene, scene.march["id"], {"starts_at": "2026-04-02T08:00:00Z", "level": "avance"})
    kept = await rollup_rows(session)
    assert kept == await rebuilt_rows(session)
    assert not any(key[1] == "2026-03" for key in kept)
    body = await get(client, scene.place.admin, group_by="month")
    assert [i["month"] for i in body["items"]] == ["2026-01", "2026-02", "2026-04"]


async def _patch(client: httpx.AsyncClient, scene: Scene, workshop_id: str, changes: dict[str, Any]) -> None:
    etag = (await client.get(f"{WORKSHOPS}/{workshop_id}", headers=scene.place.admin)).headers["etag"]
    response = await client.patch(
        f"{WORKSHOPS}/{workshop_id}", json=changes, headers={**scene.place.admin, "If-Match": etag}
    )
    assert response.status_code == 200, response.text


async def test_erasing_nothing_else_changes_the_figures(
    client: httpx.AsyncClient, session: AsyncSession, scene: Scene
) -> None:
    """The figures come from the per-workshop columns written with the report: a registrant's bracket
    erased afterwards (GDPR) leaves them as they were."""
    from sqlalchemy import update

    from app.workshops.models import Registration

    before = await get(client, scene.place.admin)
    await session.execute(update(Registration).values(age_bracket=None, social_status=None, email="x@x.fr"))
    await session.flush()
    assert await get(client, scene.place.admin) == before


def _cells(answer: dict[str, Any]) -> list[tuple[str, str, str, Any]]:
    rows = [("totals", answer["totals"])] + [(str(i), item) for i, item in enumerate(answer["items"])]
    return [
        (where, name, key, value)
        for where, row in rows
        for name in ("age_brackets", "social_statuses")
        for key, value in row[name].items()
    ]


@pytest.mark.parametrize("group_by", ["none", "theme", "month", "territory", "level"])
async def test_callers_without_a_key_get_no_small_cells(
    client: httpx.AsyncClient, scene: Scene, group_by: str
) -> None:
    exact = await get(client, scene.place.world.lyon_viewer, group_by=group_by)
    public = await get(client, group_by=group_by)
    scalars = ("held", "cancelled", "registrations", "attendees")
    assert [{k: i[k] for k in scalars} for i in public["items"]] == [
        {k: i[k] for k in scalars} for i in exact["items"]
    ]
    assert {k: public["totals"][k] for k in scalars} == {k: exact["totals"][k] for k in scalars}
    hidden = 0
    for (where, name, key, shown), (_, _, _, value) in zip(_cells(public), _cells(exact), strict=True):
        if value == 0:
            assert shown == 0, (where, name, key)
        elif value < 11:
            assert shown is None, (where, name, key, value)
            hidden += 1
        else:
            assert shown in (value, None), (where, name, key)
    assert hidden > 0
    # The public answer may be kept by a shared cache for a minute; a key's never.
    assert (await client.get(URL, params={"group_by": group_by})).headers[
        "cache-control"
    ] == "public, max-age=60"
    keyed = await client.get(URL, params={"group_by": group_by}, headers=scene.place.admin)
    assert keyed.headers["cache-control"] == "private, no-store"
    # A key, whatever its territories, reads the exact cells.
    assert exact == await get(client, scene.place.admin, group_by=group_by)
    assert any(value not in (0, None) for *_, value in _cells(exact))


async def test_refusals(client: httpx.AsyncClient, place: Place) -> None:
    assert_problem(
        await client.get(URL, params={"from": "2026-02-02", "to": "2026-02-01"}),
        422,
        "validation_error",
        "/query/to",
    )
    unknown = "0190aaaa-0000-7000-8000-00000000dead"
    assert_problem(
        await client.get(URL, params={"territory_id": unknown}),
        422,
        "validation_error",
        "/query/territory_id",
    )
    assert_problem(
        await client.get(URL, params={"within": unknown}), 422, "validation_error", "/query/within"
    )
    assert_problem(await client.get(URL, params={"theme": "email"}), 422, "validation_error", "/query/theme")
    assert_problem(await client.get(URL, params={"group_by": "kind"}), 422, "validation_error")
    assert_problem(await client.get(URL, params={"from": "2026-02-30"}), 422, "validation_error")
    assert_problem(await client.get(URL, params={"to": "9999-12-31"}), 422, "validation_error", "/query/to")
    assert_problem(
        await client.get(URL, params={"from": "0001-01-01"}), 422, "validation_error", "/query/from"
    )
    assert_problem(await client.get(URL, params={"within": "lyon"}), 422, "validation_error")
    bad_key = {"Authorization": "Bearer cnfs_not-a-key"}
    assert_problem(await client.get(URL, headers=bad_key), 401, "unauthenticated")
