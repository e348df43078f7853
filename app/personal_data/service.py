"""Rules of personal data: what is held about a person (access), its erasure at the registrant's request,
and retention (`cnfs-api purge`).

The statistics never read personal data: a workshop's attendance figures are stored on the workshop
(`attendees`, `attendee_breakdown`, and the rollup the database keeps from them), and a registration erased
keeps what its workshop's counters and activity report count (its status, attendance, age bracket and social
status). Erasing or purging therefore changes no published figure."""

from __future__ import annotations

import calendar
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys import service as api_keys
from app.core import idempotency
from app.core.auth import Principal, Role
from app.core.problems import Forbidden, Unauthenticated
from app.counsellors import service as counsellors
from app.db import utcnow
from app.personal_data import journal
from app.personal_data.schemas import CounsellorPersonalData, RegistrationPersonalData
from app.positions import service as positions
from app.workshops import service as workshops

PURGE_ACTION = "cli_purge"
# Registrations erased per batch by the purge.
BATCH = 500


def months_before(moment: datetime, months: int) -> datetime:
    """The same instant `months` calendar months earlier (the 31st becomes the month's last day)."""
    year, month = divmod(moment.year * 12 + moment.month - 1 - months, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


# --- access --------------------------------------------------------------------------------------------


async def counsellor_personal_data(session: AsyncSession, counsellor_id: uuid.UUID) -> CounsellorPersonalData:
    """Everything held about a counsellor (admin only: the router checks the role): the record, the
    assignments, the workshops run, the API keys bound to them, and the journal's lines about them; this
    read is journaled."""
    row = await counsellors.visible_row(session, counsellor_id, _ADMIN)
    await counsellors.fill_current(session, [row])
    assignments = await counsellors.assignments_of(session, counsellor_id)
    runs = await workshops.runs_of(session, counsellor_id)
    keys = await api_keys.of_counsellor(session, counsellor_id)
    lines = await journal.lines_about(session, [counsellor_id, *(a.id for a in assignments)])
    await journal.record_read(session, resource=counsellors.RESOURCE, subject_ids=[counsellor_id])
    return CounsellorPersonalData.model_validate(
        {
            "counsellor": row,
            "assignments": [positions.assignment_read(a) for a in assignments],
            "workshops": [r._asdict() for r in runs],
            "api_keys": keys,
            "journal": lines,
        }
    )


async def registration_personal_data(
    session: AsyncSession,
    workshop_id: uuid.UUID,
    registration_id: uuid.UUID,
    principal: Principal,
    cancel_token: str | None,
) -> RegistrationPersonalData:
    """Everything held about a registrant, read with the registration's cancel token, and the journal's
    lines about them; this read is journaled."""
    registration = await _registrant(session, workshop_id, registration_id, principal, cancel_token)
    row = await workshops.registration_read(session, registration.id)
    workshop = await workshops.summary(session, workshop_id)
    lines = await journal.lines_about(session, [registration.id])
    await journal.record_read(session, resource=workshops.REGISTRATIONS, subject_ids=[registration.id])
    return RegistrationPersonalData.model_validate(
        {"registration": row._asdict(), "workshop": workshop._asdict(), "journal": lines}
    )


async def _registrant(
    session: AsyncSession,
    workshop_id: uuid.UUID,
    registration_id: uuid.UUID,
    principal: Principal,
    cancel_token: str | None,
) -> Any:
    if cancel_token is None:
        if principal.is_anonymous:
            raise Unauthenticated("send the registration's X-Cancel-Token")
        raise Forbidden("only the registrant, with the registration's X-Cancel-Token, does this")
    return await workshops.registration_with_token(session, workshop_id, registration_id, cancel_token)


# --- erasure -------------------------------------------------------------------------------------------


ERASED_FIELDS = ("first_name", "last_name", "email", "email_key", "phone")


async def erase_registration(
    session: AsyncSession,
    workshop_id: uuid.UUID,
    registration_id: uuid.UUID,
    principal: Principal,
    cancel_token: str | None,
) -> None:
    """The registrant erases their names, email and phone; the registration stays, counted, anonymous.
    Erasing again changes nothing."""
    registration = await _registrant(session, workshop_id, registration_id, principal, cancel_token)
    if registration.anonymized_at is not None:
        return
    erased = await workshops.erase_registrations(session, [registration.id])
    await journal.record_erasures(session, workshops.REGISTRATIONS, erased, ERASED_FIELDS)


# --- retention -----------------------------------------------------------------------------------------


@dataclass
class PurgeReport:
    registrations: int = 0
    counsellors: int = 0
    journal_lines: int = 0
    idempotency_records: int = 0


@dataclass
class Retention:
    registration_months: int
    counsellor_months: int
    journal_days: int
    idempotency_hours: int


async def purge(session: AsyncSession, retention: Retention, now: datetime | None = None) -> PurgeReport:
    """Erases what is past its retention, in the caller's transaction; running it again at once changes
    nothing. The registrations of workshops that ended more than `registration_months` ago are erased;
    counsellors whose last assignment ended more than `counsellor_months` ago (none lasting or to come)
    are anonymised; the journal's lines older than `journal_days` and the stored `Idempotency-Key`
    responses past their window are deleted. Each erasure is journaled (one write event per person, the
    purge's action `cli_purge` from the command's context), and one event more tells the counts."""
    now = now or utcnow()
    report = PurgeReport()
    workshops_ended_before = months_before(now, retention.registration_months)
    # By batches, so that a first purge of years of registrations holds one batch of ids at a time.
    while due := await workshops.registrations_due(session, workshops_ended_before, BATCH):
        erased = await workshops.erase_registrations(session, due)
        if not erased:  # pragma: no cover - erased meanwhile by their registrants, and not seen again
            break
        await journal.record_erasures(session, workshops.REGISTRATIONS, erased, ERASED_FIELDS)
        report.registrations += len(erased)
    ended_before = months_before(now, retention.counsellor_months)
    for counsellor_id in await counsellors.retention_due(session, ended_before.date(), ended_before):
        # Its write event is the anonymisation's own (an ORM write, journaled with the purge's action).
        if await counsellors.anonymize_if_due(session, counsellor_id, ended_before.date(), ended_before):
            report.counsellors += 1
    report.journal_lines = await journal.purge(session, now - timedelta(days=retention.journal_days))
    report.idempotency_records = await idempotency.purge_expired(
        session, timedelta(hours=retention.idempotency_hours)
    )
    await journal.record_write(
        session,
        resource="personal_data",
        resource_id=None,
        changes={name: {"before": None, "after": count} for name, count in asdict(report).items()},
    )
    return report


_ADMIN = Principal(role=Role.admin, name="personal data")
