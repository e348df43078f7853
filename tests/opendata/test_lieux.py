"""The open-data export of the venues: the standard's records, their CSV and JSON, and what is left out."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.opendata import service
from app.opendata.repository import VenueRow
from app.referentials.data import Theme
from app.territories import referential
from app.territories import service as territories
from app.territories.models import Territory
from app.workshops.models import Workshop
from tests.opendata.helpers import (
    CSV_URL,
    JSON_URL,
    REQUIRED,
    csv_rows,
    errors_of_csv,
    errors_of_records,
    schema,
)
from tests.workshops.helpers import VENUE, Place, create_workshop

LYON_SIREN = "200046977"
# A number with a valid Luhn key, for the tests only: not the Rhône's SIREN (the service ships none for a
# département; an operator loads the real one, scripts/build_referential.py --sirens).
DEPARTEMENT_SIREN = "123456782"


async def workshop(client: httpx.AsyncClient, place: Place, position: str = "lyon", **changes: Any) -> str:
    position_id = (place.lyon_position if position == "lyon" else place.rhone_position)["id"]
    created = await create_workshop(client, place.admin, position_id, **changes)
    return str(created["id"])


async def export(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
    as_csv, as_json = await client.get(CSV_URL), await client.get(JSON_URL)
    assert as_csv.status_code == 200, as_csv.text
    assert as_json.status_code == 200, as_json.text
    return as_csv, as_json


async def test_one_venue_in_the_standard(client: httpx.AsyncClient, place: Place, tmp_path: Path) -> None:
    await workshop(client, place, themes=["insertion_professionnelle", "securite_numerique", "email"])
    as_csv, as_json = await export(client)

    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert as_csv.headers["cache-control"] == "public, max-age=3600"
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.headers["cache-control"] == "public, max-age=3600"
    assert errors_of_csv(as_csv.content, tmp_path) == []
    header = as_csv.content.decode().split("\r\n", 1)[0]
    assert header.split(",") == [field.name for field in schema().fields]
    [record] = as_json.json()
    assert record == {
        "id": service.venue_id(VENUE["address"], "69123"),
        "pivot": LYON_SIREN,
        "nom": "Médiathèque de la Part-Dieu",
        "commune": "Lyon",
        "code_postal": "69003",
        "code_insee": "69123",
        "adresse": "30 boulevard Vivier-Merle",
        "latitude": 45.7606,
        "longitude": 4.8593,
        "source": "Conseillers numériques France Services",
        "date_maj": utcnow().date().isoformat(),
        # The standard's order, whatever the themes' order.
        "services": "Maîtrise des outils numériques du quotidien|Insertion professionnelle via le numérique"
        "|Utilisation sécurisée du numérique",
        "frais_a_charge": "Gratuit",
        "dispositif_programmes_nationaux": "Conseillers numériques",
        "modalites_accompagnement": "Dans un atelier collectif",
    }


async def test_same_address_typed_differently_is_one_venue(
    client: httpx.AsyncClient, place: Place, tmp_path: Path
) -> None:
    await workshop(client, place, themes=["email"])
    await workshop(client, place, themes=["email"])
    await workshop(
        client,
        place,
        themes=["parentalite"],
        venue=VENUE
        | {"name": "MEDIATHEQUE PART DIEU", "address": "30, Boulevard  VIVIER MERLE.", "lat": 45.7607},
    )
    # The same street in another commune is another place.
    await workshop(client, place, venue=VENUE | {"commune_code": "69266", "postcode": "69100"})
    as_csv, as_json = await export(client)

    records = as_json.json()
    assert [(r["code_insee"], r["nom"]) for r in records] == [
        ("69123", "Médiathèque de la Part-Dieu"),  # the spelling of two workshops out of three
        ("69266", "Médiathèque de la Part-Dieu"),
    ]
    lyon, villeurbanne = records
    assert lyon["id"] == service.venue_id("30 BOULEVARD vivier merle", "69123")
    assert lyon["id"] != villeurbanne["id"]
    assert villeurbanne["commune"] == "Villeurbanne"
    # The themes of every spelling count.
    assert lyon["services"] == (
        "Maîtrise des outils numériques du quotidien|Parentalité et éducation avec le numérique"
    )
    assert errors_of_csv(as_csv.content, tmp_path) == []


async def test_only_public_in_person_workshops_that_are_held(
    client: httpx.AsyncClient, place: Place, session: AsyncSession
) -> None:
    def at(address: str) -> dict[str, Any]:
        return VENUE | {"address": address}

    await workshop(client, place, venue=at("1 rue publique"))
    await workshop(client, place, venue=at("2 rue privee"), public=False)
    await workshop(client, place, format="remote", venue=None, online_url="https://visio.example.org/atelier")
    cancelled = await workshop(client, place, venue=at("3 rue annulee"))
    response = await client.post(
        f"/api/v1/workshops/{cancelled}/cancel", json={"reason": "Salle indisponible."}, headers=place.admin
    )
    assert response.status_code == 200, response.text
    old = await workshop(client, place, venue=at("4 rue ancienne"))
    recent = await workshop(client, place, venue=at("5 rue recente"))
    now = utcnow()
    for workshop_id, days in ((old, 400), (recent, 300)):
        starts = now - timedelta(days=days)
        await session.execute(
            update(Workshop)
            .where(Workshop.id == uuid.UUID(workshop_id))
            .values(starts_at=starts, ends_at=starts + timedelta(hours=2))
        )
    await session.flush()

    _, as_json = await export(client)
    assert sorted(r["adresse"] for r in as_json.json()) == ["1 rue publique", "5 rue recente"]


def test_every_theme_gives_a_service_of_the_standard() -> None:
    pattern = next(f for f in schema().fields if f.name == "services").constraints["pattern"]
    assert set(service.THEME_SERVICES) == set(Theme)
    assert set(service.THEME_SERVICES.values()) <= set(service.SERVICES)
    assert "Compréhension du monde numérique" in pattern
    for value in service.SERVICES:
        assert value in pattern
    everything = sum(1 << i for i in range(len(Theme)))
    assert service.services_of(everything) == "|".join(service.SERVICES[:7])
    assert service.services_of(0) is None


def test_ids_are_uuid5_of_the_normalised_address_and_the_commune() -> None:
    expected = uuid.uuid5(service.ID_NAMESPACE, "69123|12 rue de l eglise")
    assert service.venue_id("12, Rue de l'Église ", "69123") == str(expected)
    assert service.venue_id("12 RUE DE L EGLISE", "69123") == str(expected)
    assert service.venue_id("12 rue de l'Église", "69266") != str(expected)


async def test_ids_are_stable_across_exports(client: httpx.AsyncClient, place: Place) -> None:
    first = await workshop(client, place)
    _, before = await export(client)
    # Another workshop, a new spelling that becomes the usual one: the place keeps its id.
    for _ in range(2):
        await workshop(client, place, venue=VENUE | {"address": "30 Boulevard Vivier Merle"})
    response = await client.post(
        f"/api/v1/workshops/{first}/cancel", json={"reason": "Salle indisponible."}, headers=place.admin
    )
    assert response.status_code == 200
    _, after = await export(client)
    assert [r["id"] for r in after.json()] == [r["id"] for r in before.json()]
    assert after.json()[0]["adresse"] == "30 Boulevard Vivier Merle"
    _, again = await export(client)
    assert again.content == after.content


async def test_a_venue_that_cannot_fill_a_required_field_is_left_out_and_logged(
    client: httpx.AsyncClient, place: Place, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    secret_name = "Chez Dominique Fictif"
    await workshop(client, place)
    # The Rhône's positions are employed by the département, which has no SIREN in the referential: no
    # pivot, so its venue is not published.
    await workshop(client, place, "rhone", venue=VENUE | {"name": secret_name, "address": "7 rue du Rhône"})
    with caplog.at_level(logging.WARNING, logger="app.opendata"):
        as_csv, as_json = await export(client)

    assert [r["adresse"] for r in as_json.json()] == [VENUE["address"]]
    rows = csv_rows(as_csv.content)
    assert len(rows) == 1
    for row in rows:
        assert all(row[name] for name in REQUIRED), row
    assert errors_of_csv(as_csv.content, tmp_path) == []
    left_out = [r.getMessage() for r in caplog.records if r.name == "app.opendata"]
    hidden = service.venue_id("7 rue du Rhône", "69123")
    assert (
        left_out
        == [
            "open data: 1 venues left out (1 without pivot), required fields of the standard missing: "
            f"{hidden} (69123, pivot)"
        ]
        * 2
    )
    assert not any(secret_name in line or "rue du Rhône" in line for line in caplog.text.splitlines())


async def test_a_departements_venue_is_published_once_the_referential_has_its_siren(
    client: httpx.AsyncClient, place: Place, session: AsyncSession, tmp_path: Path
) -> None:
    """The Rhône's position is employed by the département: without a SIREN its venue is left out (the
    standard prescribes no value for an unknown SIRET); once an import of the referential carries the
    département's SIREN, the venue is published with it as `pivot`, and a later import of a snapshot
    without it (the shipped one has none) keeps it."""
    await workshop(client, place)
    rhone_venue = VENUE | {"name": "Maison du Rhône", "address": "7 rue du Rhône"}
    await workshop(client, place, "rhone", venue=rhone_venue)
    as_csv, as_json = await export(client)
    assert [r["adresse"] for r in as_json.json()] == [VENUE["address"]]
    assert errors_of_csv(as_csv.content, tmp_path) == []

    subset = referential.shipped().subset({"69123", "69264", "69266"})
    await territories.import_referential(
        session, dataclasses.replace(subset, sirens={("departement", "69"): DEPARTEMENT_SIREN})
    )
    await session.flush()
    as_csv, as_json = await export(client)
    records = {r["adresse"]: r for r in as_json.json()}
    assert set(records) == {VENUE["address"], "7 rue du Rhône"}
    assert records["7 rue du Rhône"]["pivot"] == DEPARTEMENT_SIREN
    assert records["7 rue du Rhône"]["nom"] == "Maison du Rhône"
    assert records[VENUE["address"]]["pivot"] == LYON_SIREN
    assert [row["pivot"] for row in csv_rows(as_csv.content)] == [
        records[row["adresse"]]["pivot"] for row in csv_rows(as_csv.content)
    ]
    assert errors_of_csv(as_csv.content, tmp_path) == []
    assert errors_of_records(as_json.json()) == []

    await territories.import_referential(session, subset)
    await session.flush()
    the_rhone = select(Territory).where(Territory.kind == "departement", Territory.code == "69")
    rhone = (await session.execute(the_rhone)).scalar_one()
    assert rhone.siren == DEPARTEMENT_SIREN
    _, as_json = await export(client)
    assert {r["pivot"] for r in as_json.json()} == {LYON_SIREN, DEPARTEMENT_SIREN}


def test_a_venue_without_a_commune_name_or_a_date_is_left_out() -> None:
    row = VenueRow(
        commune_code="69123",
        postcode="69003",
        name="Médiathèque",
        address="1 place Louis Pradel",
        lat=None,
        lon=None,
        commune_name=None,
        employer_siren=LYON_SIREN,
        workshops=1,
        updated_at=utcnow(),
        themes_mask=1,
    )
    assert service.build([row]).skipped == {"commune": 1}
    assert service.build([_replace(row, commune_name="Lyon", postcode="6900")]).skipped == {"code_postal": 1}
    assert service.build([_replace(row, commune_name="Lyon", address=" ,. ")]).skipped == {"adresse": 1}
    published = service.build([_replace(row, commune_name="Lyon")])
    assert published.skipped == {}
    assert [r["nom"] for r in published.records] == ["Médiathèque"]
    assert "latitude" not in published.records[0]


def _replace(row: VenueRow, **changes: Any) -> VenueRow:
    return row._replace(**changes)


async def test_formulas_are_neutralised_in_the_csv_and_still_valid(
    client: httpx.AsyncClient, place: Place, tmp_path: Path
) -> None:
    formula = '=HYPERLINK("https://example.org","Atelier")'
    await workshop(
        client,
        place,
        venue=VENUE | {"name": formula, "address": "@1 rue du Tableur", "lon": -1.5536, "lat": 47.2184},
    )
    as_csv, as_json = await export(client)
    [row] = csv_rows(as_csv.content)
    assert row["nom"] == "'" + formula
    assert row["adresse"] == "'@1 rue du Tableur"
    # A negative longitude is a number, inert in a spreadsheet: left as it is.
    assert row["longitude"] == "-1.5536"
    # The JSON is no spreadsheet: the values as they are.
    [record] = as_json.json()
    assert record["nom"] == formula
    assert record["adresse"] == "@1 rue du Tableur"
    assert errors_of_csv(as_csv.content, tmp_path) == []


async def test_json_holds_the_csv_records(client: httpx.AsyncClient, place: Place) -> None:
    await workshop(client, place)
    await workshop(client, place, venue=VENUE | {"name": "-Espace numérique", "address": "9 quai Perrache"})
    await workshop(
        client, place, venue=VENUE | {"commune_code": "69266", "postcode": "69100", "lat": 45.7607}
    )
    as_csv, as_json = await export(client)
    records = as_json.json()
    assert len(records) == 3
    assert errors_of_records(records) == []
    from_csv = [
        {name: value for name, value in row.items() if value != ""} for row in csv_rows(as_csv.content)
    ]
    expected = [{name: service._cell(name, value) for name, value in record.items()} for record in records]
    assert from_csv == expected


async def test_no_venue_no_record(client: httpx.AsyncClient, tmp_path: Path) -> None:
    as_csv, as_json = await export(client)
    assert as_json.json() == []
    assert as_csv.content == (",".join(service.field_names()) + "\r\n").encode()
    assert errors_of_csv(as_csv.content, tmp_path) == []


async def test_unknown_parameters_and_bad_keys_are_refused(client: httpx.AsyncClient) -> None:
    unknown = await client.get(CSV_URL, params={"format": "xlsx"})
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "validation_error"
    assert unknown.headers["cache-control"] == "private, no-store"
    bad_key = await client.get(JSON_URL, headers={"Authorization": "Bearer cnfs_nope"})
    assert bad_key.status_code == 401
    assert bad_key.json()["code"] == "unauthenticated"
