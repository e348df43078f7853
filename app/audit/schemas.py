"""Read models of the audit events."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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


_WRITE_EXAMPLE: dict[str, Any] = {
    "id": "019abc41-2b3c-7d4e-8f50-6a7b8c9d0e1f",
    "occurred_at": "2026-11-26T09:30:00Z",
    "kind": "write",
    "action": "counsellors_update",
    "resource": "counsellors",
    "resource_id": "019abc3e-0000-7000-8000-000000000011",
    "actor": {
        "key_id": "019abc40-1b2c-7d3e-8f40-5a6b7c8d9e0f",
        "name": "SIRH Métropole de Lyon",
        "role": "admin",
    },
    "request_id": "3f1c1a52a1b54f4c9f3c5d3c2b1a0f9e",
    "changes": {"email": {"before": "***", "after": "***"}, "training_hours": {"before": None, "after": 70}},
    "subject_ids": None,
}
_READ_EXAMPLE: dict[str, Any] = {
    **_WRITE_EXAMPLE,
    "id": "019abc41-3c4d-7e5f-8061-7b8c9d0e1f2a",
    "kind": "read",
    "action": "counsellors_list",
    "resource_id": None,
    "changes": None,
    "subject_ids": ["019abc3e-0000-7000-8000-000000000011"],
}


class AuditEventPage(Page[AuditEventRead]):
    """A page of audit events, newest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [_READ_EXAMPLE, _WRITE_EXAMPLE], "next_cursor": None}]}
    )
