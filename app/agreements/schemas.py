"""Agreement and amendment API models. Money is in integer euro cents."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from pydantic import ConfigDict, Field

from app.agreements.models import AgreementKind, AgreementStatus, AmendmentKind
from app.core.pagination import Page
from app.core.schemas import InputModel, PatchModel, ReadModel
from app.core.types import FreeText
from app.referentials.data import AmendmentReason

# Factories rather than shared FieldInfo objects: a create model requires these fields (default `...`),
# a merge patch leaves them out (default None). Counts and money are strict: `"3"`, `3.0` or `true` are
# 422, not silently converted.


def reference_field(default: Any = ...) -> Any:
    return Field(
        default,
        min_length=1,
        max_length=64,
        description="The agreement's official reference, unique within its programme.",
        examples=["CONV-2021-69M-001"],
    )


def positions_field(default: Any = ...) -> Any:
    return Field(
        default,
        strict=True,
        ge=0,
        le=100_000,
        description="Positions granted: a JSON integer.",
        examples=[50],
    )


def subsidy_field(default: Any = ...) -> Any:
    return Field(
        default,
        strict=True,
        ge=0,
        le=10**9,
        description="Subsidy per position, in euro cents (a JSON integer); defaults to the programme's on "
        "creation.",
        examples=[5_000_000],
    )


def starts_on_field(default: Any = ...) -> Any:
    return Field(default, description="First day of the agreement.", examples=["2021-03-01"])


ENDS_ON_DOC = "Last day of the agreement (inclusive), on or after `starts_on`; null when open-ended."

LYON: dict[str, Any] = {
    "programme_id": "019abc3e-0000-7000-8000-000000000001",
    "territory_id": "019abc3e-0000-7000-8000-000000000002",
    "kind": "convention",
    "reference": "CONV-2021-69M-001",
    "positions_granted": 50,
    "starts_on": "2021-03-01",
}


class AgreementCreate(InputModel):
    programme_id: uuid.UUID = Field(description="The programme that funds the positions.")
    territory_id: uuid.UUID = Field(description="The territory the State signs with.")
    kind: AgreementKind = Field(description="`preliminary` (accord préalable de principe) or `convention`.")
    reference: FreeText = reference_field()
    positions_granted: int = positions_field()
    subsidy_per_position_cents: int | None = subsidy_field(None)
    starts_on: date = starts_on_field()
    ends_on: date | None = Field(default=None, description=ENDS_ON_DOC, examples=[None])

    model_config = ConfigDict(json_schema_extra={"examples": [LYON]})


class AgreementUpdate(PatchModel):
    """Merge patch, only while the agreement is a draft. The programme cannot change."""

    territory_id: uuid.UUID | None = Field(default=None, description="Another territory for the draft.")
    kind: AgreementKind | None = None
    reference: FreeText | None = reference_field(None)
    positions_granted: int | None = positions_field(None)
    subsidy_per_position_cents: int | None = subsidy_field(None)
    starts_on: date | None = starts_on_field(None)
    ends_on: date | None = Field(default=None, description=ENDS_ON_DOC, examples=["2023-02-28"])

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"positions_granted": 55, "ends_on": "2023-02-28"}]}
    )


class AgreementSign(InputModel):
    signed_on: date = Field(description="Day of signature.", examples=["2021-03-01"])

    model_config = ConfigDict(json_schema_extra={"examples": [{"signed_on": "2021-03-01"}]})


class AgreementTerminate(InputModel):
    terminated_on: date = Field(
        description="Day the agreement ends early; on or after `signed_on` for a signed agreement.",
        examples=["2022-06-30"],
    )
    reason: FreeText = Field(min_length=1, max_length=1000, examples=["Le territoire renonce au dispositif."])

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"terminated_on": "2022-06-30", "reason": "Le territoire renonce au dispositif."}]
        }
    )


AGREEMENT_READ: dict[str, Any] = {
    "id": "019abc3e-0000-7000-8000-000000000003",
    **LYON,
    "status": "signed",
    "subsidy_per_position_cents": 5_000_000,
    "subsidy_total_cents": 250_000_000,
    "signed_on": "2021-03-01",
    "ends_on": None,
    "terminated_on": None,
    "termination_reason": None,
    "positions_open": 0,
    "positions_occupied": 0,
    "created_at": "2026-11-26T09:30:00Z",
    "updated_at": "2026-11-26T09:30:00Z",
    "version": 2,
}


class AgreementRead(ReadModel):
    id: uuid.UUID
    programme_id: uuid.UUID
    territory_id: uuid.UUID
    kind: AgreementKind
    reference: str
    status: AgreementStatus
    positions_granted: int
    subsidy_per_position_cents: int
    subsidy_total_cents: int = Field(description="`positions_granted` × `subsidy_per_position_cents`.")
    signed_on: date | None
    starts_on: date
    ends_on: date | None
    terminated_on: date | None
    termination_reason: str | None
    positions_open: int = Field(description="Positions of this agreement that are not closed.")
    positions_occupied: int = Field(description="Open positions that an assignment covers today.")
    created_at: datetime
    updated_at: datetime
    version: int

    model_config = ConfigDict(json_schema_extra={"examples": [AGREEMENT_READ]})


class AgreementPage(Page[AgreementRead]):
    """A page of agreements."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [AGREEMENT_READ], "next_cursor": None, "total": 1}]}
    )


class AmendmentCreate(InputModel):
    kind: AmendmentKind
    positions: int = Field(
        strict=True,
        gt=0,
        le=100_000,
        description="Positions added or withdrawn: a JSON integer.",
        examples=[5],
    )
    reason: AmendmentReason = Field(description="A value of the `amendment_reasons` referential.")
    reason_detail: FreeText | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Free text; required when `reason` is `autre`.",
        examples=["Deux postes restent vacants depuis un an."],
    )
    effective_on: date = Field(
        description="Day the change takes effect, on or after the agreement's `signed_on`."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "kind": "withdraw_positions",
                    "positions": 5,
                    "reason": "difficultes_de_recrutement",
                    "effective_on": "2022-09-01",
                }
            ]
        }
    )


AMENDMENT_READ: dict[str, Any] = {
    "id": "019abc3e-0000-7000-8000-000000000004",
    "agreement_id": "019abc3e-0000-7000-8000-000000000003",
    "kind": "withdraw_positions",
    "positions": 5,
    "reason": "difficultes_de_recrutement",
    "reason_detail": None,
    "effective_on": "2022-09-01",
    "positions_before": 50,
    "positions_after": 45,
    "subsidy_total_before_cents": 250_000_000,
    "subsidy_total_after_cents": 225_000_000,
    "created_at": "2026-11-26T09:30:00Z",
}


class AmendmentRead(ReadModel):
    id: uuid.UUID
    agreement_id: uuid.UUID
    kind: AmendmentKind
    positions: int
    reason: AmendmentReason
    reason_detail: str | None
    effective_on: date
    positions_before: int
    positions_after: int
    subsidy_total_before_cents: int
    subsidy_total_after_cents: int
    created_at: datetime

    model_config = ConfigDict(json_schema_extra={"examples": [AMENDMENT_READ]})


class AmendmentPage(Page[AmendmentRead]):
    """A page of an agreement's amendments, oldest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [AMENDMENT_READ], "next_cursor": None, "total": 1}]}
    )
