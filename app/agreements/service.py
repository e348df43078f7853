"""Rules of the agreements domain: the draft → signed → terminated life cycle, amendments, and the
programme invariants (positions target and budget), checked under the programme's row lock."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.agreements import repository as repo
from app.agreements.errors import (
    AgreementHasOccupiedPositions,
    AgreementNotEditable,
    AgreementNotSigned,
    AgreementReferenceExists,
    InvalidTransition,
    PositionsBelowAllocated,
    ProgrammeBudgetExceeded,
    ProgrammePositionsExceeded,
)
from app.agreements.models import (
    Agreement,
    AgreementKind,
    AgreementStatus,
    Amendment,
    AmendmentKind,
    subsidy_total,
)
from app.agreements.schemas import (
    AgreementCreate,
    AgreementRead,
    AgreementSign,
    AgreementTerminate,
    AgreementUpdate,
    AmendmentCreate,
    AmendmentRead,
)
from app.core import audit, changes
from app.core.auth import Principal
from app.core.changes import Action
from app.core.pagination import PageRequest
from app.core.problems import NotFound, UnknownReference, ValidationFailed
from app.db import new_id, utcnow
from app.positions.models import today
from app.programmes import service as programmes
from app.programmes.models import Programme
from app.referentials.data import AmendmentReason
from app.territories import service as territories

RESOURCE = "agreements"
POSITIONS = "positions"


@dataclass(frozen=True)
class PositionCounts:
    open: int = 0
    occupied: int = 0


async def position_counts(
    session: AsyncSession, agreement_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, PositionCounts]:
    """Open and occupied positions per agreement, for a whole page at once (one query). Every read model and
    every rule that counts an agreement's positions takes its numbers from here. Open: not closed;
    occupied: open, with an assignment covering today (UTC)."""
    counts = await repo.position_counts(session, agreement_ids, today())
    return {
        agreement_id: PositionCounts(*counts[agreement_id]) if agreement_id in counts else PositionCounts()
        for agreement_id in agreement_ids
    }


async def _record(session: AsyncSession, agreement: Agreement, action: Action) -> None:
    await changes.record(
        session,
        resource=RESOURCE,
        id=agreement.id,
        action=action,
        version=agreement.version,
        territory_id=agreement.territory_id,
    )


def to_read(agreement: Agreement, counts: PositionCounts) -> AgreementRead:
    return AgreementRead(
        id=agreement.id,
        programme_id=agreement.programme_id,
        territory_id=agreement.territory_id,
        kind=agreement.kind,
        reference=agreement.reference,
        status=agreement.status,
        positions_granted=agreement.positions_granted,
        subsidy_per_position_cents=agreement.subsidy_per_position_cents,
        subsidy_total_cents=agreement.subsidy_total_cents,
        signed_on=agreement.signed_on,
        starts_on=agreement.starts_on,
        ends_on=agreement.ends_on,
        terminated_on=agreement.terminated_on,
        termination_reason=agreement.termination_reason,
        positions_open=counts.open,
        positions_occupied=counts.occupied,
        created_at=agreement.created_at,
        updated_at=agreement.updated_at,
        version=agreement.version,
    )


async def read(session: AsyncSession, agreement: Agreement) -> AgreementRead:
    return to_read(agreement, (await position_counts(session, [agreement.id]))[agreement.id])


async def read_visible(
    session: AsyncSession, agreement_id: uuid.UUID, principal: Principal
) -> dict[str, Any]:
    """The read form of an agreement the caller may read (404 alike for one that does not exist and one
    outside the caller's territories)."""
    row = await repo.read_row(session, agreement_id, principal)
    if row is None:
        raise NotFound("no agreement with this id")
    data: dict[str, Any] = row._asdict()
    return data


async def get_visible(session: AsyncSession, agreement_id: uuid.UUID, principal: Principal) -> Agreement:
    """404 alike for an agreement that does not exist and one outside the caller's territories."""
    agreement = await repo.get(session, agreement_id, principal)
    if agreement is None:
        raise NotFound("no agreement with this id")
    return agreement


async def list_agreements(
    session: AsyncSession,
    principal: Principal,
    page: PageRequest,
    *,
    programme_id: uuid.UUID | None = None,
    territory_id: uuid.UUID | None = None,
    within: uuid.UUID | None = None,
    status: AgreementStatus | None = None,
    kind: AgreementKind | None = None,
    sort: str | None = None,
) -> tuple[Sequence[dict[str, Any]], str | None, int | None]:
    """A page of the agreements the caller may read, in their read form: (items, next_cursor, total).

    `within` keeps the agreements of a territory and its whole subtree (an unknown id is a 422 on the
    parameter); `sort` is `created_at` (the default) or `reference`, `-` to reverse."""
    keys = repo.sort_keys(sort)
    rows, next_cursor, total = await repo.list_page(
        session,
        page,
        keys,
        principal,
        programme_id=programme_id,
        territory_id=territory_id,
        within_path=await subtree_path(session, within, principal),
        status=status.value if status else None,
        kind=kind.value if kind else None,
    )
    return rows, next_cursor, total


async def list_amendments(
    session: AsyncSession, agreement_id: uuid.UUID, principal: Principal, page: PageRequest
) -> tuple[Sequence[AmendmentRead], str | None, int | None]:
    """A page of a visible agreement's amendments, oldest first: (items, next_cursor, total)."""
    agreement = await get_visible(session, agreement_id, principal)
    rows, next_cursor, total = await repo.amendments_page(session, agreement.id, page)
    return [AmendmentRead.model_validate(a) for a in rows], next_cursor, total


async def get_for_change(
    session: AsyncSession, agreement_id: uuid.UUID, principal: Principal
) -> tuple[Agreement, Programme]:
    """The agreement and its programme, both locked, the programme first.

    Every write to agreements takes the locks in this order, so two writers never wait on each other
    crosswise; the agreement is read again after the programme lock so that its state is the latest."""
    agreement = await get_visible(session, agreement_id, principal)
    programme = await programmes.get_for_update(session, agreement.programme_id)
    locked = await repo.get(session, agreement_id, principal, for_update=True)
    if locked is None:
        raise NotFound("no agreement with this id")
    return locked, programme


async def get_by_reference(session: AsyncSession, reference: str) -> Agreement | None:
    """The first agreement with this reference, in any programme (for the demo data)."""
    return await repo.get_by_reference(session, reference)


async def get_for_positions(
    session: AsyncSession, agreement_id: uuid.UUID, principal: Principal
) -> Agreement | None:
    """For a position written under it: the agreement if the caller sees it, locked after its programme
    (the order of `get_for_change`), so that positions and amendments of one agreement never race."""
    try:
        agreement, _programme = await get_for_change(session, agreement_id, principal)
    except NotFound:
        return None
    return agreement


async def subtree_path(session: AsyncSession, within: uuid.UUID | None, principal: Principal) -> str | None:
    """The materialised path of a `within` filter's territory (422 when there is no such territory).

    Territories are public, so any of them may root the filter; the caller's scope still applies to
    the rows."""
    if within is None:
        return None
    path = await territories.path_of(session, within)
    if path is None:
        raise ValidationFailed("/query/within", "no territory with this id")
    return path


def _check_dates(starts_on: date, ends_on: date | None) -> None:
    if ends_on is not None and ends_on < starts_on:
        raise ValidationFailed("/ends_on", "must be on or after starts_on")


async def _check_territory(session: AsyncSession, territory_id: uuid.UUID, principal: Principal) -> None:
    """The territory exists, lies in the caller's scope, and stays until the transaction ends: a
    territory deleted meanwhile is `unknown_reference`, never a foreign key conflict at the INSERT."""
    if await territories.get_in_scope(session, territory_id, principal) is None or not (
        await repo.lock_territory(session, territory_id)
    ):
        raise UnknownReference("/territory_id", "no territory with this id")


async def _check_room(
    session: AsyncSession, programme: Programme | Any, *, positions: int, subsidy_cents: int
) -> None:
    """Refuses a change that would take the programme's live agreements past its target or its budget.

    `positions` and `subsidy_cents` are what the change adds to the programme's totals (negative when it
    frees some); a dimension that does not grow is not checked. The caller holds the programme's lock."""
    held = await programmes.committed(session, programme.id)
    _check_room_left(programme, held, positions=positions, subsidy_cents=subsidy_cents)


def _check_room_left(
    programme: Programme | Any, held: programmes.Committed, *, positions: int, subsidy_cents: int
) -> None:
    """`_check_room` on totals already read under the programme's lock."""
    if positions > 0 and held.positions + positions > programme.positions_target:
        available = max(programme.positions_target - held.positions, 0)
        raise ProgrammePositionsExceeded(
            f"the programme has {available} of its {programme.positions_target} positions left; "
            f"this change needs {positions}",
            extra={"positions_available": available},
        )
    if subsidy_cents > 0 and held.subsidy_cents + subsidy_cents > programme.budget_cents:
        available = max(programme.budget_cents - held.subsidy_cents, 0)
        raise ProgrammeBudgetExceeded(
            f"the programme has {available} cents of its budget left; this change needs {subsidy_cents}",
            extra={"budget_available_cents": available},
        )


async def _check_reference(
    session: AsyncSession, programme_id: uuid.UUID, reference: str, exclude_id: uuid.UUID | None
) -> None:
    if await repo.exists_with_reference(session, programme_id, reference, exclude_id):
        raise AgreementReferenceExists(f"the programme already has an agreement with reference {reference}")


def _read_form(row: Any) -> dict[str, Any]:
    """The read form of an agreement from its columns just written, without reading it again: no position
    can be open under an agreement that was a draft a statement ago (positions open under signed agreements
    only, and none goes back to draft), so both counts are 0."""
    values = dict(row)
    values["subsidy_total_cents"] = values["positions_granted"] * values["subsidy_per_position_cents"]
    values["positions_open"] = values["positions_occupied"] = 0
    return {name: values[name] for name in AgreementRead.model_fields}


async def create(session: AsyncSession, data: AgreementCreate, principal: Principal) -> dict[str, Any]:
    """A new draft; returns its read form. A draft already reserves its positions and subsidy in the
    programme.

    Core statements only (no ORM object), so that it runs on the direct path (app.core.direct) as well as
    through its route, and few of them, since all but the first run under the programme's lock: the
    programme locked and its version moved on (one UPDATE), then one SELECT for the territory (in the
    caller's scope, and kept), the reference and the programme's committed totals, the INSERT, the change."""
    _check_dates(data.starts_on, data.ends_on)
    now = utcnow()
    programme = await repo.reserve_programme(session, data.programme_id, now)
    if programme is None:
        raise UnknownReference("/programme_id", "no programme with this id")
    checks = await repo.creation_checks(session, principal, programme.id, data.territory_id, data.reference)
    if checks.territory_id is None:
        raise UnknownReference("/territory_id", "no territory with this id")
    if checks.reference_taken:
        raise AgreementReferenceExists(
            f"the programme already has an agreement with reference {data.reference}"
        )
    per_position = (
        data.subsidy_per_position_cents
        if data.subsidy_per_position_cents is not None
        else programme.subsidy_per_position_cents
    )
    # PostgreSQL sums bigints as numeric (Decimal): int() keeps the cents exact.
    held = programmes.Committed(int(checks.positions), int(checks.subsidy_cents))
    _check_room_left(
        programme,
        held,
        positions=data.positions_granted,
        subsidy_cents=subsidy_total(data.positions_granted, per_position),
    )
    row = {
        "id": new_id(),
        "programme_id": programme.id,
        "territory_id": data.territory_id,
        "kind": data.kind.value,
        "reference": data.reference,
        "status": AgreementStatus.draft.value,
        "positions_granted": data.positions_granted,
        "subsidy_per_position_cents": per_position,
        "signed_on": None,
        "starts_on": data.starts_on,
        "ends_on": data.ends_on,
        "terminated_on": None,
        "termination_reason": None,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    await repo.insert_agreement(session, row)
    await changes.record(
        session,
        resource=RESOURCE,
        id=row["id"],
        action=Action.created,
        version=1,
        territory_id=data.territory_id,
        fields=audit.created_fields(row),
    )
    return _read_form(row)


_NOT_NULL = (
    "territory_id",
    "kind",
    "reference",
    "positions_granted",
    "subsidy_per_position_cents",
    "starts_on",
)


async def update(
    session: AsyncSession,
    agreement: Agreement,
    programme: Programme,
    patch: AgreementUpdate,
    principal: Principal,
) -> Agreement:
    """Changes a draft; `agreement` and `programme` come from `get_for_change`."""
    values = patch.changes()
    for field in _NOT_NULL:
        if field in values and values[field] is None:
            raise ValidationFailed(f"/{field}", "cannot be null")
    _check_dates(values.get("starts_on", agreement.starts_on), values.get("ends_on", agreement.ends_on))
    if "territory_id" in values and values["territory_id"] != agreement.territory_id:
        await _check_territory(session, values["territory_id"], principal)
    if agreement.status != AgreementStatus.draft:
        raise AgreementNotEditable(f"a {agreement.status} agreement cannot be changed; amend a signed one")
    if "reference" in values and values["reference"] != agreement.reference:
        await _check_reference(session, programme.id, values["reference"], agreement.id)
    positions = values.get("positions_granted", agreement.positions_granted)
    per_position = values.get("subsidy_per_position_cents", agreement.subsidy_per_position_cents)
    await _check_positions_cover_open(session, agreement, positions)
    await _check_room(
        session,
        programme,
        positions=positions - agreement.positions_granted,
        subsidy_cents=subsidy_total(positions, per_position) - agreement.subsidy_total_cents,
    )
    if positions != agreement.positions_granted or per_position != agreement.subsidy_per_position_cents:
        programmes.totals_changed(programme)
    version = agreement.version
    for field, value in values.items():
        setattr(agreement, field, value)
    await session.flush()
    if agreement.version != version:
        await _record(session, agreement, Action.updated)
    return agreement


async def _check_positions_cover_open(session: AsyncSession, agreement: Agreement, positions: int) -> None:
    open_positions = (await position_counts(session, [agreement.id]))[agreement.id].open
    if positions < open_positions or positions < 0:
        raise PositionsBelowAllocated(
            f"the agreement has {open_positions} open positions and must grant at least as many; "
            f"this change would leave it {positions}",
            extra={"positions_open": open_positions},
        )


async def lock_for_signature(session: AsyncSession, agreement_id: uuid.UUID, principal: Principal) -> Any:
    """The agreement's state, its row locked (one Core statement): 404 alike for one that does not exist and
    one outside the caller's territories.

    Signing moves no total of the programme (the draft reserved its positions), so it does not take the
    programme's lock: it holds this one row lock and waits for no other lock after it, so it cannot deadlock
    with the writers that lock the programme then the agreement (`get_for_change`); a writer that changed
    the agreement meanwhile is seen, since the row is read once locked."""
    locked = await repo.lock_agreement(session, agreement_id, principal)
    if locked is None:
        raise NotFound("no agreement with this id")
    return locked


async def sign(session: AsyncSession, agreement: Any, data: AgreementSign) -> dict[str, Any]:
    """draft → signed, for `agreement` from `lock_for_signature`; returns its read form. The positions were
    reserved by the draft, so the programme's totals do not move."""
    if agreement.status != AgreementStatus.draft:
        raise InvalidTransition(f"only a draft can be signed; this agreement is {agreement.status}")
    row = await repo.sign(session, agreement.id, data.signed_on, utcnow())
    await changes.record(
        session,
        resource=RESOURCE,
        id=agreement.id,
        action=Action.updated,
        version=row.version,
        territory_id=row.territory_id,
        fields={
            "status": {"before": agreement.status, "after": row.status},
            "signed_on": {"before": None, "after": data.signed_on},
        },
    )
    return _read_form(row._asdict())


async def terminate(
    session: AsyncSession, agreement: Agreement, programme: Programme, data: AgreementTerminate
) -> Agreement:
    """draft or signed → terminated: the agreement frees its positions and subsidy in the programme."""
    if agreement.status == AgreementStatus.terminated:
        raise InvalidTransition("this agreement is already terminated")
    if agreement.signed_on is not None and data.terminated_on < agreement.signed_on:
        raise ValidationFailed("/terminated_on", "must be on or after signed_on")
    # The open positions are locked before they are counted: an assignment being written meanwhile (it
    # holds its position's lock) is either committed and counted, or waits and then finds them closed.
    open_positions = await repo.lock_open_positions(session, agreement.id)
    occupied = (await position_counts(session, [agreement.id]))[agreement.id].occupied
    if occupied:
        raise AgreementHasOccupiedPositions(
            f"{occupied} positions of this agreement are occupied: end their assignments first",
            extra={"positions_occupied": occupied},
        )
    agreement.status = AgreementStatus.terminated.value
    agreement.terminated_on = data.terminated_on
    agreement.termination_reason = data.reason
    programmes.totals_changed(programme)
    # Its open positions close with it, on the same day (API.md, "Shapes").
    for position in open_positions:
        position.closed_on = data.terminated_on
        position.close_reason = data.reason
    await session.flush()
    await _record(session, agreement, Action.updated)
    await changes.record_many(
        session,
        [changes.Entry(POSITIONS, p.id, Action.updated, p.version, p.territory_id) for p in open_positions],
    )
    return agreement


async def amend(
    session: AsyncSession, agreement: Agreement, programme: Programme, data: AmendmentCreate
) -> Amendment:
    """Adds or withdraws positions of a signed agreement, and keeps the record with the figures before and
    after; `agreement` and `programme` come from `get_for_change`."""
    if data.reason is AmendmentReason.autre and not data.reason_detail:
        raise ValidationFailed("/reason_detail", "required when reason is autre")
    if agreement.status != AgreementStatus.signed or agreement.signed_on is None:
        raise AgreementNotSigned(f"only a signed agreement can be amended; this one is {agreement.status}")
    if data.effective_on < agreement.signed_on:
        raise ValidationFailed("/effective_on", "must be on or after the agreement's signed_on")
    before = agreement.positions_granted
    delta = data.positions if data.kind is AmendmentKind.add_positions else -data.positions
    after = before + delta
    await _check_positions_cover_open(session, agreement, after)
    per_position = agreement.subsidy_per_position_cents
    await _check_room(session, programme, positions=delta, subsidy_cents=subsidy_total(delta, per_position))
    amendment = Amendment(
        agreement_id=agreement.id,
        kind=data.kind.value,
        positions=data.positions,
        reason=data.reason.value,
        reason_detail=data.reason_detail,
        effective_on=data.effective_on,
        positions_before=before,
        positions_after=after,
        subsidy_total_before_cents=subsidy_total(before, per_position),
        subsidy_total_after_cents=subsidy_total(after, per_position),
        created_at=utcnow(),
    )
    repo.add(session, amendment)
    agreement.positions_granted = after
    programmes.totals_changed(programme)
    await session.flush()
    await _record(session, agreement, Action.updated)
    return amendment


async def get_amendment(
    session: AsyncSession, agreement_id: uuid.UUID, amendment_id: uuid.UUID, principal: Principal
) -> Amendment:
    agreement = await get_visible(session, agreement_id, principal)
    amendment = await repo.get_amendment(session, agreement.id, amendment_id)
    if amendment is None:
        raise NotFound("no amendment with this id on this agreement")
    return amendment
