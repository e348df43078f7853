"""Base classes for API models: inputs forbid unknown fields, outputs read from ORM objects."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class InputModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PatchModel(InputModel):
    """JSON Merge Patch (RFC 7396): an absent field is unchanged, `null` clears it."""

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class ReadModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
