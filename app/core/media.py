"""Content negotiation of list and stats answers: JSON, or CSV when the `Accept` header asks for it.

Kept free of the application's other modules: the direct path (`app.core.direct`) reads it to leave a CSV
request to the route, and the CSV machinery (`app.core.csv`) to answer it."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated

from fastapi import Query

CSV_MEDIA_TYPE = "text/csv"
JSON_MEDIA_TYPE = "application/json"


class Separator(StrEnum):
    """CSV's field separator, by name (a `;` in a query string would need escaping)."""

    comma = "comma"
    semicolon = "semicolon"


SEP_DOC = (
    "CSV only (with `Accept: text/csv`): the field separator, `comma` (default, RFC 4180) or `semicolon` "
    "(for French spreadsheet software, whose decimal separator is the comma; the file then also starts "
    "with a UTF-8 byte order mark, without which Excel reads UTF-8 as another encoding). Ignored by JSON."
)

SepQuery = Annotated[Separator, Query(description=SEP_DOC)]


def _q(parameters: Iterable[str]) -> float:
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def accepts_csv(accept: str | None) -> bool:
    """Whether an `Accept` header asks for CSV rather than JSON.

    CSV when `text/csv` is named (with any parameters, in any case) with a quality above 0, and no JSON
    range (`application/json`, or `application/*`, `*/*`) has a higher one: `text/csv`,
    `text/csv;q=0.9, */*;q=0.1` and `application/json;q=0.5, text/csv` ask for CSV; `*/*`, `text/*`,
    `application/json, text/csv;q=0.5` and `text/csv;q=0` keep JSON. A tie goes to CSV: naming it is
    asking for it. Anything else, a malformed header included, is JSON as before."""
    if not accept or "csv" not in accept.lower():
        return False
    csv_q: float | None = None
    json_q = 0.0
    json_specificity = -1
    for media_range in accept.split(","):
        kind, *parameters = media_range.split(";")
        kind = kind.strip().lower()
        q = _q(parameters)
        if kind == CSV_MEDIA_TYPE:
            csv_q = q if csv_q is None else max(csv_q, q)
            continue
        # The most specific JSON range decides JSON's quality (RFC 9110, 12.5.1).
        specificity = {JSON_MEDIA_TYPE: 2, "application/*": 1, "*/*": 0}.get(kind, -1)
        if specificity > json_specificity:
            json_specificity, json_q = specificity, q
        elif specificity == json_specificity and specificity >= 0:
            json_q = max(json_q, q)
    return csv_q is not None and csv_q > 0 and csv_q >= json_q


def scope_accepts_csv(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """`accepts_csv` of a request's raw ASGI headers (every `Accept` header, joined as one list)."""
    values = [value.decode("latin-1") for name, value in headers if name == b"accept"]
    return accepts_csv(", ".join(values)) if values else False
