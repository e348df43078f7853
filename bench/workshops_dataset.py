"""The benchmark's workshops: a million workshops and five million registrations over 2021–2027 (PostgreSQL).

Each row is what the service would have stored after the workshop's life: created under one of the dataset's
positions (its territory; the counsellor whose contract covers the workshop's day, none while the position
was vacant), the venue a real commune of that territory's subtree with one of
its postcodes (the JSON object and the `venue_*` columns, the département from the commune code as
`app.workshops.service.department_of` derives it; the coordinate is the département's chef-lieu, moved a
little), the themes as their JSON list and their bit mask (`app.workshops.schemas.theme_mask`), `ends_at`
from the duration. The registrations agree with the counters: the first live ones in time order hold the
seats (`confirmed`), the next ones wait (`waitlisted`, ranks 1, 2, ...), the others were `cancelled`;
`registered_count`, `waitlisted_count` and `seats_left = capacity - registered_count` count them, and a
cancelled workshop has cancelled every registration (its counters are 0). Past workshops are mostly
`completed` (attendance recorded, walk-ins; `attendees` and `attendee_breakdown` count the present
registrations and the walk-ins as the activity report writes them), a few cancelled or never reported;
`version` counts the writes the service would have made on the row (each registration, each cancellation,
the attendance report or the cancellation of the workshop). Clocks stop at `DATASET_NOW`.

A share of the workshops is in the Rhône with the theme `insertion_professionnelle`, so that the public
search of the Rhône's upcoming ones fills its pages; `REGISTER_TARGETS` upcoming workshops of 10 000 seats,
alone in one commune (`Workshops.register_commune`), take the registration scenario's writes.

Everything is deterministic for a seed: chunk `c` of the workshops draws from its own generator seeded with
(seed, c), so the rows do not depend on how the chunks are scheduled. The rows go in with COPY (asyncpg's
`copy_records_to_table`), each chunk generated in a thread while the previous one is copied: the tables'
indexes, primary keys and foreign keys are dropped first and built again afterwards from their definitions as
read from the catalogue (a bulk build is faster than a million index insertions), so that the schema ends
exactly as the migration made it. The triggers that keep the monthly statistics (`workshop_monthly_stats`)
row by row are off during the COPY (the session as a replica's): the generator sums the rows as it writes
them, the same sums as `app.stats.rollup.rebuild` (a test checks it), and copies them at the end; the
statement would read a million rows' JSON again (about two minutes on a busy 2-core machine)."""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import json
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from app.referentials.data import AgeBracket, Level, SocialStatus, Theme
from app.stats.models import METRIC_COLUMNS
from app.workshops.schemas import theme_mask
from app.workshops.service import department_of

DEFAULT_WORKSHOPS = 1_000_000
REGISTRATIONS_PER_WORKSHOP = 5
# The history's clock stops here: nothing is created or registered later; workshops after it are upcoming.
DATASET_NOW = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)
FIRST_DAY = datetime(2021, 1, 4, tzinfo=UTC)
LAST_DAY = datetime(2027, 12, 31, tzinfo=UTC)
RHONE = "69"
SEARCH_THEME = Theme.insertion_professionnelle
# Share of the workshops run under the Rhône's positions (the Rhône has 60 of the dataset's ~460 positions),
# and share of those with the search's theme.
RHONE_SHARE = 0.15
RHONE_SEARCH_THEME_SHARE = 0.5
# Upcoming public workshops of 10 000 seats, alone in their commune, for the registration scenario (a tenth
# of a small dataset).
REGISTER_TARGETS = 500
REGISTER_CAPACITY = 10_000
REGISTER_TITLE = "Atelier du banc d'essai : inscriptions"
CHUNK = 20_000
# Registrants' addresses: the registration scenario writes under its own prefix, never used here.
EMAIL_DOMAIN = "example.org"

WORKSHOP_COLUMNS = (
    "id",
    "position_id",
    "counsellor_id",
    "territory_id",
    "title",
    "description",
    "themes",
    "themes_mask",
    "level",
    "format",
    "venue",
    "venue_commune_code",
    "venue_department_code",
    "venue_postcode",
    "venue_lat",
    "venue_lon",
    "online_url",
    "starts_at",
    "ends_at",
    "duration_minutes",
    "capacity",
    "waitlist_capacity",
    "registered_count",
    "waitlisted_count",
    "seats_left",
    "status",
    "public",
    "cancel_reason",
    "walk_ins",
    "created_at",
    "updated_at",
    "version",
)
REGISTRATION_COLUMNS = (
    "id",
    "workshop_id",
    "first_name",
    "last_name",
    "email",
    "email_key",
    "phone",
    "age_bracket",
    "social_status",
    "status",
    "waitlist_rank",
    "attendance",
    "cancel_token_hash",
    "created_at",
    "updated_at",
)

# The chef-lieu of each département (degrees, WGS 84, rounded): a venue lies within about 15 km of it.
CHEF_LIEU: dict[str, tuple[float, float]] = {
    "01": (46.21, 5.23), "02": (49.56, 3.62), "03": (46.57, 3.33), "04": (44.09, 6.24),
    "05": (44.56, 6.08), "06": (43.70, 7.27), "07": (44.74, 4.60), "08": (49.77, 4.72),
    "09": (42.97, 1.61), "10": (48.30, 4.08), "11": (43.21, 2.35), "12": (44.35, 2.57),
    "13": (43.30, 5.37), "14": (49.18, -0.37), "15": (44.93, 2.44), "16": (45.65, 0.16),
    "17": (46.16, -1.15), "18": (47.08, 2.40), "19": (45.27, 1.77), "21": (47.32, 5.04),
    "22": (48.51, -2.76), "23": (46.17, 1.87), "24": (45.18, 0.72), "25": (47.24, 6.02),
    "26": (44.93, 4.89), "27": (49.02, 1.15), "28": (48.44, 1.49), "29": (48.00, -4.10),
    "2A": (41.93, 8.74), "2B": (42.70, 9.45), "30": (43.84, 4.36), "31": (43.60, 1.44),
    "32": (43.65, 0.59), "33": (44.84, -0.58), "34": (43.61, 3.88), "35": (48.11, -1.68),
    "36": (46.81, 1.69), "37": (47.39, 0.69), "38": (45.19, 5.72), "39": (46.67, 5.55),
    "40": (43.89, -0.50), "41": (47.59, 1.33), "42": (45.44, 4.39), "43": (45.04, 3.88),
    "44": (47.22, -1.55), "45": (47.90, 1.91), "46": (44.45, 1.44), "47": (44.20, 0.62),
    "48": (44.52, 3.50), "49": (47.47, -0.55), "50": (49.12, -1.09), "51": (48.96, 4.36),
    "52": (48.11, 5.14), "53": (48.07, -0.77), "54": (48.69, 6.18), "55": (48.77, 5.16),
    "56": (47.66, -2.76), "57": (49.12, 6.18), "58": (46.99, 3.16), "59": (50.63, 3.06),
    "60": (49.43, 2.08), "61": (48.43, 0.09), "62": (50.29, 2.78), "63": (45.78, 3.08),
    "64": (43.30, -0.37), "65": (43.23, 0.08), "66": (42.70, 2.90), "67": (48.57, 7.75),
    "68": (48.08, 7.36), "69": (45.76, 4.84), "70": (47.62, 6.15), "71": (46.31, 4.83),
    "72": (48.00, 0.20), "73": (45.56, 5.92), "74": (45.90, 6.13), "75": (48.86, 2.35),
    "76": (49.44, 1.10), "77": (48.54, 2.66), "78": (48.80, 2.13), "79": (46.32, -0.46),
    "80": (49.89, 2.30), "81": (43.93, 2.15), "82": (44.02, 1.35), "83": (43.12, 5.93),
    "84": (43.95, 4.81), "85": (46.67, -1.43), "86": (46.58, 0.34), "87": (45.83, 1.26),
    "88": (48.17, 6.45), "89": (47.80, 3.57), "90": (47.64, 6.86), "91": (48.63, 2.44),
    "92": (48.89, 2.21), "93": (48.91, 2.44), "94": (48.79, 2.46), "95": (49.04, 2.08),
    "971": (16.00, -61.73), "972": (14.60, -61.07), "973": (4.94, -52.33), "974": (-20.88, 55.45),
    "976": (-12.78, 45.23),
}  # fmt: skip
FRANCE = (46.60, 2.40)

TITLES: dict[Theme, tuple[str, ...]] = {
    Theme.insertion_professionnelle: (
        "Rédiger son CV et sa lettre de motivation",
        "Chercher un emploi en ligne",
        "Préparer un entretien en visio",
    ),
    Theme.aide_aux_demarches_administratives: ("Faire ses démarches en ligne", "Créer son compte ameli"),
    Theme.securite_numerique: ("Protéger ses données personnelles en ligne", "Déjouer les arnaques"),
    Theme.reseaux_sociaux: ("Garder le contact en visio avec ses proches",),
    Theme.culture_numerique: ("Vérifier une information avant de la partager",),
    Theme.prendre_en_main_du_materiel: ("Prendre en main sa tablette", "Premiers pas sur smartphone"),
    Theme.email: ("Envoyer et trier ses courriels",),
    Theme.bureautique: ("Écrire un courrier avec un traitement de texte",),
}
DEFAULT_TITLES = ("Atelier numérique", "Découvrir les outils numériques")
VENUE_NAMES = ("Médiathèque", "Mairie", "Espace France services", "Centre social", "Maison de quartier")
STREETS = (
    "rue de la République",
    "place de la Mairie",
    "avenue Jean Jaurès",
    "rue Victor Hugo",
    "grande rue",
)
FIRST_NAMES = (
    "Camille",
    "Dominique",
    "Claude",
    "Alix",
    "Sacha",
    "Morgan",
    "Lou",
    "Charlie",
    "Andrea",
    "Eden",
)
LAST_NAMES = ("Fictif", "Exemple", "Essai", "Modele", "Specimen", "Temoin", "Factice", "Neutre")
THEMES = list(Theme)
SEARCH_INDEX = THEMES.index(SEARCH_THEME)
OTHER_INDEXES = [i for i, t in enumerate(THEMES) if t is not SEARCH_THEME]
# The streets as they stand inside a JSON string.
STREETS_JSON = tuple(json.dumps(street)[1:-1] for street in STREETS)
LEVELS = [level.value for level in Level]
AGE_BRACKETS = [a.value for a in AgeBracket]
SOCIAL_STATUSES = [s.value for s in SocialStatus]
DURATIONS = (60, 90, 120, 120, 180)
CAPACITIES = (6, 8, 10, 10, 12, 12, 15, 20)
WAITLISTS = (0, 0, 2, 3, 5)
HOURS_UTC = (7, 8, 9, 12, 13, 14, 15)
# Nothing is created later than this (an hour before the clock).
LATEST = DATASET_NOW - timedelta(hours=1)
# The end of a contract still running, as a day ordinal.
OPEN = 10**9


@dataclass(frozen=True)
class Place:
    """A commune where workshops take place: its code, postcodes and département's coordinate."""

    code: str
    postcodes: tuple[str, ...]
    lat: float
    lon: float

    @property
    def departement(self) -> str:
        return department_of(self.code)


@dataclass(frozen=True)
class Runner:
    """A position workshops run under: its territory, the communes of its subtree, the days it ran workshops
    (from its first contract to its closing or the end of the history), and who held it when: the
    counsellor of the contract that covers a day (`starts`, `ends` and `counsellors` in contract order; the
    days as ordinals, an open contract ending at `OPEN`), none between two contracts."""

    position_id: uuid.UUID
    territory_id: uuid.UUID
    places: tuple[Place, ...]
    rhone: bool
    first_day: int = FIRST_DAY.toordinal()
    last_day: int = LAST_DAY.toordinal()
    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()
    counsellors: tuple[uuid.UUID, ...] = ()

    def counsellor_on(self, day: int) -> uuid.UUID | None:
        """Who held the position that day (none while it was vacant)."""
        n = bisect.bisect_right(self.starts, day) - 1
        if n >= 0 and day <= self.ends[n]:
            return self.counsellors[n]
        return None

    @property
    def counsellor_id(self) -> uuid.UUID | None:
        """Who holds it at the end of the history."""
        return self.counsellor_on(DATASET_NOW.toordinal())


@dataclass
class Workshops:
    """What the scenarios need to know about the workshops written."""

    workshops: int = 0
    registrations: int = 0
    # An upcoming public workshop of the Rhône (the one-workshop scenario) and its version (its ETag).
    workshop_id: str = ""
    workshop_version: int = 0
    # The registration scenario's workshops (space-separated ids) and the commune they alone are in.
    register_ids: list[str] = field(default_factory=list)
    register_commune: str = ""
    seconds: float = 0.0
    # Seconds per step: "copy" (generated and copied), "indexes", "vacuum", "rollup".
    steps: dict[str, float] = field(default_factory=dict)


def _ordinal(day: Any) -> int:
    return int(day.toordinal())


def plan(
    territories: Sequence[dict[str, Any]],
    positions: Sequence[dict[str, Any]],
    assignments: Sequence[dict[str, Any]],
    rhone_territory_id: Any,
) -> tuple[list[Runner], Runner, Place]:
    """The runners (each position with the communes of its territory's subtree and its contracts), and the
    runner and commune of the registration targets: a commune outside the Rhône, taken out of every
    runner's communes. Positions without a contract run no workshop."""
    communes = sorted((t for t in territories if t["kind"] == "commune"), key=lambda t: t["path"])
    paths = [t["path"] for t in communes]
    by_id = {t["id"]: t for t in territories}
    contracts: dict[Any, list[dict[str, Any]]] = {}
    for a in assignments:
        contracts.setdefault(a["position_id"], []).append(a)

    def place(t: dict[str, Any]) -> Place:
        lat, lon = CHEF_LIEU.get(department_of(t["code"]), FRANCE)
        return Place(t["code"], tuple((t["postcodes"] or "").split()) or ("00000",), lat, lon)

    def subtree(path: str) -> list[dict[str, Any]]:
        start = bisect.bisect_left(paths, path)
        end = bisect.bisect_left(paths, path + "\uffff")
        return communes[start:end]

    def runner(position: dict[str, Any], places: tuple[Place, ...], rhone: bool) -> Runner:
        held = sorted(contracts[position["id"]], key=lambda a: a["started_on"])
        closed_on = position.get("closed_on")
        return Runner(
            position["id"],
            position["territory_id"],
            places,
            rhone,
            first_day=max(_ordinal(held[0]["started_on"]), FIRST_DAY.toordinal()),
            last_day=_ordinal(closed_on) if closed_on else LAST_DAY.toordinal(),
            starts=tuple(_ordinal(a["started_on"]) for a in held),
            ends=tuple(_ordinal(a["ended_on"]) if a["ended_on"] else OPEN for a in held),
            counsellors=tuple(a["counsellor_id"] for a in held),
        )

    chosen: dict[Any, tuple[Place, ...]] = {}
    target_runner: Runner | None = None
    target: Place | None = None
    runners: list[Runner] = []
    for position in positions:
        if position["id"] not in contracts:
            continue
        territory = by_id[position["territory_id"]]
        inside = subtree(territory["path"])
        rhone = position["territory_id"] == rhone_territory_id
        if target is None and not rhone and len(inside) > 1 and not position.get("closed_on"):
            target = place(inside[0])
            target_runner = runner(position, (target,), False)
        if position["territory_id"] not in chosen:
            chosen[position["territory_id"]] = tuple(
                place(t) for t in inside if target is None or t["code"] != target.code
            )
        places = chosen[position["territory_id"]]
        if places:
            runners.append(runner(position, places, rhone))
    if target is None or target_runner is None:
        raise ValueError("no position outside the Rhône with two communes or more: no registration target")
    return runners, target_runner, target


def register_targets(count: int) -> int:
    """How many of `count` workshops are the registration scenario's."""
    return min(REGISTER_TARGETS, max(1, count // 10))


def uuid7(ms: int, bits: int) -> uuid.UUID:
    """A UUID v7 of this millisecond, its 74 random bits from `bits`."""
    value = (ms & 0xFFFFFFFFFFFF) << 80 | 0x7 << 76 | (bits >> 62) << 64 | 0b10 << 62 | bits & (2**62 - 1)
    return uuid.UUID(int=value)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def breakdown_json(ages: Sequence[int], statuses: Sequence[int]) -> str:
    """The attendees' breakdown as the service stores it: every value of both referentials, in their order."""
    return json.dumps(
        {
            "age_brackets": dict(zip(AGE_BRACKETS, ages, strict=True)),
            "social_statuses": dict(zip(SOCIAL_STATUSES, statuses, strict=True)),
        }
    )


# `breakdown_json` as a template (the same text, a row at a time without building dictionaries).
_BREAKDOWN = breakdown_json([-1] * len(AGE_BRACKETS), [-1] * len(SOCIAL_STATUSES)).replace("-1", "%d")
NOBODY = breakdown_json([0] * len(AGE_BRACKETS), [0] * len(SOCIAL_STATUSES))
UNKNOWN_AGE = AGE_BRACKETS.index(AgeBracket.non_communique.value)
UNKNOWN_STATUS = SOCIAL_STATUSES.index(SocialStatus.non_communique.value)


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f'"{name}": {n}' for name, n in counts.items())


@dataclass
class Chunk:
    workshops: list[tuple[Any, ...]]
    registrations: list[tuple[Any, ...]]


@dataclass(frozen=True)
class _Themes:
    """A set of themes as rows store it: the JSON list, the bit mask, the titles of its first theme."""

    values: tuple[str, ...]
    json: str
    mask: int
    titles: tuple[str, ...]


class Generator:
    """Rows of the workshops and their registrations, chunk by chunk.

    `per_workshop` registrations per workshop on average. `attendees` adds the columns of the attendance
    figures (`attendees`, `attendee_breakdown`: present registrations plus walk-ins) to each workshop row."""

    def __init__(
        self,
        runners: list[Runner],
        seed: int,
        per_workshop: int = REGISTRATIONS_PER_WORKSHOP,
        attendees: bool = False,
    ) -> None:
        self.rhone = [r for r in runners if r.rhone]
        self.others = [r for r in runners if not r.rhone] or self.rhone
        self.rhone = self.rhone or self.others
        self.seed = seed
        self.per_workshop = per_workshop
        self.attendees = attendees
        # The monthly statistics of the workshops generated so far, as `app.stats.rollup.rebuild` would
        # compute them from the rows: (territory, month, level, theme or '') → the metrics in the order of
        # `app.stats.models.METRIC_COLUMNS`.
        self.rollup: dict[tuple[Any, str, str, str], list[int]] = {}
        self._themes: dict[tuple[int, ...], _Themes] = {}
        self._venues: dict[tuple[str, int], str] = {}

    def chunk(self, index: int, first: int, count: int) -> Chunk:
        """Workshops `first` to `first + count - 1`; their registrations number `per_workshop` per workshop
        on average, and exactly `per_workshop` × `count` for an even `count` (workshop 2k has n, workshop
        2k + 1 has 2 × `per_workshop` - n)."""
        rng = random.Random(f"{self.seed}-workshops-{index}")
        workshops: list[tuple[Any, ...]] = []
        registrations: list[tuple[Any, ...]] = []
        pair = 2 * self.per_workshop
        previous = self.per_workshop
        for number in range(first, first + count):
            if number % 2 == 0:
                previous = int(rng.random() * (pair + 1))
                k = previous if number + 1 < first + count else self.per_workshop
            else:
                k = pair - previous
            self._workshop(rng, number, k, workshops, registrations)
        return Chunk(workshops, registrations)

    def themes(self, rnd: Callable[[], float], rhone: bool) -> _Themes:
        picked = set()
        if rhone and rnd() < RHONE_SEARCH_THEME_SHARE:
            picked.add(SEARCH_INDEX)
            wanted = 1 + int(rnd() * 3)
        else:
            wanted = 1 + int(rnd() * 3)
        while len(picked) < wanted:
            picked.add(OTHER_INDEXES[int(rnd() * len(OTHER_INDEXES))])
        # The order of the referential, as a form would send them.
        key = tuple(sorted(picked))
        found = self._themes.get(key)
        if found is None:
            values = [THEMES[i].value for i in key]
            found = self._themes[key] = _Themes(
                tuple(values),
                json.dumps(values),
                theme_mask(values),
                TITLES.get(THEMES[key[0]], DEFAULT_TITLES),
            )
        return found

    def _venue(self, where: Place, number: int, postcode: str, lat: float, lon: float) -> str:
        """The venue's JSON object, as `json.dumps` writes it."""
        name = self._venues.get((where.code, number % len(VENUE_NAMES)))
        if name is None:
            name = self._venues[(where.code, number % len(VENUE_NAMES))] = json.dumps(
                f"{VENUE_NAMES[number % len(VENUE_NAMES)]} {where.code}"
            )
        return (
            f'{{"name": {name}, "address": "{1 + number % 120} {STREETS_JSON[number % len(STREETS_JSON)]}", '
            f'"postcode": "{postcode}", "commune_code": "{where.code}", "lat": {lat!r}, "lon": {lon!r}}}'
        )

    def _workshop(
        self,
        rng: random.Random,
        number: int,
        k: int,
        workshops: list[tuple[Any, ...]],
        registrations: list[tuple[Any, ...]],
    ) -> None:
        rnd = rng.random
        bits = rng.getrandbits
        pool = self.rhone if rnd() < RHONE_SHARE else self.others
        runner = pool[int(rnd() * len(pool))]
        themes = self.themes(rnd, runner.rhone)
        day = runner.first_day + int(rnd() * (runner.last_day - runner.first_day + 1))
        counsellor_id = runner.counsellor_on(day)
        starts_at = datetime.fromordinal(day).replace(
            hour=HOURS_UTC[int(rnd() * len(HOURS_UTC))], minute=30 * int(rnd() * 2), tzinfo=UTC
        )
        duration = DURATIONS[int(rnd() * len(DURATIONS))]
        capacity = CAPACITIES[int(rnd() * len(CAPACITIES))]
        # Enough waitlist for every live registration: nobody was refused (409 workshop_full) here.
        waitlist = max(WAITLISTS[int(rnd() * len(WAITLISTS))], k - capacity)
        created_at = starts_at - timedelta(days=3 + int(rnd() * 60), minutes=int(rnd() * 600))
        if created_at > LATEST:
            created_at = LATEST - timedelta(minutes=int(rnd() * 30 * 24 * 60))
        past = starts_at <= DATASET_NOW
        draw = rnd()
        if past:
            status = "completed" if draw < 0.85 else "cancelled" if draw < 0.90 else "scheduled"
        else:
            status = "cancelled" if draw < 0.03 else "scheduled"
        in_person = rnd() < 0.85
        workshop_id = uuid7(_ms(created_at), bits(74))
        title = themes.titles[number % len(themes.titles)]
        if in_person:
            where = runner.places[int(rnd() * len(runner.places))]
            postcode = where.postcodes[number % len(where.postcodes)]
            lat = round(where.lat + (rnd() - 0.5) * 0.25, 5)
            lon = round(where.lon + (rnd() - 0.5) * 0.35, 5)
            venue = self._venue(where, number, postcode, lat, lon)
            venue_columns: tuple[Any, ...] = (venue, where.code, where.departement, postcode, lat, lon, None)
        else:
            online_url = f"https://visio.example.org/atelier-{number}"
            venue_columns = (None, None, None, None, None, None, online_url)
        # The registrations, in time order between the workshop's creation and its start (or the clock).
        end = min(starts_at, DATASET_NOW)
        span = max(int((end - created_at).total_seconds()), k + 1)
        offsets = sorted(1 + int(rnd() * (span - 1)) for _ in range(k))
        completed = status == "completed"
        cancelled_workshop = status == "cancelled"
        ages = [0] * len(AGE_BRACKETS)
        statuses = [0] * len(SOCIAL_STATUSES)
        present = 0
        version = 1
        confirmed = waitlisted = 0
        last = created_at
        token_seed = b"%d-%d-" % (self.seed, number)
        for n, offset in enumerate(offsets):
            at = created_at + timedelta(seconds=offset)
            rank = None
            if cancelled_workshop or rnd() < 0.1:
                state = "cancelled"
                # One write on the workshop to register, one more to cancel (the workshop's own
                # cancellation cancels every registration in one write, counted below).
                version += 1 if cancelled_workshop else 2
            elif confirmed < capacity:
                state = "confirmed"
                confirmed += 1
                version += 1
            else:
                waitlisted += 1
                state, rank = "waitlisted", waitlisted
                version += 1
            if n % 3:
                age_index = int(rnd() * len(AGE_BRACKETS))
                status_index = int(rnd() * len(SOCIAL_STATUSES))
                age: str | None = AGE_BRACKETS[age_index]
                social: str | None = SOCIAL_STATUSES[status_index]
            else:
                age_index, status_index, age, social = UNKNOWN_AGE, UNKNOWN_STATUS, None, None
            attendance = "unknown"
            if completed and state == "confirmed":
                draw = rnd()
                attendance = "present" if draw < 0.75 else "absent" if draw < 0.95 else "excused"
                if draw < 0.75:
                    present += 1
                    ages[age_index] += 1
                    statuses[status_index] += 1
            first_name = FIRST_NAMES[(number + n) % len(FIRST_NAMES)]
            last_name = LAST_NAMES[(number * 7 + n) % len(LAST_NAMES)]
            email = f"{first_name}.{last_name}.{number}-{n}@{EMAIL_DOMAIN}"
            registrations.append(
                (
                    uuid7(_ms(at), bits(74)),
                    workshop_id,
                    first_name,
                    last_name,
                    email,
                    email.lower(),
                    None if n % 4 else "+33 4 00 00 00 00",
                    age,
                    social,
                    state,
                    rank,
                    attendance,
                    hashlib.sha256(token_seed + b"%d" % n).hexdigest(),
                    at,
                    at,
                )
            )
            last = at
        walk_ins = None
        cancel_reason = None
        updated_at = last
        if cancelled_workshop:
            cancel_reason = "Intervenant indisponible."
            confirmed = waitlisted = 0
            version += 1
            updated_at = min(max(last, starts_at - timedelta(days=1)), DATASET_NOW - timedelta(minutes=30))
            updated_at = max(updated_at, last)
        elif completed:
            # People who came without registering, in the report's breakdowns (those left empty omitted).
            total = number % 4
            walk_ages: dict[str, int] = {}
            walk_statuses: dict[str, int] = {}
            for _ in range(total):
                age_index = int(rnd() * len(AGE_BRACKETS))
                status_index = int(rnd() * len(SOCIAL_STATUSES))
                ages[age_index] += 1
                statuses[status_index] += 1
                walk_ages[AGE_BRACKETS[age_index]] = walk_ages.get(AGE_BRACKETS[age_index], 0) + 1
                name = SOCIAL_STATUSES[status_index]
                walk_statuses[name] = walk_statuses.get(name, 0) + 1
            # As `json.dumps` writes it (the keys are referential values: nothing to escape).
            walk_ins = (
                f'{{"total": {total}, "age_brackets": {{{_pairs(walk_ages)}}}, '
                f'"social_statuses": {{{_pairs(walk_statuses)}}}}}'
            )
            present += total
            version += 1
            updated_at = max(last, min(starts_at + timedelta(minutes=duration), DATASET_NOW))
        row = (
            workshop_id,
            runner.position_id,
            counsellor_id,
            runner.territory_id,
            title,
            None if number % 3 else "Apportez votre appareil si vous en avez un.",
            themes.json,
            themes.mask,
            LEVELS[number % len(LEVELS)],
            "in_person" if in_person else "remote",
            *venue_columns,
            starts_at,
            starts_at + timedelta(minutes=duration),
            duration,
            capacity,
            waitlist,
            confirmed,
            waitlisted,
            capacity - confirmed,
            status,
            rnd() < 0.9,
            cancel_reason,
            walk_ins,
            created_at,
            updated_at,
            version,
        )
        if self.attendees:
            # The activity report writes the breakdown (zeros included); before it there is none.
            row += (present, _BREAKDOWN % (*ages, *statuses) if completed else None)
            self._count(
                (runner.territory_id, f"{starts_at.year:04d}-{starts_at.month:02d}", row[8]),
                themes.values,
                (int(completed), int(cancelled_workshop), confirmed, present),
                (*ages, *statuses) if present else None,
            )
        workshops.append(row)

    def _count(
        self,
        base: tuple[Any, str, str],
        themes: tuple[str, ...],
        counts: tuple[int, int, int, int],
        breakdown: tuple[int, ...] | None,
    ) -> None:
        """Adds a workshop to the rollup: once under theme '', once under each of its themes."""
        for theme in ("", *themes):
            key = (*base, theme)
            into = self.rollup.get(key)
            if into is None:
                into = self.rollup[key] = [0] * (len(counts) + len(AGE_BRACKETS) + len(SOCIAL_STATUSES))
            into[0] += counts[0]
            into[1] += counts[1]
            into[2] += counts[2]
            into[3] += counts[3]
            if breakdown is not None:
                for i, value in enumerate(breakdown, 4):
                    into[i] += value

    def rollup_rows(self) -> list[tuple[Any, ...]]:
        """The rollup's rows, in key order."""
        return [
            (*key, *values)
            for key, values in sorted(self.rollup.items(), key=lambda kv: (str(kv[0][0]), *kv[0][1:]))
        ]

    def targets(self, runner: Runner, where: Place, count: int) -> list[tuple[Any, ...]]:
        """The registration scenario's workshops: upcoming (in 2027), public, 10 000 seats, no registration
        yet (version 1)."""
        rng = random.Random(f"{self.seed}-targets")
        rows = []
        for n in range(count):
            created_at = DATASET_NOW - timedelta(days=10, minutes=n)
            starts_at = datetime(2027, 6, 1, 7, 0, tzinfo=UTC) + timedelta(days=n % 180, minutes=30 * (n % 2))
            postcode = where.postcodes[0]
            venue = json.dumps(
                {
                    "name": f"Médiathèque {where.code}",
                    "address": "1 place de la Mairie",
                    "postcode": postcode,
                    "commune_code": where.code,
                    "lat": where.lat,
                    "lon": where.lon,
                }
            )
            rows.append(
                (
                    uuid7(_ms(created_at), rng.getrandbits(74)),
                    runner.position_id,
                    runner.counsellor_id,
                    runner.territory_id,
                    REGISTER_TITLE,
                    None,
                    json.dumps([Theme.culture_numerique.value]),
                    theme_mask([Theme.culture_numerique.value]),
                    Level.debutant.value,
                    "in_person",
                    venue,
                    where.code,
                    where.departement,
                    postcode,
                    where.lat,
                    where.lon,
                    None,
                    starts_at,
                    starts_at + timedelta(minutes=120),
                    120,
                    REGISTER_CAPACITY,
                    0,
                    0,
                    0,
                    REGISTER_CAPACITY,
                    "scheduled",
                    True,
                    None,
                    None,
                    created_at,
                    created_at,
                    1,
                )
                + ((0, None) if self.attendees else ())
            )
            if self.attendees:
                self._count(
                    (
                        runner.territory_id,
                        f"{starts_at.year:04d}-{starts_at.month:02d}",
                        Level.debutant.value,
                    ),
                    (Theme.culture_numerique.value,),
                    (0, 0, 0, 0),
                    None,
                )
        return rows


# --- PostgreSQL ---------------------------------------------------------------------------------------

TABLES = ("workshops", "registrations", "workshop_monthly_stats")


async def _schema(conn: Any) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The two tables' primary keys and foreign keys (table, name, definition; foreign keys that point at
    them from elsewhere included), and their other indexes' CREATE statements, as the catalogue has them."""
    constraints = await conn.fetch(
        "SELECT c.conrelid::regclass::text AS table_name, c.conname,"
        " pg_get_constraintdef(c.oid) AS definition, c.contype FROM pg_constraint c"
        " WHERE c.contype IN ('p', 'f')"
        " AND (c.conrelid = ANY($1::regclass[]) OR c.confrelid = ANY($1::regclass[]))"
        " ORDER BY c.contype DESC, c.conname",
        list(TABLES),
    )
    indexes = await conn.fetch(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = ANY($1::text[])"
        " AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE contype = 'p')"
        " ORDER BY tablename DESC, indexname",
        list(TABLES),
    )
    return (
        [(r["table_name"], r["conname"], r["definition"]) for r in constraints],
        [r["indexdef"] for r in indexes],
    )


async def _drop(conn: Any, constraints: list[tuple[str, str, str]]) -> None:
    for table, name, _ in sorted(constraints, key=lambda c: not c[2].startswith("FOREIGN")):
        await conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    rows = await conn.fetch(
        "SELECT indexname FROM pg_indexes"
        " WHERE schemaname = current_schema() AND tablename = ANY($1::text[])",
        list(TABLES),
    )
    for row in rows:
        await conn.execute(f'DROP INDEX "{row["indexname"]}"')


async def _rebuild(dsn: str, constraints: list[tuple[str, str, str]], indexes: list[str]) -> None:
    """Primary keys first, then the indexes on two connections side by side, then the foreign keys."""
    import asyncpg

    async def run(statements: list[str]) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("SET maintenance_work_mem = '256MB'")
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    keys = [f'ALTER TABLE {t} ADD CONSTRAINT "{n}" {d}' for t, n, d in constraints if d.startswith("PRIMARY")]
    await asyncio.gather(run(keys[:1]), run(keys[1:]))
    await asyncio.gather(run(indexes[0::2]), run(indexes[1::2]))
    await run(
        [f'ALTER TABLE {t} ADD CONSTRAINT "{n}" {d}' for t, n, d in constraints if d.startswith("FOREIGN")]
    )


ATTENDEE_COLUMNS = ("attendees", "attendee_breakdown")
ROLLUP_COLUMNS = ("territory_id", "month", "level", "theme", *METRIC_COLUMNS)


async def load_pg(
    dsn: str,
    runners: list[Runner],
    target_runner: Runner,
    target: Place,
    *,
    count: int,
    seed: int,
    per_workshop: int = REGISTRATIONS_PER_WORKSHOP,
    progress: bool = True,
) -> Workshops:
    """Writes `count` workshops (the registration targets among them), about `per_workshop` × as many
    registrations and their monthly statistics: COPY in chunks with the indexes and keys dropped and the
    workshops' triggers off (the session as a replica's), each chunk generated in a thread while the
    previous one is copied, then the statistics the generator summed; then the indexes and keys built
    again, and VACUUM ANALYZE."""
    import asyncpg
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    bar = Progress(
        TextColumn("{task.fields[what]:<13}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        disable=not progress,
    )
    try:
        columns = WORKSHOP_COLUMNS + ATTENDEE_COLUMNS
        generator = Generator(runners, seed, per_workshop, attendees=True)
        targets = generator.targets(target_runner, target, register_targets(count))
        random_count = count - len(targets)
        summary = Workshops(
            register_ids=[str(row[0]) for row in targets],
            register_commune=target.code,
            workshops=len(targets),
        )
        constraints, indexes = await _schema(conn)
        await _drop(conn, constraints)
        # The rows go in as they are: the triggers that keep the statistics up to date row by row are
        # skipped, and the statistics computed once at the end.
        await conn.execute("SET session_replication_role = replica")
        with bar:
            task = bar.add_task("", total=count, what="workshops")
            rows = bar.add_task("", total=random_count * per_workshop, what="registrations")
            await conn.copy_records_to_table("workshops", records=targets, columns=columns)
            bar.advance(task, len(targets))
            starts = list(range(0, random_count, CHUNK))

            def make(index: int) -> Chunk:
                return generator.chunk(index, starts[index], min(CHUNK, random_count - starts[index]))

            upcoming = asyncio.ensure_future(asyncio.to_thread(make, 0)) if starts else None
            for index in range(len(starts)):
                assert upcoming is not None
                chunk = await upcoming
                if index + 1 < len(starts):
                    upcoming = asyncio.ensure_future(asyncio.to_thread(make, index + 1))
                summary.workshops += len(chunk.workshops)
                summary.registrations += len(chunk.registrations)
                if not summary.workshop_id:
                    _pick_workshop(summary, chunk)
                await conn.copy_records_to_table("workshops", records=chunk.workshops, columns=columns)
                await conn.copy_records_to_table(
                    "registrations", records=chunk.registrations, columns=REGISTRATION_COLUMNS
                )
                bar.advance(task, len(chunk.workshops))
                bar.advance(rows, len(chunk.registrations))
            bar.update(task, description="monthly statistics ...")
            await conn.copy_records_to_table(
                "workshop_monthly_stats", records=generator.rollup_rows(), columns=ROLLUP_COLUMNS
            )
            await conn.execute("RESET session_replication_role")
            clock = _Clock(summary.steps, started)
            clock("copy")
            bar.update(task, description="indexes and keys ...")
            await _rebuild(dsn, constraints, indexes)
            clock("indexes")
            bar.update(task, description="VACUUM ANALYZE ...")
            await conn.execute("VACUUM ANALYZE workshops, registrations, workshop_monthly_stats")
            clock("vacuum")
            bar.update(task, description="done")
    finally:
        await conn.close()
    summary.seconds = time.perf_counter() - started
    return summary


class _Clock:
    """Records the seconds since the previous call under each step's name."""

    def __init__(self, steps: dict[str, float], started: float) -> None:
        self.steps = steps
        self.last = started

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.steps[name] = round(now - self.last, 1)
        self.last = now


def _pick_workshop(summary: Workshops, chunk: Chunk) -> None:
    """The one-workshop scenario's workshop: the first upcoming, public, in-person, scheduled one of the
    Rhône."""
    columns = {name: i for i, name in enumerate(WORKSHOP_COLUMNS)}
    for row in chunk.workshops:
        if (
            row[columns["venue_department_code"]] == RHONE
            and row[columns["public"]]
            and row[columns["status"]] == "scheduled"
            and row[columns["starts_at"]] > datetime(2027, 1, 1, tzinfo=UTC)
        ):
            summary.workshop_id = str(row[columns["id"]])
            summary.workshop_version = row[columns["version"]]
            return
