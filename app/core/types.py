"""Shared field types of input models: one rule per kind of value, for every present and future domain.

Every `str` field of an input model (a request body) is `FreeText` or `Code` (or an `Annotated` of them), and
a free-text query parameter takes `NO_CONTROL_CHARACTERS`: they refuse control characters, so that NUL, which
PostgreSQL cannot store in `text`, is a 422 at the field's pointer instead of a 500, and SQLite stores
the same values as PostgreSQL.
`tests/core/test_types.py` walks every input model of the application and fails on a `str` field that does not
use them. Instants are `Timestamp`. Counts and money are `int` fields with `Field(strict=True, ge=, le=)`
(bounds below 2^53), so that a huge number is a 422 too.

    from app.core.types import Code, FreeText, Timestamp

    class WorkshopCreate(InputModel):
        title: FreeText = Field(min_length=1, max_length=200)
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field
from pydantic_core import PydanticCustomError

# Control characters (NUL above all), lone surrogates (not encodable in UTF-8) and line or paragraph
# separators have no place in a name, a reference or a reason. Tabs and line feeds are refused too: these
# are one-line values, read back in lists and logs. The Unicode categories Cc (U+0000-U+001F,
# U+007F-U+009F), Cs (U+D800-U+DFFF), Zl (U+2028) and Zp (U+2029) as one character class: a regular
# expression scans a string far faster than a category lookup per character (an HR bulk request checks tens
# of thousands of strings).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def no_control_characters(value: str) -> str:
    """The validator behind `FreeText` and `Code` (also usable on a query parameter)."""
    if _FORBIDDEN.search(value):
        raise ValueError("must not contain control characters or line breaks")
    return value


NO_CONTROL_CHARACTERS = AfterValidator(no_control_characters)

FreeText = Annotated[str, NO_CONTROL_CHARACTERS]
"""Human text on one line: names, references, reasons. Give lengths with `Field(min_length=, max_length=)`."""

Code = Annotated[str, NO_CONTROL_CHARACTERS]
"""A machine code (a programme code, an official territory code): give its `pattern` with `Field`."""


# The instants the API accepts: wide enough for any past record or future plan (an archive of 1900, a key
# that expires in 2999), narrow enough that every computation on them stays a valid datetime in UTC and in
# both databases (an end computed from a start and a duration, a window around a date). A value outside is
# a 422 at its pointer, never an OverflowError later.
MIN_INSTANT = datetime(1900, 1, 1, tzinfo=UTC)
MAX_INSTANT = datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
INSTANT_RANGE = "from 1900-01-01T00:00:00Z to 2999-12-31T23:59:59Z"


def _to_utc(value: datetime) -> datetime:
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        # 9999-12-31T23:59:59-23:59 or 0001-01-01T00:00:00+01:00: outside what a datetime holds in UTC.
        value = MAX_INSTANT + timedelta(days=1) if value.year > 1 else MIN_INSTANT - timedelta(days=1)
    if not MIN_INSTANT <= value <= MAX_INSTANT:
        raise PydanticCustomError(
            "instant_out_of_range", "must be an instant {range}", {"range": INSTANT_RANGE}
        )
    return value


_RFC3339_START = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]")


def _rfc3339_text(value: object) -> object:
    # Pydantic reads a number, or a string of one ("0.5"), as seconds since 1970: the documented format is
    # an RFC 3339 date-time, and a query parameter or a body that sends a number is a mistake to refuse.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339_START.match(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-11-26T09:30:00Z")
    return value


# What OpenAPI shows of the range: in the schema (`formatMinimum`/`formatMaximum`, the JSON Schema keywords
# of validators such as Ajv) and in words, for the fields whose own description replaces this one.
_RANGE_SCHEMA: dict[str, Any] = {
    "description": f"An RFC 3339 instant with an offset, {INSTANT_RANGE}.",
    "formatMinimum": "1900-01-01T00:00:00Z",
    "formatMaximum": "2999-12-31T23:59:59Z",
}

Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339_text),
    AfterValidator(_to_utc),
    Field(json_schema_extra=_RANGE_SCHEMA),
]
"""An input instant: RFC 3339 with an offset (a naive one is a 422, not a 500 later; a number is one too),
normalised to UTC so that the response says `...Z` like every other timestamp, between 1900-01-01 and
2999-12-31 (UTC; `MIN_INSTANT`, `MAX_INSTANT`); one outside, or out of range in UTC, is a 422 too."""


QueryTimestamp = Timestamp
"""An instant in a query string: the same rule as in a body (a bare number is refused)."""


_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_day_text(value: object) -> object:
    # As for instants: pydantic reads a number ("0") as seconds since 1970, and a date-time as its day.
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _ISO_DAY.fullmatch(value):
        raise ValueError("must be a day YYYY-MM-DD, e.g. 2026-11-26")
    return value


def _in_range(value: date) -> date:
    if not MIN_INSTANT.date() <= value <= MAX_INSTANT.date():
        raise PydanticCustomError("day_out_of_range", "must be a day from 1900-01-01 to 2999-12-31")
    return value


QueryDay = Annotated[
    date,
    BeforeValidator(_iso_day_text),
    AfterValidator(_in_range),
    Field(json_schema_extra={"formatMinimum": "1900-01-01", "formatMaximum": "2999-12-31"}),
]
"""A day in a query string: `YYYY-MM-DD` only, from 1900-01-01 to 2999-12-31 (a number is a 422)."""
