"""Rules of the workshops domain: who may write a workshop, the venue and format rules, registrations with
capacity and waitlist, cancellation with promotion, attendance.

Capacity holds whatever the concurrency because every write that touches a workshop's registrations first
locks the workshop's row (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's writers run one at a time), then
reads, decides and writes the registrations and the counters in the same transaction; the CHECK constraints
of the table refuse any state where the counters exceed the capacities. Lock order: workshop, then its
registrations."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core import audit, changes, idempotency
from app.core.auth import ANONYMOUS, Principal, Role
from app.core.changes import Action
from app.core.pagination import PageRequest
from app.core.problems import (
    FieldError,
    Forbidden,
    NotFound,
    Unauthenticated,
    UnknownReference,
    ValidationFailed,
)
from app.counsellors import service as counsellors
from app.db import new_id, utcnow
from app.positions import service as positions
from app.positions.errors import PositionClosed
from app.positions.models import today
from app.referentials.data import AgeBracket, Attendance, SocialStatus
from app.territories import service as territories
from app.workshops import repository as repo
from app.workshops.errors import (
    AlreadyRegistered,
    AttendanceTotalsMismatch,
    CapacityBelowRegistrations,
    WorkshopClosed,
    WorkshopFull,
    WorkshopNotEditable,
    WorkshopNotStarted,
)
from app.workshops.models import Registration, RegistrationStatus, Workshop, WorkshopFormat, WorkshopStatus
from app.workshops.schemas import (
    AttendanceReport,
    RegistrationCreate,
    Venue,
    WorkshopCancel,
    WorkshopCreate,
    WorkshopUpdate,
    theme_mask,
)

RESOURCE = "workshops"
# Registrations as the idempotency table and the journal name them (personal data).
REGISTRATIONS = "registrations"
WRITERS = (Role.admin, Role.territory_manager, Role.counsellor)
CANCEL_TOKEN_PREFIX = "ct_"
_SYSTEM = Principal(role=Role.admin, name="workshops")


def department_of(commune_code: str) -> str:
    """The département code of an INSEE commune code (`69123` → `69`, `97411` → `974`, `2A004` → `2A`)."""
    return commune_code[:3] if commune_code.startswith("97") else commune_code[:2]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- reads ---------------------------------------------------------------------------------------------


async def read_visible(
    session: AsyncSession, workshop_id: uuid.UUID, principal: Principal, *, calendar: bool = False
) -> Any:
    """The workshop as the caller may read it (404 when it may not see it); `calendar`: with its iCalendar
    `sequence`."""
    row = await repo.read_row(session, workshop_id, principal, calendar=calendar)
    if row is None:
        raise NotFound("no workshop with this id")
    return row


async def reread(session: AsyncSession, workshop: Workshop) -> Any:
    """The read model of a workshop just written (by its writer, who sees it whole)."""
    await session.flush()
    return await repo.read_row(session, workshop.id, _SYSTEM)


async def subtree_path(session: AsyncSession, within: uuid.UUID | None) -> str | None:
    if within is None:
        return None
    path = await territories.path_of(session, within)
    if path is None:
        raise ValidationFailed("/query/within", "no territory with this id")
    return path


async def list_workshops(
    session: AsyncSession,
    principal: Principal,
    page: PageRequest,
    filters: repo.Filters,
    sort: str | None,
) -> tuple[Sequence[dict[str, Any]], str | None, int | None]:
    keys = repo.sort_keys(sort, filters.near)
    return await repo.list_page(session, principal, page, keys, filters)


async def calendar_rows(
    session: AsyncSession, principal: Principal, filters: repo.Filters, limit: int
) -> list[Any]:
    return await repo.list_rows(session, principal, repo.list_query(principal, filters), limit)


# --- who may write -------------------------------------------------------------------------------------


def _runs(workshop: Workshop, principal: Principal) -> bool:
    return principal.role is Role.counsellor and workshop.counsellor_id == principal.counsellor_id


async def _may_organise(session: AsyncSession, workshop: Workshop, principal: Principal) -> bool:
    """Admin, a territory manager of the workshop's territory (or above), the counsellor who runs it."""
    if principal.is_admin or _runs(workshop, principal):
        return True
    if principal.role is not Role.territory_manager:
        return False
    return await repo.is_in_scope(session, workshop.id, principal)


async def get_for_change(session: AsyncSession, workshop_id: uuid.UUID, principal: Principal) -> Workshop:
    """The workshop, locked until the transaction ends: 404 when the caller cannot see it, 403 when it sees
    it but may not change it."""
    workshop = await repo.get(session, workshop_id, for_update=True)
    if workshop is None or not await repo.is_visible(session, workshop_id, principal):
        raise NotFound("no workshop with this id")
    if not await _may_organise(session, workshop, principal):
        raise Forbidden("only the workshop's organisers (its counsellor, its territory's managers) change it")
    return workshop


async def _require_organiser(session: AsyncSession, workshop_id: uuid.UUID, principal: Principal) -> Workshop:
    """For reads of personal data: the workshop, unlocked, if the caller organises it."""
    if principal.is_anonymous:
        raise Unauthenticated()
    workshop = await repo.get(session, workshop_id)
    if workshop is None or not await repo.is_visible(session, workshop_id, principal):
        raise NotFound("no workshop with this id")
    if not await _may_organise(session, workshop, principal):
        raise Forbidden("registrations are personal data: only the workshop's organisers read them")
    return workshop


# --- workshops -----------------------------------------------------------------------------------------


async def _check_where(
    session: AsyncSession,
    fmt: WorkshopFormat,
    venue: Venue | None,
    online_url: str | None,
    *,
    check_venue: bool = True,
) -> None:
    if fmt is WorkshopFormat.in_person and venue is None:
        raise ValidationFailed("/venue", "an in-person workshop needs a venue")
    if fmt is WorkshopFormat.remote and online_url is None:
        raise ValidationFailed("/online_url", "a remote workshop needs an online_url")
    if venue is not None and check_venue:
        await territories.check_commune(
            session,
            venue.commune_code,
            venue.postcode,
            code_pointer="/venue/commune_code",
            postcode_pointer="/venue/postcode",
        )


def _venue_columns(venue: Venue | None) -> dict[str, Any]:
    if venue is None:
        return dict.fromkeys(
            (
                "venue",
                "venue_commune_code",
                "venue_department_code",
                "venue_postcode",
                "venue_lat",
                "venue_lon",
            )
        )
    return {
        "venue": venue.model_dump(),
        "venue_commune_code": venue.commune_code,
        "venue_department_code": department_of(venue.commune_code),
        "venue_postcode": venue.postcode,
        "venue_lat": venue.lat,
        "venue_lon": venue.lon,
    }


async def _position_for(session: AsyncSession, position_id: uuid.UUID, principal: Principal) -> Any:
    """The position a new workshop is run under, if the caller may write there (else 422 at /position_id)."""
    try:
        if principal.role is Role.counsellor:
            position = await positions.get_visible(session, position_id, _SYSTEM)
            assert principal.counsellor_id is not None
            if not await repo.holds_position(session, principal.counsellor_id, position.id, today()):
                raise NotFound()
        else:
            position = await positions.get_visible(session, position_id, principal)
    except NotFound as exc:
        raise UnknownReference(
            "/position_id", "no position with this id that you may run workshops under"
        ) from exc
    return position


async def create(session: AsyncSession, data: WorkshopCreate, principal: Principal) -> Workshop:
    position = await _position_for(session, data.position_id, principal)
    counsellor_id = data.counsellor_id
    if principal.role is Role.counsellor:
        if counsellor_id is not None and counsellor_id != principal.counsellor_id:
            raise UnknownReference("/counsellor_id", "a counsellor's key creates its own workshops only")
        counsellor_id = principal.counsellor_id
    elif counsellor_id is None:
        counsellor_id = await repo.current_counsellor(session, position.id, today())
    elif not await counsellors.exists(session, counsellor_id):
        raise UnknownReference("/counsellor_id", "no counsellor with this id")
    await _check_where(session, data.format, data.venue, data.online_url)
    if position.closed_on is not None:
        raise PositionClosed("a closed position runs no workshop")
    workshop = Workshop(
        position_id=position.id,
        counsellor_id=counsellor_id,
        territory_id=position.territory_id,
        title=data.title,
        description=data.description,
        themes=[t.value for t in data.themes],
        themes_mask=theme_mask(data.themes),
        level=data.level.value,
        format=data.format.value,
        online_url=data.online_url,
        starts_at=data.starts_at,
        ends_at=data.starts_at + timedelta(minutes=data.duration_minutes),
        duration_minutes=data.duration_minutes,
        capacity=data.capacity,
        waitlist_capacity=data.waitlist_capacity,
        registered_count=0,
        waitlisted_count=0,
        seats_left=data.capacity,
        attendees=0,
        status=WorkshopStatus.scheduled.value,
        public=data.public,
        sequence=0,
        **_venue_columns(data.venue),
    )
    repo.add(session, workshop)
    await session.flush()
    await _record(session, workshop, Action.created)
    return workshop


async def _record(session: AsyncSession, workshop: Workshop, action: Action) -> None:
    await changes.record(
        session,
        resource=RESOURCE,
        id=workshop.id,
        action=action,
        version=workshop.version,
        territory_id=workshop.territory_id,
    )


def _require_scheduled(workshop: Workshop) -> None:
    if workshop.status != WorkshopStatus.scheduled.value:
        raise WorkshopNotEditable(f"this workshop is {workshop.status}")


# What a calendar shows of a workshop that changes its iCalendar SEQUENCE (RFC 5545 3.8.7.4): its start, its
# end, its place. A new title or description, a registration, a capacity do not: a calendar takes them on
# its next refresh without telling its user that the event moved. Cancelling raises it too (`cancel`).
RESCHEDULING = frozenset({"starts_at", "ends_at", "format", "venue", "online_url"})

_NOT_NULL = (
    "title",
    "themes",
    "level",
    "format",
    "starts_at",
    "duration_minutes",
    "capacity",
    "waitlist_capacity",
    "public",
)


async def update(session: AsyncSession, workshop: Workshop, patch: WorkshopUpdate) -> Workshop:
    """Merge patch of a scheduled workshop (from `get_for_change`). Raising the capacity promotes
    waitlisted registrations into the new seats."""
    values = patch.changes()
    for name in _NOT_NULL:
        if name in values and values[name] is None:
            raise ValidationFailed(f"/{name}", "cannot be null")
    fmt = WorkshopFormat(values.get("format") or workshop.format)
    venue = patch.venue if "venue" in values else (Venue(**workshop.venue) if workshop.venue else None)
    online_url = values.get("online_url", workshop.online_url)
    if {"format", "venue", "online_url"} & values.keys():
        await _check_where(session, fmt, venue, online_url, check_venue="venue" in values)
    _require_scheduled(workshop)
    capacity = values.get("capacity", workshop.capacity)
    waitlist_capacity = values.get("waitlist_capacity", workshop.waitlist_capacity)
    if capacity < workshop.registered_count:
        raise CapacityBelowRegistrations(
            f"{workshop.registered_count} registrations are confirmed: cancel some first",
            extra={"registered_count": workshop.registered_count},
        )
    columns: dict[str, Any] = {}
    for name in ("title", "description", "public", "online_url", "capacity", "duration_minutes"):
        if name in values:
            columns[name] = values[name]
    if "themes" in values:
        columns["themes"] = [t.value for t in values["themes"]]
        columns["themes_mask"] = theme_mask(values["themes"])
    if "level" in values:
        columns["level"] = values["level"].value
    if "format" in values:
        columns["format"] = fmt.value
    if "venue" in values:
        columns.update(_venue_columns(patch.venue))
    if "starts_at" in values:
        columns["starts_at"] = values["starts_at"]
    starts_at = columns.get("starts_at", workshop.starts_at)
    duration = columns.get("duration_minutes", workshop.duration_minutes)
    columns["ends_at"] = starts_at + timedelta(minutes=duration)
    changed = {k: v for k, v in columns.items() if getattr(workshop, k) != v}
    promoted = 0
    if capacity > workshop.registered_count and workshop.waitlisted_count:
        promoted = min(capacity - workshop.registered_count, workshop.waitlisted_count)
    if waitlist_capacity < workshop.waitlisted_count - promoted:
        raise CapacityBelowRegistrations(
            f"{workshop.waitlisted_count - promoted} registrations are waitlisted: cancel some first",
            extra={"waitlisted_count": workshop.waitlisted_count - promoted},
        )
    if waitlist_capacity != workshop.waitlist_capacity:
        changed["waitlist_capacity"] = waitlist_capacity
    if not changed:
        return workshop
    for name, value in changed.items():
        setattr(workshop, name, value)
    if RESCHEDULING & changed.keys():
        workshop.sequence += 1
    workshop.seats_left = workshop.capacity - workshop.registered_count
    if promoted:
        await _promote(session, workshop, promoted)
    await session.flush()
    await _record(session, workshop, Action.updated)
    return workshop


async def cancel(session: AsyncSession, workshop: Workshop, data: WorkshopCancel) -> Workshop:
    """scheduled → cancelled; its registrations are cancelled in the same transaction."""
    _require_scheduled(workshop)
    now = utcnow()
    await repo.cancel_all(session, workshop.id, now)
    workshop.status = WorkshopStatus.cancelled.value
    workshop.sequence += 1
    workshop.cancel_reason = data.reason
    workshop.registered_count = 0
    workshop.waitlisted_count = 0
    workshop.seats_left = workshop.capacity
    await session.flush()
    await _record(session, workshop, Action.updated)
    return workshop


# --- registrations -------------------------------------------------------------------------------------


ALREADY_REGISTERED = "this email address is already registered on this workshop"


async def register(
    session: AsyncSession, workshop_id: uuid.UUID, data: RegistrationCreate, principal: Principal
) -> tuple[Any, str]:
    """Confirmed while seats are left, then waitlisted, then 409 `workshop_full`; under the workshop's lock.
    Returns the registration's read columns and its cancel token (shown once; only its hash is kept).

    Core statements only (no ORM object): the public registration is the hottest write, and runs on the
    direct path (app.core.direct) as well as through its route."""
    email_key = data.email.lower()
    workshop = await repo.lock_for_registration(session, workshop_id, principal, email_key)
    if workshop is None:
        raise NotFound("no workshop with this id")
    now = utcnow()
    if workshop.status != WorkshopStatus.scheduled.value:
        raise WorkshopClosed(f"this workshop is {workshop.status}")
    if workshop.starts_at <= now:
        raise WorkshopClosed("this workshop has already started")
    # The locking statement's answer dates from before it waited for the lock: a live registration it saw
    # may have been cancelled meanwhile, so a "yes" is checked again (rare); a "no" is the INSERT's to
    # confirm (the unique index).
    if workshop.email_registered and await repo.email_registered(session, workshop_id, email_key):
        raise AlreadyRegistered(ALREADY_REGISTERED)
    registered, seats_left, waitlisted = (
        workshop.registered_count,
        workshop.seats_left,
        workshop.waitlisted_count,
    )
    if seats_left > 0:
        status, rank = RegistrationStatus.confirmed, None
        registered, seats_left = registered + 1, seats_left - 1
    elif waitlisted < workshop.waitlist_capacity:
        waitlisted += 1
        status, rank = RegistrationStatus.waitlisted, waitlisted
    elif await repo.email_registered(session, workshop_id, email_key):
        # A registration of this email committed while this request waited: that is the answer, as it
        # would have been had this request come second.
        raise AlreadyRegistered(ALREADY_REGISTERED)
    else:
        raise WorkshopFull(
            "every seat and waitlist place is taken",
            extra={"capacity": workshop.capacity, "waitlist_capacity": workshop.waitlist_capacity},
        )
    await repo.set_counters(
        session,
        workshop_id,
        registered_count=registered,
        seats_left=seats_left,
        waitlisted_count=waitlisted,
        now=now,
    )
    token = CANCEL_TOKEN_PREFIX + secrets.token_urlsafe(24)
    registration_id = new_id()
    values = {
        "id": registration_id,
        "workshop_id": workshop_id,
        "first_name": data.first_name,
        "last_name": data.last_name,
        "email": data.email,
        "email_key": email_key,
        "phone": data.phone,
        "age_bracket": data.age_bracket.value if data.age_bracket else None,
        "social_status": data.social_status.value if data.social_status else None,
        "status": status.value,
        "waitlist_rank": rank,
        "attendance": "unknown",
        "cancel_token_hash": hash_token(token),
        "created_at": now,
        "updated_at": now,
    }
    row = await repo.insert_registration(session, {**values, "anonymized_at": None})
    if row is None:
        # The same email registered by a request that committed while this one waited for the lock: the
        # transaction, counters included, is rolled back.
        raise AlreadyRegistered(ALREADY_REGISTERED)
    # A Core write (no ORM object): its audit event explicitly, in its transaction.
    await audit.record_write(
        session, resource=REGISTRATIONS, resource_id=registration_id, changes=audit.created_fields(values)
    )
    return row, token


async def registration_row(session: AsyncSession, registration_id: uuid.UUID) -> Any:
    return await repo.registration_row(session, registration_id)


async def list_registrations(
    session: AsyncSession,
    workshop_id: uuid.UUID,
    principal: Principal,
    page: PageRequest,
    status: RegistrationStatus | None,
) -> tuple[Sequence[dict[str, Any]], str | None, int | None]:
    await _require_organiser(session, workshop_id, principal)
    return await repo.registrations_page(session, workshop_id, page, status.value if status else None)


async def read_registration(
    session: AsyncSession,
    workshop_id: uuid.UUID,
    registration_id: uuid.UUID,
    principal: Principal,
    cancel_token: str | None = None,
) -> Any:
    """By the workshop's organisers, or by the registrant with the registration's cancel token (the one that
    cancels it: it reads that registration and no other; 403 when it is another's or wrong), whatever the
    workshop's visibility: the token proves the registration is theirs."""
    if cancel_token is not None:
        registration = await repo.get_registration(session, workshop_id, registration_id)
        if registration is None:
            raise NotFound("no registration with this id on this workshop")
        if not hmac.compare_digest(hash_token(cancel_token), registration.cancel_token_hash):
            raise Forbidden("this cancel token does not belong to this registration")
        return await repo.registration_row(session, registration_id)
    if principal.is_anonymous:
        raise Unauthenticated("send the registration's X-Cancel-Token, or an organiser's API key")
    await _require_organiser(session, workshop_id, principal)
    if await repo.get_registration(session, workshop_id, registration_id) is None:
        raise NotFound("no registration with this id on this workshop")
    return await repo.registration_row(session, registration_id)


async def registration_with_token(
    session: AsyncSession, workshop_id: uuid.UUID, registration_id: uuid.UUID, cancel_token: str
) -> Registration:
    """The registration its registrant names with its cancel token: 404 when the workshop has no such
    registration, 403 when the token is not this registration's."""
    registration = await repo.get_registration(session, workshop_id, registration_id)
    if registration is None:
        raise NotFound("no registration with this id on this workshop")
    if not hmac.compare_digest(hash_token(cancel_token), registration.cancel_token_hash):
        raise Forbidden("this cancel token does not belong to this registration")
    return registration


async def _promote(session: AsyncSession, workshop: Workshop, count: int) -> None:
    """The first `count` waitlisted registrations take freed seats; the rest move up the waitlist."""
    promoted = await repo.first_waitlisted(session, workshop.id, count)
    for registration in promoted:
        registration.status = RegistrationStatus.confirmed.value
        registration.waitlist_rank = None
    workshop.registered_count += len(promoted)
    workshop.waitlisted_count -= len(promoted)
    workshop.seats_left = workshop.capacity - workshop.registered_count
    await session.flush()
    if promoted:
        await repo.shift_ranks(session, workshop.id, 0, len(promoted))


async def cancel_registration(
    session: AsyncSession,
    workshop_id: uuid.UUID,
    registration_id: uuid.UUID,
    principal: Principal,
    cancel_token: str | None,
) -> None:
    """By the workshop's organisers, or by anyone with the registration's cancel token (403 when it is
    wrong). A freed seat goes to the first waitlisted registration, in the same transaction."""
    if cancel_token is not None:
        workshop = await repo.get(session, workshop_id, for_update=True)
        registration = await repo.get_registration(session, workshop_id, registration_id)
        if workshop is None or registration is None:
            raise NotFound("no registration with this id on this workshop")
        if not hmac.compare_digest(hash_token(cancel_token), registration.cancel_token_hash):
            raise Forbidden("this cancel token does not belong to this registration")
    else:
        if principal is ANONYMOUS or principal.is_anonymous:
            raise Unauthenticated("send the registration's X-Cancel-Token, or an organiser's API key")
        workshop = await get_for_change(session, workshop_id, principal)
        registration = await repo.get_registration(session, workshop_id, registration_id)
        if registration is None:
            raise NotFound("no registration with this id on this workshop")
    if registration.status == RegistrationStatus.cancelled.value:
        return
    if workshop.status == WorkshopStatus.completed.value:
        raise WorkshopClosed("this workshop is completed: its registrations are its attendance record")
    was, rank = registration.status, registration.waitlist_rank
    registration.status = RegistrationStatus.cancelled.value
    registration.waitlist_rank = None
    if was == RegistrationStatus.confirmed.value:
        workshop.registered_count -= 1
        workshop.seats_left += 1
        await session.flush()
        if workshop.waitlisted_count:
            await _promote(session, workshop, 1)
    else:
        workshop.waitlisted_count -= 1
        await session.flush()
        await repo.shift_ranks(session, workshop.id, rank or 0, 1)


# --- attendance ----------------------------------------------------------------------------------------


def _check_totals(report: AttendanceReport) -> None:
    walk_ins = report.walk_ins
    errors = []
    breakdowns = (("age_brackets", walk_ins.age_brackets), ("social_statuses", walk_ins.social_statuses))
    for name, breakdown in breakdowns:
        if sum(breakdown.values()) != walk_ins.total:
            errors.append(
                FieldError(
                    pointer=f"/walk_ins/{name}",
                    detail=f"adds up to {sum(breakdown.values())}, not to total {walk_ins.total}",
                )
            )
    if errors:
        raise AttendanceTotalsMismatch("the walk-ins' breakdowns must add up to their total", errors=errors)


async def record_attendance(session: AsyncSession, workshop: Workshop, report: AttendanceReport) -> Workshop:
    """The activity report of a workshop that has started (from `get_for_change`); it becomes completed.
    Sending it again replaces it."""
    _check_totals(report)
    live = {r.id: r for r in await repo.live_registrations(session, workshop.id)}
    for index, item in enumerate(report.registrations):
        if item.id not in live:
            raise UnknownReference(f"/registrations/{index}/id", "no live registration with this id here")
    if workshop.status == WorkshopStatus.cancelled.value:
        raise WorkshopNotEditable("this workshop is cancelled")
    if workshop.starts_at > utcnow():
        raise WorkshopNotStarted("attendance is recorded once the workshop has started")
    for item in report.registrations:
        live[item.id].attendance = item.attendance.value
    walk_ins = report.walk_ins
    workshop.walk_ins = {
        "total": walk_ins.total,
        "age_brackets": {k.value: v for k, v in walk_ins.age_brackets.items()},
        "social_statuses": {k.value: v for k, v in walk_ins.social_statuses.items()},
    }
    present = [r for r in live.values() if r.attendance == Attendance.present.value]
    ages = Counter({bracket.value: 0 for bracket in AgeBracket})
    socials = Counter({status.value: 0 for status in SocialStatus})
    ages.update(workshop.walk_ins["age_brackets"])
    socials.update(workshop.walk_ins["social_statuses"])
    # A registrant who gave no bracket or status counts as `non_communique`, like a walk-in who did not say.
    ages.update(r.age_bracket or AgeBracket.non_communique.value for r in present)
    socials.update(r.social_status or SocialStatus.non_communique.value for r in present)
    workshop.attendees = walk_ins.total + len(present)
    workshop.attendee_breakdown = {
        "age_brackets": {bracket.value: ages[bracket.value] for bracket in AgeBracket},
        "social_statuses": {status.value: socials[status.value] for status in SocialStatus},
    }
    workshop.status = WorkshopStatus.completed.value
    await session.flush()
    await _record(session, workshop, Action.updated)
    return workshop


def starts_window(starts_from: datetime | None) -> datetime:
    """`from` defaults to now, for everyone."""
    return starts_from if starts_from is not None else utcnow()


# --- personal data (app.personal_data) -----------------------------------------------------------------

# Erasure chunks: the ids of one UPDATE's IN list.
_ERASE_CHUNK = 500


async def erase_registrations(session: AsyncSession, ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Erases the registrants' names, email and phone (the registrations stay, counted, anonymous: status,
    attendance, age bracket and social status are what the counters and the activity report count), and
    every stored `Idempotency-Key` response that showed them (a replay then answers 410). Already erased
    ones are left as they are. The ids of those erased."""
    now = utcnow()
    erased: list[uuid.UUID] = []
    for start in range(0, len(ids), _ERASE_CHUNK):
        chunk = ids[start : start + _ERASE_CHUNK]
        erased += await repo.erase_registrations(session, chunk, now)
        await idempotency.forget_many(session, REGISTRATIONS, chunk)
    return erased


async def registrations_due(
    session: AsyncSession, ended_before: datetime, limit: int = _ERASE_CHUNK
) -> list[uuid.UUID]:
    """Up to `limit` registrations still holding personal data whose workshop ended before `ended_before`
    (erase them, and ask again for the next ones)."""
    return await repo.registrations_due(session, ended_before, limit)


async def runs_of(session: AsyncSession, counsellor_id: uuid.UUID) -> list[Any]:
    return await repo.runs_of(session, counsellor_id)


async def summary(session: AsyncSession, workshop_id: uuid.UUID) -> Any:
    return await repo.summary(session, workshop_id)


async def registration_read(session: AsyncSession, registration_id: uuid.UUID) -> Any:
    return await repo.registration_row(session, registration_id)
