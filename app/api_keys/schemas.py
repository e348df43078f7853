"""API key models: the secret appears once, in the creation response."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import ConfigDict, Field
from pydantic.config import JsonDict

from app.core.auth import Role
from app.core.pagination import Page
from app.core.schemas import InputModel, ReadModel
from app.core.types import FreeText, Timestamp

_KEY_EXAMPLE: JsonDict = {
    "id": "019abc40-1b2c-7d3e-8f40-5a6b7c8d9e0f",
    "name": "SIRH Métropole de Lyon",
    "role": "territory_manager",
    "prefix": "cnfs_wNsyB4K",
    "territory_ids": ["019abc3e-5f6a-7b8c-9d0e-1f2a3b4c5d6e"],
    "counsellor_id": None,
    "expires_at": "2027-12-31T23:59:59Z",
    "revoked_at": None,
    "created_at": "2026-11-26T09:30:00Z",
    "rotated_at": "2026-12-01T08:00:00Z",
    "previous_secret_expires_at": "2026-12-02T08:00:00Z",
    "last_used_at": "2026-12-01T09:12:00Z",
}


class ApiKeyCreate(InputModel):
    name: FreeText = Field(min_length=1, max_length=120, examples=["SIRH Métropole de Lyon"])
    role: Role = Field(description="admin, territory_manager, counsellor or viewer.")
    territory_ids: list[uuid.UUID] = Field(
        default_factory=list,
        max_length=100,
        description="Required except for admin: the key's scope (subtrees).",
    )
    counsellor_id: uuid.UUID | None = Field(default=None, description="Required for the counsellor role.")
    expires_at: Timestamp | None = Field(
        default=None, description="After this instant the key is refused (RFC 3339, with an offset)."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "SIRH Métropole de Lyon",
                    "role": "territory_manager",
                    "territory_ids": ["019abc3e-5f6a-7b8c-9d0e-1f2a3b4c5d6e"],
                    "expires_at": "2027-12-31T23:59:59Z",
                }
            ]
        }
    )


class ApiKeyRead(ReadModel):
    id: uuid.UUID
    name: str
    role: Role
    prefix: str = Field(description="The first characters of the key, to recognise it.")
    territory_ids: list[uuid.UUID]
    counsellor_id: uuid.UUID | None
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    rotated_at: datetime | None = Field(description="When the secret was last replaced (`/rotate`).")
    previous_secret_expires_at: datetime | None = Field(
        description="Until when the secret the last rotation replaced is still accepted (null: not at all)."
    )
    last_used_at: datetime | None = Field(
        description="The last request made with the key, to the minute (recorded at most once a minute)."
    )

    model_config = ConfigDict(json_schema_extra={"examples": [_KEY_EXAMPLE]})


class ApiKeyCreated(ApiKeyRead):
    key: str | None = Field(
        description="The secret, shown only in this response (null in a replay under the same "
        "Idempotency-Key: the secret is never stored in clear).",
        examples=["cnfs_3q2v..."],
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**_KEY_EXAMPLE, "key": "cnfs_wNsyB4K_I8QlEaracCL3LRG-n9-rsAWpXasaL_SRNmA"}]
        }
    )


class ApiKeyRotate(InputModel):
    grace_seconds: int | None = Field(
        default=None,
        ge=0,
        le=30 * 86400,
        description="How long the replaced secret stays valid, in seconds (0: refused at once; default: "
        "the API_KEY_ROTATION_GRACE_SECONDS setting, 24 h).",
        examples=[3600],
    )

    model_config = ConfigDict(json_schema_extra={"examples": [{"grace_seconds": 3600}]})


class ApiKeyPage(Page[ApiKeyRead]):
    """A page of API keys, newest first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [_KEY_EXAMPLE],
                    "next_cursor": "eyJ2IjpbIjAxOWFiYzQwLTFiMmMtN2QzZS04ZjQwLTVhNmI3YzhkOWUwZiJdfQ.Zk3q9T",
                }
            ]
        }
    )


class Me(ReadModel):
    key_id: uuid.UUID | None
    name: str | None
    role: Role
    territory_ids: list[uuid.UUID] = Field(description="Empty for admin, meaning everywhere.")
    counsellor_id: uuid.UUID | None
    expires_at: datetime | None
    rotated_at: datetime | None = Field(description="When the key's secret was last replaced.")
    previous_secret_expires_at: datetime | None = Field(
        description="Until when the secret the last rotation replaced is still accepted (null: not at all)."
    )
    last_used_at: datetime | None = Field(
        description="The key's last use recorded before this request (to the minute)."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "key_id": "019abc40-1b2c-7d3e-8f40-5a6b7c8d9e0f",
                    "name": "SIRH Métropole de Lyon",
                    "role": "territory_manager",
                    "territory_ids": ["019abc3e-5f6a-7b8c-9d0e-1f2a3b4c5d6e"],
                    "counsellor_id": None,
                    "expires_at": "2027-12-31T23:59:59Z",
                    "rotated_at": "2026-12-01T08:00:00Z",
                    "previous_secret_expires_at": "2026-12-02T08:00:00Z",
                    "last_used_at": "2026-12-01T09:12:00Z",
                }
            ]
        }
    )
