"""Rules of the counsellors domain: who may read personal data, CRUD, anonymisation, and the HR sync
(`PUT /counsellors/by-ref/{ref}` and the bulk upsert).

A replayed sync writes nothing: every field is compared before writing, so an unchanged counsellor keeps
its `version` and no change reaches the feed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal, cast

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import audit, changes, idempotency
from app.core.auth import Principal, Role
from app.core.changes import Action
from app.core.pagination import PageRequest
from app.core.problems import (
    PROBLEM_BASE,
    AppError,
    FieldError,
    Forbidden,
    NotFound,
    PreconditionFailed,
    UnknownReference,
    ValidationFailed,
    field_message,
)
from app.core.types import no_control_characters
from app.core.versioning import require_if_match
from app.counsellors import repository as repo
from app.counsellors.errors import BulkRejected, CounsellorAnonymized, CounsellorExternalRefExists
from app.counsellors.models import Counsellor
from app.counsellors.schemas import (
    BulkItem,
    CounsellorCreate,
    CounsellorCurrentAssignment,
    CounsellorFields,
    CounsellorRead,
    CounsellorUpdate,
    CounsellorUpsert,
    TrainingRead,
)
from app.db import new_id, utcnow
from app.territories import service as territories

RESOURCE = "counsellors"
PERSONAL_READERS = (Role.admin, Role.territory_manager)


# --- reading --------------------------------------------------------------------------------------------


def to_read(counsellor: Counsellor, current: dict[str, Any] | None) -> CounsellorRead:
    return CounsellorRead(
        id=counsellor.id,
        territory_id=counsellor.territory_id,
        external_ref=counsellor.external_ref,
        first_name=counsellor.first_name,
        last_name=counsellor.last_name,
        email=counsellor.email,
        phone=counsellor.phone,
        training=TrainingRead(
            label=counsellor.training_label,
            hours=counsellor.training_hours,
            certified_on=counsellor.certified_on,
            pix_level=counsellor.pix_level,
        ),
        current_assignment=CounsellorCurrentAssignment.model_validate(current) if current else None,
        anonymized_at=counsellor.anonymized_at,
        created_at=counsellor.created_at,
        updated_at=counsellor.updated_at,
        version=counsellor.version,
    )


async def read(session: AsyncSession, counsellor: Counsellor) -> CounsellorRead:
    """The read model of a counsellor just written (an ORM object)."""
    current = await repo.current_assignments(session, [counsellor.id])
    return to_read(counsellor, current.get(counsellor.id))


async def fill_current(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Puts `current_assignment` into read rows: one query for a whole page."""
    current = await repo.current_assignments(session, [row["id"] for row in rows])
    for row in rows:
        row["current_assignment"] = current.get(row["id"])


async def visible_row(
    session: AsyncSession, counsellor_id: uuid.UUID, principal: Principal
) -> dict[str, Any]:
    """The read row of a counsellor, before `fill_current`. 404 for a counsellor outside the caller's
    territories; 403 for one inside them that the caller's role may not read (a viewer, another
    counsellor); a counsellor key reads its own record."""
    if principal.role is Role.counsellor and principal.counsellor_id == counsellor_id:
        own = await repo.read_row(session, counsellor_id, None)
        if own is not None:
            return own
    row = await repo.read_row(session, counsellor_id, principal)
    if row is None:
        raise NotFound("no counsellor with this id")
    if principal.role not in PERSONAL_READERS:
        raise Forbidden("counsellors are personal data: your role may not read this one")
    return row


async def list_counsellors(
    session: AsyncSession,
    principal: Principal,
    page: PageRequest,
    *,
    territory_id: uuid.UUID | None = None,
    within: uuid.UUID | None = None,
    external_ref: str | None = None,
    updated_since: datetime | None = None,
    sort: str | None = None,
) -> tuple[Sequence[dict[str, Any]], str | None, int | None]:
    """A page of counsellors as read rows: one query, one for their current assignments, one for the total
    when asked."""
    keys = repo.sort_keys(sort)
    stmt = repo.list_query(
        principal,
        territory_id=territory_id,
        within_path=await _subtree_path(session, within),
        external_ref=external_ref,
        updated_since=updated_since,
    )
    rows, next_cursor, total = await repo.list_page(session, page, keys, stmt)
    if rows:
        await fill_current(session, rows)
    return rows, next_cursor, total


async def _subtree_path(session: AsyncSession, within: uuid.UUID | None) -> str | None:
    if within is None:
        return None
    path = await territories.path_of(session, within)
    if path is None:
        raise ValidationFailed("/query/within", "no territory with this id")
    return path


# --- writing --------------------------------------------------------------------------------------------


def _columns(data: CounsellorFields) -> dict[str, Any]:
    training = data.training
    return {
        "first_name": data.first_name,
        "last_name": data.last_name,
        "email": data.email,
        "phone": data.phone,
        "training_label": training.label.value if training and training.label else None,
        "training_hours": training.hours if training else None,
        "certified_on": training.certified_on if training else None,
        "pix_level": training.pix_level if training else None,
    }


async def _record(session: AsyncSession, counsellor: Counsellor, action: Action) -> None:
    await changes.record(
        session,
        resource=RESOURCE,
        id=counsellor.id,
        action=action,
        version=counsellor.version,
        territory_id=counsellor.territory_id,
    )


async def _check_territory(
    session: AsyncSession, territory_id: uuid.UUID, principal: Principal, pointer: str = "/territory_id"
) -> None:
    if await territories.get_in_scope(session, territory_id, principal) is None:
        raise UnknownReference(pointer, "no territory with this id in your territories")


async def _check_external_ref(
    session: AsyncSession, territory_id: uuid.UUID, ref: str | None, exclude_id: uuid.UUID | None
) -> None:
    if ref is not None and await repo.external_ref_taken(session, territory_id, ref, exclude_id):
        raise CounsellorExternalRefExists("another counsellor of this employer has this external_ref")


def check_not_anonymized(counsellor: Counsellor) -> None:
    if counsellor.anonymized_at is not None:
        raise CounsellorAnonymized("this counsellor was anonymised and can no longer change")


def touch(counsellor: Counsellor, now: datetime) -> None:
    """The counsellor's representation changed (its current assignment): move its version."""
    counsellor.updated_at = now


async def create(session: AsyncSession, data: CounsellorCreate, principal: Principal) -> Counsellor:
    await _check_territory(session, data.territory_id, principal)
    await _check_external_ref(session, data.territory_id, data.external_ref, None)
    counsellor = Counsellor(territory_id=data.territory_id, external_ref=data.external_ref, **_columns(data))
    repo.add(session, counsellor)
    await session.flush()
    await _record(session, counsellor, Action.created)
    return counsellor


async def get_for_change(session: AsyncSession, counsellor_id: uuid.UUID, principal: Principal) -> Counsellor:
    """The counsellor, locked, for a writer (admin or territory manager of its employer)."""
    counsellor = await repo.get(session, counsellor_id, principal, for_update=True)
    if counsellor is None:
        raise NotFound("no counsellor with this id")
    return counsellor


async def for_assignment(
    session: AsyncSession, counsellor_id: uuid.UUID, principal: Principal | None
) -> Counsellor | None:
    """The counsellor, unlocked, if it lies in `principal`'s territories: what an assignment checks before
    it takes the counsellor's lock (`lock_for_assignment`)."""
    return await repo.get(session, counsellor_id, principal)


async def lock_for_assignment(
    session: AsyncSession, counsellor_id: uuid.UUID, principal: Principal | None
) -> Counsellor | None:
    """The counsellor locked until the transaction ends, if it lies in `principal`'s territories (the
    positions domain takes this lock after the position's)."""
    return await repo.get(session, counsellor_id, principal, for_update=True)


async def exists(session: AsyncSession, counsellor_id: uuid.UUID) -> bool:
    return await repo.get(session, counsellor_id, None) is not None


async def lock_for_key(session: AsyncSession, counsellor_id: uuid.UUID) -> None:
    """Before an API key is bound to the counsellor: 422 `unknown_reference` when there is none, 409
    `counsellor_anonymized` when it is anonymised. Its row is locked until the key is written, so that an
    anonymisation (which locks it too, then revokes the counsellor's keys) comes wholly before or after."""
    counsellor = await repo.get(session, counsellor_id, None, for_update=True)
    if counsellor is None:
        raise UnknownReference("/counsellor_id", "no counsellor with this id")
    if counsellor.anonymized_at is not None:
        raise CounsellorAnonymized("this counsellor was anonymised: no key can be bound to them")


_NOT_NULL = ("territory_id", "first_name", "last_name")


async def update(
    session: AsyncSession, counsellor: Counsellor, patch: CounsellorUpdate, principal: Principal
) -> bool:
    """Applies the merge patch; whether it changed anything."""
    values = patch.changes()
    for name in _NOT_NULL:
        if name in values and values[name] is None:
            raise ValidationFailed(f"/{name}", "cannot be null")
    if "territory_id" in values and values["territory_id"] != counsellor.territory_id:
        await _check_territory(session, values["territory_id"], principal)
    check_not_anonymized(counsellor)
    training = values.pop("training", {})
    if training is None:
        values.update(training_label=None, training_hours=None, certified_on=None, pix_level=None)
    elif "training" in patch.model_fields_set and patch.training is not None:
        for name, value in patch.training.changes().items():
            column = {"label": "training_label", "hours": "training_hours"}.get(name, name)
            values[column] = value.value if name == "label" and value is not None else value
    territory_id = values.get("territory_id", counsellor.territory_id)
    ref = values.get("external_ref", counsellor.external_ref)
    if (territory_id, ref) != (counsellor.territory_id, counsellor.external_ref):
        await _check_external_ref(session, territory_id, ref, counsellor.id)
    changed = {k: v for k, v in values.items() if getattr(counsellor, k) != v}
    if not changed:
        return False
    for name, value in changed.items():
        setattr(counsellor, name, value)
    await session.flush()
    await _record(session, counsellor, Action.updated)
    return True


async def anonymize(session: AsyncSession, counsellor: Counsellor) -> Counsellor:
    """Erases names, email, phone and the HR reference (which points at the person in the employer's
    files); keeps the employer, the training figures and every assignment with its dates, so that positions
    and statistics keep counting. In the same transaction: the responses stored for `Idempotency-Key` that
    show the person go (`idempotency.forget`), and the API keys bound to the counsellor are revoked (a
    person who has left must not keep reading their workshops' registrants). Anonymising twice changes
    nothing (but revokes a key that would still be open)."""
    now = utcnow()
    if counsellor.anonymized_at is not None:
        await _revoke_keys(session, counsellor.id, now)
        return counsellor
    counsellor.first_name = None
    counsellor.last_name = None
    counsellor.email = None
    counsellor.phone = None
    counsellor.external_ref = None
    counsellor.anonymized_at = now
    await _revoke_keys(session, counsellor.id, now)
    await idempotency.forget(session, RESOURCE, counsellor.id)
    await _record(session, counsellor, Action.updated)
    return counsellor


async def _revoke_keys(session: AsyncSession, counsellor_id: uuid.UUID, now: datetime) -> None:
    for key in await repo.open_keys_of(session, counsellor_id):
        key.revoked_at = now
    await session.flush()


# --- HR sync --------------------------------------------------------------------------------------------


def _employer(territory_id: uuid.UUID | None, principal: Principal, pointer: str) -> uuid.UUID:
    """The employer named in the body, or the key's only territory."""
    if territory_id is not None:
        return territory_id
    if len(principal.territory_ids) == 1:
        return principal.territory_ids[0]
    raise ValidationFailed(pointer, "required unless your key has exactly one territory")


async def row_by_ref(
    session: AsyncSession, external_ref: str, territory_id: uuid.UUID | None, principal: Principal
) -> dict[str, Any]:
    """The read row (before `fill_current`) of the counsellor `external_ref` of the employer (the key's
    only territory when not given); 404 alike when there is none and when the employer is outside the
    caller's territories."""
    employer = _employer(territory_id, principal, "/query/territory_id")
    row = await repo.read_row_by_ref(session, employer, external_ref, principal)
    if row is None:
        raise NotFound("no counsellor with this external_ref")
    return row


def _apply(counsellor: Counsellor, columns: dict[str, Any]) -> bool:
    changed = {k: v for k, v in columns.items() if getattr(counsellor, k) != v}
    for name, value in changed.items():
        setattr(counsellor, name, value)
    return bool(changed)


Upserted = Literal["created", "updated", "unchanged"]


async def upsert_by_ref(
    session: AsyncSession,
    external_ref: str,
    data: CounsellorUpsert,
    principal: Principal,
    if_match: str | None,
) -> tuple[Counsellor, Upserted]:
    """Creates or updates the counsellor `external_ref` of the employer; returns it and what became of it
    (`created`, `updated`, or `unchanged` when the body held what was there). Two syncs of the same person
    at once: the second waits on the first's row lock, or, when both create, its INSERT meets the unique
    (territory_id, external_ref) and it updates the row the first created instead."""
    territory_id = _employer(data.territory_id, principal, "/territory_id")
    await _check_territory(session, territory_id, principal)
    columns = _columns(data)
    existing = await repo.get_by_ref(session, territory_id, external_ref, for_update=True)
    if existing is None:
        if if_match is not None:
            raise PreconditionFailed(
                "no counsellor has this external_ref yet: send no If-Match to create one"
            )
        counsellor = Counsellor(territory_id=territory_id, external_ref=external_ref, **columns)
        try:
            async with session.begin_nested():
                repo.add(session, counsellor)
                await session.flush()
        except IntegrityError:
            # Another sync created it meanwhile (the savepoint's rollback dropped our row): update theirs.
            existing = await repo.get_by_ref(session, territory_id, external_ref, for_update=True)
            if existing is None:
                raise
        else:
            await _record(session, counsellor, Action.created)
            return counsellor, "created"
    if if_match is not None:
        require_if_match(if_match, existing.version)
    if not _apply(existing, columns):
        return existing, "unchanged"
    await session.flush()
    await _record(session, existing, Action.updated)
    return existing, "updated"


async def unchanged_by_ref(
    session: AsyncSession, external_ref: str, data: CounsellorUpsert, principal: Principal
) -> CounsellorRead | None:
    """The answer of `upsert_by_ref` (without `If-Match`) when it would change nothing, found with column
    SELECTs and no lock: an HR system's nightly replay, which mostly sends what is there. None when the
    counsellor is to be created or changed (`upsert_by_ref` does it). The same checks first, in the same
    order, with the same problems."""
    territory_id = _employer(data.territory_id, principal, "/territory_id")
    rows = await repo.sync_state_by_ref(session, territory_id, external_ref)
    if not rows or not principal.covers_path(rows[0].employer_path):
        raise UnknownReference("/territory_id", "no territory with this id in your territories")
    if len(rows) > 1:  # pragma: no cover - two assignments never cover the same day
        return None
    row = rows[0]._asdict()
    if row["id"] is None or _differs(row, _columns(data)):
        return None
    current = None
    if row["current_id"] is not None:
        current = {name: row[f"current_{name}"] for name in _CURRENT}
    return to_read(cast(Counsellor, rows[0]), current)


_CURRENT = ("id", "position_id", "contract_type", "started_on", "ends_on")


# Bulk results are plain dicts shaped like `BulkResult` (a thousand models per request would cost more
# than the database work).
Result = dict[str, Any]


def _problem(error: AppError) -> dict[str, Any]:
    return {
        "type": PROBLEM_BASE + error.code,
        "title": error.title,
        "status": error.status,
        "detail": error.detail or error.title,
        "code": error.code,
        "errors": [e.model_dump() for e in error.errors] if error.errors else None,
    }


def shown(results: Sequence[Result]) -> list[uuid.UUID]:
    """The counsellors a bulk answer shows (with their `external_ref`): those of the applied items."""
    return [uuid.UUID(r["id"]) for r in results if r["id"] is not None]


def _result(
    index: int, ref: str | None, status: int, id: uuid.UUID | None = None, version: int | None = None
) -> Result:
    return {
        "index": index,
        "external_ref": ref,
        "status": status,
        "id": str(id) if id else None,
        "version": version,
        "problem": None,
    }


def _ref_of(raw: Any) -> str | None:
    """The item's external_ref, echoed in its result when it is a well-formed one."""
    ref = raw.get("external_ref") if isinstance(raw, dict) else None
    if not isinstance(ref, str) or not 1 <= len(ref) <= 64:
        return None
    try:
        return no_control_characters(ref)
    except ValueError:
        return None


def _failed(index: int, ref: str | None, error: AppError) -> Result:
    result = _result(index, ref, error.status)
    result["problem"] = _problem(error)
    return result


def _invalid(index: int, exc: ValidationError) -> AppError:
    errors = [
        FieldError(
            pointer=f"/items/{index}" + "".join(f"/{p}" for p in e["loc"]),
            detail=field_message(e),
        )
        for e in exc.errors()
    ]
    return AppError(
        f"The item has {len(errors)} invalid field(s).",
        status=422,
        code="validation_error",
        title="Invalid request",
        errors=errors,
    )


@dataclass
class _Prepared:
    index: int
    item: BulkItem
    territory_id: uuid.UUID
    columns: dict[str, Any] = field(default_factory=dict)


NOT_APPLIED = 424


async def bulk_upsert(
    session: AsyncSession, raw_items: Sequence[Any], principal: Principal, *, atomic: bool
) -> list[Result]:
    """Upserts up to 1 000 counsellors keyed by (employer, external_ref); one result per item, in order.

    Every check that can refuse an item runs before any write (validation, the employer, duplicates in the
    request, the caller's scope), and the writes cannot fail per item: new rows go in one
    `INSERT ... ON CONFLICT DO NOTHING` (a row another transaction created meanwhile is updated instead),
    changed rows in one executemany UPDATE, under row locks (one SELECT ... FOR UPDATE of the rows that
    differ, read again before writing). So the items are independent without a savepoint each, and the
    request costs a constant number of statements.
    With `atomic`, any refused item refuses the whole request (422 `bulk_rejected`) before anything is
    written."""
    results = await _bulk(session, raw_items, principal, atomic=atomic, write=True)
    if results is None:  # pragma: no cover - only a replay stops before writing
        raise RuntimeError("the bulk upsert stopped before writing")
    return results


async def bulk_replay(
    session: AsyncSession, raw_items: Sequence[Any], principal: Principal, *, atomic: bool
) -> list[Result] | None:
    """The results of `bulk_upsert` when it would write nothing (every valid item unchanged, or a refusal
    before any write), from the same checks and SELECTs; None as soon as an item is to be created or
    changed (`bulk_upsert` does it).

    The counsellors are read first, by the references and employers as sent, before any item is
    validated: a request with a new counsellor goes to `bulk_upsert` at the cost of that one SELECT, and a
    replay reads them once."""
    known = await _known_rows(session, raw_items, principal)
    if known is None:
        return None
    return await _bulk(session, raw_items, principal, atomic=atomic, write=False, known=known)


Rows = dict[tuple[uuid.UUID, str], dict[str, Any]]


async def _known_rows(session: AsyncSession, raw_items: Sequence[Any], principal: Principal) -> Rows | None:
    """The counsellors the items name, as sent (an item that is not plainly a reference with an employer is
    left to validation); None when one of them does not exist."""
    keys: set[tuple[uuid.UUID, str]] = set()
    only = principal.territory_ids[0] if len(principal.territory_ids) == 1 else None
    for raw in raw_items:
        # Only a reference that validation could take (printable, 1 to 64 characters) reaches the database.
        ref = _ref_of(raw)
        if ref is None:
            continue
        employer = raw.get("territory_id")
        if employer is None:
            if only is not None:
                keys.add((only, ref))
        elif isinstance(employer, str):
            try:
                keys.add((uuid.UUID(employer), ref))
            except ValueError:
                continue
    if not keys:
        return {}
    rows = await repo.rows_by_ref(session, keys)
    return rows if keys <= rows.keys() else None


async def _bulk(
    session: AsyncSession,
    raw_items: Sequence[Any],
    principal: Principal,
    *,
    atomic: bool,
    write: bool,
    known: Rows | None = None,
) -> list[Result] | None:
    results: list[Result | None] = [None] * len(raw_items)
    prepared: list[_Prepared] = []
    seen: set[tuple[uuid.UUID, str]] = set()
    for index, raw in enumerate(raw_items):
        try:
            item = BulkItem.model_validate(raw)
            territory_id = _employer(item.territory_id, principal, f"/items/{index}/territory_id")
        except ValidationError as exc:
            results[index] = _failed(index, _ref_of(raw), _invalid(index, exc))
            continue
        except AppError as error:
            results[index] = _failed(index, _ref_of(raw), error)
            continue
        key = (territory_id, item.external_ref)
        if key in seen:
            results[index] = _failed(
                index,
                item.external_ref,
                ValidationFailed(f"/items/{index}/external_ref", "appears more than once in this request"),
            )
            continue
        seen.add(key)
        prepared.append(_Prepared(index, item, territory_id, _columns(item)))

    in_scope = await repo.territories_in_scope(session, {p.territory_id for p in prepared}, principal)
    ready = []
    for p in prepared:
        if p.territory_id in in_scope:
            ready.append(p)
        else:
            results[p.index] = _failed(
                p.index,
                p.item.external_ref,
                UnknownReference(
                    f"/items/{p.index}/territory_id", "no territory with this id in your territories"
                ),
            )
    if atomic and len(ready) < len(raw_items):
        for p in ready:
            results[p.index] = _result(p.index, p.item.external_ref, NOT_APPLIED)
        raise BulkRejected(
            "at least one item was refused, so none was applied; see `items`",
            extra={"items": [r for r in results if r is not None]},
        )
    if not await _write(session, ready, results, atomic, write, known):
        return None
    return [r for r in results if r is not None]


async def _write(
    session: AsyncSession,
    ready: list[_Prepared],
    results: list[Result | None],
    atomic: bool,
    write: bool,
    known: Rows | None = None,
) -> bool:
    """Writes the ready items and fills their results; False, having written nothing, when `write` is
    off and an item is to be created or changed. `known`: the rows already read (`_known_rows`)."""
    if not ready:
        return True
    if known is not None:
        existing = known
    else:
        existing = await repo.rows_by_ref(session, [(p.territory_id, p.item.external_ref) for p in ready])
    if not any(
        (row := existing.get((p.territory_id, p.item.external_ref))) is None or _differs(row, p.columns)
        for p in ready
    ):
        # A replay: every item unchanged, nothing written and no lock taken.
        for p in ready:
            row = existing[(p.territory_id, p.item.external_ref)]
            results[p.index] = _result(p.index, p.item.external_ref, 200, row["id"], row["version"])
        return True
    if not write:
        return False
    now = utcnow()
    inserts: dict[uuid.UUID, _Prepared] = {}
    insert_rows = []
    for p in ready:
        if (p.territory_id, p.item.external_ref) in existing:
            continue
        new = new_id()
        inserts[new] = p
        insert_rows.append(
            {
                "id": new,
                "territory_id": p.territory_id,
                "external_ref": p.item.external_ref,
                **p.columns,
                "version": 1,
                "created_at": now,
                "updated_at": now,
            }
        )
    inserted = await repo.insert_new(session, insert_rows)
    entries = []
    for new, p in inserts.items():
        if new in inserted:
            results[p.index] = _result(p.index, p.item.external_ref, 201, new, 1)
            entries.append(
                changes.Entry(
                    RESOURCE,
                    new,
                    Action.created,
                    1,
                    p.territory_id,
                    audit.created_fields(
                        {"territory_id": p.territory_id, "external_ref": p.item.external_ref, **p.columns}
                    ),
                )
            )
    # Rows another transaction created between the SELECT and the INSERT: read them now.
    late = [p for new, p in inserts.items() if new not in inserted]
    if late:
        existing.update(
            await repo.rows_by_ref(session, [(p.territory_id, p.item.external_ref) for p in late])
        )
    pending = [p for p in ready if results[p.index] is None]
    # Only the rows that differ are locked, then compared again with their latest state: a concurrent sync
    # of the same person is then either seen (and its changes kept unless this item overrides them) or
    # waits for this one; no update is lost, and a replay takes no lock at all.
    differ = [
        existing[(p.territory_id, p.item.external_ref)]["id"]
        for p in pending
        if _differs(existing[(p.territory_id, p.item.external_ref)], p.columns)
    ]
    locked = await repo.lock_rows(session, differ) if differ else {}
    updates = []
    for p in pending:
        row = existing[(p.territory_id, p.item.external_ref)]
        row = locked.get(row["id"], row)
        if row["external_ref"] != p.item.external_ref:
            # Anonymised meanwhile: the person behind this reference is gone from the record.
            error = CounsellorAnonymized("the counsellor was anonymised meanwhile")
            if atomic:
                # The request's transaction rolls back with this error: nothing is applied.
                raise BulkRejected(
                    str(error), extra={"items": [_failed(p.index, p.item.external_ref, error)]}
                )
            results[p.index] = _failed(p.index, p.item.external_ref, error)
            continue
        changed = _differs(row, p.columns)
        version = row["version"] + 1 if changed else row["version"]
        if changed:
            updates.append({"id": row["id"], **p.columns, "version": version, "updated_at": now})
            entries.append(
                changes.Entry(
                    RESOURCE,
                    row["id"],
                    Action.updated,
                    version,
                    p.territory_id,
                    audit.changed_fields(row, {**p.columns, "version": version}),
                )
            )
        results[p.index] = _result(p.index, p.item.external_ref, 200, row["id"], version)
    await repo.update_many(session, updates)
    await changes.record_many(session, entries)
    return True


def _differs(row: dict[str, Any], columns: dict[str, Any]) -> bool:
    return any(row[name] != value for name, value in columns.items())


# --- retention (app.personal_data) ---------------------------------------------------------------------


async def retention_due(
    session: AsyncSession, ended_before: date, changed_before: datetime
) -> list[uuid.UUID]:
    """The counsellors whose retention is over: none of their assignments lasts, is to come, or ended on or
    after `ended_before`; a counsellor never assigned, when unchanged since `changed_before`."""
    return await repo.retention_due(session, ended_before, changed_before)


async def anonymize_if_due(
    session: AsyncSession, counsellor_id: uuid.UUID, ended_before: date, changed_before: datetime
) -> bool:
    """Anonymises the counsellor if its retention is over, checked again under its lock: an assignment
    made meanwhile (which takes the same lock, `lock_for_assignment`) keeps it."""
    counsellor = await repo.get(session, counsellor_id, None, for_update=True)
    if counsellor is None or not await repo.retention_due(
        session, ended_before, changed_before, counsellor_id
    ):
        return False
    await anonymize(session, counsellor)
    return True


async def assignments_of(session: AsyncSession, counsellor_id: uuid.UUID) -> list[Any]:
    """Every assignment of the counsellor, oldest first (ORM rows)."""
    return await repo.assignments_of(session, counsellor_id)
