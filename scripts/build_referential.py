#!/usr/bin/env python3
"""Converts the `@etalab/decoupage-administratif` npm package into the territorial referential shipped with
the service (`app/territories/data/referential-<version>.json.gz`).

Run once per new vintage, by hand, then commit the output:

    cd "$(mktemp -d)" && npm pack @etalab/decoupage-administratif@6.0.0 && tar xzf *.tgz
    python3 scripts/build_referential.py <that directory>/package

The dataset gives no SIREN for régions and départements. `--sirens FILE` adds them from a CSV an operator
keeps (header `kind,code,siren`, `kind` being `region` or `departement`, one row per territory, the SIREN as
the SIRENE directory records it for the collectivité): they become the optional last element of those rows,
and the open-data export uses them as the `pivot` of the venues of the counsellors these collectivités
employ. Unknown codes, malformed SIRENs and duplicates are refused. A snapshot built without the option has
none, and importing it leaves the SIRENs already stored in place.

Only standard-library Python: the script runs without the service's dependencies. It keeps what the service
uses and nothing else:

- régions, départements and communes of metropolitan France and of the DROM (zones `metro` and `drom`);
  the collectivités d'outre-mer (zone `com`) are left out: they are neither régions nor départements, and
  their codes do not follow the rules of those kinds;
- current communes (`commune-actuelle`) with their INSEE code, name, département, SIREN, postcodes,
  municipal population and EPCI;
- EPCI à fiscalité propre with their SIREN, name, type (CC, CA, CU, METRO, MET69) and municipal population;
- former codes that still designate a current commune (`aliases`): codes of communes merged into it
  (`anciensCodes`), of its delegated and associated communes (`commune-deleguee`, `commune-associee`, with
  their names), and of the municipal arrondissements of Paris, Lyon and Marseille.

How these rows become territories (the hierarchy, the Métropole de Lyon, populations) is decided by the
import (`app/territories/referential.py`), not here: the file only records the dataset's facts.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEPT_ZONES = {"metro", "drom"}
FORMAT = 1


def _load(package: Path, name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((package / "data" / f"{name}.json").read_text(encoding="utf-8"))
    return data


def _luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def read_sirens(path: Path) -> dict[tuple[str, str], str]:
    """The région and département SIRENs of an operator's CSV (`kind,code,siren`), checked."""
    sirens: dict[tuple[str, str], str] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or set(reader.fieldnames) != {"kind", "code", "siren"}:
            raise SystemExit(f"{path}: expected the header kind,code,siren")
        for line, row in enumerate(reader, start=2):
            kind, code, siren = row["kind"].strip(), row["code"].strip(), row["siren"].strip()
            if kind not in ("region", "departement"):
                raise SystemExit(f"{path}:{line}: kind must be region or departement, not {kind!r}")
            if not (siren.isascii() and siren.isdigit() and len(siren) == 9 and _luhn_ok(siren)):
                raise SystemExit(f"{path}:{line}: {siren!r} is not a SIREN (9 digits with a valid Luhn key)")
            if (kind, code) in sirens:
                raise SystemExit(f"{path}:{line}: {kind} {code} is listed twice")
            sirens[(kind, code)] = siren
    return sirens


def build(package: Path, sirens: dict[tuple[str, str], str] | None = None) -> dict[str, Any]:
    sirens = sirens or {}
    manifest = json.loads((package / "package.json").read_text(encoding="utf-8"))
    regions = [r for r in _load(package, "regions") if r["zone"] in KEPT_ZONES]
    departements = [d for d in _load(package, "departements") if d["zone"] in KEPT_ZONES]
    all_communes = [c for c in _load(package, "communes") if c["zone"] in KEPT_ZONES]
    current = {c["code"]: c for c in all_communes if c["type"] == "commune-actuelle"}
    epcis = _load(package, "epci")

    epci_of: dict[str, str] = {}
    for epci in epcis:
        for member in epci["membres"]:
            if member["code"] in current:
                epci_of[member["code"]] = epci["code"]

    # Former codes. A code that is also a current commune's is not an alias (the current commune wins);
    # a delegated commune that kept its chef-lieu's code is no alias either.
    aliases: dict[str, list[Any]] = {}
    for commune in current.values():
        for former in commune.get("anciensCodes", []):
            aliases[former] = [former, commune["code"], "merged", None]
    reasons = {"commune-deleguee": "delegated", "commune-associee": "associated"}
    for commune in all_communes:
        if commune["type"] in reasons and commune["code"] != commune["chefLieu"]:
            aliases[commune["code"]] = [
                commune["code"],
                commune["chefLieu"],
                reasons[commune["type"]],
                commune["nom"],
            ]
        elif commune["type"] == "arrondissement-municipal":
            aliases[commune["code"]] = [commune["code"], commune["commune"], "arrondissement", commune["nom"]]
    for code in list(aliases):
        if code in current or aliases[code][1] not in current:
            del aliases[code]

    known = {("region", r["code"]) for r in regions} | {("departement", d["code"]) for d in departements}
    unknown = sorted(set(sirens) - known)
    if unknown:
        raise SystemExit(f"SIRENs of territories the dataset does not hold: {unknown}")

    def siren_of(kind: str, code: str) -> list[str]:
        # The optional last element: only written when known, so that a snapshot without SIRENs keeps the
        # rows it always had.
        return [sirens[(kind, code)]] if (kind, code) in sirens else []

    return {
        "format": FORMAT,
        "meta": {
            "package": manifest["name"],
            "version": manifest["version"],
            "vintage": _vintage(manifest["version"]),
            "source": "INSEE, Code officiel géographique; DGCL, EPCI à fiscalité propre and their members; "
            "INSEE, populations légales; La Poste, base officielle des codes postaux "
            "(via the npm package @etalab/decoupage-administratif)",
            "url": f"https://www.npmjs.com/package/{manifest['name']}/v/{manifest['version']}",
            "licence": "Licence Ouverte / Open Licence 2.0 (data); MIT (package)",
            "zones": sorted(KEPT_ZONES),
        },
        "regions": [
            [r["code"], r["nom"], *siren_of("region", r["code"])]
            for r in sorted(regions, key=lambda r: r["code"])
        ],
        "departements": [
            [d["code"], d["nom"], d["region"], *siren_of("departement", d["code"])]
            for d in sorted(departements, key=lambda d: d["code"])
        ],
        "epci": [
            [e["code"], e["nom"], e["type"], e.get("populationMunicipale")]
            for e in sorted(epcis, key=lambda e: e["code"])
        ],
        "communes": [
            [
                c["code"],
                c["nom"],
                c["departement"],
                epci_of.get(c["code"]),
                c.get("population"),
                c.get("siren"),
                c.get("codesPostaux", []),
            ]
            for c in sorted(current.values(), key=lambda c: c["code"])
        ],
        "aliases": [aliases[code] for code in sorted(aliases)],
    }


def _vintage(version: str) -> int:
    # The package's major versions follow the years (README: 6.x is 2026, 5.x is 2025, ...).
    return 2020 + int(version.split(".", 1)[0])


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("package", type=Path, help="the unpacked npm package (the folder holding data/)")
    parser.add_argument(
        "--output", type=Path, help="default: app/territories/data/referential-<version>.json.gz"
    )
    parser.add_argument(
        "--sirens", type=Path, help="a CSV kind,code,siren of régions' and départements' SIRENs (optional)"
    )
    args = parser.parse_args(argv)
    data = build(args.package, read_sirens(args.sirens) if args.sirens else None)
    output = args.output or ROOT / "app/territories/data" / f"referential-{data['meta']['version']}.json.gz"
    output.parent.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    # mtime=0: the same input gives the same bytes, so a rebuild shows no spurious diff.
    output.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    counts = {key: len(data[key]) for key in ("regions", "departements", "epci", "communes", "aliases")}
    print(
        f"{output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}: {counts}, "
        f"{output.stat().st_size} bytes"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
