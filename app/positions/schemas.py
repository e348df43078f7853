"""Position and assignment API models."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from pydantic import ConfigDict, Field

from app.core.pagination import Page
from app.core.schemas import InputModel, PatchModel, ReadModel
from app.core.types import FreeText
from app.positions.models import PositionStatus
from app.referentials.data import ContractType, EndReason, PositionTypology

EXTERNAL_REF_DOC = (
    "The position's reference in the employer's HR system, unique within the agreement's territory "
    "(printable, 1–64 characters)."
)


def external_ref_field(default: Any = None) -> Any:
    return Field(
        default, min_length=1, max_length=64, description=EXTERNAL_REF_DOC, examples=["LYON-CNFS-001"]
    )


class PositionCreate(InputModel):
    agreement_id: uuid.UUID = Field(description="A signed agreement with a free position.")
    territory_id: uuid.UUID | None = Field(
        default=None,
        description="Where the counsellor works: the agreement's territory (the default) or a descendant.",
    )
    external_ref: FreeText | None = external_ref_field()
    typology: PositionTypology = Field(
        default=PositionTypology.conum, description="A value of the `position_typologies` referential."
    )
    opened_on: date = Field(
        description="Day the position opens: within its agreement's period, from `starts_on` to `ends_on` "
        "(both included; no end when `ends_on` is null).",
        examples=["2021-04-01"],
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "agreement_id": "019abc3e-0000-7000-8000-000000000003",
                    "territory_id": "019abc3e-0000-7000-8000-000000000005",
                    "external_ref": "LYON-CNFS-001",
                    "typology": "conum",
                    "opened_on": "2021-04-01",
                }
            ]
        }
    )


class PositionUpdate(PatchModel):
    """Merge patch. The agreement cannot change; a closed position cannot change at all."""

    territory_id: uuid.UUID | None = Field(
        default=None, description="Another territory within the agreement's subtree."
    )
    external_ref: FreeText | None = external_ref_field()
    typology: PositionTypology | None = None
    opened_on: date | None = Field(
        default=None,
        description="Within the agreement's period, and on or before the `started_on` of the position's "
        "first assignment.",
        examples=["2021-05-01"],
    )

    model_config = ConfigDict(json_schema_extra={"examples": [{"external_ref": "LYON-CNFS-001-B"}]})


class PositionClose(InputModel):
    closed_on: date = Field(
        description="Last day of the position: on or after `opened_on`, and no assignment may run past it.",
        examples=["2023-02-28"],
    )
    reason: FreeText = Field(min_length=1, max_length=1000, examples=["Poste non renouvelé."])

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"closed_on": "2023-02-28", "reason": "Poste non renouvelé."}]}
    )


CURRENT: dict[str, Any] = {
    "id": "019abc3e-0000-7000-8000-000000000021",
    "counsellor_id": "019abc3e-0000-7000-8000-000000000011",
    "contract_type": "CDD",
    "started_on": "2021-05-03",
    "ends_on": "2023-05-02",
}


class PositionCurrentAssignment(ReadModel):
    """The assignment that covers today."""

    id: uuid.UUID
    counsellor_id: uuid.UUID
    contract_type: ContractType
    started_on: date
    ends_on: date | None

    model_config = ConfigDict(json_schema_extra={"examples": [CURRENT]})


POSITION_READ: dict[str, Any] = {
    "id": "019abc3e-0000-7000-8000-000000000010",
    "agreement_id": "019abc3e-0000-7000-8000-000000000003",
    "territory_id": "019abc3e-0000-7000-8000-000000000005",
    "external_ref": "LYON-CNFS-001",
    "typology": "conum",
    "status": "occupied",
    "current_assignment": CURRENT,
    "opened_on": "2021-04-01",
    "closed_on": None,
    "close_reason": None,
    "created_at": "2026-11-26T09:30:00Z",
    "updated_at": "2026-11-26T09:30:00Z",
    "version": 2,
}


class PositionRead(ReadModel):
    id: uuid.UUID
    agreement_id: uuid.UUID
    territory_id: uuid.UUID
    external_ref: str | None
    typology: PositionTypology
    status: PositionStatus = Field(
        description="Derived, never written: `closed` once closed; else `occupied` when an assignment covers "
        "today (UTC), `vacant` otherwise."
    )
    current_assignment: PositionCurrentAssignment | None = Field(
        description="The assignment covering today; null when vacant or closed, and always null for callers "
        "who may not read personal data (viewers): `status` still tells."
    )
    opened_on: date
    closed_on: date | None
    close_reason: str | None
    created_at: datetime
    updated_at: datetime
    version: int

    model_config = ConfigDict(json_schema_extra={"examples": [POSITION_READ]})


class PositionPage(Page[PositionRead]):
    """A page of positions."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [POSITION_READ], "next_cursor": None, "total": 1}]}
    )


class AssignmentCreate(InputModel):
    counsellor_id: uuid.UUID = Field(description="A counsellor of the caller's territories.")
    contract_type: ContractType = Field(description="A value of the `contract_types` referential.")
    started_on: date = Field(
        description="First day: on or after the position's `opened_on`, on or before its agreement's "
        "`ends_on`."
    )
    ends_on: date | None = Field(
        default=None,
        description="Planned last day (information only: the assignment lasts until it is ended).",
        examples=["2023-05-02"],
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "counsellor_id": "019abc3e-0000-7000-8000-000000000011",
                    "contract_type": "CDD",
                    "started_on": "2021-05-03",
                    "ends_on": "2023-05-02",
                }
            ]
        }
    )


class AssignmentEnd(InputModel):
    ended_on: date = Field(
        description="Last day of the assignment (inclusive), on or after `started_on`: the next one may "
        "start the day after.",
        examples=["2022-10-31"],
    )
    end_reason: EndReason = Field(description="A value of the `end_reasons` referential.")

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"ended_on": "2022-10-31", "end_reason": "demission"}]}
    )


ASSIGNMENT_READ: dict[str, Any] = {
    "id": "019abc3e-0000-7000-8000-000000000021",
    "position_id": "019abc3e-0000-7000-8000-000000000010",
    "counsellor_id": "019abc3e-0000-7000-8000-000000000011",
    "contract_type": "CDD",
    "started_on": "2021-05-03",
    "ends_on": "2023-05-02",
    "ended_on": None,
    "end_reason": None,
    "active": True,
    "created_at": "2026-11-26T09:30:00Z",
    "updated_at": "2026-11-26T09:30:00Z",
    "version": 1,
}


class AssignmentRead(ReadModel):
    id: uuid.UUID
    position_id: uuid.UUID
    counsellor_id: uuid.UUID
    contract_type: ContractType
    started_on: date
    ends_on: date | None
    ended_on: date | None
    end_reason: EndReason | None
    active: bool = Field(description="Whether the assignment covers today (UTC).")
    created_at: datetime
    updated_at: datetime
    version: int

    model_config = ConfigDict(json_schema_extra={"examples": [ASSIGNMENT_READ]})


class AssignmentPage(Page[AssignmentRead]):
    """A page of assignments."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [ASSIGNMENT_READ], "next_cursor": None, "total": 1}]}
    )
