"""Counsellor API models: personal data, read only by those allowed to (API.md, "Counsellors")."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, GetJsonSchemaHandler, StringConstraints
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from app.core.pagination import Page
from app.core.schemas import InputModel, PatchModel, ReadModel
from app.core.types import NO_CONTROL_CHARACTERS
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
# Free text (the shared check) whose lengths come first, on the string itself: lengths given after the
# check's validator apply to its result as to any value, with a list's wording ("at least 1 item").
Name = Annotated[str, StringConstraints(min_length=1, max_length=100), NO_CONTROL_CHARACTERS]
ExternalRef = Annotated[str, StringConstraints(min_length=1, max_length=64), NO_CONTROL_CHARACTERS]
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
    """One counsellor of a bulk upsert: the body of `PUT /counsellors/by-ref/{external_ref}` and its
    `external_ref`."""

    external_ref: ExternalRef = Field(description="The item's key.", examples=["MATRICULE-000123"])

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"external_ref": "MATRICULE-000123", **PERSON}]}
    )


class _BulkItems:
    """The documented shape of `items`: an array of `BulkItem`, a schema of the document's components, so
    that a generated client builds valid items. The request is validated item by item in the handler
    (`items` takes any JSON value here): an item that is not a valid `BulkItem`, even one that is not an
    object, gets its own 422 among the results while the other items still apply."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # Generated as a definition of its own (`$ref`), not inlined: a schema of the components.
        item = handler.generate_json_schema.generate_inner(BulkItem.__pydantic_core_schema__)  # type: ignore[attr-defined]
        return {"type": "array", "minItems": 1, "maxItems": MAX_BULK_ITEMS, "items": item}


class BulkRequest(InputModel):
    items: Annotated[list[Any], _BulkItems] = Field(
        min_length=1,
        max_length=MAX_BULK_ITEMS,
        description=f"1 to {MAX_BULK_ITEMS} counsellors, each a `BulkItem`. An item that is not a valid "
        "`BulkItem` is refused in its own result (422), and the others still apply.",
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
                "errors": [
                    {
                        "pointer": "/items/1/email",
                        "detail": "must be an email address, such as camille@example.org",
                    }
                ],
            },
        },
    ]
}


class BulkResponse(ReadModel):
    """One result per item, in the order of the request."""

    items: list[BulkResult]

    model_config = ConfigDict(json_schema_extra={"examples": [BULK_RESULTS]})
