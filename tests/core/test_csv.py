"""CSV answers (`Accept: text/csv`): the format, formula neutralisation, negotiation, every list endpoint
against its JSON pages, rights, the direct path, and streaming in batches with constant memory."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import sqlite3
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta, timezone
from enum import Enum, StrEnum
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from sqlalchemy import delete, insert, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.core import csv as csv_module
from app.core import pagination
from app.core.csv import (
    CsvExportFailed,
    CsvWriter,
    batch_column,
    columns_of,
    csv_rows_response,
    flatten,
    model_columns,
    neutralise,
)
from app.core.direct import answer_observers
from app.core.media import Separator, accepts_csv
from app.core.problems import AnswerCutShort
from app.db import make_sessionmaker, new_id
from app.main import create_app
from app.territories import service as territories_service
from app.territories.models import Territory
from app.workshops.schemas import WorkshopRead
from tests.agreements.helpers import amend
from tests.conftest import IS_POSTGRES, KeyMaker, Tree
from tests.helpers import assert_problem, stderr_json_logs, written_json_lines
from tests.workshops.helpers import Place, build_place, create_workshop, register

CSV = {"Accept": "text/csv"}
API = "/api/v1"


def parse(response: httpx.Response) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows of a CSV answer (comma-separated, no BOM)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    text = response.content.decode("utf-8")
    assert not text.startswith("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    header, *rows = list(reader)
    return header, [dict(zip(header, row, strict=True)) for row in rows]


# --- negotiation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("text/csv", True),
        ("TEXT/CSV; charset=utf-8", True),
        ("text/csv;q=0.9, */*;q=0.1", True),
        ("application/json;q=0.5, text/csv", True),
        ("text/html, text/csv;q=0.8", True),
        ("text/csv, application/json", True),  # a tie: naming CSV is asking for it
        (None, False),
        ("", False),
        ("*/*", False),
        ("text/*", False),
        ("application/json", False),
        ("application/json, text/csv;q=0.5", False),
        ("text/csv;q=0", False),
        ("text/csv;q=abc", False),
        ("text/csvx", False),
    ],
)
def test_accept_asks_for_csv_only_when_csv_is_named_and_preferred(accept: str | None, expected: bool) -> None:
    assert accepts_csv(accept) is expected


# --- the format -----------------------------------------------------------------------------------


class Colour(StrEnum):
    red = "red"
    blue = "blue"


class Inner(BaseModel):
    label: str
    lat: float


class Sample(BaseModel):
    text: str | None
    count: int
    ratio: float | None
    flag: bool
    at: datetime
    on: date | None
    colour: Colour
    tags: list[Colour]
    inner: Inner | None
    counts: dict[Colour, int]
    ref: uuid.UUID


def _write(rows: list[Any], sep: Separator = Separator.comma, model: type[BaseModel] = Sample) -> str:
    """As an export writes a batch: each row's line (`CsvColumns.write`)."""
    columns = columns_of(model)
    writer = CsvWriter(sep)
    writer.start(columns.header)
    columns.write(writer, rows)
    return writer.chunk().decode()


def _write_by_the_csv_module(rows: list[Any], sep: Separator, model: type[BaseModel] = Sample) -> str:
    """Each row's cells through the stdlib's csv writer."""
    columns = columns_of(model)
    writer = CsvWriter(sep)
    writer.start(columns.header)
    writer.write(columns.rows(rows))
    return writer.chunk().decode()


def _sample(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "text": "plain",
        "count": 3,
        "ratio": -12.5,
        "flag": True,
        "at": datetime(2026, 11, 26, 9, 30, tzinfo=UTC),
        "on": date(2026, 12, 8),
        "colour": "red",
        "tags": ["red", "blue"],
        "inner": {"label": "Médiathèque", "lat": -45.25},
        "counts": {"red": 2},
        "ref": uuid.UUID("019abc3e-0000-7000-8000-000000000030"),
    }
    row.update(changes)
    return row


def test_columns_follow_the_model_nested_objects_flattened() -> None:
    assert [column.name for column in model_columns(Sample)] == [
        "text",
        "count",
        "ratio",
        "flag",
        "at",
        "on",
        "colour",
        "tags",
        "inner_label",
        "inner_lat",
        "counts_red",
        "counts_blue",
        "ref",
    ]
    # The issue's own example.
    assert "venue_commune_code" in columns_of(WorkshopRead).header


def test_values_are_written_as_json_writes_them() -> None:
    text = _write([_sample(), _sample(text=None, ratio=None, flag=False, on=None, inner=None, tags=[])])
    assert text.split("\r\n") == [
        "text,count,ratio,flag,at,on,colour,tags,inner_label,inner_lat,counts_red,counts_blue,ref",
        "plain,3,-12.5,true,2026-11-26T09:30:00Z,2026-12-08,red,red|blue,Médiathèque,-45.25,2,,"
        "019abc3e-0000-7000-8000-000000000030",
        ",3,,false,2026-11-26T09:30:00Z,,red,,,,2,,019abc3e-0000-7000-8000-000000000030",
        "",
    ]


def test_a_model_object_gives_the_same_cells_as_its_dict() -> None:
    row = _sample()
    assert _write([Sample.model_validate(row)]) == _write([row])


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("a,b", '"a,b"'),
        ("a;b", "a;b"),
        ('say "hi"', '"say ""hi"""'),
        ("two\nlines", '"two\nlines"'),
        ("crlf\r\nin", '"crlf\r\nin"'),
        ("Saint-Étienne, Rhône-Alpes", '"Saint-Étienne, Rhône-Alpes"'),
        ("atelier 🎉 numérique", "atelier 🎉 numérique"),
    ],
)
def test_quoting_is_rfc_4180(value: str, written: str) -> None:
    line = _write([_sample(text=value)]).split("\r\n", 1)[1]
    assert line.startswith(written + ",3,"), line
    # And it reads back as it was.
    assert next(csv.reader(io.StringIO(line, newline="")))[0] == value


def test_semicolon_quotes_semicolons_not_commas_and_starts_with_a_bom() -> None:
    text = _write([_sample(text="a,b"), _sample(text="a;b")], Separator.semicolon)
    assert text.startswith("\ufefftext;count;ratio;")
    lines = text.removeprefix("\ufeff").split("\r\n")
    assert lines[1].startswith("a,b;3;-12.5;true;")
    assert lines[2].startswith('"a;b";3;')


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_formula_starts_are_neutralised_in_text_cells(start: str) -> None:
    formula = f'{start}HYPERLINK("http://evil.example")'
    line = _write([_sample(text=formula, inner={"label": formula, "lat": -1.5})]).split("\r\n", 1)[1]
    cells = next(csv.reader(io.StringIO(line, newline="")))
    assert cells[0] == "'" + formula
    assert cells[8] == "'" + formula  # nested text too
    # Numbers are not text: a negative latitude stays a number a spreadsheet adds up.
    assert (cells[2], cells[9]) == ("-12.5", "-1.5")


def test_neutralise_leaves_other_text_alone() -> None:
    assert neutralise("") == ""
    assert neutralise("a=b") == "a=b"
    assert neutralise(" =1") == " =1"
    assert neutralise("'quoted") == "'quoted"
    assert neutralise("-12") == "'-12"  # in a text column, text


def test_a_joined_list_is_neutralised_as_one_cell() -> None:
    class Tagged(BaseModel):
        tags: list[str]

    assert _write([{"tags": ["=cmd", "b"]}], model=Tagged).split("\r\n")[1] == "'=cmd|b"


class Loose(BaseModel):
    """Columns whose converter is not inlined: any value, a list of objects (JSON), a list of numbers."""

    anything: Any = None
    objects: list[dict[str, Any]] | None = None
    numbers: list[int] | None = None
    on: date | None = None
    inner: Inner | None = None


# Text with what a line must not hold unquoted (either delimiter, quotes, line breaks) and formula starts.
_texts = st.text(alphabet=st.sampled_from(list("ab é,;\"\r\n=+-@\t'|🎉")), max_size=6)
_instants = st.builds(
    lambda at, zone: at.replace(tzinfo=zone),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 1, 1)),
    st.sampled_from([UTC, timezone(timedelta(0)), timezone(timedelta(hours=2))]),
)
_floats = st.floats(allow_nan=True, allow_infinity=True)
_samples = st.fixed_dictionaries(
    {
        "text": st.none() | _texts,
        "count": st.integers(),
        "ratio": st.none() | _floats,
        "flag": st.booleans(),
        "at": _instants,
        "on": st.none() | st.dates(),
        "colour": st.sampled_from(["red", Colour.blue]),
        "tags": st.lists(st.sampled_from(["red", Colour.blue]), max_size=3),
        "inner": st.none() | st.fixed_dictionaries({"label": _texts, "lat": _floats}),
        "counts": st.dictionaries(st.sampled_from(["red", "blue"]), st.none() | st.integers()),
        "ref": st.uuids(),
    }
)
# Integers as the database holds them (64 bits: orjson writes no larger ones in a JSON cell).
_integers = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_scalars = st.none() | st.booleans() | _integers | _floats | _texts | _instants | st.dates() | st.uuids()
_loose = st.fixed_dictionaries(
    {
        "anything": _scalars | st.lists(_scalars, max_size=3),
        "objects": st.none() | st.lists(st.dictionaries(_texts, _scalars, max_size=2), max_size=2),
        "numbers": st.none() | st.lists(st.integers(), max_size=3),
        "on": st.none() | st.dates(),
        "inner": st.none() | st.fixed_dictionaries({"label": _texts, "lat": _floats}),
    }
)


class Typed(BaseModel):
    """Columns given values of other types than their own: what a service might put in a dict."""

    count: int | None = None
    ref: uuid.UUID | None = None
    at: datetime | None = None


class Mixed(str, Enum):  # noqa: UP042 - a str mixin, whose str() is not its value
    value = "mixed"


class Shouting(str):
    def __str__(self) -> str:
        return "SHOUTED"


class Spaced(datetime):
    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
        return super().isoformat(" ", timespec)


_odd = (
    st.none()
    | _integers
    | _floats
    | _texts
    | st.builds(Shouting, _texts)
    | st.just(Mixed.value)
    | st.just(Colour.red)
    | st.dates()
    | _instants
)
_moments = (
    st.none() | st.dates() | _instants | st.builds(lambda at: Spaced.fromisoformat(at.isoformat()), _instants)
)
_typed = st.fixed_dictionaries({"count": _odd, "ref": _odd | st.uuids(), "at": _moments})


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(_samples, max_size=6),
    loose=st.lists(_loose, max_size=6),
    typed=st.lists(_typed, max_size=6),
    sep=st.sampled_from(list(Separator)),
)
def test_lines_are_the_bytes_of_the_csv_writer(
    rows: list[dict[str, Any]], loose: list[dict[str, Any]], typed: list[dict[str, Any]], sep: Separator
) -> None:
    """An export writes each row as one f-string of its cells (`CsvColumns.write`), checked for what would
    need quotes: whatever the values, the same text as the stdlib's csv writer writes from the cells, a row
    that needs quotes among rows that do not included, and values of other types than their column's (a
    subclass of `str` in a number column, a date or a subclass of datetime in an instant's)."""
    assert _write(rows, sep) == _write_by_the_csv_module(rows, sep)
    assert _write(loose, sep, Loose) == _write_by_the_csv_module(loose, sep, Loose)
    assert _write(typed, sep, Typed) == _write_by_the_csv_module(typed, sep, Typed)


def test_a_row_that_needs_quotes_keeps_its_place_among_lines() -> None:
    rows = [_sample(text="first"), _sample(text='a "b", c\r\nd'), _sample(text="last")]
    text = _write(rows)
    assert text == _write_by_the_csv_module(rows, Separator.comma)
    lines = list(csv.reader(io.StringIO(text, newline="")))
    assert [line[0] for line in lines] == ["text", "first", 'a "b", c\r\nd', "last"]


def test_stats_tables_are_written_from_rows_in_memory() -> None:
    """The API the stats routes use: columns, and rows as mappings (nested breakdowns flattened)."""
    rows = [
        flatten({"theme": "sante", "held": 3, "age_brackets": {"moins_de_douze": 1, "non_communique": None}}),
        {"theme": "=cmd", "held": 0, "age_brackets_moins_de_douze": 0},
        ("total", 3, 1, None),
    ]
    columns = ["theme", "held", "age_brackets_moins_de_douze", "age_brackets_non_communique"]
    response = csv_rows_response(columns, rows, Separator.semicolon, filename="stats-workshops")
    assert response.media_type == "text/csv"
    assert response.headers["content-disposition"] == 'attachment; filename="stats-workshops.csv"'
    assert bytes(response.body).decode().split("\r\n") == [
        "\ufefftheme;held;age_brackets_moins_de_douze;age_brackets_non_communique",
        "sante;3;1;",
        "'=cmd;0;0;",
        "total;3;1;",
        "",
    ]


# --- through the API ---------------------------------------------------------------------------------


async def test_a_list_answers_csv_with_its_header_even_without_rows(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{API}/workshops", params={"postcode": "01000"}, headers=CSV)
    header, rows = parse(response)
    assert header == columns_of(WorkshopRead).header
    assert rows == []
    assert response.headers["content-disposition"] == 'attachment; filename="workshops.csv"'
    assert "accept" in response.headers["vary"].lower()
    assert "link" not in response.headers


async def test_json_stays_the_default_and_says_it_varies_by_accept(
    client: httpx.AsyncClient, tree: Tree
) -> None:
    for accept in (None, "*/*", "application/json", "text/*", "application/json, text/csv;q=0.5"):
        headers = {"Accept": accept} if accept else {}
        response = await client.get(f"{API}/territories", headers=headers)
        assert response.headers["content-type"] == "application/json", accept
        assert response.headers["vary"].lower().startswith("accept")
        assert len(response.json()["items"]) == 9


async def test_a_bad_separator_is_422_even_for_csv(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{API}/territories", params={"sep": "tab"}, headers=CSV)
    assert_problem(response, 422, "validation_error", "/query/sep")
    response = await client.get(f"{API}/referentials/themes", params={"sep": ";"}, headers=CSV)
    assert_problem(response, 422, "validation_error", "/query/sep")


async def test_sep_semicolon_through_the_api(client: httpx.AsyncClient, tree: Tree) -> None:
    response = await client.get(
        f"{API}/territories", params={"sep": "semicolon", "kind": "departement"}, headers=CSV
    )
    assert response.status_code == 200
    text = response.content.decode()
    assert text.startswith("\ufeffid;kind;code;name;parent_id;population;created_at;updated_at;version\r\n")
    rows = list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""), delimiter=";"))
    assert sorted(row["name"] for row in rows) == ["Haute-Garonne", "Rhône"]


async def test_injection_and_quoting_through_the_api(
    client: httpx.AsyncClient, admin: dict[str, str], make_key: KeyMaker, tree: Tree
) -> None:
    """A name a user wrote, with each dangerous start, reads back neutralised; accents, quotes, commas and
    emoji come back intact."""
    names = ["=1+2", "+33 4", "-x", "@SUM(A1)", 'Le "Grand", Lyon 🎉']
    for name in names:
        response = await client.post(
            f"{API}/api-keys", json={"name": name, "role": "admin", "territory_ids": []}, headers=admin
        )
        assert response.status_code == 201, response.text
    _header, rows = parse(await client.get(f"{API}/api-keys", headers={**admin, **CSV}))
    written = {row["name"] for row in rows}
    assert {"'=1+2", "'+33 4", "'-x", "'@SUM(A1)", 'Le "Grand", Lyon 🎉'} <= written
    assert all(row["territory_ids"] == "" and row["role"] == "admin" for row in rows if row["name"] in names)


# --- every list endpoint: the same rows as its JSON pages -----------------------------------------


def _expected_cell(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, list):
        return neutralise("|".join(str(v) for v in value))
    if isinstance(value, str):
        return neutralise(value)
    return str(value)


def _json_flat(item: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in item.items():
        if isinstance(value, dict):
            flat.update(_json_flat(value, f"{prefix}{key}_"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


async def _json_walk(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every item, page after page of 2 (or, for the change feed, `after` after `after`)."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {} if "/referentials" in path else {"limit": 2}
    while True:
        response = await client.get(path, params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        found.extend(body["items"])
        if "next_after" in body:
            if not body["items"]:
                return found
            params = {"limit": 2, "after": body["next_after"]}
        elif "next_cursor" in body:
            if body["next_cursor"] is None:
                return found
            params = {"limit": 2, "cursor": body["next_cursor"]}
        else:
            return found


World = dict[str, Any]


@pytest.fixture
async def everything(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, make_key: KeyMaker
) -> World:
    """At least three rows in every list: the workshops' place, amendments, workshops, registrations."""
    place: Place = await build_place(client, admin, tree, make_key)
    world = place.world
    for positions in (1, 2, 3):
        assert (await amend(client, admin, world.lyon["id"], "add_positions", positions)).status_code == 201
    workshops = [
        await create_workshop(client, admin, place.lyon_position["id"], title=title)
        for title in ("=SUM(A1)", "Atelier, « numérique » 🎉", 'Dire "oui" ; -1')
    ]
    for n in range(3):
        assert (await register(client, workshops[0]["id"], n)).status_code == 201
    return {"place": place, "workshop": workshops[0]}


LISTS: list[tuple[str, Callable[[World], str], str]] = [
    ("territories", lambda w: "/territories", "admin"),
    ("programmes", lambda w: "/programmes", "admin"),
    ("agreements", lambda w: "/agreements", "admin"),
    ("amendments", lambda w: f"/agreements/{w['place'].world.lyon['id']}/amendments", "admin"),
    ("positions", lambda w: "/positions", "admin"),
    ("position assignments", lambda w: f"/positions/{w['place'].lyon_position['id']}/assignments", "admin"),
    ("assignments", lambda w: "/assignments", "admin"),
    ("counsellors", lambda w: "/counsellors", "admin"),
    ("workshops", lambda w: "/workshops", "admin"),
    ("workshops, viewer", lambda w: "/workshops", "viewer"),
    ("registrations", lambda w: f"/workshops/{w['workshop']['id']}/registrations", "admin"),
    ("api keys", lambda w: "/api-keys", "admin"),
    ("changes", lambda w: "/changes", "admin"),
    ("changes, viewer", lambda w: "/changes", "viewer"),
    ("referentials", lambda w: "/referentials", "admin"),
    ("a referential", lambda w: "/referentials/themes", "admin"),
]


@pytest.mark.parametrize(("name", "path", "caller"), LISTS, ids=[name for name, _p, _c in LISTS])
async def test_every_list_answers_csv_with_the_rows_of_its_json_pages(
    client: httpx.AsyncClient,
    everything: World,
    name: str,
    path: Callable[[World], str],
    caller: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In batches of 2, so that every list's export goes through several of them."""
    monkeypatch.setattr(csv_module, "BATCH_ROWS", 2)
    place: Place = everything["place"]
    headers = place.admin if caller == "admin" else place.world.lyon_viewer
    url = API + path(everything)
    expected = await _json_walk(client, url, headers)
    assert expected, name
    header, rows = parse(await client.get(url, headers={**headers, **CSV}))
    assert len(rows) == len(expected), name
    for item, row in zip(expected, rows, strict=True):
        flat = _json_flat(item)
        # Nothing of the JSON is left out...
        assert {key for key, value in flat.items() if value is not None} <= set(header), name
        # ...and every cell says what the JSON says (a null object: its columns empty).
        assert row == {column: _expected_cell(flat.get(column)) for column in header}, name


# The lists whose page functions hand their batches on as they are: written from the driver's rows.
FROM_DRIVER_ROWS = {
    "territories",
    "agreements",
    "position assignments",
    "assignments",
    "workshops",
    "workshops, viewer",
    "registrations",
}


@pytest.mark.parametrize(("name", "path", "caller"), LISTS, ids=[name for name, _p, _c in LISTS])
async def test_the_driver_rows_write_the_bytes_the_page_dicts_write(
    client: httpx.AsyncClient,
    everything: World,
    name: str,
    path: Callable[[World], str],
    caller: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A CSV batch that its page function hands on untouched is written from the driver's rows
    (`app.core.pagination.Records`), converted by the engine's own processors: the same bytes as from the
    page's dicts (those of the JSON pages), and as the stdlib's csv writer writes from the cells (rather
    than each row's line), in batches of 2 and of 1 000, with either separator. A batch whose rows the
    service reads or fills in (positions, counsellors) is written from those dicts."""
    place: Place = everything["place"]
    headers = {**(place.admin if caller == "admin" else place.world.lyon_viewer), **CSV}
    url = API + path(everything)
    from_driver: list[type[BaseModel]] = []
    driver_cells = csv_module.CsvColumns._driver_cells

    def spy(columns: csv_module.CsvColumns, driver: Any) -> Any:
        from_driver.append(columns.model)
        return driver_cells(columns, driver)

    async def through_the_engine(*_args: Any) -> None:
        return None

    def by_the_csv_module(columns: csv_module.CsvColumns, writer: CsvWriter, rows: Any) -> None:
        writer.write(columns.rows(rows))

    monkeypatch.setattr(csv_module.CsvColumns, "_driver_cells", spy)
    for batch in (2, 1000):
        monkeypatch.setattr(csv_module, "BATCH_ROWS", batch)
        for sep in ("comma", "semicolon"):
            fast = await client.get(url, params={"sep": sep}, headers=headers)
            with monkeypatch.context() as patched:
                patched.setattr(pagination, "_records", through_the_engine)
                dicts = await client.get(url, params={"sep": sep}, headers=headers)
            with monkeypatch.context() as patched:
                patched.setattr(csv_module.CsvColumns, "write", by_the_csv_module)
                cells = await client.get(url, params={"sep": sep}, headers=headers)
            assert fast.status_code == dicts.status_code == cells.status_code == 200, (fast.text, dicts.text)
            assert fast.content == dicts.content, name
            assert fast.content == cells.content, name
            assert fast.content.count(b"\r\n") >= 2, (name, fast.content)
    assert bool(from_driver) == (name in FROM_DRIVER_ROWS), name


async def test_a_viewer_gets_no_personal_data_in_csv_either(
    client: httpx.AsyncClient, everything: World
) -> None:
    place: Place = everything["place"]
    viewer = {**place.world.lyon_viewer, **CSV}
    assert_problem(await client.get(f"{API}/counsellors", headers=viewer), 403, "forbidden")
    assert_problem(await client.get(f"{API}/assignments", headers=viewer), 403, "forbidden")
    _header, rows = parse(await client.get(f"{API}/workshops", headers=viewer))
    assert rows
    assert {row["counsellor_id"] for row in rows} == {""}
    _header, rows = parse(await client.get(f"{API}/workshops", headers={**place.admin, **CSV}))
    assert {row["counsellor_id"] for row in rows} == {place.counsellor["id"]}
    header, rows = parse(await client.get(f"{API}/positions", headers=viewer))
    personal = [column for column in header if column.startswith("current_assignment_")]
    assert "current_assignment_counsellor_id" in personal
    assert rows
    assert {row[column] for row in rows for column in personal} == {""}
    _header, rows = parse(await client.get(f"{API}/positions", headers={**place.admin, **CSV}))
    assert place.counsellor["id"] in {row["current_assignment_counsellor_id"] for row in rows}


async def test_rights_answer_the_json_problems_before_any_csv(
    client: httpx.AsyncClient, everything: World
) -> None:
    place: Place = everything["place"]
    workshop = everything["workshop"]
    # No key: 401.
    assert_problem(await client.get(f"{API}/counsellors", headers=CSV), 401, "unauthenticated")
    assert_problem(await client.get(f"{API}/changes", headers=CSV), 401, "unauthenticated")
    # A role that may not: 403.
    other = place.other_counsellor_key
    response = await client.get(f"{API}/workshops/{workshop['id']}/registrations", headers={**other, **CSV})
    assert_problem(response, 403, "forbidden")
    # Outside the caller's territories: 404 (the Rhône manager cannot see a Lyon agreement).
    lyon = place.world.lyon["id"]
    rhone_manager = {**place.world.rhone_manager, **CSV}
    assert_problem(
        await client.get(f"{API}/agreements/{lyon}/amendments", headers=rhone_manager), 404, "not_found"
    )
    unknown = uuid.uuid4()
    response = await client.get(f"{API}/workshops/{unknown}/registrations", headers={**place.admin, **CSV})
    assert_problem(response, 404, "not_found")
    # A tampered cursor: the JSON's 422.
    response = await client.get(f"{API}/territories", params={"cursor": "abc.def"}, headers=CSV)
    assert_problem(response, 422, "invalid_cursor")


async def test_a_cursor_starts_the_export_after_it_and_limit_does_not_apply(
    client: httpx.AsyncClient, tree: Tree
) -> None:
    first = (await client.get(f"{API}/territories", params={"limit": 3})).json()
    everything_ = (await client.get(f"{API}/territories", params={"limit": 200})).json()["items"]
    for sep in ("comma", "semicolon"):
        response = await client.get(
            f"{API}/territories",
            params={"cursor": first["next_cursor"], "limit": 1, "sep": sep},
            headers=CSV,
        )
        text = response.content.decode().removeprefix("\ufeff")
        rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter="," if sep == "comma" else ";"))
        assert [row["id"] for row in rows] == [item["id"] for item in everything_[3:]]


async def test_a_route_with_a_twin_answers_csv_itself(client: httpx.AsyncClient, tree: Tree) -> None:
    """The direct path answers JSON only: asked for CSV, it leaves the request to the route."""
    seen: list[str] = []
    answer_observers.append(seen.append)
    try:
        json_answer = await client.get(f"{API}/territories", params={"kind": "commune"})
        assert seen == ["territories_list"]
        seen.clear()
        for accept in ("text/csv", "application/json;q=0.2, text/csv"):
            response = await client.get(
                f"{API}/territories", params={"kind": "commune"}, headers={"Accept": accept}
            )
            _header, rows = parse(response)
            assert seen == []
            assert [row["id"] for row in rows] == [item["id"] for item in json_answer.json()["items"]]
    finally:
        answer_observers.remove(seen.append)


# --- streaming: batches and memory -----------------------------------------------------------------


class _Sink:
    """An ASGI client's side of one answer, keeping only counts (the export's bytes are not held)."""

    def __init__(self, disconnect_after: int | None = None) -> None:
        self.status: int | None = None
        self.headers: dict[bytes, bytes] = {}
        self.bytes = 0
        self.lines = 0
        self.chunks = 0
        self.complete = False
        self.first = b""
        self._disconnect_after = disconnect_after
        self._gone = asyncio.Event()
        self._asked = False

    async def receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = dict(message["headers"])
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            if not self.first:
                self.first = body[:4096]
            self.bytes += len(body)
            self.lines += body.count(b"\r\n")
            self.chunks += 1 if body else 0
            if not message.get("more_body", False):
                self.complete = True
            if self._disconnect_after is not None and self.chunks >= self._disconnect_after:
                self._gone.set()
                # The client is gone: the server's next write waits for nothing more.
                await asyncio.sleep(0)


async def _asgi_get(
    app: FastAPI, path: str, query: dict[str, str], sink: _Sink, request_id: str | None = None
) -> None:
    headers = [(b"host", b"test"), (b"accept", b"text/csv")]
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": urlencode(query).encode(),
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    await app(scope, sink.receive, sink.send)


async def _add_territories(session: AsyncSession, count: int) -> uuid.UUID:
    """A région and `count` communes under it, inserted in bulk (Core INSERTs): the export's rows."""
    table = Territory.__table__
    root = new_id()
    now = datetime.now(UTC)
    base = {"created_at": now, "updated_at": now, "version": 1, "population": None}
    code = root.hex[-8:]
    await session.execute(
        insert(table),
        [
            {
                **base,
                "id": root,
                "kind": "region",
                "code": code,
                "name": f"Région {code}",
                "name_sort": f"region {code}",
                "search_name": f"region {code}",
                "parent_id": None,
                "path": f"/{root}/",
            }
        ],
    )
    rows = []
    for n in range(count):
        child = new_id()
        rows.append(
            {
                **base,
                "id": child,
                "kind": "commune",
                "code": f"{code}{n:06d}",
                "name": f"Commune {n:06d}, « test » =x",
                "name_sort": f"commune {n:06d}",
                "search_name": f"commune {n:06d}",
                "parent_id": root,
                "path": f"/{root}/{child}/",
                "population": n,
            }
        )
        if len(rows) == 10_000:
            await session.execute(insert(table), rows)
            rows = []
    if rows:
        await session.execute(insert(table), rows)
    await session.flush()
    return root


async def test_an_export_streams_in_batches_with_flat_memory(
    app: FastAPI,
    client: httpx.AsyncClient,
    session: AsyncSession,
    count_queries: Callable[[], Any],
) -> None:
    """Peak Python memory (tracemalloc) of an export does not grow with its rows: 100 000 rows peak as
    10 000 do (a batch being read while the previous one is sent), and within a batch of 1 000 rows' peak;
    and the rows come in statements of 1 000, not in one fetch."""
    parents = {count: await _add_territories(session, count) for count in (1_000, 10_000, 100_000)}
    path = f"{API}/territories"
    # Caches and compiled statements, the first batch's and the next ones' (after a cursor).
    small = str(parents[1_000])
    cursor = (await client.get(path, params={"parent_id": small, "limit": 1})).json()["next_cursor"]
    for query in ({"parent_id": small}, {"parent_id": small, "cursor": cursor}):
        warm = _Sink()
        await _asgi_get(app, path, query, warm)
        assert warm.complete

    peaks: dict[int, int] = {}
    sinks: dict[int, _Sink] = {}
    tracemalloc.start()
    try:
        for count, parent in parents.items():
            with count_queries() as counter:
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
                sinks[count] = _Sink()
                await _asgi_get(app, path, {"parent_id": str(parent)}, sinks[count])
                peaks[count] = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    for count, sink in sinks.items():
        assert (sink.status, sink.complete, sink.lines) == (200, True, count + 1)
    big = sinks[100_000]
    assert big.first.startswith(b"id,kind,code,name,parent_id,population,")
    assert b'"Commune 000000, \xc2\xab test \xc2\xbb =x"' in big.first
    assert big.bytes > 90 * sinks[1_000].bytes
    # Ten times the rows, not more memory; a few batches' worth at most, a small part of the answer.
    assert peaks[100_000] < 1.25 * peaks[10_000] + 256 * 1024, peaks
    assert peaks[100_000] < 3 * peaks[1_000], peaks
    assert peaks[100_000] < big.bytes / 4, (peaks, big.bytes)
    pages = [s for s in counter.statements if "FROM territories" in s and "LIMIT" in s.upper()]
    assert len(pages) == 100, len(pages)
    assert len(counter.statements) <= 102, counter.statements[:5]


@pytest.fixture
async def own_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """An app with its own engine and pool (not the test's transaction): its connections can be counted."""
    app = create_app(settings)
    async with LifespanManager(app):
        yield app


@asynccontextmanager
async def _committed_territories(app: FastAPI, count: int) -> AsyncIterator[uuid.UUID]:
    maker = make_sessionmaker(app.state.engine)
    async with maker() as session:
        root = await _add_territories(session, count)
        await session.commit()
    try:
        yield root
    finally:
        async with maker() as session:
            table = Territory.__table__
            await session.execute(delete(table).where(table.c.parent_id == root))
            await session.execute(delete(table).where(table.c.id == root))
            await session.commit()


def _checked_out(app: FastAPI) -> int:
    checked_out: int = app.state.engine.sync_engine.pool.checkedout()
    return checked_out


async def test_a_client_gone_mid_stream_gives_the_connection_back(
    own_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_module, "BATCH_ROWS", 2)
    async with _committed_territories(own_app, 20) as root:
        sink = _Sink(disconnect_after=1)
        await asyncio.wait_for(_asgi_get(own_app, f"{API}/territories", {"parent_id": str(root)}, sink), 10)
        assert sink.status == 200
        assert not sink.complete
        assert sink.lines < 21
        await asyncio.sleep(0.05)  # the connection's return runs in a task of its own
        assert _checked_out(own_app) == 0
        # The pool still serves: the next export is whole.
        again = _Sink()
        await _asgi_get(own_app, f"{API}/territories", {"parent_id": str(root)}, again)
        assert (again.complete, again.lines) == (True, 21)
        assert _checked_out(own_app) == 0


def _fail_the_second_batch(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """The second batch of the next exports fails (on PostgreSQL, its connection is terminated by the
    server); the function returned undoes it."""
    monkeypatch.setattr(csv_module, "BATCH_ROWS", 2)
    real = territories_service.list_territories
    calls: list[int] = []

    async def failing(db: AsyncSession, page: Any, **filters: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            if IS_POSTGRES:
                pid = (await db.execute(text("SELECT pg_backend_pid()"))).scalar_one()
                async with app.state.engine.connect() as other:
                    await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                    await other.commit()
            else:
                raise OperationalError("SELECT", {}, sqlite3.OperationalError("disk I/O error"))
        return await real(db, page, **filters)

    monkeypatch.setattr(territories_service, "list_territories", failing)
    return lambda: monkeypatch.setattr(territories_service, "list_territories", real)


async def test_a_database_error_mid_stream_ends_the_answer_incomplete(
    own_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second batch fails: the answer stops there without its final chunk, so a client sees an
    incomplete body; the connection goes back."""
    undo = _fail_the_second_batch(own_app, monkeypatch)
    async with _committed_territories(own_app, 20) as root:
        sink = _Sink()
        with pytest.raises(AnswerCutShort) as raised:
            await asyncio.wait_for(
                _asgi_get(own_app, f"{API}/territories", {"parent_id": str(root)}, sink), 10
            )
        assert isinstance(raised.value.__cause__, CsvExportFailed)
        assert sink.status == 200
        assert not sink.complete
        assert sink.lines == 3  # the header and the first batch
        await asyncio.sleep(0.05)
        assert _checked_out(own_app) == 0
        undo()
        again = _Sink()
        await _asgi_get(own_app, f"{API}/territories", {"parent_id": str(root)}, again)
        assert (again.complete, again.lines) == (True, 21)


async def test_an_export_cut_short_is_a_5xx_logged_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The export had answered 200 when its database failed, but the request failed: it is counted and
    access-logged as a 500 (an alert on 5xx fires), and the failure is one error line, with the request id
    and the route's template, where each layer it crossed used to write its own traceback (the
    middleware, Starlette's last-resort handler, the server)."""
    with stderr_json_logs():
        app = create_app(settings.model_copy(update={"log_level": "INFO", "log_json": True}))
        async with LifespanManager(app):
            _fail_the_second_batch(app, monkeypatch)
            async with _committed_territories(app, 20) as root:
                capsys.readouterr()
                sink = _Sink()
                try:
                    await _asgi_get(app, f"{API}/territories", {"parent_id": str(root)}, sink, "csv-7")
                except Exception as error:
                    # What uvicorn does with an exception that an application raises.
                    server = logging.getLogger("uvicorn.error")
                    server.error("Exception in ASGI application\n", exc_info=error)
                lines = written_json_lines(capsys)
            metrics = app.state.metrics.text().decode()
    assert (sink.status, sink.complete) == (200, False)
    failures = [line for line in lines if line["level"] in ("warning", "error", "critical")]
    assert len(failures) == 1, failures
    failure = failures[0]
    assert (failure["level"], failure["request_id"]) == ("error", "csv-7")
    assert failure["event"] == "the answer to GET /api/v1/territories was cut short: CsvExportFailed"
    assert "CsvExportFailed" in failure["exception"]
    access = [line for line in lines if line["logger"] == "app.access"]
    assert [(line["event"], line["request_id"]) for line in access] == [
        ("GET /api/v1/territories 500", "csv-7")
    ]
    assert str(root) not in orjson.dumps(lines).decode()
    assert 'http_requests_total{handler="/api/v1/territories",method="GET",status="5xx"} 1.0' in metrics
    assert 'status="2xx"' not in metrics


async def test_a_batch_read_on_the_driver_is_the_page_of_dicts_and_gives_its_columns(
    session: AsyncSession, tree: Tree
) -> None:
    """`fetch_page` of a CSV batch: the driver's rows (`Records`), which read as a sequence are the dicts
    of a JSON page, and whose columns (`batch_column`: the ids an export's journal records) are read
    without making those dicts."""
    stmt = select(Territory.id, Territory.code, Territory.created_at)
    keys = [pagination.SortKey("id", Territory.id, parse=pagination.parse_uuid)]

    def page(csv: Separator | None) -> pagination.PageRequest:
        return pagination.PageRequest(
            limit=3,
            cursor=None,
            include_total=False,
            binding="b",
            cursors=pagination.Cursors("s" * 32),
            csv=csv,
        )

    json_rows, json_cursor, _total = await pagination.fetch_page(
        session, stmt, keys, page(None), row_values=lambda r: [r.id], scalars=False
    )
    rows, cursor, _total = await pagination.fetch_page(
        session, stmt, keys, page(Separator.comma), row_values=lambda r: [r.id], scalars=False
    )
    assert isinstance(rows, pagination.Records)
    assert cursor == json_cursor is not None
    assert batch_column(rows, "id") == [row["id"] for row in json_rows]
    assert batch_column(rows, "created_at") == [row["created_at"] for row in json_rows]
    assert rows.untouched
    assert list(rows) == json_rows
    assert not rows.untouched
    rows[0]["code"] = "changed"
    assert batch_column(rows, "code")[0] == "changed"
    assert batch_column(json_rows, "id") == [row["id"] for row in json_rows]
