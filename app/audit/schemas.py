"""Read models of the audit events."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from app.core.pagination import Page


class EventKind(StrEnum):
    write = "write"
    read = "read"


class Actor(BaseModel):
    key_id: uuid.UUID | None = Field(
        description="The API key; null without a key (`public`) or for `system`."
    )
    name: str | None = Field(examples=["SIRH Métropole de Lyon"])
    role: str = Field(
        description="The key's role; `public` without a key, `system` for the command line.",
        examples=["admin"],
    )


class AuditEventRead(BaseModel):
    id: uuid.UUID
    occurred_at: datetime
    kind: EventKind = Field(description="`write`, or `read` (a journal line: an answer that showed people).")
    action: str = Field(
        description="The operation id (`counsellors_bulk`), or `cli_purge`.", examples=["agreements_sign"]
    )
    resource: str = Field(description="The plural path segment.", examples=["counsellors"])
    resource_id: uuid.UUID | None = Field(description="The object written; null for a journal line.")
    actor: Actor
    request_id: str | None = Field(description="The request's `X-Request-ID`.")
    changes: dict[str, Any] | None = Field(
        description='`{field: {"before": v, "after": v}}` of a write; personal values are `"***"` '
        "(null stays null).",
        examples=[
            {"email": {"before": "***", "after": "***"}, "training_hours": {"before": None, "after": 70}}
        ],
    )
    subject_ids: list[uuid.UUID] | None = Field(
        description="A journal line: the people (counsellors, registrations) the answer returned."
    )


class AuditEventPage(Page[AuditEventRead]):
    pass
