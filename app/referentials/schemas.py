"""Reference list API models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ReferentialSummary(BaseModel):
    name: str = Field(description="The list's name, for `GET /referentials/{name}`.", examples=["themes"])
    description: str = Field(examples=["Thématiques des ateliers et accompagnements."])

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "levels", "description": "Niveaux des ateliers."}]}
    )


class ReferentialIndex(BaseModel):
    items: list[ReferentialSummary]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"name": "themes", "description": "Thématiques des ateliers et accompagnements."},
                        {"name": "levels", "description": "Niveaux des ateliers."},
                    ]
                }
            ]
        }
    )


class ReferentialItem(BaseModel):
    value: str = Field(description="The value the API takes and returns.", examples=["securite_numerique"])
    label: str = Field(description="French label, for display.", examples=["Sécurité numérique"])
    description: str = Field(
        description="One French sentence saying what the value covers.",
        examples=[
            "Protéger ses données personnelles, ses comptes et ses appareils ; reconnaître les arnaques."
        ],
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "value": "debutant",
                    "label": "Débutant",
                    "description": "Pour les personnes qui découvrent l'outil ou l'usage.",
                }
            ]
        }
    )


class Referential(BaseModel):
    name: str = Field(examples=["levels"])
    items: list[ReferentialItem]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "levels",
                    "items": [
                        {
                            "value": "debutant",
                            "label": "Débutant",
                            "description": "Pour les personnes qui découvrent l'outil ou l'usage.",
                        },
                        {
                            "value": "intermediaire",
                            "label": "Intermédiaire",
                            "description": "Pour les personnes qui en ont déjà une pratique de base.",
                        },
                        {
                            "value": "avance",
                            "label": "Avancé",
                            "description": "Pour les personnes à l'aise qui veulent approfondir.",
                        },
                    ],
                }
            ]
        }
    )
