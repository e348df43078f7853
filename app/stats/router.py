"""HTTP handlers of /stats: public aggregates of positions and workshops."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any

from fastapi import Query, Request, Response

from app.core.auth import PrincipalDep, resolve_principal
from app.core.csv import csv_header_responses, csv_rows_response, vary_accept
from app.core.direct import DirectSession, as_session, direct
from app.core.media import Separator, SepQuery, scope_accepts_csv
from app.core.problems import problem_responses
from app.core.responses import json_response
from app.core.routers import api_router
from app.core.types import QueryDay
from app.db import SessionDep
from app.stats import service
from app.stats.schemas import PositionStats, WorkshopStats

router = api_router("/stats", tags=["statistics"])

TerritoryQuery = Annotated[
    uuid.UUID | None,
    Query(description="Only this territory (an unknown id → 422 `validation_error`)."),
]
WithinQuery = Annotated[
    uuid.UUID | None,
    Query(
        description="A territory id: it and its whole subtree (an unknown id → 422 `validation_error`, as "
        "for the lists' `within`)."
    ),
]

PUBLIC_DOC = (
    "Public (no key needed), aggregated, no personal data. A key does not restrict these figures: a "
    "scoped key sees the same national figures as anyone; filter with `territory_id` or `within`. "
    "`territory_id` and `within` may be combined (both apply). Without a key the answer carries "
    "`Cache-Control: public, max-age=60`. With `Accept: text/csv` (and `sep=semicolon` for French "
    "spreadsheet software): the group key's column (`group` for `group_by=none`), then the figures, the "
    "breakdowns flattened (`age_brackets_<value>`), one row per item then a `total` row; a suppressed cell "
    "is empty. "
)

POSITIONS_DOC = (
    PUBLIC_DOC + "Every figure is attributed to the **agreement's territory** (the employer): `granted` and "
    "`subsidy_committed_cents` are the sums of the draft and signed agreements (a draft reserves; a "
    "terminated agreement frees its positions), exactly as the programme totals count them; `open` "
    "(not closed), `occupied` (an assignment covers today, UTC), `vacant` (open − occupied) and `closed` "
    "count the positions of the agreements there, whatever the descendant territory a counsellor works in; "
    "`occupancy_rate` = occupied ÷ open (0 to 1, null when nothing is open). So `territory_id`, `within` "
    "and `group_by` apply to the agreement's territory for every figure, and the items of any grouping add "
    "up to the totals. `group_by=territory`: one item per agreement territory that has an agreement or a "
    "position (`territory_id`), in id order; `group_by=kind`: one item per kind of the referential "
    "`territory_kinds` (`kind`: `region`, `departement`, `metropole`, `epci`, `commune`, zeros included); "
    "`none` (default): `items` is empty. To count positions by the territory where counsellors work, list "
    "them: `GET /positions?territory_id=`. An unknown `programme_id` → 422 `validation_error`."
)

WORKSHOPS_DOC = (
    PUBLIC_DOC
    + "Counts the workshops (public or not) whose `starts_at` falls between `from` and `to` (days, both "
    "inclusive, in UTC; each bound optional; `from` after `to` → 422 `validation_error`): `held` "
    "(completed: their activity report is in), `cancelled`, `registrations` (confirmed ones: waitlisted "
    "and cancelled registrations are not counted; a cancelled workshop has none), `attendees` (present "
    "registrations plus walk-ins) and their breakdowns `age_brackets` and `social_statuses`, "
    "`{value: count}` with every value of the referential (0 included; a present registration without a "
    "bracket or status counts as `non_communique`). The territory is the workshop's (its position's). "
    "`group_by`: `theme` (one item per theme of the referential, in its order; a workshop with several "
    "themes counts in each of its themes' items, once in `totals`, so the items do not add up to the "
    "totals), `month` (`YYYY-MM` of `starts_at` in UTC, in order, the months with a figure other than 0), "
    "`territory` (`territory_id` of the workshop, in id order, those with a figure other than 0), "
    "`level` (one item per level of the referential), `none` (default: `items` is empty). "
    "**Statistical confidentiality** (callers without a key; INSEE's rule for counts of persons): a "
    "breakdown cell from 1 to 10 (setting `STATS_DISCLOSURE_THRESHOLD`, 11 by default, minus 1) is `null`, "
    "in `items` and in `totals` alike; 0 stays 0 and the scalar figures stay exact; and no `null` cell may "
    "be recoverable by adding and subtracting the published figures of the same answer: a lone `null` in "
    "a breakdown is recoverable from the exact `attendees`, so the smallest other non-zero cell is `null` "
    "too, and the same holds down the columns, between `items` and `totals`. Callers with a key get exact "
    "cells. Figures come from per-workshop counts written with the activity report: erasing a registrant's "
    "personal data later does not change them."
)


@router.get(
    "/positions",
    response_model=PositionStats,
    summary="Statistics of positions",
    description=POSITIONS_DOC,
    responses=csv_header_responses(["territory_id", *service.POSITION_FIGURE_COLUMNS])
    | problem_responses(401, 422),
)
async def stats_positions(
    request: Request,
    session: SessionDep,
    programme_id: Annotated[uuid.UUID | None, Query(description="Only this programme's agreements.")] = None,
    territory_id: TerritoryQuery = None,
    within: WithinQuery = None,
    group_by: Annotated[
        service.PositionGroup, Query(description="`territory`, `kind` or `none` (default).")
    ] = service.PositionGroup.none,
    sep: SepQuery = Separator.comma,
) -> Response:
    answer = await service.position_stats(
        session, programme_id=programme_id, territory_id=territory_id, within=within, group_by=group_by
    )
    return _answer(request, answer, group_by.value, service.POSITION_FIGURE_COLUMNS, sep, "stats-positions")


# The direct twins (app.core.direct): the same service calls without FastAPI's request handling and the ORM
# session, each answer read in one snapshot (the territory filters' paths, then the sums).
@direct("stats_positions", snapshot=True)
async def stats_positions_direct(
    request: Request,
    session: DirectSession,
    *,
    programme_id: uuid.UUID | None,
    territory_id: uuid.UUID | None,
    within: uuid.UUID | None,
    group_by: service.PositionGroup,
    sep: Separator,
) -> Response | None:
    answer = await service.position_stats(
        as_session(session),
        programme_id=programme_id,
        territory_id=territory_id,
        within=within,
        group_by=group_by,
    )
    # A request for CSV never reaches a twin (app.core.direct leaves it to the route).
    return _answer(request, answer, group_by.value, service.POSITION_FIGURE_COLUMNS, sep, "stats-positions")


@router.get(
    "/workshops",
    response_model=WorkshopStats,
    summary="Statistics of workshops",
    description=WORKSHOPS_DOC,
    responses=csv_header_responses(["month", *service.workshop_figure_columns()])
    | problem_responses(401, 422),
)
async def stats_workshops(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    territory_id: TerritoryQuery = None,
    within: WithinQuery = None,
    starts: Annotated[
        QueryDay | None,
        Query(
            alias="from",
            description="First day (UTC) of `starts_at`, inclusive (1900-01-01 to 2999-12-31).",
            examples=["2026-01-01"],
        ),
    ] = None,
    ends: Annotated[
        QueryDay | None,
        Query(
            alias="to",
            description="Last day (UTC) of `starts_at`, inclusive (1900-01-01 to 2999-12-31).",
            examples=["2026-12-31"],
        ),
    ] = None,
    group_by: Annotated[
        service.WorkshopGroup,
        Query(description="`theme`, `month`, `territory`, `level` or `none` (default)."),
    ] = service.WorkshopGroup.none,
    sep: SepQuery = Separator.comma,
) -> Response:
    answer = await service.workshop_stats(
        session,
        principal,
        territory_id=territory_id,
        within=within,
        starts=starts,
        ends=ends,
        group_by=group_by,
        threshold=request.app.state.settings.stats_disclosure_threshold,
    )
    return _answer(request, answer, group_by.value, service.workshop_figure_columns(), sep, "stats-workshops")


def _answer(
    request: Request, answer: dict[str, Any], group_by: str, figures: list[str], sep: Separator, name: str
) -> Response:
    """JSON, or with `Accept: text/csv` the same figures as one row per item and a `total` row."""
    if scope_accepts_csv(request.scope["headers"]):
        columns, rows = service.csv_table(answer, group_by, figures)
        response = csv_rows_response(columns, rows, sep, filename=name)
    else:
        response = json_response(answer)
    vary_accept(response)
    return response


@direct("stats_workshops", snapshot=True)
async def stats_workshops_direct(
    request: Request,
    session: DirectSession,
    *,
    territory_id: uuid.UUID | None,
    within: uuid.UUID | None,
    starts: date | None,
    ends: date | None,
    group_by: service.WorkshopGroup,
    sep: Separator,
) -> Response | None:
    answer = await service.workshop_stats(
        as_session(session),
        await resolve_principal(request, session),
        territory_id=territory_id,
        within=within,
        starts=starts,
        ends=ends,
        group_by=group_by,
        threshold=request.app.state.settings.stats_disclosure_threshold,
    )
    # A request for CSV never reaches a twin (app.core.direct leaves it to the route).
    return _answer(request, answer, group_by.value, service.workshop_figure_columns(), sep, "stats-workshops")
