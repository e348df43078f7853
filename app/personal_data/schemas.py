"""API models of the personal-data answers: everything held about a person, and the journal about them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.api_keys.schemas import ApiKeyRead
from app.counsellors.schemas import COUNSELLOR_READ, CounsellorRead
from app.positions.schemas import ASSIGNMENT_READ, AssignmentRead
from app.workshops.models import WorkshopStatus
from app.workshops.schemas import REGISTRATION_READ, RegistrationRead


class JournalActor(BaseModel):
    key_id: uuid.UUID | None = Field(description="The API key; null for a caller without a key or the CLI.")
    name: str | None
    role: str = Field(description="`admin`, ..., `public` (no key), `system` (the command line).")


class JournalLine(BaseModel):
    id: uuid.UUID
    occurred_at: datetime
    kind: str = Field(description="`read` (the person's data was shown) or `write` (it was changed).")
    action: str = Field(description="The operation id, e.g. `counsellors_get`, or `cli_purge`.")
    resource: str
    resource_id: uuid.UUID | None
    actor: JournalActor
    request_id: str | None
    changes: dict[str, Any] | None = Field(description="Fields changed by a write, personal values masked.")


JOURNAL_LINE: dict[str, Any] = {
    "id": "019abc3e-0000-7000-8000-000000000090",
    "occurred_at": "2026-11-26T09:31:00Z",
    "kind": "read",
    "action": "counsellors_get",
    "resource": "counsellors",
    "resource_id": "019abc3e-0000-7000-8000-000000000020",
    "actor": {"key_id": "019abc3e-0000-7000-8000-000000000001", "name": "SIRH Métropole", "role": "admin"},
    "request_id": "5f0c6c1e-2b0a-4c55-9d0e-3b8e2f7f9a10",
    "changes": None,
}


class WorkshopRun(BaseModel):
    """A workshop the counsellor runs (or ran): `counsellor_id` links it to the person."""

    id: uuid.UUID
    title: str
    starts_at: datetime
    status: WorkshopStatus


class CounsellorPersonalData(BaseModel):
    counsellor: CounsellorRead
    assignments: list[AssignmentRead] = Field(description="Every assignment, oldest first.")
    workshops: list[WorkshopRun] = Field(description="The workshops they run or ran, oldest first.")
    api_keys: list[ApiKeyRead] = Field(
        description="The API keys bound to them (role `counsellor`), revoked ones too; never a secret."
    )
    journal: list[JournalLine] = Field(
        description="Who read or changed the person's data, and when (oldest first), within the journal's "
        "retention (`JOURNAL_RETENTION_DAYS`); this request adds one line."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "counsellor": COUNSELLOR_READ,
                    "assignments": [ASSIGNMENT_READ],
                    "workshops": [
                        {
                            "id": "019abc3e-0000-7000-8000-000000000030",
                            "title": "Rédiger son CV en ligne",
                            "starts_at": "2026-12-03T09:30:00Z",
                            "status": "scheduled",
                        }
                    ],
                    "api_keys": [],
                    "journal": [JOURNAL_LINE],
                }
            ]
        }
    )


class RegisteredWorkshop(BaseModel):
    """The workshop a registration is for, as its registrant knows it."""

    id: uuid.UUID
    title: str
    starts_at: datetime
    ends_at: datetime
    status: WorkshopStatus


class RegistrationPersonalData(BaseModel):
    registration: RegistrationRead
    workshop: RegisteredWorkshop
    journal: list[JournalLine] = Field(
        description="Who read or changed the registration, and when (oldest first), within the journal's "
        "retention (`JOURNAL_RETENTION_DAYS`); this request adds one line."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "registration": REGISTRATION_READ,
                    "workshop": {
                        "id": "019abc3e-0000-7000-8000-000000000030",
                        "title": "Rédiger son CV en ligne",
                        "starts_at": "2026-12-03T09:30:00Z",
                        "ends_at": "2026-12-03T11:30:00Z",
                        "status": "scheduled",
                    },
                    "journal": [JOURNAL_LINE],
                }
            ]
        }
    )
