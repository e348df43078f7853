"""Statistics API models (the answers' shapes, for the OpenAPI document)."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ConfigDict, Field

from app.core.schemas import ReadModel
from app.referentials.data import AgeBracket, SocialStatus

POSITION_FIGURES: dict[str, Any] = {
    "granted": 12,
    "open": 10,
    "occupied": 8,
    "vacant": 2,
    "closed": 1,
    "subsidy_committed_cents": 60_000_000,
    "occupancy_rate": 0.8,
}
TERRITORY_ID = "0190aaaa-0000-7000-8000-000000000069"


class PositionFigures(ReadModel):
    granted: int = Field(description="Positions granted by the draft and signed agreements.")
    open: int = Field(description="Positions not closed.")
    occupied: int = Field(description="Open positions that an assignment covers today (UTC).")
    vacant: int = Field(description="Open positions that no assignment covers today.")
    closed: int = Field(description="Closed positions.")
    subsidy_committed_cents: int = Field(description="Σ positions granted × subsidy per position.")
    occupancy_rate: float | None = Field(description="occupied ÷ open, 0 to 1; null when nothing is open.")


class PositionStatsItem(PositionFigures):
    territory_id: uuid.UUID | None = Field(
        default=None, description="With `group_by=territory`: the agreement's territory."
    )
    kind: str | None = Field(
        default=None,
        description="With `group_by=kind`: the kind of the agreement's territory (`territory_kinds`).",
    )


class PositionStats(ReadModel):
    totals: PositionFigures
    items: list[PositionStatsItem]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "totals": POSITION_FIGURES,
                    "items": [{"territory_id": TERRITORY_ID, **POSITION_FIGURES}],
                }
            ]
        }
    )


AGES: dict[str, int | None] = {bracket.value: 0 for bracket in AgeBracket}
AGES |= {
    "vingt_cinq_trente_neuf": 14,
    "soixante_soixante_neuf": 31,
    "soixante_dix_plus": None,
    "non_communique": None,
}
SOCIALS: dict[str, int | None] = {status.value: 0 for status in SocialStatus}
SOCIALS |= {
    "retraite": 37,
    "en_emploi": None,
    "sans_emploi": 12,
    "non_communique": None,
}
WORKSHOP_FIGURES: dict[str, Any] = {
    "held": 9,
    "cancelled": 1,
    "registrations": 84,
    "attendees": 63,
    "age_brackets": AGES,
    "social_statuses": SOCIALS,
}


class WorkshopFigures(ReadModel):
    held: int = Field(description="Completed workshops (their activity report is in).")
    cancelled: int = Field(description="Cancelled workshops.")
    registrations: int = Field(description="Confirmed registrations (waitlisted and cancelled ones aside).")
    attendees: int = Field(description="Present registrations plus walk-ins.")
    age_brackets: dict[str, int | None] = Field(
        description="Attendees per age bracket (`age_brackets`), every value present; null: suppressed "
        "(statistical confidentiality, callers without a key)."
    )
    social_statuses: dict[str, int | None] = Field(
        description="Attendees per social status (`social_statuses`), every value present; null: suppressed."
    )


class WorkshopStatsItem(WorkshopFigures):
    theme: str | None = Field(default=None, description="With `group_by=theme` (`themes`).")
    month: str | None = Field(default=None, description="With `group_by=month`: `YYYY-MM` (UTC).")
    territory_id: uuid.UUID | None = Field(default=None, description="With `group_by=territory`.")
    level: str | None = Field(default=None, description="With `group_by=level` (`levels`).")


class WorkshopStats(ReadModel):
    totals: WorkshopFigures
    items: list[WorkshopStatsItem]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"totals": WORKSHOP_FIGURES, "items": [{"month": "2026-03", **WORKSHOP_FIGURES}]}]
        }
    )
