"""Counsellor API models: personal data, read only by those allowed to (API.md, "Counsellors")."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, WithJsonSchema

from app.core.pagination import Page
from app.core.schemas import InputModel, PatchModel, ReadModel
from app.core.types import NO_CONTROL_CHARACTERS, FreeText
from app.referentials.data import ContractType, TrainingLabel

MAX_BULK_ITEMS = 1000

# A deliberately plain check (one @, no spaces or control characters, a dot in the domain): deliverability is
# the HR system's business; this keeps garbage and injection out.
Email = Annotated[
    str,
    StringConstraints(
        min_length=3,
        max_length=254,
        pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$",
    ),
    NO_CONTROL_CHARACTERS,
]
# The constraints first, then the shared check: the pattern stays in the documented schema.
Phone = Annotated[
    str,
    StringConstraints(min_length=6, max_length=32, pattern=r"^\+?[0-9][0-9 .()-]{4,30}$"),
    NO_CONTROL_CHARACTERS,
]
Name = Annotated[FreeText, StringConstraints(min_length=1, max_length=100)]
ExternalRef = Annotated[FreeText, StringConstraints(min_length=1, max_length=64)]
# Course lengths of the programme's training (DOMAIN.md).
TrainingHours = Literal[70, 105, 175, 280, 315, 350, 420]


class Training(InputModel):
    label: TrainingLabel | None = Field(default=None, description="A value of `training_labels`.")
    hours: TrainingHours | None = Field(default=None, description="Course length in hours.", examples=[280])
    certified_on: date | None = Field(default=None, examples=["2021-09-30"])
    pix_level: int | None = Field(
        default=None, strict=True, ge=1, le=3, description="PIX level 1–3.", examples=[2]
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"label": "CCP2_CCP3", "hours": 280, "certified_on": "2021-09-30", "pix_level": 2}]
        }
    )


TRAINING: dict[str, Any] = {"label": "CCP2_CCP3", "hours": 280, "certified_on": "2021-09-30", "pix_level": 2}
PERSON: dict[str, Any] = {
    "first_name": "Camille",
    "last_name": "Exemple",
    "email": "camille.exemple@example.org",
    "phone": "+33 4 00 00 00 01",
    "training": TRAINING,
}


class CounsellorFields(InputModel):
    """What HR systems send about a person (the same fields on POST, PUT by-ref and bulk items)."""

    first_name: Name = Field(description="Printable, 1–100 characters.", examples=["Camille"])
    last_name: Name = Field(description="Printable, 1–100 characters.", examples=["Exemple"])
    email: Email | None = Field(default=None, examples=["camille.exemple@example.org"])
    phone: Phone | None = Field(default=None, examples=["+33 4 00 00 00 01"])
    training: Training | None = None


class CounsellorCreate(CounsellorFields):
    territory_id: uuid.UUID = Field(description="The employer: a territory of the caller's.")
    external_ref: ExternalRef | None = Field(
        default=None,
        description="The person's id in the employer's HR system, unique within the employer.",
        examples=["MATRICULE-000123"],
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "territory_id": "019abc3e-0000-7000-8000-000000000002",
                    "external_ref": "MATRICULE-000123",
                    **PERSON,
                }
            ]
        }
    )


class CounsellorUpsert(CounsellorFields):
    """`PUT /counsellors/by-ref/{external_ref}`: the whole record (an absent optional field is null)."""

    territory_id: uuid.UUID | None = Field(
        default=None,
        description="The employer; may be left out when the key has exactly one territory.",
    )

    model_config = ConfigDict(json_schema_extra={"examples": [PERSON]})


class BulkItem(CounsellorUpsert):
    external_ref: ExternalRef = Field(description="The item's key.", examples=["MATRICULE-000123"])

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"external_ref": "MATRICULE-000123", **PERSON}]}
    )


def _bulk_items_schema() -> dict[str, Any]:
    """What the documentation shows for `items`: an array of `BulkItem` (the model refers to `Training`, which
    the document holds already), or of anything else, since an item that is not a `BulkItem` does not make
    the request invalid: it gets its own 422 among the results."""
    item = BulkItem.model_json_schema(ref_template="#/components/schemas/{model}")
    item.pop("$defs", None)
    refused = {"description": "Anything else: refused in its own result (422), the other items still apply."}
    return {"type": "array", "minItems": 1, "maxItems": MAX_BULK_ITEMS, "items": {"anyOf": [item, refused]}}


class BulkRequest(InputModel):
    # Items are checked one by one, so that one bad item (even one that is not an object) is a 422 in its
    # own result rather than a 422 for the whole request.
    items: Annotated[list[Any], WithJsonSchema(_bulk_items_schema())] = Field(
        min_length=1,
        max_length=MAX_BULK_ITEMS,
        description=f"1 to {MAX_BULK_ITEMS} counsellors, each shaped like `BulkItem`.",
    )

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [{"external_ref": "MATRICULE-000123", **PERSON}]}]}
    )


class TrainingPatch(PatchModel):
    label: TrainingLabel | None = None
    hours: TrainingHours | None = None
    certified_on: date | None = None
    pix_level: int | None = Field(default=None, strict=True, ge=1, le=3)

    model_config = ConfigDict(json_schema_extra={"examples": [{"pix_level": 3}]})


class CounsellorUpdate(PatchModel):
    """Merge patch; `training` merges too (`null` clears it whole)."""

    territory_id: uuid.UUID | None = Field(default=None, description="Another employer among yours.")
    external_ref: ExternalRef | None = None
    first_name: Name | None = None
    last_name: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    training: TrainingPatch | None = None

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"phone": "+33 4 00 00 00 02", "training": {"pix_level": 3}}]}
    )


class TrainingRead(ReadModel):
    label: TrainingLabel | None
    hours: int | None
    certified_on: date | None
    pix_level: int | None

    model_config = ConfigDict(json_schema_extra={"examples": [TRAINING]})


CURRENT: dict[str, Any] = {
    "id": "019abc3e-0000-7000-8000-000000000021",
    "position_id": "019abc3e-0000-7000-8000-000000000010",
    "contract_type": "CDD",
    "started_on": "2021-05-03",
    "ends_on": "2023-05-02",
}


class CounsellorCurrentAssignment(ReadModel):
    """The assignment that covers today."""

    id: uuid.UUID
    position_id: uuid.UUID
    contract_type: ContractType
    started_on: date
    ends_on: date | None

    model_config = ConfigDict(json_schema_extra={"examples": [CURRENT]})


COUNSELLOR_READ: dict[str, Any] = {
    "id": "019abc3e-0000-7000-8000-000000000011",
    "territory_id": "019abc3e-0000-7000-8000-000000000002",
    "external_ref": "MATRICULE-000123",
    **PERSON,
    "current_assignment": CURRENT,
    "anonymized_at": None,
    "created_at": "2026-11-26T09:30:00Z",
    "updated_at": "2026-11-26T09:30:00Z",
    "version": 1,
}


class CounsellorRead(ReadModel):
    id: uuid.UUID
    territory_id: uuid.UUID = Field(description="The employer.")
    external_ref: str | None
    first_name: str | None = Field(description="Null once anonymised, like every personal field.")
    last_name: str | None
    email: str | None
    phone: str | None
    training: TrainingRead
    current_assignment: CounsellorCurrentAssignment | None
    anonymized_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int

    model_config = ConfigDict(json_schema_extra={"examples": [COUNSELLOR_READ]})


class CounsellorPage(Page[CounsellorRead]):
    """A page of counsellors."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [COUNSELLOR_READ], "next_cursor": None, "total": 1}]}
    )


class BulkProblem(ReadModel):
    """Why one item failed: a problem without `instance` and `request_id` (those of the response apply)."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, str]] | None = None


class BulkResult(ReadModel):
    index: int = Field(description="The item's position in the request, from 0.")
    external_ref: str | None
    status: int = Field(description="201 created, 200 updated or unchanged, 422 or 409 refused.")
    id: uuid.UUID | None = Field(description="The counsellor's id when the item was applied.")
    version: int | None = Field(description="The counsellor's version after the item.")
    problem: BulkProblem | None


BULK_RESULTS: dict[str, Any] = {
    "items": [
        {
            "index": 0,
            "external_ref": "MATRICULE-000123",
            "status": 201,
            "id": "019abc3e-0000-7000-8000-000000000011",
            "version": 1,
            "problem": None,
        },
        {
            "index": 1,
            "external_ref": "MATRICULE-000124",
            "status": 422,
            "id": None,
            "version": None,
            "problem": {
                "type": "/problems/validation_error",
                "title": "Invalid request",
                "status": 422,
                "detail": "The item has 1 invalid field(s).",
                "code": "validation_error",
                "errors": [{"pointer": "/items/1/email", "detail": "String should match pattern"}],
            },
        },
    ]
}


class BulkResponse(ReadModel):
    """One result per item, in the order of the request."""

    items: list[BulkResult]

    model_config = ConfigDict(json_schema_extra={"examples": [BULK_RESULTS]})
