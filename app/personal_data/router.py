"""HTTP handlers of the personal-data rights: access (a counsellor's, a registrant's) and a registrant's
erasure."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Header, Response

from app.core import audit
from app.core.auth import AdminDep, PrincipalDep
from app.core.cache_control import PRIVATE
from app.core.problems import problem_responses
from app.core.responses import model_response
from app.core.routers import api_router
from app.db import SessionDep
from app.personal_data import service
from app.personal_data.schemas import CounsellorPersonalData, RegistrationPersonalData

router = api_router("", tags=["personal data"])

CancelTokenHeader = Annotated[
    str | None,
    Header(
        alias="X-Cancel-Token",
        max_length=128,
        description="The registration's `cancel_token`, given when registering: it proves the registrant.",
        examples=["ct_3q2Zb1kR9yW0mTfA7cXeVg"],
    ),
]
JOURNALED = (
    " This read is itself journaled (`GET /audit-events`, and the next answer's `journal`). Never cached "
    "(`private, no-store`)."
)
REGISTRANT_DOC = (
    "With the registration's `X-Cancel-Token` (no key needed): a wrong token, or another registration's → "
    "403 `forbidden`; no such registration on this workshop → 404; no token: 401 without a key, 403 with "
    "one (only the registrant exercises this right here; organisers read registrations at "
    "`GET /workshops/{id}/registrations`)."
)


def _private(response: Response) -> Response:
    response.headers["Cache-Control"] = PRIVATE
    return response


@router.get(
    "/counsellors/{counsellor_id}/personal-data",
    response_model=CounsellorPersonalData,
    summary="Everything held about a counsellor",
    description="Admin (right of access, GDPR art. 15): the record, every assignment, the workshops they "
    "run or ran, and the journal's lines about them (who read or changed their data, when; within "
    "`JOURNAL_RETENTION_DAYS`)." + JOURNALED,
    responses=problem_responses(401, 403, 404, 422),
)
@audit.journaled
async def counsellors_personal_data(
    session: SessionDep, principal: AdminDep, counsellor_id: uuid.UUID
) -> Response:
    return _private(model_response(await service.counsellor_personal_data(session, counsellor_id)))


@router.get(
    "/workshops/{workshop_id}/registrations/{registration_id}/personal-data",
    response_model=RegistrationPersonalData,
    summary="Everything held about a registrant",
    description="The registrant's right of access (GDPR art. 15): the registration, its workshop, and the "
    "journal's lines about it (who read or changed it, when). " + REGISTRANT_DOC + JOURNALED,
    responses=problem_responses(401, 403, 404, 422),
)
@audit.journaled
async def workshops_registrations_personal_data(
    session: SessionDep,
    principal: PrincipalDep,
    workshop_id: uuid.UUID,
    registration_id: uuid.UUID,
    cancel_token: CancelTokenHeader = None,
) -> Response:
    data = await service.registration_personal_data(
        session, workshop_id, registration_id, principal, cancel_token
    )
    return _private(model_response(data))


@router.delete(
    "/workshops/{workshop_id}/registrations/{registration_id}/personal-data",
    status_code=204,
    summary="Erase a registrant's personal data",
    description="The registrant's right to erasure (GDPR art. 17): their names, email and phone are erased "
    "for good (`anonymized_at` set); the registration stays, anonymous, with its status, attendance, age "
    "bracket and social status, so that the workshop's counters and statistics do not move, and its "
    "`X-Cancel-Token` still cancels it. In the same transaction, the response stored for the registration's "
    "`Idempotency-Key` goes: a retry with it answers 410 `idempotency_key_erased`. Erasing again changes "
    "nothing (204). " + REGISTRANT_DOC,
    responses=problem_responses(401, 403, 404, 422),
)
async def workshops_registrations_erase_personal_data(
    session: SessionDep,
    principal: PrincipalDep,
    workshop_id: uuid.UUID,
    registration_id: uuid.UUID,
    cancel_token: CancelTokenHeader = None,
) -> Response:
    await service.erase_registration(session, workshop_id, registration_id, principal, cancel_token)
    return Response(status_code=204)
