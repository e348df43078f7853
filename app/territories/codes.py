"""Official codes of territories, checked per kind (INSEE codes, SIREN with its Luhn key)."""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum

from stdnum.fr import siren


class TerritoryKind(StrEnum):
    region = "region"
    departement = "departement"
    metropole = "metropole"
    epci = "epci"
    commune = "commune"


# A parent must be of a strictly higher level (a lower rank).
RANK = {
    TerritoryKind.region: 0,
    TerritoryKind.departement: 1,
    TerritoryKind.metropole: 2,
    TerritoryKind.epci: 2,
    TerritoryKind.commune: 3,
}

# ASCII only: for Python's `re`, `\d` also matches Arabic-Indic or full-width digits, which no INSEE code
# holds. Matched with fullmatch, since `$` would also accept a trailing newline.
_REGION = re.compile(r"\d{2}", re.ASCII)
_DEPARTEMENT = re.compile(r"0[1-9]|1\d|2[1-9AB]|[3-8]\d|9[0-5]|97[1-6]", re.ASCII)
_COMMUNE = re.compile(r"([013-9]\d|2[AB1-9])\d{3}", re.ASCII)

CODE_RULES = {
    TerritoryKind.region: "2 digits (INSEE region code, e.g. 84)",
    TerritoryKind.departement: "01–95 except 20, 2A, 2B or 971–976 (e.g. 69)",
    TerritoryKind.metropole: "a SIREN: 9 digits with a valid Luhn key (e.g. 200046977)",
    TerritoryKind.epci: "a SIREN: 9 digits with a valid Luhn key (e.g. 200046977)",
    TerritoryKind.commune: "an INSEE commune code, 5 characters (e.g. 69123; not a postcode)",
}


def is_siren(code: str) -> bool:
    """9 ASCII digits with a valid Luhn key."""
    return code.isascii() and code.isdigit() and len(code) == 9 and bool(siren.is_valid(code))


def code_error(kind: TerritoryKind, code: str) -> str | None:
    """None when `code` is a valid official code for `kind`, else what it should look like."""
    ok: bool
    if kind is TerritoryKind.region:
        ok = bool(_REGION.fullmatch(code))
    elif kind is TerritoryKind.departement:
        ok = bool(_DEPARTEMENT.fullmatch(code))
    elif kind is TerritoryKind.commune:
        ok = bool(_COMMUNE.fullmatch(code))
    else:
        ok = is_siren(code)
    return None if ok else f"invalid code for a {kind.value}: expected {CODE_RULES[kind]}"


def fold(text: str) -> str:
    """Lower-case and strip accents: `Métropole` and `metropole` fold alike, on every database."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().replace("œ", "oe").replace("æ", "ae").split())
