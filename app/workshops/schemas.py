"""Workshop, registration and attendance API models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from app.core.pagination import Page
from app.core.schemas import InputModel, PatchModel, ReadModel
from app.core.types import Code, FreeText, Timestamp
from app.referentials.data import THEME_BITS, AgeBracket, Attendance, Level, SocialStatus, Theme
from app.workshops.models import RegistrationStatus, WorkshopFormat, WorkshopStatus


def theme_mask(themes: list[str] | list[Theme]) -> int:
    mask = 0
    for theme in themes:
        mask |= THEME_BITS[str(theme)]
    return mask


Email = Annotated[
    FreeText,
    Field(
        min_length=3,
        max_length=254,
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        examples=["camille.exemple@example.org"],
    ),
]
Count = Annotated[int, Field(strict=True, ge=0, le=100_000)]

VENUE: dict[str, Any] = {
    "name": "Médiathèque de la Part-Dieu",
    "address": "30 boulevard Vivier-Merle",
    "postcode": "69003",
    "commune_code": "69123",
    "lat": 45.7606,
    "lon": 4.8593,
}


class Venue(InputModel):
    name: FreeText = Field(min_length=1, max_length=200)
    address: FreeText = Field(min_length=1, max_length=300)
    postcode: Code = Field(pattern=r"^\d{5}$", description="A postcode of the commune (La Poste).")
    commune_code: Code = Field(
        pattern=r"^([013-9]\d|2[AB1-9])\d{3}$", description="The commune's INSEE code (not a postcode)."
    )
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False, description="Latitude (WGS 84).")
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False, description="Longitude (WGS 84).")

    model_config = ConfigDict(json_schema_extra={"examples": [VENUE]})


class VenueRead(ReadModel):
    name: str
    address: str
    postcode: str
    commune_code: str
    lat: float
    lon: float

    model_config = ConfigDict(json_schema_extra={"examples": [VENUE]})


OnlineUrl = Annotated[
    FreeText,
    Field(
        min_length=8,
        max_length=500,
        pattern=r"^https://\S+$",
        description="The video call's address (https), for remote workshops.",
        examples=["https://visio.example.org/atelier-cv"],
    ),
]
Title = Annotated[FreeText, Field(min_length=1, max_length=200, examples=["Rédiger son CV en ligne"])]
Description = Annotated[FreeText, Field(max_length=5000, examples=["Apportez vos diplômes et attestations."])]


def _each_once(themes: list[Theme]) -> list[Theme]:
    # A theme listed twice would count twice in the statistics by theme.
    seen: set[Theme] = set()
    for theme in themes:
        if theme in seen:
            raise ValueError(f"the theme {theme.value} is listed twice: list each theme once")
        seen.add(theme)
    return themes


Themes = Annotated[
    list[Theme],
    Field(min_length=1, max_length=5, description="Values of the `themes` referential (1 to 5), each once."),
    AfterValidator(_each_once),
]
Duration = Annotated[int, Field(strict=True, ge=15, le=24 * 60, description="Minutes, 15 to 1440.")]
Capacity = Annotated[int, Field(strict=True, ge=1, le=10_000, description="Seats, 1 to 10 000.")]
Waitlist = Annotated[int, Field(strict=True, ge=0, le=10_000, description="Waitlist places, 0 to 10 000.")]

CREATE_EXAMPLE: dict[str, Any] = {
    "position_id": "019abc3e-0000-7000-8000-000000000010",
    "title": "Rédiger son CV en ligne",
    "description": "Apportez vos diplômes et attestations.",
    "themes": ["insertion_professionnelle"],
    "level": "debutant",
    "format": "in_person",
    "venue": VENUE,
    "starts_at": "2026-12-08T09:30:00Z",
    "duration_minutes": 120,
    "capacity": 12,
    "waitlist_capacity": 5,
    "public": True,
}


class WorkshopCreate(InputModel):
    position_id: uuid.UUID = Field(description="The position the workshop is run under.")
    counsellor_id: uuid.UUID | None = Field(
        default=None, description="Who runs it; defaults to the position's current counsellor."
    )
    title: Title
    description: Description | None = None
    themes: Themes
    level: Level = Field(description="A value of the `levels` referential.")
    format: WorkshopFormat = Field(description="`in_person` needs a `venue`, `remote` an `online_url`.")
    venue: Venue | None = None
    online_url: OnlineUrl | None = None
    starts_at: Timestamp = Field(examples=["2026-12-08T09:30:00Z"])
    duration_minutes: Duration
    capacity: Capacity
    waitlist_capacity: Waitlist = 0
    public: bool = Field(default=True, description="Listed to everyone and open to public registration.")

    model_config = ConfigDict(json_schema_extra={"examples": [CREATE_EXAMPLE]})


class WorkshopUpdate(PatchModel):
    """Merge patch: the position and the counsellor cannot change; neither can a cancelled or completed
    workshop."""

    title: Title | None = None
    description: Description | None = None
    themes: Themes | None = None
    level: Level | None = None
    format: WorkshopFormat | None = None
    venue: Venue | None = None
    online_url: OnlineUrl | None = None
    starts_at: Timestamp | None = None
    duration_minutes: Duration | None = None
    capacity: Capacity | None = None
    waitlist_capacity: Waitlist | None = None
    public: bool | None = None

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"capacity": 15, "starts_at": "2026-12-08T10:00:00Z"}]}
    )


class WorkshopCancel(InputModel):
    reason: FreeText = Field(min_length=1, max_length=1000, examples=["Intervenant malade."])

    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "Intervenant malade."}]})


WORKSHOP_READ: dict[str, Any] = {
    "id": "019abc3e-0000-7000-8000-000000000030",
    "position_id": "019abc3e-0000-7000-8000-000000000010",
    "counsellor_id": "019abc3e-0000-7000-8000-000000000011",
    "territory_id": "019abc3e-0000-7000-8000-000000000005",
    "title": "Rédiger son CV en ligne",
    "description": "Apportez vos diplômes et attestations.",
    "themes": ["insertion_professionnelle"],
    "level": "debutant",
    "format": "in_person",
    "venue": VENUE,
    "online_url": None,
    "starts_at": "2026-12-08T09:30:00Z",
    "ends_at": "2026-12-08T11:30:00Z",
    "duration_minutes": 120,
    "capacity": 12,
    "waitlist_capacity": 5,
    "registered_count": 9,
    "waitlisted_count": 0,
    "seats_left": 3,
    "status": "scheduled",
    "public": True,
    "cancel_reason": None,
    "walk_ins": None,
    "created_at": "2026-11-26T09:30:00Z",
    "updated_at": "2026-11-26T09:30:00Z",
    "version": 1,
}


class WalkIns(InputModel):
    total: Count = Field(description="People who came without registering.")
    age_brackets: dict[AgeBracket, Count] = Field(
        default_factory=dict, description="Counts by `age_brackets` value; they add up to `total`."
    )
    social_statuses: dict[SocialStatus, Count] = Field(
        default_factory=dict, description="Counts by `social_statuses` value; they add up to `total`."
    )


class WalkInsRead(ReadModel):
    total: int
    age_brackets: dict[AgeBracket, int]
    social_statuses: dict[SocialStatus, int]


class WorkshopRead(ReadModel):
    id: uuid.UUID
    position_id: uuid.UUID
    counsellor_id: uuid.UUID | None = Field(
        description="Who runs it; personal data: null unless the caller is `admin`, a `territory_manager` of "
        "the workshop's territory or the counsellor who runs it."
    )
    territory_id: uuid.UUID = Field(description="The position's territory.")
    title: str
    description: str | None
    themes: list[Theme]
    level: Level
    format: WorkshopFormat
    venue: VenueRead | None
    online_url: str | None
    starts_at: datetime
    ends_at: datetime = Field(description="`starts_at` plus `duration_minutes`.")
    duration_minutes: int
    capacity: int
    waitlist_capacity: int
    registered_count: int = Field(description="Confirmed registrations.")
    waitlisted_count: int
    seats_left: int = Field(description="`capacity - registered_count`: show it as “3 / 15”.")
    status: WorkshopStatus
    public: bool
    cancel_reason: str | None
    walk_ins: WalkInsRead | None = Field(description="The anonymous part of the attendance report.")
    created_at: datetime
    updated_at: datetime
    version: int

    model_config = ConfigDict(json_schema_extra={"examples": [WORKSHOP_READ]})


class WorkshopPage(Page[WorkshopRead]):
    """A page of workshops."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [WORKSHOP_READ], "next_cursor": None}]}
    )


REGISTRATION_CREATE: dict[str, Any] = {
    "first_name": "Dominique",
    "last_name": "Fictif",
    "email": "dominique.fictif@example.org",
    "phone": "+33 4 00 00 00 02",
    "age_bracket": "soixante_soixante_neuf",
    "social_status": "retraite",
}


class RegistrationCreate(InputModel):
    first_name: FreeText = Field(min_length=1, max_length=100)
    last_name: FreeText = Field(min_length=1, max_length=100)
    email: Email
    phone: FreeText | None = Field(
        default=None, min_length=3, max_length=32, pattern=r"^\+?[0-9 .()-]{3,32}$"
    )
    age_bracket: AgeBracket | None = Field(default=None, description="A value of `age_brackets`.")
    social_status: SocialStatus | None = Field(default=None, description="A value of `social_statuses`.")

    model_config = ConfigDict(json_schema_extra={"examples": [REGISTRATION_CREATE]})


REGISTRATION_READ: dict[str, Any] = {
    "id": "019abc3e-0000-7000-8000-000000000040",
    "workshop_id": "019abc3e-0000-7000-8000-000000000030",
    **REGISTRATION_CREATE,
    "status": "confirmed",
    "waitlist_rank": None,
    "attendance": "unknown",
    "created_at": "2026-11-26T09:30:00Z",
    "anonymized_at": None,
}


class RegistrationRead(ReadModel):
    id: uuid.UUID
    workshop_id: uuid.UUID
    first_name: str | None
    last_name: str | None
    email: str | None = Field(description="Null once the registrant's personal data were erased.")
    phone: str | None
    age_bracket: AgeBracket | None
    social_status: SocialStatus | None
    status: RegistrationStatus
    waitlist_rank: int | None = Field(description="1-based place on the waitlist; null unless waitlisted.")
    attendance: Attendance
    created_at: datetime
    anonymized_at: datetime | None = Field(
        description="When the registrant's names, email and phone were erased (by the registrant, or by the "
        "retention purge); null while they are held."
    )

    model_config = ConfigDict(json_schema_extra={"examples": [REGISTRATION_READ]})


class RegistrationCreated(RegistrationRead):
    cancel_token: str | None = Field(
        description="Shown once: send it as `X-Cancel-Token` to cancel this registration. Null in a replay "
        "(`Idempotent-Replayed`)."
    )

    model_config = ConfigDict(
        json_schema_extra={"examples": [{**REGISTRATION_READ, "cancel_token": "ct_3q2Zb1kR9yW0mTfA7cXeVg"}]}
    )


class RegistrationPage(Page[RegistrationRead]):
    """A page of registrations (personal data)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [REGISTRATION_READ], "next_cursor": None}]}
    )


class AttendanceItem(InputModel):
    id: uuid.UUID = Field(description="A registration of this workshop.")
    attendance: Attendance


class AttendanceReport(InputModel):
    registrations: list[AttendanceItem] = Field(default_factory=list, max_length=10_000)
    walk_ins: WalkIns = Field(default_factory=lambda: WalkIns(total=0))

    @model_validator(mode="after")
    def _unique_ids(self) -> AttendanceReport:
        seen = {item.id for item in self.registrations}
        if len(seen) != len(self.registrations):
            raise ValueError("a registration appears twice")
        return self

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "registrations": [
                        {"id": "019abc3e-0000-7000-8000-000000000040", "attendance": "present"}
                    ],
                    "walk_ins": {
                        "total": 2,
                        "age_brackets": {"soixante_dix_plus": 1, "non_communique": 1},
                        "social_statuses": {"retraite": 2},
                    },
                }
            ]
        }
    )
