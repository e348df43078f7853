"""Territory API models."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field

from app.core.pagination import Page
from app.core.schemas import InputModel, PatchModel, ReadModel
from app.territories.codes import TerritoryKind

# Control characters (NUL above all, which PostgreSQL cannot store in text), lone surrogates (not encodable in
# UTF-8) and line separators have no place in a name or a search: refused here as a 422, they would otherwise
# fail in the database driver as a 500.
# The categories Cc (U+0000-U+001F, U+007F-U+009F), Cs (U+D800-U+DFFF), Zl (U+2028) and Zp (U+2029), as one
# character class: a regular expression scans a string far faster than a category lookup per character
# (bulk HR imports check tens of thousands of strings per request).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def printable(value: str) -> str:
    if _FORBIDDEN.search(value):
        raise ValueError("must not contain control characters or line breaks")
    return value


PrintableText = Annotated[str, AfterValidator(printable)]

CodeField = Field(min_length=2, max_length=9, description="Official code, checked per kind.", examples=["69"])
NameField = Field(min_length=1, max_length=200, examples=["Rhône"])
PopulationField = Field(
    default=None, ge=0, le=100_000_000, description="Municipal population (INSEE).", examples=[1_900_000]
)


class TerritoryCreate(InputModel):
    kind: TerritoryKind
    code: str = CodeField
    name: PrintableText = NameField
    parent_id: uuid.UUID | None = Field(default=None, description="A territory of a strictly higher kind.")
    population: int | None = PopulationField

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"kind": "departement", "code": "69", "name": "Rhône", "population": 1_900_000}]
        }
    )


class TerritoryUpdate(PatchModel):
    """Merge patch: `kind` cannot change; a new `code` is checked against the kind."""

    code: str | None = Field(
        default=None, min_length=2, max_length=9, description="A new official code, checked against the kind."
    )
    name: PrintableText | None = Field(default=None, min_length=1, max_length=200, examples=["Rhône"])
    parent_id: uuid.UUID | None = Field(
        default=None,
        description="A territory of a strictly higher kind; `null` makes it a root. Its subtree follows.",
    )
    population: int | None = PopulationField

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Métropole de Lyon", "population": 1_411_571}]}
    )


class TerritoryRead(ReadModel):
    id: uuid.UUID
    kind: TerritoryKind
    code: str
    name: str
    parent_id: uuid.UUID | None
    population: int | None
    created_at: datetime
    updated_at: datetime
    version: int

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "019abc3e-5f6a-7b8c-9d0e-1f2a3b4c5d6e",
                    "kind": "metropole",
                    "code": "200046977",
                    "name": "Métropole de Lyon",
                    "parent_id": "019abc3e-5f6a-7b8c-9d0e-1f2a3b4c5d00",
                    "population": 1_411_571,
                    "created_at": "2026-11-26T09:30:00Z",
                    "updated_at": "2026-11-26T09:30:00Z",
                    "version": 1,
                }
            ]
        },
    )


class TerritoryPage(Page[TerritoryRead]):
    """A page of territories."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": TerritoryRead.model_json_schema()["examples"],
                    "next_cursor": "eyJ2IjpbIm1ldHJvcG9sZSBkZSBseW9uIl19.q8mJ2wT5bX0kZlR1cV9yNg",
                }
            ]
        }
    )
