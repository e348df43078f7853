"""Rules of the positions domain: positions under signed agreements, their derived status, and assignments
(no two on one position on the same day, no counsellor in two positions on the same day).

Lock order, shared with the agreements domain so that no two writers wait on each other crosswise:
programme → agreement → position(s) → counsellor. A position is created under its programme's and its
agreement's locks (as amendments and terminations are), so `agreement_positions_exhausted` holds whatever
the concurrency; an assignment is written under its position's and its counsellor's locks."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.agreements import service as agreements
from app.agreements.errors import AgreementNotSigned
from app.agreements.models import AgreementStatus
from app.core import changes
from app.core.auth import Principal, Role
from app.core.changes import Action
from app.core.pagination import PageRequest
from app.core.problems import FieldError, Forbidden, NotFound, UnknownReference, ValidationFailed
from app.core.versioning import require_if_match
from app.counsellors import service as counsellors
from app.db import utcnow
from app.positions import repository as repo
from app.positions.errors import (
    AgreementPositionsExhausted,
    AssignmentAlreadyEnded,
    CounsellorAlreadyAssigned,
    PositionClosed,
    PositionExternalRefExists,
    PositionOccupied,
    TerritoryOutsideAgreement,
)
from app.positions.models import Assignment, Position, PositionStatus, today
from app.positions.schemas import (
    AssignmentCreate,
    AssignmentEnd,
    AssignmentRead,
    PositionClose,
    PositionCreate,
    PositionCurrentAssignment,
    PositionRead,
    PositionUpdate,
)
from app.territories import service as territories

RESOURCE = "positions"
ASSIGNMENTS = "assignments"
PERSONAL_READERS = (Role.admin, Role.territory_manager)


def reads_personal_data(principal: Principal) -> bool:
    return principal.role in PERSONAL_READERS


def status_of(position: Position, current: dict[str, Any] | None) -> PositionStatus:
    if position.closed_on is not None:
        return PositionStatus.closed
    return PositionStatus.occupied if current is not None else PositionStatus.vacant


def to_read(position: Position, current: dict[str, Any] | None, principal: Principal) -> PositionRead:
    if position.closed_on is not None:
        current = None
    shown = current if current is not None and reads_personal_data(principal) else None
    return PositionRead(
        id=position.id,
        agreement_id=position.agreement_id,
        territory_id=position.territory_id,
        external_ref=position.external_ref,
        typology=position.typology,
        status=status_of(position, current),
        current_assignment=PositionCurrentAssignment.model_validate(shown) if shown else None,
        opened_on=position.opened_on,
        closed_on=position.closed_on,
        close_reason=position.close_reason,
        created_at=position.created_at,
        updated_at=position.updated_at,
        version=position.version,
    )


async def read(session: AsyncSession, position: Position, principal: Principal) -> PositionRead:
    """The read model of a position just written (an ORM object)."""
    current = await repo.current_assignments(session, [position.id])
    return to_read(position, current.get(position.id), principal)


async def fill_current(session: AsyncSession, rows: Sequence[dict[str, Any]], principal: Principal) -> None:
    """Puts `current_assignment` into read rows (dicts of `repo.READ`, whose `status` is already derived)
    for the roles that may read personal data: one query for a whole page, none when no position of it is
    occupied. Viewers keep the null placeholder."""
    if not reads_personal_data(principal):
        return
    occupied = [row["id"] for row in rows if row["status"] == PositionStatus.occupied]
    if not occupied:
        return
    current = await repo.current_assignments(session, occupied)
    for row in rows:
        row["current_assignment"] = current.get(row["id"])


async def visible_row(session: AsyncSession, position_id: uuid.UUID, principal: Principal) -> dict[str, Any]:
    """The read row of a position the caller may read, before `fill_current` (404 otherwise)."""
    row = await repo.read_row(session, position_id, principal)
    if row is None:
        raise NotFound("no position with this id")
    data: dict[str, Any] = row._asdict()
    return data


def assignment_read(assignment: Assignment) -> AssignmentRead:
    day = today()
    active = assignment.started_on <= day and (assignment.ended_on is None or day <= assignment.ended_on)
    return AssignmentRead(
        id=assignment.id,
        position_id=assignment.position_id,
        counsellor_id=assignment.counsellor_id,
        contract_type=assignment.contract_type,
        started_on=assignment.started_on,
        ends_on=assignment.ends_on,
        ended_on=assignment.ended_on,
        end_reason=assignment.end_reason,
        active=active,
        created_at=assignment.created_at,
        updated_at=assignment.updated_at,
        version=assignment.version,
    )


async def get_visible(session: AsyncSession, position_id: uuid.UUID, principal: Principal) -> Position:
    """The position if the caller may read it (404 alike when absent or outside the scope); for other
    domains that attach to a position (workshops)."""
    position = await repo.get(session, position_id, principal)
    if position is None:
        raise NotFound("no position with this id")
    return position


async def get_for_change(session: AsyncSession, position_id: uuid.UUID, principal: Principal) -> Position:
    """The position, locked until the transaction ends (404 alike when absent or outside the scope)."""
    position = await repo.get(session, position_id, principal, for_update=True)
    if position is None:
        raise NotFound("no position with this id")
    return position


async def list_positions(
    session: AsyncSession,
    principal: Principal,
    page: PageRequest,
    *,
    agreement_id: uuid.UUID | None = None,
    territory_id: uuid.UUID | None = None,
    within: uuid.UUID | None = None,
    status: PositionStatus | None = None,
    external_ref: str | None = None,
    updated_since: datetime | None = None,
    sort: str | None = None,
) -> tuple[Sequence[dict[str, Any]], str | None, int | None]:
    """A page of the positions the caller may read, as read rows: one query (the status derived in it), one
    for the current assignments of a personal-data reader's occupied positions, one for the total when
    asked. `status` filters in SQL."""
    keys = repo.sort_keys(sort)
    rows, next_cursor, total = await repo.list_page(
        session,
        page,
        keys,
        principal,
        agreement_id=agreement_id,
        territory_id=territory_id,
        within_path=await agreements.subtree_path(session, within, principal),
        status=status,
        external_ref=external_ref,
        updated_since=updated_since,
    )
    await fill_current(session, rows, principal)
    return rows, next_cursor, total


async def _check_territory(
    session: AsyncSession, territory_id: uuid.UUID, agreement_territory_id: uuid.UUID, principal: Principal
) -> None:
    """The territory exists in the caller's scope (else `unknown_reference`) and in the agreement's
    subtree (else `territory_outside_agreement`)."""
    territory = await territories.get_in_scope(session, territory_id, principal)
    if territory is None:
        raise UnknownReference("/territory_id", "no territory with this id in your territories")
    root = await territories.get(session, agreement_territory_id)
    if not territory.path.startswith(root.path):
        detail = "the position's territory must be the agreement's territory or one of its descendants"
        raise TerritoryOutsideAgreement(detail, errors=[FieldError(pointer="/territory_id", detail=detail)])


async def _check_external_ref(
    session: AsyncSession, agreement_territory_id: uuid.UUID, ref: str | None, exclude_id: uuid.UUID | None
) -> None:
    if ref is not None and await repo.external_ref_taken(session, agreement_territory_id, ref, exclude_id):
        raise PositionExternalRefExists(
            "another position of the agreement's territory already has this external_ref"
        )


def _check_opens_within(opened_on: date, starts_on: date, ends_on: date | None) -> None:
    """A position opens within its agreement's period, bounds included: the agreement funds it from
    `starts_on` to `ends_on` (open-ended when null). Its assignments start on or after `opened_on`, so none
    starts before the agreement either."""
    if opened_on < starts_on:
        raise ValidationFailed(
            "/opened_on", f"must be on or after the agreement's starts_on ({starts_on.isoformat()})"
        )
    if ends_on is not None and opened_on > ends_on:
        raise ValidationFailed(
            "/opened_on", f"must be on or before the agreement's ends_on ({ends_on.isoformat()})"
        )


async def create(session: AsyncSession, data: PositionCreate, principal: Principal) -> Position:
    """A new open position, under the programme's and the agreement's locks (see the module)."""
    agreement = await agreements.get_for_positions(session, data.agreement_id, principal)
    if agreement is None:
        raise UnknownReference("/agreement_id", "no agreement with this id in your territories")
    territory_id = data.territory_id or agreement.territory_id
    await _check_territory(session, territory_id, agreement.territory_id, principal)
    _check_opens_within(data.opened_on, agreement.starts_on, agreement.ends_on)
    if agreement.status != AgreementStatus.signed:
        raise AgreementNotSigned(f"positions open under a signed agreement; this one is {agreement.status}")
    await _check_external_ref(session, agreement.territory_id, data.external_ref, None)
    open_positions = await repo.count_open(session, agreement.id)
    if open_positions >= agreement.positions_granted:
        raise AgreementPositionsExhausted(
            f"the agreement grants {agreement.positions_granted} positions and all are open",
            extra={"positions_granted": agreement.positions_granted, "positions_open": open_positions},
        )
    position = Position(
        agreement_id=agreement.id,
        territory_id=territory_id,
        agreement_territory_id=agreement.territory_id,
        external_ref=data.external_ref,
        typology=data.typology.value,
        opened_on=data.opened_on,
    )
    try:
        # Positions of one agreement are created one at a time (its lock); another agreement of the same
        # territory may still take the reference meanwhile: the unique constraint then answers the same code.
        async with session.begin_nested():
            repo.add(session, position)
            await session.flush()
    except IntegrityError as exc:
        if data.external_ref is None or not await repo.external_ref_taken(
            session, agreement.territory_id, data.external_ref, None
        ):
            raise
        raise PositionExternalRefExists(
            "another position of the agreement's territory already has this external_ref"
        ) from exc
    await _record(session, position, Action.created)
    return position


async def _record(session: AsyncSession, position: Position, action: Action) -> None:
    await changes.record(
        session,
        resource=RESOURCE,
        id=position.id,
        action=action,
        version=position.version,
        territory_id=position.territory_id,
    )


_NOT_NULL = ("territory_id", "typology", "opened_on")


async def update(
    session: AsyncSession, position: Position, patch: PositionUpdate, principal: Principal
) -> Position:
    """Changes an open position; `position` comes from `get_for_change`."""
    values = patch.changes()
    for field in _NOT_NULL:
        if field in values and values[field] is None:
            raise ValidationFailed(f"/{field}", "cannot be null")
    if "territory_id" in values and values["territory_id"] != position.territory_id:
        await _check_territory(session, values["territory_id"], position.agreement_territory_id, principal)
    if position.closed_on is not None:
        raise PositionClosed("a closed position cannot change")
    if "opened_on" in values and values["opened_on"] != position.opened_on:
        await _check_new_opening(session, position, values["opened_on"])
    if "external_ref" in values and values["external_ref"] != position.external_ref:
        await _check_external_ref(
            session, position.agreement_territory_id, values["external_ref"], position.id
        )
    if "typology" in values:
        values["typology"] = values["typology"].value
    changed = {k: v for k, v in values.items() if getattr(position, k) != v}
    if not changed:
        return position
    for field, value in changed.items():
        setattr(position, field, value)
    await session.flush()
    await _record(session, position, Action.updated)
    return position


async def _check_new_opening(session: AsyncSession, position: Position, opened_on: date) -> None:
    """A new `opened_on` stays within the agreement's period and on or before the first assignment's
    `started_on` (the rule an assignment was accepted under)."""
    _check_opens_within(opened_on, *await repo.agreement_period(session, position.agreement_id))
    first = await repo.first_started_on(session, position.id)
    if first is not None and opened_on > first:
        raise ValidationFailed(
            "/opened_on", f"must be on or before the first assignment's started_on ({first.isoformat()})"
        )


async def close(session: AsyncSession, position: Position, data: PositionClose) -> Position:
    """open → closed; `position` comes from `get_for_change`. No assignment may run past `closed_on`."""
    if data.closed_on < position.opened_on:
        raise ValidationFailed("/closed_on", "must be on or after opened_on")
    if position.closed_on is not None:
        raise PositionClosed("this position is already closed")
    if await repo.runs_past(session, position.id, data.closed_on):
        raise PositionOccupied(
            "an assignment of this position runs past closed_on: end it on or before that day first"
        )
    position.closed_on = data.closed_on
    position.close_reason = data.reason
    await session.flush()
    await _record(session, position, Action.updated)
    return position


# --- assignments ---------------------------------------------------------------------------------------


def _require_personal(principal: Principal) -> None:
    if not reads_personal_data(principal):
        raise Forbidden("assignments are personal data: your role may not read them")


async def list_position_assignments(
    session: AsyncSession, position_id: uuid.UUID, principal: Principal, page: PageRequest
) -> tuple[Sequence[dict[str, Any]], str | None, int | None]:
    """A position's history, oldest first, as read rows (404 when the position is not visible, 403 for
    viewers)."""
    if not await repo.is_visible(session, position_id, principal):
        raise NotFound("no position with this id")
    _require_personal(principal)
    keys = repo.assignment_sort_keys(None)
    stmt = repo.assignments_query(principal, today(), position_id=position_id)
    return await repo.assignments_page(session, page, keys, stmt)


async def list_assignments(
    session: AsyncSession,
    principal: Principal,
    page: PageRequest,
    *,
    counsellor_id: uuid.UUID | None = None,
    territory_id: uuid.UUID | None = None,
    within: uuid.UUID | None = None,
    active: bool | None = None,
    sort: str | None = None,
) -> tuple[Sequence[dict[str, Any]], str | None, int | None]:
    keys = repo.assignment_sort_keys(sort)
    stmt = repo.assignments_query(
        principal,
        today(),
        counsellor_id=counsellor_id,
        territory_id=territory_id,
        within_path=await agreements.subtree_path(session, within, principal),
        active=active,
    )
    return await repo.assignments_page(session, page, keys, stmt)


async def assignment_row(session: AsyncSession, assignment_id: uuid.UUID, principal: Principal) -> Any:
    """The read row of an assignment (404 when its position is not visible, 403 for viewers)."""
    row = await repo.read_assignment_row(session, assignment_id, principal)
    if row is None:
        raise NotFound("no assignment with this id")
    _require_personal(principal)
    return row


async def get_assignment(session: AsyncSession, assignment_id: uuid.UUID, principal: Principal) -> Assignment:
    assignment = await repo.get_assignment(session, assignment_id, principal)
    if assignment is None:
        raise NotFound("no assignment with this id")
    _require_personal(principal)
    return assignment


async def _record_assignment(
    session: AsyncSession,
    assignment: Assignment,
    action: Action,
    position: Position,
    counsellor_version: int,
    counsellor_territory_id: uuid.UUID,
) -> None:
    await changes.record_many(
        session,
        [
            changes.Entry(ASSIGNMENTS, assignment.id, action, assignment.version, position.territory_id),
            changes.Entry(RESOURCE, position.id, Action.updated, position.version, position.territory_id),
            changes.Entry(
                counsellors.RESOURCE,
                assignment.counsellor_id,
                Action.updated,
                counsellor_version,
                counsellor_territory_id,
            ),
        ],
    )


async def assign(
    session: AsyncSession, position_id: uuid.UUID, data: AssignmentCreate, principal: Principal
) -> Assignment:
    """A counsellor takes a position from `started_on`. Checks run under the position's lock; the
    counsellor's lock is taken last, for the checks on the counsellor alone (anonymised, another position
    on one of these days), which it then runs again.

    Why last: every assignment of one counsellor waits in line for that lock, and each one in the line
    holds it until its transaction ends, so the last of N waits for the N - 1 before it. Its wait is one
    statement but several lock acquisitions (the row's tuple lock, then each holder's transaction), each
    under `lock_timeout`, so their sum may reach `statement_timeout`: a 503 (SQLSTATE 57014) for a request
    that only had to wait its turn. Holding the counsellor's lock for two statements rather than for every
    check of the position keeps that line short."""
    if data.ends_on is not None and data.ends_on < data.started_on:
        raise ValidationFailed("/ends_on", "must be on or after started_on")
    position = await get_for_change(session, position_id, principal)
    found = await counsellors.for_assignment(session, data.counsellor_id, principal)
    if found is None:
        raise UnknownReference("/counsellor_id", "no counsellor with this id in your territories")
    if data.started_on < position.opened_on:
        raise ValidationFailed(
            "/started_on", f"must be on or after the position's opened_on ({position.opened_on.isoformat()})"
        )
    _, agreement_ends_on = await repo.agreement_period(session, position.agreement_id)
    if agreement_ends_on is not None and data.started_on > agreement_ends_on:
        raise ValidationFailed(
            "/started_on", f"must be on or before the agreement's ends_on ({agreement_ends_on.isoformat()})"
        )
    if position.closed_on is not None:
        raise PositionClosed("a closed position takes no assignment")
    counsellors.check_not_anonymized(found)
    if await repo.position_has_overlap(session, position.id, data.started_on, None):
        raise PositionOccupied("another assignment of this position covers one of these days")
    counsellor = await counsellors.lock_for_assignment(session, found.id, principal)
    if counsellor is None:
        raise UnknownReference("/counsellor_id", "no counsellor with this id in your territories")
    counsellors.check_not_anonymized(counsellor)
    if await repo.counsellor_has_overlap(session, counsellor.id, data.started_on, None):
        raise CounsellorAlreadyAssigned("the counsellor holds another position on one of these days")
    assignment = Assignment(
        position_id=position.id,
        counsellor_id=counsellor.id,
        contract_type=data.contract_type.value,
        started_on=data.started_on,
        ends_on=data.ends_on,
    )
    repo.add(session, assignment)
    # The position's status and the counsellor's current assignment are part of their representations:
    # their versions (ETags) move with them.
    now = utcnow()
    position.updated_at = now
    counsellors.touch(counsellor, now)
    await session.flush()
    await _record_assignment(
        session, assignment, Action.created, position, counsellor.version, counsellor.territory_id
    )
    return assignment


async def end(
    session: AsyncSession,
    assignment_id: uuid.UUID,
    data: AssignmentEnd,
    principal: Principal,
    if_match: str | None = None,
) -> Assignment:
    """Ends an assignment on `ended_on` (inclusive), under the position's and the counsellor's locks."""
    found = await get_assignment(session, assignment_id, principal)
    position = await get_for_change(session, found.position_id, principal)
    counsellor = await counsellors.lock_for_assignment(session, found.counsellor_id, None)
    assignment = await repo.get_assignment(session, assignment_id, principal, for_update=True)
    if assignment is None or counsellor is None:
        raise NotFound("no assignment with this id")
    if if_match is not None:
        require_if_match(if_match, assignment.version)
    if data.ended_on < assignment.started_on:
        raise ValidationFailed("/ended_on", "must be on or after started_on")
    if assignment.ended_on is not None:
        raise AssignmentAlreadyEnded(f"this assignment ended on {assignment.ended_on.isoformat()}")
    assignment.ended_on = data.ended_on
    assignment.end_reason = data.end_reason.value
    now = utcnow()
    position.updated_at = now
    counsellors.touch(counsellor, now)
    await session.flush()
    await _record_assignment(
        session, assignment, Action.updated, position, counsellor.version, counsellor.territory_id
    )
    return assignment
