"""Change feed API models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.core.changes import Action

CHANGE: dict[str, Any] = {
    "cursor": "0.42",
    "resource": "counsellors",
    "id": "019abc3e-0000-7000-8000-000000000011",
    "action": "updated",
    "version": 3,
    "territory_id": "019abc3e-0000-7000-8000-000000000002",
    "occurred_at": "2026-11-26T09:30:00Z",
}


class ChangeRead(BaseModel):
    cursor: str = Field(description="This change's position in the feed: pass it as `after` to continue.")
    resource: str = Field(description="The plural path segment: `positions`, `counsellors`, ...")
    id: uuid.UUID = Field(description="The changed object's id.")
    action: Action
    version: int = Field(description="The object's version after the change.")
    territory_id: uuid.UUID | None
    occurred_at: datetime

    model_config = ConfigDict(json_schema_extra={"examples": [CHANGE]})


class ChangePage(BaseModel):
    items: list[ChangeRead]
    next_after: str = Field(
        description="Pass as `after` to get the next changes; unchanged when no item came back."
    )

    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [CHANGE], "next_after": "0.42"}]})
