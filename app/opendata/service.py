"""The venues of public workshops as records of the national standard of lieux de médiation numérique
(schema/lieux-mediation-numerique-1.0.2.json), their CSV and JSON files, and the daily export.

One record per place: the workshops' venues of the window (`WINDOW_DAYS` back from now, and every upcoming
workshop) are read in one aggregated statement (`repository.venues_statement`), then the spellings of one
place are merged here: same commune code and same address once case, accents, spaces and punctuation are
set aside. Its `id` is a UUID v5 of that normalised address and the commune code, so that it stays the same
from one export to the next for as long as the place is written the same way."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import DEFAULT_DISCLOSURE_THRESHOLD
from app.core.auth import ANONYMOUS
from app.core.csv import csv_rows
from app.db import utcnow
from app.opendata import repository
from app.opendata.repository import VenueRow
from app.referentials.data import THEME_BITS, Theme
from app.stats import service as stats

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
    """uuid.uuid5(ID_NAMESPACE, "<commune code>|<normalised address>"), written out: the export computes
    one per place, and the uuid module's objects cost several times the hash."""
    name = f"{commune_code}|{normalise(address)}".encode()
    digest = bytearray(hashlib.sha1(ID_NAMESPACE.bytes + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@lru_cache(maxsize=4096)
def services_of(mask: int) -> str | None:
    """The standard's services of a theme mask, in the standard's order, joined with `|`."""
    offered = {THEME_SERVICES[Theme(theme)] for theme, bit in THEME_BITS.items() if mask & bit}
    return SEPARATOR.join(service for service in SERVICES if service in offered) or None


@dataclass
class Export:
    """The records, and how many places could not be published (missing a required field)."""

    records: list[dict[str, Any]]
    skipped: dict[str, int] = field(default_factory=dict)


def _degrees(value: float | None) -> float | None:
    """Six decimals (about 10 cm): the mean of a few points, without its floating-point tail."""
    return None if value is None else round(float(value), 6)


def _missing(
    pivot: str | None, name: str | None, commune: str | None, postcode: str | None, code: str
) -> str | None:
    """The first required field the record cannot fill as the standard asks, if any (`id`, `adresse` and
    `date_maj` are always there: they make the place)."""
    if pivot is None or not _PIVOT.match(pivot):
        return "pivot"
    if not name:
        return "nom"
    if not commune:
        return "commune"
    if postcode is None or not _POSTCODE.match(postcode):
        return "code_postal"
    if not _COMMUNE_CODE.match(code):
        return "code_insee"
    return None


def _place_record(
    key: tuple[str, str], rows: list[VenueRow], source: str
) -> tuple[dict[str, Any] | None, str]:
    """One place's record from its rows (its spellings, per position), or the field it cannot fill."""
    if len(rows) == 1:
        # Most places: one spelling, one employer.
        row = rows[0]
        pivot = row.employer_siren
        name, address, postcode, lat, lon = row.name, row.address, row.postcode, row.lat, row.lon
        updated_at, mask, commune = row.updated_at, row.themes_mask, row.commune_name
    else:
        employers: dict[str, int] = defaultdict(int)
        # Per spelling: workshops, latest update, and the sums of the points weighted by workshops.
        spellings: dict[tuple[Any, ...], list[Any]] = {}
        updated_at, mask, commune = rows[0].updated_at, 0, None
        for row in rows:
            if row.employer_siren:
                employers[row.employer_siren] += row.workshops
            updated_at = max(updated_at, row.updated_at)
            mask |= row.themes_mask
            commune = commune or row.commune_name
            spelling = spellings.setdefault(
                (row.name, row.address, row.postcode), [0, row.updated_at, 0.0, 0.0, 0]
            )
            spelling[0] += row.workshops
            spelling[1] = max(spelling[1], row.updated_at)
            if row.lat is not None and row.lon is not None:
                spelling[2] += row.lat * row.workshops
                spelling[3] += row.lon * row.workshops
                spelling[4] += row.workshops
        # The employer most of the place's workshops came from: the standard's pivot is one structure.
        pivot = max(employers.items(), key=lambda item: (item[1], item[0]))[0] if employers else None
        # The spelling most workshops used, then the latest, then the first in order: what the place is
        # called and where it is written to be.
        (name, address, postcode), usual = max(
            spellings.items(), key=lambda item: (item[1][0], item[1][1], item[0][0] or "", item[0][1] or "")
        )
        located = usual if usual[4] else max(spellings.values(), key=lambda s: (s[4], s[0]))
        lat = located[2] / located[4] if located[4] else None
        lon = located[3] / located[4] if located[4] else None
    name = name.strip() if name else None
    missing = _missing(pivot, name, commune, postcode, key[1])
    if missing is not None:
        return None, missing
    record: dict[str, Any] = {
        "id": venue_id(key[0], key[1]),
        "pivot": pivot,
        "nom": name,
        "commune": commune,
        "code_postal": postcode,
        "code_insee": key[1],
        "adresse": (address or "").strip(),
    }
    if lat is not None and lon is not None:
        record["latitude"] = _degrees(lat)
        record["longitude"] = _degrees(lon)
    record["source"] = source
    record["date_maj"] = updated_at.astimezone(UTC).date().isoformat()
    services = services_of(mask)
    if services:
        record["services"] = services
    record |= _CONSTANT_FIELDS
    return record, ""


# The fields every record carries alike, in the standard's order (they come last in it).
_CONSTANT_FIELDS = {
    "frais_a_charge": FRAIS,
    "dispositif_programmes_nationaux": DISPOSITIF,
    "modalites_accompagnement": MODALITE,
}


def build(rows: Iterable[VenueRow], source: str = DEFAULT_SOURCE) -> Export:
    """The standard's records from the venue rows, in a stable order (commune code, then id).

    Linear in the rows, with little per row (it serves a national export on every request): the rows of a
    place are gathered under its key, and only a place of several rows (several spellings or employers) is
    weighed."""
    places: dict[tuple[str, str], list[VenueRow]] = {}
    export = Export([])
    for row in rows:
        address, commune_code = row.address, row.commune_code
        key = (normalise(address), commune_code) if address and commune_code else None
        if key is None or not key[0]:
            # Without an address or a commune there is no place to key, nor to publish.
            export.skipped["adresse"] = export.skipped.get("adresse", 0) + 1
            continue
        gathered = places.get(key)
        if gathered is None:
            places[key] = [row]
        else:
            gathered.append(row)
    left_out: list[tuple[tuple[str, str], str]] = []
    for key, gathered in places.items():
        record, missing = _place_record(key, gathered, source)
        if record is None:
            export.skipped[missing] = export.skipped.get(missing, 0) + 1
            left_out.append((key, missing))
            continue
        export.records.append(record)
    if left_out:
        # One line per export, however many places are left out: the venue's id, its commune and the
        # field that is missing tell which place to fix, and nothing about a person.
        counts = ", ".join(f"{n} without {name}" for name, n in sorted(export.skipped.items()))
        shown = ", ".join(
            f"{venue_id(*key)} ({key[1]}, {missing})"
            for key, missing in sorted(left_out, key=lambda item: (item[0][1], item[0][0]))[:LOGGED_VENUES]
        )
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
    column = {name: index for index, name in enumerate(names)}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(names)
    for record in records:
        cells = [""] * len(names)
        for name, value in record.items():
            cells[column[name]] = _cell(name, value)
        writer.writerow(cells)
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


async def statistics_files(
    session: AsyncSession, directory: Path, day: date, producer: str, territory: str, threshold: int
) -> dict[Path, bytes]:
    """The statistics published beside the venues, as `GET /stats/positions?group_by=territory` and
    `GET /stats/workshops?group_by=month` answer a caller without a key (small counts hidden), as CSV,
    named the same way (`stats-positions`, `stats-workshops`), read in the export's session and written
    in the same atomic step."""
    positions = await stats.position_stats(
        session, programme_id=None, territory_id=None, within=None, group_by=stats.PositionGroup.territory
    )
    workshops = await stats.workshop_stats(
        session,
        ANONYMOUS,
        territory_id=None,
        within=None,
        starts=None,
        ends=None,
        group_by=stats.WorkshopGroup.month,
        threshold=threshold,
    )
    tables = (
        ("stats-positions", positions, "territory", stats.POSITION_FIGURE_COLUMNS),
        ("stats-workshops", workshops, "month", stats.workshop_figure_columns()),
    )
    files: dict[Path, bytes] = {}
    for what, answer, group_by, figures in tables:
        columns, rows = stats.csv_table(answer, group_by, figures)
        files[directory / file_name(day, producer, territory, what, "csv")] = csv_rows(columns, rows)
    return files


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
    threshold: int = DEFAULT_DISCLOSURE_THRESHOLD,
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
    files |= await statistics_files(session, directory, day, producer, territory, threshold)
    write_atomically(files)
    return ExportReport(sorted(files), len(export.records), export.skipped)


class Published:
    """The open-data files a worker process serves: built once per `seconds` whatever the number of
    requests, and by one request at a time (the others wait for its result rather than run the same
    national aggregation beside it). A build that fails or is cancelled leaves the next request to try."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._files: dict[str, tuple[float, bytes]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _fresh(self, name: str) -> bytes | None:
        built = self._files.get(name)
        if built is None or time.monotonic() - built[0] >= self.seconds:
            return None
        return built[1]

    async def get(self, name: str, build: Callable[[], Awaitable[bytes]]) -> bytes:
        if self.seconds <= 0:
            return await build()
        content = self._fresh(name)
        if content is not None:
            return content
        async with self._locks.setdefault(name, asyncio.Lock()):
            content = self._fresh(name)
            if content is None:
                started = time.monotonic()
                content = await build()
                # Its age counts from the snapshot it was read in, not from the end of the build.
                self._files[name] = (started, content)
            return content
