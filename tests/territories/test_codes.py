"""Official codes per kind (INSEE region, département and commune codes; SIREN with its Luhn key)."""

from __future__ import annotations

import httpx
import pytest

from app.territories.codes import TerritoryKind, code_error, fold
from tests.helpers import assert_problem
from tests.territories.helpers import BASE, READ_FIELDS, siren

VALID = [
    ("region", "84"),
    ("region", "53"),
    ("region", "01"),
    ("departement", "01"),
    ("departement", "09"),
    ("departement", "19"),
    ("departement", "21"),
    ("departement", "69"),
    ("departement", "95"),
    ("departement", "2A"),
    ("departement", "2B"),
    ("departement", "971"),
    ("departement", "976"),
    ("commune", "69123"),
    ("commune", "2A004"),
    ("commune", "2B033"),
    ("commune", "97105"),
    ("commune", "01001"),
    # Looks like a postcode (Lyon 1er) but also matches the INSEE pattern: the pattern alone cannot tell.
    ("commune", "69001"),
    ("metropole", "200046977"),
    ("epci", "200046977"),
    ("epci", siren("24690074")),
]

INVALID = [
    ("region", "8"),
    ("region", "845"),
    ("region", "A4"),
    ("region", "٨٤"),  # Arabic-Indic digits are digits for `\d`, not for INSEE
    ("departement", "20"),
    ("departement", "96"),
    ("departement", "00"),
    ("departement", "970"),
    ("departement", "977"),
    ("departement", "2C"),
    ("departement", "2a"),
    ("departement", "6 9"),
    ("departement", "1٠"),
    ("departement", "690"),
    ("commune", "20123"),
    ("commune", "6912"),
    ("commune", "691234"),
    ("commune", "ABCDE"),
    ("commune", "2C004"),
    ("commune", "O1001"),
    ("commune", "6912٣"),
    ("metropole", "200046978"),
    ("metropole", "20004697"),
    ("metropole", "2000469770"),
    ("metropole", "20004697X"),
    ("epci", "200046978"),
    ("epci", "2000 4697"),
    ("epci", "２００４６９７７"),
]


@pytest.mark.parametrize(("kind", "code"), VALID)
def test_code_error_accepts_official_codes(kind: str, code: str) -> None:
    assert code_error(TerritoryKind(kind), code) is None


@pytest.mark.parametrize(("kind", "code"), [*INVALID, ("region", "84\n"), ("commune", "69123\n")])
def test_code_error_rejects_and_says_what_is_expected(kind: str, code: str) -> None:
    error = code_error(TerritoryKind(kind), code)
    assert error is not None
    assert error.startswith(f"invalid code for a {kind}: expected ")


@pytest.mark.parametrize(("kind", "code"), VALID)
async def test_create_accepts_valid_code(
    client: httpx.AsyncClient, admin: dict[str, str], kind: str, code: str
) -> None:
    response = await client.post(
        BASE, json={"kind": kind, "code": code, "name": f"{kind} {code}"}, headers=admin
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body.keys() == READ_FIELDS
    assert (body["kind"], body["code"], body["parent_id"], body["population"]) == (kind, code, None, None)
    assert body["version"] == 1


@pytest.mark.parametrize(("kind", "code"), INVALID)
async def test_create_rejects_invalid_code(
    client: httpx.AsyncClient, admin: dict[str, str], kind: str, code: str
) -> None:
    response = await client.post(BASE, json={"kind": kind, "code": code, "name": "X"}, headers=admin)
    body = assert_problem(response, 422, "validation_error", "/code")
    assert len(body["errors"]) == 1
    # Nothing was written.
    listed = await client.get(BASE, params={"kind": kind})
    assert listed.json()["items"] == []


async def test_code_is_trimmed_before_it_is_checked(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.post(
        BASE, json={"kind": "departement", "code": " 2A ", "name": "Corse-du-Sud"}, headers=admin
    )
    assert response.status_code == 201, response.text
    assert response.json()["code"] == "2A"


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Métropole de Lyon", "metropole de lyon"),
        ("VILLEFRANCHE-SUR-SAÔNE", "villefranche-sur-saone"),
        ("  Saint-Étienne   Métropole ", "saint-etienne metropole"),
        ("Œuilly", "oeuilly"),
        ("L'Haÿ-les-Roses", "l'hay-les-roses"),
    ],
)
def test_fold_ignores_case_accents_and_extra_spaces(text: str, folded: str) -> None:
    assert fold(text) == folded
