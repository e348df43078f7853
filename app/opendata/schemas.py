"""The standard's record, as the JSON export writes it (the OpenAPI document's description of it)."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel

EXAMPLE: dict[str, Any] = {
    "id": "0b9f6a0e-3f8e-5d1b-9a7c-1c2d3e4f5a6b",
    "pivot": "200046977",
    "nom": "Médiathèque de la Part-Dieu",
    "commune": "Lyon",
    "code_postal": "69003",
    "code_insee": "69123",
    "adresse": "30 boulevard Vivier-Merle",
    "latitude": 45.7606,
    "longitude": 4.8593,
    "source": "Conseillers numériques France Services",
    "date_maj": "2026-11-26",
    "services": "Insertion professionnelle via le numérique|Utilisation sécurisée du numérique",
    "frais_a_charge": "Gratuit",
    "dispositif_programmes_nationaux": "Conseillers numériques",
    "modalites_accompagnement": "Dans un atelier collectif",
}


class LieuMediationNumerique(BaseModel):
    """One place where public workshops are held, in the standard's fields (schema 1.0.2). Fields the
    service cannot fill truthfully are left out; the CSV has every column of the standard."""

    model_config = ConfigDict(json_schema_extra={"examples": [dict(EXAMPLE)]})

    id: str = Field(
        description="UUID v5 of the normalised address and the commune code: stable across exports."
    )
    pivot: str = Field(
        pattern=r"^[a-zA-Z0-9]{9,14}$",
        description="SIREN of the counsellors' employer (the agreement's territory).",
    )
    nom: str = Field(description="The venue's name, as most of its workshops write it.")
    commune: str
    code_postal: str = Field(pattern=r"^\d{5}$")
    code_insee: str = Field(pattern=r"^([013-9]\d|2[AB1-9])\d{3}$")
    adresse: str
    latitude: float | None = None
    longitude: float | None = None
    source: str | None = None
    date_maj: date = Field(description="The latest update of the venue's workshops (UTC).")
    services: str | None = Field(
        default=None, description="The workshops' themes as the standard's services, joined with `|`."
    )
    frais_a_charge: str = "Gratuit"
    dispositif_programmes_nationaux: str = "Conseillers numériques"
    modalites_accompagnement: str = "Dans un atelier collectif"


class LieuxMediationNumerique(RootModel[list[LieuMediationNumerique]]):
    """Every venue of the export, as the standard's JSON examples write them: an array of records."""

    model_config = ConfigDict(json_schema_extra={"examples": [[dict(EXAMPLE)]]})
