"""The official referential: the shipped snapshot, and its import on a small subset of it (hierarchy, the
Métropole de Lyon, idempotence, former codes, search, the commune check)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.problems import AppError
from app.territories import referential, service
from app.territories.models import Territory, TerritoryAlias, TerritoryWord
from tests.conftest import TerritoryMaker
from tests.helpers import assert_problem
from tests.territories.helpers import BASE, names

# Real communes chosen for the rules they exercise.
SUBSET = {
    "69123": "Lyon (Métropole de Lyon; former code 69232; arrondissements 69381-69389)",
    "69266": "Villeurbanne (Métropole de Lyon)",
    "69264": "Villefranche-sur-Saône (CA Villefranche Beaujolais Saône, Rhône)",
    "69001": "Affoux (Rhône; its code is also a postcode of Lyon)",
    "42218": "Saint-Étienne",
    "76575": "Saint-Étienne-du-Rouvray",
    "38193": "L'Isle-d'Abeau",
    "84054": "L'Isle-sur-la-Sorgue",
    "31555": "Toulouse (Toulouse Métropole)",
    "01015": "Arboys en Bugey (former code 01340)",
    "01033": "Valserhône (six former codes)",
    "75056": "Paris (Métropole du Grand Paris, seat in Paris)",
    "92012": "Boulogne-Billancourt (Métropole du Grand Paris, in another département)",
    "29155": "Ouessant (in no EPCI)",
}


@pytest.fixture(scope="module")
def subset() -> referential.Snapshot:
    return referential.shipped().subset(set(SUBSET))


async def load(session: AsyncSession, snapshot: referential.Snapshot) -> service.ImportReport:
    report = await service.import_referential(session, snapshot)
    await session.flush()
    return report


async def by_code(session: AsyncSession, kind: str, code: str) -> Territory:
    return (
        await session.execute(select(Territory).where(Territory.kind == kind, Territory.code == code))
    ).scalar_one()


async def count(session: AsyncSession, model: type[Any]) -> int:
    return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


# --- the shipped snapshot ---------------------------------------------------------------------------


def test_shipped_snapshot_counts_and_provenance() -> None:
    snapshot = referential.shipped()
    assert snapshot.meta["package"] == "@etalab/decoupage-administratif"
    assert snapshot.meta["version"] == referential.SNAPSHOT_VERSION == "6.0.0"
    assert snapshot.meta["vintage"] == 2026
    assert "Licence Ouverte" in snapshot.meta["licence"]
    # Metropolitan France and the DROM; the collectivités d'outre-mer are left out.
    assert len(snapshot.regions) == 18
    assert len(snapshot.departements) == 101
    assert {"971", "972", "973", "974", "976", "2A", "2B"} <= set(snapshot.departements)
    assert not {"975", "977", "978", "984", "986", "987", "988"} & set(snapshot.departements)
    # The 2026 vintage: 1 255 EPCI à fiscalité propre, 34 875 current communes (34 969 with the COM's).
    assert len(snapshot.epcis) == 1255
    assert len(snapshot.communes) == 34_875
    assert len(snapshot.aliases) == 4285
    reasons = [a.reason for a in snapshot.aliases.values()]
    assert {r: reasons.count(r) for r in set(reasons)} == {
        "merged": 2248,
        "delegated": 1521,
        "associated": 471,
        "arrondissement": 45,
    }

    planned, aliases = referential.plan(snapshot)
    kinds = [row.kind.value for row in planned]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "region": 18,
        "departement": 101,
        "metropole": 22,
        "epci": 1233,
        "commune": 34_875,
    }
    assert len(aliases) == 4285
    # Parents come before their children.
    seen: set[referential.Key] = set()
    for row in planned:
        assert row.parent is None or row.parent in seen
        seen.add(row.key)
    lyon = next(row for row in planned if row.key == ("metropole", "200046977"))
    assert lyon.parent == ("region", "84")
    rhone = next(row for row in planned if row.key == ("departement", "69"))
    region = next(row for row in planned if row.key == ("region", "84"))
    assert rhone.population is not None
    assert region.population is not None
    assert lyon.population is not None
    # The Rhône without the Métropole: about 480 000 inhabitants, not 1.9 million.
    assert 400_000 < rhone.population < 600_000
    assert 1_300_000 < lyon.population < 1_500_000
    assert 8_000_000 < region.population < 8_500_000


def test_a_file_that_is_not_a_snapshot_is_refused(tmp_path: Any) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"format": 99}')
    with pytest.raises(referential.SnapshotError):
        referential.read(bad)
    bad.write_text("not json")
    with pytest.raises(referential.SnapshotError):
        referential.read(bad)
    with pytest.raises(referential.SnapshotError):
        referential.read(tmp_path / "missing.json.gz")


# A number with a valid Luhn key, for the tests only: not a real collectivité's SIREN (the dataset has none
# for régions and départements; an operator supplies them, scripts/build_referential.py --sirens).
TEST_SIREN = "123456782"
OTHER_TEST_SIREN = "100000009"


def _raw(snapshot: referential.Snapshot) -> dict[str, Any]:
    """A snapshot written back as the file's rows (the parser's input)."""
    return {
        "format": referential.SUPPORTED_FORMAT,
        "meta": snapshot.meta,
        "regions": [[code, name] for code, name in snapshot.regions.items()],
        "departements": [[code, name, region] for code, (name, region) in snapshot.departements.items()],
        "epci": [[e.siren, e.name, e.type, e.population] for e in snapshot.epcis.values()],
        "communes": [
            [c.code, c.name, c.departement, c.epci, c.population, c.siren, list(c.postcodes)]
            for c in snapshot.communes.values()
        ],
        "aliases": [[a.code, a.commune, a.reason, a.name] for a in snapshot.aliases.values()],
    }


def test_a_snapshot_may_carry_the_siren_of_a_region_or_a_departement(subset: referential.Snapshot) -> None:
    assert subset.sirens == {}
    raw = _raw(subset)
    assert referential.parse(raw) == subset
    # A SIREN, a null or nothing at the end of a row.
    raw["regions"] = [[*row, TEST_SIREN if row[0] == "84" else None] for row in raw["regions"]]
    raw["departements"] = [[*row, OTHER_TEST_SIREN] if row[0] == "69" else row for row in raw["departements"]]
    parsed = referential.parse(raw)
    assert parsed.sirens == {("region", "84"): TEST_SIREN, ("departement", "69"): OTHER_TEST_SIREN}
    assert parsed.regions == subset.regions
    assert parsed.departements == subset.departements
    # A subset keeps the SIRENs of the régions and départements it keeps.
    assert parsed.subset({"69123"}).sirens == parsed.sirens
    assert parsed.subset({"31555"}).sirens == {}
    planned = {row.key: row for row in referential.plan(parsed)[0]}
    assert planned[("region", "84")].siren == TEST_SIREN
    assert planned[("departement", "69")].siren == OTHER_TEST_SIREN
    assert planned[("departement", "31")].siren is None

    for bad in ("123456789", "12345678", "1234567820", "abcdefghi", 123456782):
        wrong = _raw(subset)
        wrong["departements"] = [[*row, bad] for row in wrong["departements"]]
        with pytest.raises(referential.SnapshotError, match="not a SIREN"):
            referential.parse(wrong)
    too_long = _raw(subset)
    too_long["regions"] = [[*row, TEST_SIREN, "extra"] for row in too_long["regions"]]
    with pytest.raises(referential.SnapshotError, match="too many elements"):
        referential.parse(too_long)


async def test_the_siren_of_a_departement_is_imported_and_kept(
    client: httpx.AsyncClient, session: AsyncSession, subset: referential.Snapshot
) -> None:
    await load(session, subset)
    rhone = await by_code(session, "departement", "69")
    assert (rhone.siren, rhone.version) == (None, 1)

    report = await load(session, dataclasses.replace(subset, sirens={("departement", "69"): TEST_SIREN}))
    assert report.updated == {"departement": 1}
    rhone = await by_code(session, "departement", "69")
    assert (rhone.siren, rhone.version) == (TEST_SIREN, 2)
    # Its SIREN finds it, as a commune's does.
    assert names(await client.get(BASE, params={"q": TEST_SIREN})) == ["Rhône"]

    # The shipped snapshot has no SIREN for a département: importing it again keeps the one loaded.
    report = await load(session, subset)
    assert not report.updated
    rhone = await by_code(session, "departement", "69")
    assert (rhone.siren, rhone.version) == (TEST_SIREN, 2)

    # Another SIREN replaces it.
    await load(session, dataclasses.replace(subset, sirens={("departement", "69"): OTHER_TEST_SIREN}))
    rhone = await by_code(session, "departement", "69")
    assert (rhone.siren, rhone.version) == (OTHER_TEST_SIREN, 3)


# --- import: hierarchy ------------------------------------------------------------------------------


async def test_import_builds_the_hierarchy(session: AsyncSession, subset: referential.Snapshot) -> None:
    report = await load(session, subset)
    assert dict(report.created) == {
        "region": 6,
        "departement": 10,
        "metropole": 5,
        "epci": 6,
        "commune": 14,
    }
    assert not report.updated
    assert not report.unchanged

    async def parent(kind: str, code: str) -> tuple[str, str] | None:
        territory = await by_code(session, kind, code)
        if territory.parent_id is None:
            return None
        up = (
            await session.execute(select(Territory).where(Territory.id == territory.parent_id))
        ).scalar_one()
        return (up.kind, up.code)

    assert await parent("region", "84") is None
    assert await parent("departement", "69") == ("region", "84")
    # The Métropole de Lyon beside the Rhône, under the région; its communes under it.
    assert await parent("metropole", "200046977") == ("region", "84")
    assert await parent("commune", "69123") == ("metropole", "200046977")
    assert await parent("commune", "69266") == ("metropole", "200046977")
    # Commune → EPCI → département → région.
    assert await parent("commune", "69264") == ("epci", "200040590")
    assert await parent("epci", "200040590") == ("departement", "69")
    assert await parent("commune", "31555") == ("metropole", "243100518")
    assert await parent("metropole", "243100518") == ("departement", "31")
    # An EPCI over several départements hangs off the one with most inhabitants; its members elsewhere
    # stay in their own département.
    assert await parent("metropole", "200054781") == ("departement", "75")
    assert await parent("commune", "75056") == ("metropole", "200054781")
    assert await parent("commune", "92012") == ("departement", "92")
    # In no EPCI.
    assert await parent("commune", "29155") == ("departement", "29")

    # Paths as the service builds them: the parent's path, then the territory's own id.
    rows = {t.id: t for t in (await session.execute(select(Territory))).scalars()}
    for territory in rows.values():
        base = rows[territory.parent_id].path if territory.parent_id else "/"
        assert territory.path == f"{base}{territory.id}/"
        assert territory.version == 1

    lyon = await by_code(session, "commune", "69123")
    assert lyon.name == "Lyon"
    assert lyon.population is not None
    assert lyon.population > 500_000
    assert lyon.siren == "216901231"
    assert lyon.postcodes is not None
    assert lyon.postcodes.split()[:2] == ["69001", "69002"]
    # Every territory has a population.
    assert all(t.population is not None for t in rows.values())


async def test_the_rhone_excludes_the_metropole_de_lyon(
    client: httpx.AsyncClient, session: AsyncSession, subset: referential.Snapshot
) -> None:
    await load(session, subset)
    rhone = await by_code(session, "departement", "69")
    metropole = await by_code(session, "metropole", "200046977")
    region = await by_code(session, "region", "84")

    async def within(territory: Territory) -> set[str]:
        response = await client.get(BASE, params={"within": str(territory.id), "limit": 200})
        return set(names(response))

    assert await within(rhone) == {
        "Rhône",
        "Affoux",
        "CA de l'Ouest Rhodanien",
        "CA Villefranche Beaujolais Saône",
        "Villefranche-sur-Saône",
    }
    assert await within(metropole) == {"Métropole de Lyon", "Lyon", "Villeurbanne"}
    assert {"Rhône", "Métropole de Lyon", "Lyon", "Villefranche-sur-Saône", "L'Isle-d'Abeau"} <= await within(
        region
    )
    # The Rhône's population is its own communes', without the Métropole's.
    affoux = await by_code(session, "commune", "69001")
    villefranche = await by_code(session, "commune", "69264")
    assert rhone.population == (affoux.population or 0) + (villefranche.population or 0)


# --- import: idempotence ----------------------------------------------------------------------------


async def test_a_second_import_changes_nothing(session: AsyncSession, subset: referential.Snapshot) -> None:
    await load(session, subset)
    before = {
        (t.kind, t.code): (t.id, t.version, t.path)
        for t in (await session.execute(select(Territory))).scalars()
    }
    words = await count(session, TerritoryWord)
    aliases = await count(session, TerritoryAlias)

    again = await load(session, subset)
    assert not again.created
    assert not again.updated
    assert sum(again.unchanged.values()) == len(before) == 41
    assert (again.aliases_created, again.aliases_updated, again.aliases_unchanged) == (0, 0, aliases)
    after = {
        (t.kind, t.code): (t.id, t.version, t.path)
        for t in (await session.execute(select(Territory))).scalars()
    }
    assert after == before
    assert await count(session, TerritoryWord) == words
    assert await count(session, TerritoryAlias) == aliases


async def test_a_changed_referential_updates_in_place(
    client: httpx.AsyncClient, session: AsyncSession, subset: referential.Snapshot
) -> None:
    await load(session, subset)
    villefranche = await by_code(session, "commune", "69264")
    old_id = villefranche.id
    communes = dict(subset.communes)
    # Renamed, a new population, and out of its EPCI (its parent becomes the département).
    communes["69264"] = dataclasses.replace(
        communes["69264"], name="Villefranche-en-Beaujolais", population=40_000, epci=None
    )
    changed = dataclasses.replace(subset, communes=communes)

    report = await load(session, changed)
    assert report.updated == {"commune": 1, "departement": 1, "region": 1}
    assert sum(report.created.values()) == 0
    villefranche = await by_code(session, "commune", "69264")
    rhone = await by_code(session, "departement", "69")
    assert villefranche.id == old_id
    assert (villefranche.name, villefranche.population, villefranche.version) == (
        "Villefranche-en-Beaujolais",
        40_000,
        2,
    )
    assert villefranche.parent_id == rhone.id
    assert villefranche.path == f"{rhone.path}{villefranche.id}/"
    # The search follows the new name (the words were rewritten).
    assert names(await client.get(BASE, params={"q": "villefranche beaujolais", "kind": "commune"})) == [
        "Villefranche-en-Beaujolais"
    ]
    assert names(await client.get(BASE, params={"q": "villefranche saone", "kind": "commune"})) == []


async def test_a_move_rewrites_the_subtree_without_new_versions(
    session: AsyncSession, subset: referential.Snapshot
) -> None:
    await load(session, subset)
    # Département 69 moved to Occitanie: new versions of the Rhône and of the Métropole de Lyon (which
    # follows its communes' région), and of both régions (populations); their subtrees' paths follow, with
    # their versions kept.
    departements = {**subset.departements, "69": ("Rhône", "76")}
    report = await load(session, dataclasses.replace(subset, departements=departements))
    assert report.updated == {"departement": 1, "metropole": 1, "region": 2}
    assert report.rewritten == 6  # two EPCI, two communes of the Rhône, two of the Métropole
    occitanie = await by_code(session, "region", "76")
    for kind, code in (
        ("epci", "200040590"),
        ("commune", "69264"),
        ("commune", "69001"),
        ("commune", "69123"),
    ):
        territory = await by_code(session, kind, code)
        assert territory.path.startswith(occitanie.path)
        assert territory.version == 1


async def test_existing_territories_are_matched_by_kind_and_code(
    session: AsyncSession, subset: referential.Snapshot, make_territory: TerritoryMaker
) -> None:
    """Territories created before the import keep their ids; the import moves them where the referential
    says, and territories of its own making under them follow."""
    occitanie = await make_territory("region", "76", "Occitanie")
    rhone = await make_territory("departement", "69", "Rhone", occitanie)
    custom = await make_territory("epci", "200046977", "Not the Métropole, an EPCI", rhone)
    extra = await make_territory("commune", "69999", "A commune of our own", custom)
    rhone_id, custom_id = rhone.id, custom.id

    report = await load(session, subset)
    assert report.updated == {"departement": 1, "region": 1}  # the Rhône, and Occitanie's population
    # The EPCI made by hand (same code as the Métropole, another kind) and its commune followed the Rhône.
    assert report.rewritten == 2
    rhone = await by_code(session, "departement", "69")
    assert (rhone.id, rhone.name, rhone.version) == (rhone_id, "Rhône", 2)
    assert rhone.path.startswith((await by_code(session, "region", "84")).path)
    await session.refresh(extra)
    assert extra.path.startswith(rhone.path)
    assert (await by_code(session, "metropole", "200046977")).id != custom_id


# --- former codes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "current"),
    [
        ("01340", "01015"),  # merged into Arboys en Bugey
        ("01018", "01033"),  # one of Valserhône's
        ("69232", "69123"),  # merged into Lyon in 1963
        ("69381", "69123"),  # Lyon 1er arrondissement
    ],
)
async def test_a_former_code_answers_the_current_commune(
    client: httpx.AsyncClient, session: AsyncSession, subset: referential.Snapshot, code: str, current: str
) -> None:
    await load(session, subset)
    response = await client.get(f"{BASE}/commune/{code}")
    assert response.status_code == 200, response.text
    assert response.json()["code"] == current
    assert response.headers["content-location"] == f"{BASE}/commune/{current}"
    assert response.json() == (await client.get(f"{BASE}/commune/{current}")).json()
    # The current code answers without Content-Location; a former code under another kind is unknown.
    assert "content-location" not in (await client.get(f"{BASE}/commune/{current}")).headers
    assert_problem(await client.get(f"{BASE}/departement/{code[:2]}9"), 404, "not_found")


async def test_the_alias_of_a_deleted_commune_goes_with_it(
    client: httpx.AsyncClient, session: AsyncSession, subset: referential.Snapshot, admin: dict[str, str]
) -> None:
    await load(session, subset)
    arboys = await by_code(session, "commune", "01015")
    response = await client.delete(f"{BASE}/{arboys.id}", headers={**admin, "If-Match": '"1"'})
    assert response.status_code == 204, response.text
    assert_problem(await client.get(f"{BASE}/commune/01340"), 404, "not_found")


# --- search -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "first", "also"),
    [
        ("69123", "Lyon", []),
        ("villefranche saone", "CA Villefranche Beaujolais Saône", ["Villefranche-sur-Saône"]),
        ("saone villefranche", "CA Villefranche Beaujolais Saône", ["Villefranche-sur-Saône"]),
        ("st etienne", "Saint-Étienne", ["Saint-Étienne-du-Rouvray"]),
        ("ST-ÉTIENNE", "Saint-Étienne", ["Saint-Étienne-du-Rouvray"]),
        # Typed in part: the most populated of the names that start so.
        ("saint etien", "Saint-Étienne Métropole", ["Saint-Étienne", "Saint-Étienne-du-Rouvray"]),
        ("l'isle", "L'Isle-sur-la-Sorgue", ["L'Isle-d'Abeau"]),
        ("l isle d", "L'Isle-d'Abeau", []),
        ("isle abeau", "L'Isle-d'Abeau", []),
        ("216901231", "Lyon", []),  # SIREN of a commune
        ("200046977", "Métropole de Lyon", []),  # SIREN of a métropole
        ("69001", "Affoux", ["Lyon"]),  # Affoux's code, then Lyon's postcode
        ("69003", "Lyon", []),  # a postcode
        ("92100", "Boulogne-Billancourt", []),
        ("2b", None, []),
        ("lyon", "Lyon", ["Métropole de Lyon"]),
    ],
)
async def test_search(
    client: httpx.AsyncClient,
    session: AsyncSession,
    subset: referential.Snapshot,
    q: str,
    first: str | None,
    also: list[str],
) -> None:
    await load(session, subset)
    found = names(await client.get(BASE, params={"q": q}))
    if first is None:
        assert found == []
        return
    assert found[0] == first, found
    assert set(also) <= set(found), found


async def test_search_results_are_the_same_across_pages(
    client: httpx.AsyncClient, session: AsyncSession, subset: referential.Snapshot
) -> None:
    await load(session, subset)
    whole = names(await client.get(BASE, params={"q": "s", "limit": 200}))
    assert len(whole) == 10
    paged: list[str] = []
    params: dict[str, Any] = {"q": "s", "limit": 3}
    while True:
        body = (await client.get(BASE, params=params)).json()
        paged += [item["name"] for item in body["items"]]
        if not body["next_cursor"]:
            break
        params["cursor"] = body["next_cursor"]
    assert paged == whole


async def test_created_and_renamed_territories_are_searchable(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = await client.post(
        BASE, json={"kind": "commune", "code": "01999", "name": "Sainte-Croix-d'En-Haut"}, headers=admin
    )
    assert created.status_code == 201, created.text
    assert names(await client.get(BASE, params={"q": "ste croix haut"})) == ["Sainte-Croix-d'En-Haut"]
    assert names(await client.get(BASE, params={"q": "01999"})) == ["Sainte-Croix-d'En-Haut"]
    patched = await client.patch(
        f"{BASE}/{created.json()['id']}",
        json={"name": "Val-d'En-Haut", "code": "01998"},
        headers={**admin, "If-Match": '"1"'},
    )
    assert patched.status_code == 200, patched.text
    assert names(await client.get(BASE, params={"q": "croix"})) == []
    assert names(await client.get(BASE, params={"q": "01999"})) == []
    assert names(await client.get(BASE, params={"q": "val haut"})) == ["Val-d'En-Haut"]
    assert names(await client.get(BASE, params={"q": "01998"})) == ["Val-d'En-Haut"]


# --- the commune check ------------------------------------------------------------------------------


async def test_check_commune(session: AsyncSession, subset: referential.Snapshot) -> None:
    await load(session, subset)
    lyon = await service.check_commune(session, "69123", "69003")
    assert lyon.code == "69123"
    assert (await service.check_commune(session, "69123", None)).id == lyon.id
    # Former codes and arrondissements resolve to the current commune.
    assert (await service.check_commune(session, "69385", "69005")).id == lyon.id
    assert (await service.check_commune(session, "01340", "01300")).code == "01015"

    for code in ("69000", "2C001", "6912", "", "x" * 30):
        with pytest.raises(AppError) as caught:
            await service.check_commune(session, code, "69003", code_pointer="/venue/commune_code")
        assert caught.value.code == "unknown_commune"
        assert caught.value.status == 422
        assert caught.value.errors
        assert caught.value.errors[0].pointer == "/venue/commune_code"
    for postcode in ("69400", "6900", "69003 ", "abcde"):
        with pytest.raises(AppError) as caught:
            await service.check_commune(session, "69123", postcode, postcode_pointer="/venue/postcode")
        assert caught.value.code == "postcode_mismatch"
        assert caught.value.errors
        assert caught.value.errors[0].pointer == "/venue/postcode"


async def test_check_commune_of_a_commune_without_known_postcodes(
    session: AsyncSession, make_territory: TerritoryMaker
) -> None:
    await make_territory("commune", "01999", "Made by hand")
    assert (await service.check_commune(session, "01999", "01000")).code == "01999"
    with pytest.raises(AppError):
        await service.check_commune(session, "01999", "1000")


async def test_the_problem_codes_are_in_the_catalogue(client: httpx.AsyncClient) -> None:
    for code in ("unknown_commune", "postcode_mismatch"):
        response = await client.get(f"/problems/{code}")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == 422


# --- scripts/build_referential.py --sirens ---------------------------------------------------------


def _build_script() -> Any:
    path = Path(__file__).resolve().parents[2] / "scripts" / "build_referential.py"
    spec = importlib.util.spec_from_file_location("build_referential", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _package(root: Path) -> Path:
    """The smallest package the script reads: one région, one département, one EPCI, one commune."""
    data = root / "data"
    data.mkdir(parents=True)
    files: dict[str, Any] = {
        "regions": [{"code": "84", "nom": "Auvergne-Rhône-Alpes", "zone": "metro"}],
        "departements": [{"code": "69", "nom": "Rhône", "region": "84", "zone": "metro"}],
        "communes": [
            {
                "code": "69264",
                "nom": "Villefranche-sur-Saône",
                "departement": "69",
                "zone": "metro",
                "type": "commune-actuelle",
                "population": 36_172,
                "siren": "216902643",
                "codesPostaux": ["69400"],
            }
        ],
        "epci": [
            {
                "code": "200040590",
                "nom": "CA Villefranche Beaujolais Saône",
                "type": "CA",
                "populationMunicipale": 73_717,
                "membres": [{"code": "69264"}],
            }
        ],
    }
    for name, rows in files.items():
        (data / f"{name}.json").write_text(json.dumps(rows), encoding="utf-8")
    (root / "package.json").write_text(
        json.dumps({"name": "@etalab/decoupage-administratif", "version": "6.0.0"}), encoding="utf-8"
    )
    return root


def test_the_build_script_writes_the_sirens_the_import_reads(tmp_path: Path) -> None:
    script = _build_script()
    package = _package(tmp_path / "package")
    without = referential.parse(script.build(package))
    assert without.sirens == {}
    # Rows without a SIREN keep the shape they always had.
    assert script.build(package)["departements"] == [["69", "Rhône", "84"]]

    sirens = tmp_path / "sirens.csv"
    sirens.write_text(f"kind,code,siren\ndepartement,69,{TEST_SIREN}\nregion,84,{OTHER_TEST_SIREN}\n")
    built = script.build(package, script.read_sirens(sirens))
    assert built["departements"] == [["69", "Rhône", "84", TEST_SIREN]]
    assert referential.parse(built).sirens == {
        ("departement", "69"): TEST_SIREN,
        ("region", "84"): OTHER_TEST_SIREN,
    }

    for content, message in (
        ("code,siren\n69,123456782\n", "header"),
        ("kind,code,siren\ncommune,69264,123456782\n", "region or departement"),
        ("kind,code,siren\ndepartement,69,123456789\n", "not a SIREN"),
        (f"kind,code,siren\ndepartement,69,{TEST_SIREN}\ndepartement,69,{TEST_SIREN}\n", "twice"),
    ):
        sirens.write_text(content)
        with pytest.raises(SystemExit, match=message):
            script.read_sirens(sirens)
    sirens.write_text(f"kind,code,siren\ndepartement,01,{TEST_SIREN}\n")
    with pytest.raises(SystemExit, match="does not hold"):
        script.build(package, script.read_sirens(sirens))
