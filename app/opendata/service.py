"""The venues of public workshops as records of the national standard of lieux de médiation numérique
(schema/lieux-mediation-numerique-1.0.2.json), their CSV and JSON files, and the daily export.

One record per place: the workshops' venues of the window (`WINDOW_DAYS` back from now, and every upcoming
workshop) are read in one aggregated statement (`repository.venues_statement`), then the spellings of one
place are merged here: same commune code and same address once case, accents, spaces and punctuation are
set aside. Its `id` is a UUID v5 of that normalised address and the commune code, so that it stays the same
from one export to the next for as long as the place is written the same way."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import tempfile
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.opendata import repository
from app.opendata.repository import VenueRow
from app.referentials.data import THEME_BITS, Theme

logger = logging.getLogger("app.opendata")

SCHEMA_FILE = "lieux-mediation-numerique-1.0.2.json"
SCHEMA_VERSION = "1.0.2"
# Workshops of the last twelve months and every upcoming one: a place where nothing happened for a year is
# no longer one the map should send people to.
WINDOW_DAYS = 365
DEFAULT_PRODUCER = "cnfs"
# Venues named in the log line of an export that leaves some out.
LOGGED_VENUES = 20
DEFAULT_TERRITORY = "france"
# What `source` says when no producer is named: who collected these records.
DEFAULT_SOURCE = "Conseillers numériques France Services"

# The ids' namespace: fixed, so that a place keeps its id across exports and deployments.
ID_NAMESPACE = uuid.UUID("6f1d3c2e-5b0a-5e7c-9a43-2c1f0d8e4b71")

DISPOSITIF = "Conseillers numériques"
MODALITE = "Dans un atelier collectif"
FRAIS = "Gratuit"
SEPARATOR = "|"

# The standard's `services`, in its own order (the CSV joins them in this order).
SERVICES = (
    "Aide aux démarches administratives",
    "Maîtrise des outils numériques du quotidien",
    "Insertion professionnelle via le numérique",
    "Utilisation sécurisée du numérique",
    "Parentalité et éducation avec le numérique",
    "Loisirs et créations numériques",
    "Compréhension du monde numérique",
    "Accès internet et matériel informatique",
    "Acquisition de matériel informatique à prix solidaire",
)
_QUOTIDIEN = SERVICES[1]
# Every theme of the referential gives one service (docs/open-data.md has the table and its reasons).
# Workshops never offer the last two services (equipment to use or to buy): no theme gives them.
THEME_SERVICES: dict[Theme, str] = {
    Theme.diagnostic_numerique: _QUOTIDIEN,
    Theme.prendre_en_main_du_materiel: _QUOTIDIEN,
    Theme.maintenance_de_materiel: _QUOTIDIEN,
    Theme.gere_ses_contenus_numeriques: _QUOTIDIEN,
    Theme.navigation_sur_internet: _QUOTIDIEN,
    Theme.email: _QUOTIDIEN,
    Theme.bureautique: _QUOTIDIEN,
    Theme.reseaux_sociaux: _QUOTIDIEN,
    Theme.banque_et_achats_en_ligne: _QUOTIDIEN,
    Theme.sante: "Aide aux démarches administratives",
    Theme.aide_aux_demarches_administratives: "Aide aux démarches administratives",
    Theme.entrepreneuriat: "Insertion professionnelle via le numérique",
    Theme.insertion_professionnelle: "Insertion professionnelle via le numérique",
    Theme.securite_numerique: "Utilisation sécurisée du numérique",
    Theme.parentalite: "Parentalité et éducation avec le numérique",
    Theme.scolarite_et_numerique: "Parentalité et éducation avec le numérique",
    Theme.creer_avec_le_numerique: "Loisirs et créations numériques",
    Theme.culture_numerique: "Compréhension du monde numérique",
    Theme.intelligence_artificielle: "Compréhension du monde numérique",
}

_NUMBER_FIELDS = frozenset({"latitude", "longitude"})
# Cells a spreadsheet would read as a formula (OWASP's list: tab and carriage return included).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PIVOT = re.compile(r"^[a-zA-Z0-9]{9,14}$")
_POSTCODE = re.compile(r"^\d{5}$")
_COMMUNE_CODE = re.compile(r"^([013-9]\d|2[AB1-9])\d{3}$")
_NOT_WORD = re.compile(r"[^0-9a-z]+")
_FILE_PART = re.compile(r"[^0-9A-Za-z]+")


@cache
def schema_descriptor() -> dict[str, Any]:
    """The standard's Table Schema, as shipped with the package."""
    text = resources.files("app.opendata").joinpath("schema", SCHEMA_FILE).read_text(encoding="utf-8")
    descriptor: dict[str, Any] = json.loads(text)
    return descriptor


@cache
def field_names() -> tuple[str, ...]:
    """Every column of the standard, in its order: the files carry all of them, empty ones included."""
    return tuple(f["name"] for f in schema_descriptor()["fields"])


@lru_cache(maxsize=65536)
def normalise(text: str) -> str:
    """Case, accents, spaces and punctuation set aside: "12, Rue de l'Église" == "12 rue de l eglise"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NOT_WORD.sub(" ", bare).strip()


def venue_id(address: str, commune_code: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{commune_code}|{normalise(address)}"))


def services_of(mask: int) -> list[str]:
    offered = {THEME_SERVICES[Theme(theme)] for theme, bit in THEME_BITS.items() if mask & bit}
    return [service for service in SERVICES if service in offered]


@dataclass
class Export:
    """The records, and how many places could not be published (missing a required field)."""

    records: list[dict[str, Any]]
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass
class _Spelling:
    name: str | None
    address: str | None
    postcode: str | None
    lat: float | None
    lon: float | None
    workshops: int = 0
    updated_at: datetime | None = None


@dataclass
class _Place:
    commune_code: str
    commune_name: str | None = None
    spellings: dict[tuple[Any, ...], _Spelling] = field(default_factory=dict)
    employers: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    updated_at: datetime | None = None
    themes_mask: int = 0


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _group(rows: Iterable[VenueRow]) -> tuple[dict[tuple[str, str], _Place], int]:
    places: dict[tuple[str, str], _Place] = {}
    unplaced = 0
    for row in rows:
        if not row.commune_code or not row.address or not normalise(row.address):
            # Without an address or a commune there is no place to key, nor to publish.
            unplaced += 1
            continue
        key = (normalise(row.address), row.commune_code)
        place = places.get(key)
        if place is None:
            place = places[key] = _Place(row.commune_code)
        place.commune_name = place.commune_name or row.commune_name
        spelling_key = (row.name, row.address, row.postcode, row.lat, row.lon)
        spelling = place.spellings.get(spelling_key)
        if spelling is None:
            spelling = place.spellings[spelling_key] = _Spelling(
                row.name, row.address, row.postcode, row.lat, row.lon
            )
        spelling.workshops += row.workshops
        spelling.updated_at = _later(spelling.updated_at, row.updated_at)
        if row.employer_siren:
            place.employers[row.employer_siren] += row.workshops
        place.updated_at = _later(place.updated_at, row.updated_at)
        place.themes_mask |= int(row.themes_mask or 0)
    return places, unplaced


def _usual(place: _Place) -> _Spelling:
    """The spelling most workshops used (then the latest, then the first in order): what the place is
    called and where it is written to be."""
    return max(
        place.spellings.values(),
        key=lambda s: (
            s.workshops,
            s.updated_at or datetime.min.replace(tzinfo=UTC),
            s.name or "",
            s.address,
        ),
    )


def _degrees(value: float | None) -> float | None:
    """Six decimals (about 10 cm): the mean of a few points, without its floating-point tail."""
    return None if value is None else round(float(value), 6)


def _record(key: tuple[str, str], place: _Place, source: str) -> tuple[dict[str, Any] | None, str | None]:
    usual = _usual(place)
    # The employer most of the place's workshops came from: the standard's pivot is one structure.
    pivot = max(place.employers.items(), key=lambda item: (item[1], item[0]))[0] if place.employers else None
    lat, lon = _degrees(usual.lat), _degrees(usual.lon)
    if lat is None or lon is None:
        located = [s for s in place.spellings.values() if s.lat is not None and s.lon is not None]
        if located:
            best = max(located, key=lambda s: s.workshops)
            lat, lon = _degrees(best.lat), _degrees(best.lon)
    record: dict[str, Any] = {
        "id": venue_id(key[0], key[1]),
        "pivot": pivot,
        "nom": (usual.name or "").strip() or None,
        "commune": place.commune_name,
        "code_postal": usual.postcode,
        "code_insee": place.commune_code,
        "adresse": (usual.address or "").strip() or None,
        "latitude": lat,
        "longitude": lon,
        "source": source,
        "date_maj": place.updated_at.astimezone(UTC).date().isoformat() if place.updated_at else None,
        "services": SEPARATOR.join(services_of(place.themes_mask)) or None,
        "frais_a_charge": FRAIS,
        "dispositif_programmes_nationaux": DISPOSITIF,
        "modalites_accompagnement": MODALITE,
    }
    missing = _missing(record)
    if missing:
        return None, missing
    return {name: record[name] for name in field_names() if record.get(name) is not None}, None


def _missing(record: dict[str, Any]) -> str | None:
    """The first required field the record cannot fill as the standard asks, if any."""
    checks = (
        ("pivot", _PIVOT),
        ("nom", None),
        ("commune", None),
        ("code_postal", _POSTCODE),
        ("code_insee", _COMMUNE_CODE),
        ("adresse", None),
        ("date_maj", None),
    )
    for name, pattern in checks:
        value = record.get(name)
        if value is None or (pattern is not None and not pattern.match(value)):
            return name
    return None


def build(rows: Sequence[VenueRow], source: str = DEFAULT_SOURCE) -> Export:
    """The standard's records from the venue rows, in a stable order (commune code, then id)."""
    places, unplaced = _group(rows)
    export = Export([])
    if unplaced:
        export.skipped["adresse"] = unplaced
    left_out: list[str] = []
    for key, place in places.items():
        record, missing = _record(key, place, source)
        if record is None:
            assert missing is not None
            export.skipped[missing] = export.skipped.get(missing, 0) + 1
            left_out.append(f"{venue_id(*key)} ({place.commune_code}, {missing})")
            continue
        export.records.append(record)
    if left_out:
        # One line per export, however many places are left out: the venue's id, its commune and the
        # field that is missing tell which place to fix, and nothing about a person.
        counts = ", ".join(f"{n} without {name}" for name, n in sorted(export.skipped.items()))
        shown = ", ".join(sorted(left_out)[:LOGGED_VENUES])
        more = f" and {len(left_out) - LOGGED_VENUES} more" if len(left_out) > LOGGED_VENUES else ""
        logger.warning(
            "open data: %d venues left out (%s), required fields of the standard missing: %s%s",
            len(left_out),
            counts,
            shown,
            more,
        )
    export.records.sort(key=lambda r: (r["code_insee"], r["id"]))
    return export


async def lieux(session: AsyncSession, now: datetime | None = None, source: str = DEFAULT_SOURCE) -> Export:
    since = (now or utcnow()) - timedelta(days=WINDOW_DAYS)
    return build(await repository.venue_rows(session, since), source)


def neutralise(value: str) -> str:
    """A text cell that a spreadsheet would run as a formula gets a leading apostrophe, which spreadsheets
    show as text and the standard's free-text fields accept."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if name in _NUMBER_FIELDS:
        # A number is inert in a spreadsheet, a negative longitude included, and must stay a number.
        return repr(float(value))
    return neutralise(str(value))


def to_csv(records: Sequence[dict[str, Any]]) -> bytes:
    """RFC 4180, comma-separated, UTF-8 without BOM, every column of the standard in its order."""
    names = field_names()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(names)
    for record in records:
        writer.writerow([_cell(name, record.get(name)) for name in names])
    return buffer.getvalue().encode("utf-8")


def to_json(records: Sequence[dict[str, Any]]) -> bytes:
    """The same records as an array of objects, a field left out where the CSV cell is empty."""
    return orjson.dumps(list(records))


def file_part(value: str) -> str:
    """A producer's or territory's name as a part of a file name: ASCII letters, digits and hyphens."""
    decomposed = unicodedata.normalize("NFKD", value)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _FILE_PART.sub("-", bare).strip("-").lower()


def file_name(day: date, producer: str, territory: str, what: str, extension: str) -> str:
    return f"{day.isoformat()}_{file_part(producer)}_{what}_{file_part(territory)}.{extension}"


def write_atomically(files: dict[Path, bytes]) -> None:
    """Each file is written beside its target and renamed over it once every one is on disk: a reader of
    the directory never sees a half-written file, and a failure leaves the previous files in place."""
    written: list[tuple[Path, Path]] = []
    try:
        for target, content in files.items():
            handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, renamed after all are written
                dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
            )
            temporary = Path(handle.name)
            written.append((temporary, target))
            with handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            temporary.chmod(0o644)
        for temporary, target in written:
            os.replace(temporary, target)
    finally:
        for temporary, _ in written:
            temporary.unlink(missing_ok=True)


def statistics_files(directory: Path, day: date, producer: str, territory: str) -> dict[Path, bytes]:
    """The statistics CSV files published beside the venues, named the same way (`stats-positions`,
    `stats-workshops`): none yet. Takes the directory and the date so that the statistics can join the
    same atomic write."""
    del directory, day, producer, territory
    return {}


@dataclass
class ExportReport:
    files: list[Path]
    venues: int
    skipped: dict[str, int]


async def export_directory(
    session: AsyncSession,
    directory: Path,
    day: date,
    producer: str = DEFAULT_PRODUCER,
    territory: str = DEFAULT_TERRITORY,
    now: datetime | None = None,
) -> ExportReport:
    """The files of one day's publication, written atomically into `directory`."""
    if not file_part(producer) or not file_part(territory):
        raise ValueError("the producer and the territory need at least one letter or digit")
    export = await lieux(session, now)
    what = "lieux-de-mediation-numerique"
    files = {
        directory / file_name(day, producer, territory, what, "csv"): to_csv(export.records),
        directory / file_name(day, producer, territory, what, "json"): to_json(export.records),
    }
    files |= statistics_files(directory, day, producer, territory)
    write_atomically(files)
    return ExportReport(sorted(files), len(export.records), export.skipped)
