"""HTTP handlers of /audit-events (admin)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, Request, Response

from app.audit import repository as repo
from app.audit.schemas import AuditEventPage, AuditEventRead, EventKind
from app.core.auth import AdminDep
from app.core.csv import csv_responses, list_response
from app.core.listing import PageDep
from app.core.pagination import PageRequest
from app.core.problems import ValidationFailed, problem_responses
from app.core.routers import api_router
from app.core.schemas import Timestamp
from app.core.types import Code
from app.db import SessionDep

router = api_router("/audit-events", tags=["audit"])


@router.get(
    "",
    response_model=AuditEventPage,
    summary="List audit events",
    description="Admin. The audit trail: one `write` event per object written (who, with which operation, "
    "the changed fields with personal values masked, the request id), and the personal-data journal: one "
    "`read` event per answer that showed people (`subject_ids`). Newest first. `resource_id` finds an "
    "object's writes and the journal lines of the answers that returned that person. Viewers, managers and "
    "counsellor keys → 403; no key → 401.",
    responses=csv_responses(AuditEventRead) | problem_responses(401, 403, 422),
)
async def audit_events_list(
    request: Request,
    session: SessionDep,
    _admin: AdminDep,
    page: PageDep,
    resource: Annotated[
        Code | None, Query(max_length=32, description="The plural path segment.", examples=["counsellors"])
    ] = None,
    resource_id: Annotated[
        uuid.UUID | None, Query(description="An object: its writes, and the reads that returned it.")
    ] = None,
    actor: Annotated[uuid.UUID | None, Query(description="An API key id.")] = None,
    occurred_from: Annotated[
        Timestamp | None, Query(alias="from", description="At or after this instant (RFC 3339).")
    ] = None,
    occurred_to: Annotated[
        Timestamp | None, Query(alias="to", description="Before this instant (RFC 3339).")
    ] = None,
    kind: EventKind | None = None,
) -> Response:
    if occurred_from is not None and occurred_to is not None and occurred_to < occurred_from:
        raise ValidationFailed("/query/to", "must be at or after `from`")
    filters = repo.Filters(
        resource=resource,
        resource_id=resource_id,
        actor=actor,
        occurred_from=occurred_from,
        occurred_to=occurred_to,
        kind=kind.value if kind else None,
    )

    async def fetch(db: object, p: PageRequest) -> tuple[list[dict[str, object]], str | None, int | None]:
        return await repo.list_page(db, p, filters)  # type: ignore[arg-type]

    return await list_response(request, session, page, AuditEventRead, fetch)
