"""The official territorial referential shipped with the service, and the rules that turn it into territories.

The snapshot (`data/referential-<version>.json.gz`, built by `scripts/build_referential.py` from the npm
package `@etalab/decoupage-administratif`) records the dataset's facts; `plan` decides the tree:

- région (root) → département → EPCI or métropole → commune;
- the **Métropole de Lyon** (type `MET69`) is a collectivité with département powers on part of the Rhône's
  land: it hangs off the région, beside the Rhône, and its communes are its children, so that the Rhône's
  subtree holds neither the Métropole nor its communes;
- another EPCI (kind `metropole` for the type `METRO`, else `epci`) hangs off the département holding most of
  its population; its members in that département are its children, and its members in other départements
  (89 EPCI of the 2026 vintage span several) hang directly off their own département, so that every commune
  stays within its département;
- a commune in no EPCI (four islands) hangs off its département;
- populations are the dataset's municipal populations; a région's or département's is the sum of its
  communes' (the Rhône's without the Métropole de Lyon's);
- SIRENs: a commune's and an EPCI's come with the dataset; a région's or a département's does not (the
  dataset has none), so a snapshot may carry them as an optional last element of their rows
  (`scripts/build_referential.py --sirens`). An import writes the SIREN a row carries and keeps the stored
  one of a région or département whose row carries none: the shipped snapshot, which has none, never erases
  one an operator loaded.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.territories.codes import TerritoryKind, is_siren

DATA_DIR = Path(__file__).resolve().parent / "data"
SNAPSHOT_VERSION = "6.0.0"
SNAPSHOT_PATH = DATA_DIR / f"referential-{SNAPSHOT_VERSION}.json.gz"
SUPPORTED_FORMAT = 1

# EPCI types of the dataset: communauté de communes, d'agglomération, urbaine, métropole, and the
# Métropole de Lyon.
LYON_TYPE = "MET69"
METROPOLE_TYPES = frozenset({"METRO", LYON_TYPE})

Key = tuple[str, str]

# Kinds whose SIREN the dataset does not give: a snapshot may carry one, and an import that has none for
# such a territory keeps the stored one.
SIREN_OPTIONAL_KINDS = frozenset({TerritoryKind.region, TerritoryKind.departement})


class SnapshotError(ValueError):
    """The file is not a referential snapshot this version of the service can read."""


@dataclass(frozen=True)
class Commune:
    code: str
    name: str
    departement: str
    epci: str | None
    population: int | None
    siren: str | None
    postcodes: tuple[str, ...]


@dataclass(frozen=True)
class Epci:
    siren: str
    name: str
    type: str
    population: int | None


@dataclass(frozen=True)
class Alias:
    code: str
    commune: str
    reason: str
    name: str | None


@dataclass(frozen=True)
class Snapshot:
    meta: dict[str, Any]
    regions: dict[str, str]  # code → name
    departements: dict[str, tuple[str, str]]  # code → (name, région)
    epcis: dict[str, Epci]
    communes: dict[str, Commune]
    aliases: dict[str, Alias]
    # The SIRENs of régions and départements the snapshot carries, by (kind, code): none in the dataset.
    sirens: dict[Key, str] = field(default_factory=dict)

    def subset(self, commune_codes: set[str]) -> Snapshot:
        """Only these communes, with their EPCI, départements, régions and former codes (for tests)."""
        communes = {c: self.communes[c] for c in sorted(commune_codes)}
        departements = {d: self.departements[d] for d in sorted({c.departement for c in communes.values()})}
        return replace(
            self,
            regions={r: self.regions[r] for r in sorted({region for _, region in departements.values()})},
            departements=departements,
            epcis={e: self.epcis[e] for e in sorted({c.epci for c in communes.values() if c.epci})},
            communes=communes,
            aliases={a.code: a for a in self.aliases.values() if a.commune in communes},
            sirens={
                key: siren
                for key, siren in self.sirens.items()
                if (key[0] == "region" and key[1] in {region for _, region in departements.values()})
                or (key[0] == "departement" and key[1] in departements)
            },
        )


def _optional_siren(kind: str, code: str, rest: list[Any], sirens: dict[Key, str]) -> None:
    """The optional last element of a région's or département's row: its SIREN, or null."""
    if len(rest) > 1:
        raise ValueError(f"{kind} {code}: too many elements")
    siren = rest[0] if rest else None
    if siren is None:
        return
    if not isinstance(siren, str) or not is_siren(siren):
        raise ValueError(f"{kind} {code}: {siren!r} is not a SIREN (9 digits with a valid Luhn key)")
    sirens[(kind, code)] = siren


def parse(data: dict[str, Any]) -> Snapshot:
    if not isinstance(data, dict) or data.get("format") != SUPPORTED_FORMAT:
        raise SnapshotError(f"not a referential snapshot of format {SUPPORTED_FORMAT}")
    try:
        sirens: dict[Key, str] = {}
        regions: dict[str, str] = {}
        for code, name, *rest in data["regions"]:
            regions[code] = name
            _optional_siren("region", code, rest, sirens)
        departements: dict[str, tuple[str, str]] = {}
        for code, name, region, *rest in data["departements"]:
            departements[code] = (name, region)
            _optional_siren("departement", code, rest, sirens)
        return Snapshot(
            meta=dict(data["meta"]),
            regions=regions,
            departements=departements,
            epcis={siren: Epci(siren, name, type_, pop) for siren, name, type_, pop in data["epci"]},
            communes={
                row[0]: Commune(row[0], row[1], row[2], row[3], row[4], row[5], tuple(row[6]))
                for row in data["communes"]
            },
            aliases={row[0]: Alias(*row) for row in data["aliases"]},
            sirens=sirens,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"malformed referential snapshot: {exc!r}") from exc


def read(path: Path) -> Snapshot:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return parse(json.loads(raw))
    except (OSError, EOFError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"cannot read {path}: {exc}") from exc


def shipped() -> Snapshot:
    """The snapshot shipped in the package. Not cached: `serve` loads the demo in the process that then
    serves, which should not keep tens of megabytes of rows it no longer needs."""
    return read(SNAPSHOT_PATH)


@dataclass
class Planned:
    """A territory as the referential wants it."""

    kind: TerritoryKind
    code: str
    name: str
    parent: Key | None
    population: int | None
    siren: str | None = None
    postcodes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def key(self) -> Key:
        return (self.kind.value, self.code)


@dataclass(frozen=True)
class PlannedAlias:
    kind: TerritoryKind
    code: str
    target: Key
    reason: str
    name: str | None


def _largest(populations: Counter[str]) -> str:
    # Ties (or no population at all) go to the smallest code: the plan is the same on every run.
    return min(populations, key=lambda code: (-populations[code], code))


def plan(snapshot: Snapshot) -> tuple[list[Planned], list[PlannedAlias]]:
    """The territories in an order where parents come first, and the former codes of communes."""
    members: dict[str, list[Commune]] = defaultdict(list)
    for commune in snapshot.communes.values():
        if commune.epci is not None and commune.epci in snapshot.epcis:
            members[commune.epci].append(commune)

    epci_kind: dict[str, TerritoryKind] = {}
    epci_parent: dict[str, Key] = {}
    for epci in snapshot.epcis.values():
        siren = epci.siren
        if not members[siren]:
            continue
        epci_kind[siren] = TerritoryKind.metropole if epci.type in METROPOLE_TYPES else TerritoryKind.epci
        by_departement: Counter[str] = Counter()
        for commune in members[siren]:
            by_departement[commune.departement] += commune.population or 0
        departement = _largest(by_departement)
        if epci.type == LYON_TYPE:
            epci_parent[siren] = ("region", snapshot.departements[departement][1])
        else:
            epci_parent[siren] = ("departement", departement)

    commune_parent: dict[str, Key] = {}
    lyon_communes: set[str] = set()
    for commune in snapshot.communes.values():
        member_of = commune.epci if commune.epci in epci_kind else None
        if member_of is not None and snapshot.epcis[member_of].type == LYON_TYPE:
            lyon_communes.add(commune.code)
            commune_parent[commune.code] = (epci_kind[member_of].value, member_of)
        elif member_of is not None and epci_parent[member_of] == ("departement", commune.departement):
            commune_parent[commune.code] = (epci_kind[member_of].value, member_of)
        else:
            commune_parent[commune.code] = ("departement", commune.departement)

    region_population: Counter[str] = Counter()
    departement_population: Counter[str] = Counter()
    for commune in snapshot.communes.values():
        region_population[snapshot.departements[commune.departement][1]] += commune.population or 0
        if commune.code not in lyon_communes:
            departement_population[commune.departement] += commune.population or 0

    planned = [
        Planned(
            TerritoryKind.region,
            code,
            name,
            None,
            region_population[code],
            snapshot.sirens.get(("region", code)),
        )
        for code, name in snapshot.regions.items()
    ]
    planned += [
        Planned(
            TerritoryKind.departement,
            code,
            name,
            ("region", region),
            departement_population[code],
            snapshot.sirens.get(("departement", code)),
        )
        for code, (name, region) in snapshot.departements.items()
    ]
    planned += [
        Planned(epci_kind[siren], siren, epci.name, epci_parent[siren], epci.population)
        for siren, epci in snapshot.epcis.items()
        if siren in epci_kind
    ]
    planned += [
        Planned(
            TerritoryKind.commune,
            commune.code,
            commune.name,
            commune_parent[commune.code],
            commune.population,
            commune.siren,
            commune.postcodes,
        )
        for commune in snapshot.communes.values()
    ]
    aliases = [
        PlannedAlias(TerritoryKind.commune, alias.code, ("commune", alias.commune), alias.reason, alias.name)
        for alias in snapshot.aliases.values()
        if alias.commune in snapshot.communes and alias.code not in snapshot.communes
    ]
    return planned, aliases
