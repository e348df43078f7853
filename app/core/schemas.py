"""Base classes for API models: inputs forbid unknown fields, outputs read from ORM objects.

The field types of inputs (`FreeText`, `Code`, `Timestamp`) live in `app.core.types`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from app.core.types import Timestamp

__all__ = ["InputModel", "PatchModel", "ReadModel", "Timestamp"]


class InputModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PatchModel(InputModel):
    """JSON Merge Patch (RFC 7396): an absent field is unchanged, `null` clears it."""

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class ReadModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
