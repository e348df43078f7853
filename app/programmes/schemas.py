"""Programme API models. Money is in integer euro cents."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from pydantic import ConfigDict, Field

from app.core.pagination import Page
from app.core.schemas import InputModel, PatchModel, ReadModel
from app.core.types import Code, FreeText

CODE_PATTERN = r"^[A-Z0-9]+(?:[_-][A-Z0-9]+)*$"

# Factories rather than shared FieldInfo objects: a create model requires these fields (default `...`),
# a merge patch leaves them out (default None). Counts and money are strict: `"3"`, `3.0` or `true` are
# 422, not silently converted.


def code_field(default: Any = ...) -> Any:
    return Field(
        default,
        min_length=2,
        max_length=64,
        pattern=CODE_PATTERN,
        description="Stable code of the envelope: capital letters and digits, words joined by `_` or `-`. "
        "Unique.",
        examples=["FRANCE_RELANCE_V1"],
    )


def name_field(default: Any = ...) -> Any:
    return Field(default, min_length=1, max_length=200, examples=["France Relance – Conseillers numériques"])


def positions_target_field(default: Any = ...) -> Any:
    return Field(
        default,
        strict=True,
        ge=0,
        le=1_000_000,
        description="Positions the programme funds: a JSON integer.",
        examples=[4000],
    )


def budget_field(default: Any = ...) -> Any:
    return Field(
        default,
        strict=True,
        ge=0,
        le=10**15,
        description="Budget of the envelope, in euro cents: a JSON integer.",
        examples=[25_000_000_000],
    )


def subsidy_field(default: Any = ...) -> Any:
    return Field(
        default,
        strict=True,
        ge=0,
        le=10**9,
        description="Default subsidy per position, in euro cents (a JSON integer): an agreement copies it "
        "unless it sets its own.",
        examples=[5_000_000],
    )


def starts_on_field(default: Any = ...) -> Any:
    return Field(default, description="First day of the programme.", examples=["2021-01-01"])


ENDS_ON_DOC = "Last day of the programme (inclusive), on or after `starts_on`; null when open-ended."

FRANCE_RELANCE: dict[str, Any] = {
    "code": "FRANCE_RELANCE_V1",
    "name": "France Relance – Conseillers numériques",
    "positions_target": 4000,
    "budget_cents": 25_000_000_000,
    "subsidy_per_position_cents": 5_000_000,
    "starts_on": "2021-01-01",
    "ends_on": None,
}


class ProgrammeCreate(InputModel):
    code: Code = code_field()
    name: FreeText = name_field()
    positions_target: int = positions_target_field()
    budget_cents: int = budget_field()
    subsidy_per_position_cents: int = subsidy_field()
    starts_on: date = starts_on_field()
    ends_on: date | None = Field(default=None, description=ENDS_ON_DOC, examples=[None])

    model_config = ConfigDict(json_schema_extra={"examples": [FRANCE_RELANCE]})


class ProgrammeUpdate(PatchModel):
    """Merge patch. `positions_target` and `budget_cents` cannot go below what agreements commit (409)."""

    code: Code | None = code_field(None)
    name: FreeText | None = name_field(None)
    positions_target: int | None = positions_target_field(None)
    budget_cents: int | None = budget_field(None)
    subsidy_per_position_cents: int | None = subsidy_field(None)
    starts_on: date | None = starts_on_field(None)
    ends_on: date | None = Field(default=None, description=ENDS_ON_DOC, examples=["2026-12-31"])

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"positions_target": 4500, "budget_cents": 28_125_000_000}]}
    )


PROGRAMME_READ: dict[str, Any] = {
    "id": "019abc3e-5f6a-7b8c-9d0e-1f2a3b4c5d6e",
    **FRANCE_RELANCE,
    "positions_granted": 65,
    "subsidy_committed_cents": 325_000_000,
    "created_at": "2026-11-26T09:30:00Z",
    "updated_at": "2026-11-26T09:30:00Z",
    "version": 3,
}


class ProgrammeRead(ReadModel):
    id: uuid.UUID
    code: str
    name: str
    positions_target: int
    budget_cents: int
    subsidy_per_position_cents: int
    starts_on: date
    ends_on: date | None
    positions_granted: int = Field(
        description="Positions granted by the programme's draft and signed agreements (a draft reserves; "
        "a terminated agreement frees its positions)."
    )
    subsidy_committed_cents: int = Field(description="Sum of those agreements' `subsidy_total_cents`.")
    created_at: datetime
    updated_at: datetime
    version: int = Field(description="Moves with every change of the representation, its totals included.")

    model_config = ConfigDict(json_schema_extra={"examples": [PROGRAMME_READ]})


class ProgrammePage(Page[ProgrammeRead]):
    """A page of programmes."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [PROGRAMME_READ], "next_cursor": None, "total": 1}]}
    )
