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
                }
            ]
        }
    )
