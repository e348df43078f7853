"""Reference lists: index order, French labels, the 404 problem, enums that match the published lists."""

from __future__ import annotations

from enum import StrEnum

import httpx
import pytest

from app.referentials import data
from app.referentials.data import (
    REFERENTIALS,
    AgeBracket,
    AmendmentReason,
    Attendance,
    ContractType,
    EndReason,
    Level,
    PositionTypology,
    SocialStatus,
    Theme,
    TrainingLabel,
    values,
)
from app.territories.codes import TerritoryKind

BASE = "/api/v1/referentials"

NAMES = [
    "themes",
    "levels",
    "territory_kinds",
    "contract_types",
    "end_reasons",
    "amendment_reasons",
    "age_brackets",
    "social_statuses",
    "training_labels",
    "position_typologies",
    "attendance_statuses",
]

THEMES = [
    "diagnostic_numerique",
    "prendre_en_main_du_materiel",
    "maintenance_de_materiel",
    "gere_ses_contenus_numeriques",
    "navigation_sur_internet",
    "email",
    "bureautique",
    "reseaux_sociaux",
    "sante",
    "banque_et_achats_en_ligne",
    "entrepreneuriat",
    "insertion_professionnelle",
    "securite_numerique",
    "parentalite",
    "scolarite_et_numerique",
    "creer_avec_le_numerique",
    "culture_numerique",
    "intelligence_artificielle",
    "aide_aux_demarches_administratives",
]

EXPECTED_VALUES = {
    "themes": THEMES,
    "levels": ["debutant", "intermediaire", "avance"],
    "territory_kinds": ["region", "departement", "metropole", "epci", "commune"],
    "contract_types": ["CDD", "CDI", "CDP", "PEC"],
    "end_reasons": ["demission", "licenciement", "non_reconduction_cdd", "fin_de_contrat", "autre"],
    "amendment_reasons": [
        "besoin_plus_justifie",
        "difficultes_de_recrutement",
        "capacite_de_financement_insuffisante",
        "visibilite_incertaine",
        "fin_de_subvention",
        "autre",
    ],
    "age_brackets": [
        "moins_de_douze",
        "douze_dix_huit",
        "dix_huit_vingt_quatre",
        "vingt_cinq_trente_neuf",
        "quarante_cinquante_neuf",
        "soixante_soixante_neuf",
        "soixante_dix_plus",
        "non_communique",
    ],
    "social_statuses": ["scolarise", "sans_emploi", "en_emploi", "retraite", "non_communique"],
    "training_labels": ["CCP1", "CCP2", "CCP2_CCP3"],
    "position_typologies": ["conum", "coordinateur"],
    "attendance_statuses": ["present", "absent", "excused", "unknown"],
}

ENUMS: dict[str, type[StrEnum]] = {
    "themes": Theme,
    "levels": Level,
    "territory_kinds": TerritoryKind,
    "contract_types": ContractType,
    "end_reasons": EndReason,
    "amendment_reasons": AmendmentReason,
    "age_brackets": AgeBracket,
    "social_statuses": SocialStatus,
    "training_labels": TrainingLabel,
    "position_typologies": PositionTypology,
    "attendance_statuses": Attendance,
}


async def test_index_names_every_list_in_order(client: httpx.AsyncClient) -> None:
    r = await client.get(BASE)
    assert r.status_code == 200
    assert r.headers["cache-control"] == "public, max-age=3600"
    body = r.json()
    assert list(body) == ["items"]
    assert [i["name"] for i in body["items"]] == NAMES
    for item in body["items"]:
        assert set(item) == {"name", "description"}
        assert item["description"].strip()


@pytest.mark.parametrize("name", NAMES)
async def test_each_list_has_its_values_with_labels_and_descriptions(
    client: httpx.AsyncClient, name: str
) -> None:
    r = await client.get(f"{BASE}/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["cache-control"] == "public, max-age=3600"
    body = r.json()
    assert body["name"] == name
    assert [i["value"] for i in body["items"]] == EXPECTED_VALUES[name]
    for item in body["items"]:
        assert set(item) == {"value", "label", "description"}
        assert item["label"].strip()
        assert item["description"].strip()


async def test_themes_are_the_19_coop_values(client: httpx.AsyncClient) -> None:
    body = (await client.get(f"{BASE}/themes")).json()
    assert len(body["items"]) == 19
    assert [i["value"] for i in body["items"]] == THEMES


@pytest.mark.parametrize(
    ("name", "value", "label"),
    [
        ("themes", "prendre_en_main_du_materiel", "Prendre en main du matériel"),
        ("themes", "securite_numerique", "Sécurité numérique"),
        ("themes", "intelligence_artificielle", "Intelligence artificielle"),
        ("themes", "aide_aux_demarches_administratives", "Aide aux démarches administratives"),
        ("levels", "debutant", "Débutant"),
        ("levels", "intermediaire", "Intermédiaire"),
        ("territory_kinds", "departement", "Département"),
        ("territory_kinds", "metropole", "Métropole"),
        ("territory_kinds", "epci", "EPCI (intercommunalité)"),
        ("contract_types", "CDD", "Contrat à durée déterminée"),
        ("end_reasons", "demission", "Démission"),
        ("age_brackets", "moins_de_douze", "Moins de 12 ans"),
        ("age_brackets", "douze_dix_huit", "12 à 18 ans"),
        ("age_brackets", "soixante_dix_plus", "70 ans et plus"),
        ("age_brackets", "non_communique", "Non communiqué"),
        ("social_statuses", "scolarise", "Scolarisé"),
        ("social_statuses", "retraite", "Retraité"),
        ("position_typologies", "conum", "Conseiller numérique"),
        ("position_typologies", "coordinateur", "Coordinateur"),
    ],
)
async def test_french_labels(client: httpx.AsyncClient, name: str, value: str, label: str) -> None:
    body = (await client.get(f"{BASE}/{name}")).json()
    labels = {i["value"]: i["label"] for i in body["items"]}
    assert labels[value] == label


async def test_launch_themes_are_described(client: httpx.AsyncClient) -> None:
    body = (await client.get(f"{BASE}/themes")).json()
    descriptions = {i["value"]: i["description"].lower() for i in body["items"]}
    assert "contacter ses proches" in descriptions["reseaux_sociaux"]
    assert "cv" in descriptions["insertion_professionnelle"]
    assert "scolarité des enfants" in descriptions["scolarite_et_numerique"]
    assert "scolarité" in descriptions["parentalite"]
    assert "données personnelles" in descriptions["securite_numerique"]
    assert "vérifier l'information" in descriptions["culture_numerique"]


async def test_unknown_list_is_a_404_problem_naming_the_valid_lists(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{BASE}/colours")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == "not_found"
    assert body["status"] == 404
    assert "colours" in body["detail"]
    for name in NAMES:
        assert name in body["detail"]


@pytest.mark.parametrize("name", NAMES)
def test_enum_equals_its_list(name: str) -> None:
    enum = ENUMS[name]
    assert [m.value for m in enum] == list(values(name)) == EXPECTED_VALUES[name]
    assert REFERENTIALS[name].enum is enum


def test_every_list_has_an_enum() -> None:
    assert list(REFERENTIALS) == NAMES == list(ENUMS)


def test_label_helper() -> None:
    assert data.label("themes", Theme.sante) == "Santé"
    assert data.label("themes", "not_a_theme") == "not_a_theme"


def test_a_list_that_misses_an_enum_value_is_refused_at_import() -> None:
    with pytest.raises(RuntimeError, match="avance"):
        data._referential(
            "levels",
            "",
            Level,
            {Level.debutant: ("Débutant", ""), Level.intermediaire: ("Intermédiaire", "")},
        )
