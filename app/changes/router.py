"""HTTP handler of GET /changes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response

from app.changes import service
from app.changes.schemas import ChangePage, ChangeRead
from app.core.auth import KeyHolderDep
from app.core.csv import csv_responses, csv_stream_response, vary_accept
from app.core.media import Separator, SepQuery, scope_accepts_csv
from app.core.pagination import MAX_LIMIT
from app.core.problems import problem_responses
from app.core.responses import json_response
from app.core.routers import api_router
from app.db import SessionDep

router = api_router("/changes", tags=["changes"])


@router.get(
    "",
    response_model=ChangePage,
    summary="Read the change feed",
    description="Every creation and change of agreements, positions, counsellors, assignments and "
    "workshops (their time, venue, cancellation...: what a notification service tells registrants), in the "
    "order of a cursor that never skips a committed change, even when transactions commit out of order. "
    "Without `after` the feed starts at the beginning; `next_after` is always present (unchanged when no "
    "item comes back): poll with it. Roles: `admin` (everything), `territory_manager` (objects of its "
    "territories and their descendants), `viewer` (the same, except counsellors and assignments, which "
    "are personal data); `counsellor` → 403, no key → 401. A change shows up once every transaction of the "
    "database that had written something before it has ended (usually within milliseconds; one that has "
    "written no change is waited for 60 s at most). `after` that is not a cursor of this feed → 422 "
    "`invalid_cursor`. With `Accept: text/csv`, every change after `after` up to the end of the feed, in "
    "one CSV (`limit` does not apply; the last line's `cursor` is where to go on from).",
    responses=csv_responses(ChangeRead) | problem_responses(401, 403, 422),
)
async def changes_list(
    request: Request,
    session: SessionDep,
    principal: KeyHolderDep,
    after: Annotated[
        str | None,
        Query(
            max_length=64, description="A `cursor` or `next_after` from an earlier answer.", examples=["0.42"]
        ),
    ] = None,
    resource: Annotated[
        list[service.Resource] | None,
        Query(description="Only changes of these resources (repeatable)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many changes, 1 to 200.")] = 50,
    sep: SepQuery = Separator.comma,
) -> Response:
    metrics = request.app.state.metrics
    if scope_accepts_csv(request.scope["headers"]):
        batches = service.feed_batches(principal, resource)
        streamed = await csv_stream_response(request, session, ChangeRead, batches, after, sep)
        metrics.change_feed_reads.labels("csv").inc()
        return streamed
    page = await service.read_feed(session, principal, after=after, resources=resource, limit=limit)
    metrics.change_feed_reads.labels("json").inc()
    metrics.change_feed_items.inc(len(page["items"]))
    response = json_response(page)
    vary_accept(response)
    return response
