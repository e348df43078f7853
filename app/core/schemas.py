"""Base classes for API models: inputs forbid unknown fields, outputs read from ORM objects."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


Timestamp = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""An input instant: RFC 3339 with an offset (a naive one is a 422, not a 500 later), normalised to UTC so
that the response says `...Z` like every other timestamp."""


class InputModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PatchModel(InputModel):
    """JSON Merge Patch (RFC 7396): an absent field is unchanged, `null` clears it."""

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class ReadModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
