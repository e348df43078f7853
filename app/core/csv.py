"""CSV answers (`Accept: text/csv`): lists streamed from the database in keyset batches, and stats tables.

**The format** (RFC 4180): UTF-8, `text/csv; charset=utf-8`, one header line, lines ended by CRLF, a field
quoted only when it holds the separator, a double quote or a line break (a quote doubled inside). `sep=comma`
(default) or `sep=semicolon`, for French spreadsheet software (its decimal separator is the comma); with
`semicolon` the file also starts with a UTF-8 byte order mark: Excel reads a CSV file without one in the
system's legacy code page (accents come out garbled), LibreOffice and programs reading UTF-8 do not need it
(Python's `utf-8-sig`, pandas and R skip it). The default, for programs, has none: RFC 4180 names none and a
BOM would stick to the first column's name in a reader that does not expect it.

**The columns** come from the route's read model, in its order, so the header is the same with zero rows:
a scalar field is one column; a nested object is flattened with `_` (`venue` → `venue_name`,
`venue_commune_code`, ...; `null` → every one of its columns empty); a map keyed by a referential
(`walk_ins.age_brackets`) is one column per value of that referential (`walk_ins_age_brackets_moins_de_12`);
a list of scalars is one cell, its values joined with `|` (`themes`: `numerique_quotidien|sante`; no
referential value holds a `|`; an empty list and `null` are both an empty cell); anything else (a list of
objects) one cell of compact JSON. Values are written as in JSON: `true`/`false`, `null` → empty cell,
instants RFC 3339 UTC with `Z`, dates `YYYY-MM-DD`, numbers as JSON writes them.

**Formula injection** (OWASP "CSV injection"): a text cell that starts with `=`, `+`, `-`, `@`, a tab or a
carriage return is prefixed with `'`, which spreadsheets show and never evaluate. Only text columns are: a
number (a negative latitude, `-12.5`) stays a number that a spreadsheet can add up, and cannot carry a
formula, since a column's type comes from the read model, not from the value (a free-text field holding
`-12` is text, and gets its `'`).

**Streaming** (`csv_list_response`, `csv_stream_response`): the route reads the first batch (1 000 rows)
itself, so that every check (401, 403, 404, a bad cursor) answers its problem before any CSV byte; then the
request's session, and with it the read snapshot every reading request runs in (`app.db.get_session`:
REPEATABLE READ, READ ONLY on PostgreSQL), goes to the response (`app.db.detach_session`), which reads the
next batches after the last row of the previous one, with the route's own page function (its filters, its
sort, its caller's rights), until the last. Memory holds one batch at a time, whatever the size of the
export. The connection goes back to the pool when the stream ends, whichever way: complete, the client gone
(thrown away rather than reused when a statement was interrupted), or a database error, which ends the
stream there (the connection is closed without the final chunk, so that a client sees an incomplete
answer rather than a short file that looks complete).

**Cells from the driver's rows.** A batch is read by the route's page function with the page's `csv` set:
`fetch_page` then runs the same statement (the same filters, order and rights) on the driver's connection
in the request's transaction, and hands back the driver's rows (`app.core.pagination.Records`) rather than
the engine's result rows turned into dicts. A page function that hands them on as they are (workshops,
registrations, assignments, agreements, territories) has its cells read from them by position, each value
converted by the engine's own result processor (`CsvColumns._driver_cells`): the same values, hence the
same bytes, at about half the CPU per row. A page function that reads or fills in its rows (positions'
current assignments, counsellors' nested training) reads them as the dicts of a JSON page, made on first
use; the batch is then written from those dicts. Every batch passes through `_Export._chunks`, the one
loop where something done once per batch in its transaction belongs (`batch_column` reads a column of
either kind of batch).

**Lines rather than cells.** A batch is written by `CsvColumns.write`: one generated function per model
(and per statement, for the driver's rows) makes each row's whole line in one f-string, its cells read and
converted as above, then `CsvWriter.write_lines` checks the batch's lines at once for what would need
quotes (a delimiter inside a cell, a double quote, a line break): where nothing does, the lines are the
csv writer's text, and a line where something does is written by the csv writer from the row's cells. An
instant in UTC is written from its date's and time's ISO forms. About 40 % less CPU per row than the
cells through the csv writer (`docs/performance.md`); `tests/core/test_csv.py` compares the two
writers' bytes for any values (hypothesis) and for every list through the API.

**Stats** (small, in memory): `csv_rows_response(columns, rows, sep)`; `flatten` turns nested breakdowns
into `parent_child` keys. A stats route declares `sep: SepQuery = Separator.comma` and answers
`csv_rows_response(...)` when `scope_accepts_csv(request.scope["headers"])`."""

from __future__ import annotations

import csv
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from enum import Enum
from types import SimpleNamespace, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import orjson
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from app.core.audit import Journal, journal_batch, record_read
from app.core.direct import DriverRows
from app.core.media import CSV_MEDIA_TYPE, Separator
from app.core.pagination import PageRequest, Records
from app.core.responses import page_response
from app.db import UTCDateTime, detach_session, end_detached

BATCH_ROWS = 1000
"""Rows read per statement while streaming: large enough that the statements' own cost is small, small
enough that one batch's rows are a few hundred kilobytes."""
BOM = "\ufeff"
LIST_SEPARATOR = "|"
# OWASP's list: the characters a spreadsheet may read as the start of a formula.
_FORMULA_STARTS = frozenset("=+-@\t\r")
VARY = "Accept"

PageFetch = Callable[[AsyncSession, PageRequest], Awaitable[tuple[Sequence[Any], str | None, int | None]]]
"""A route's page function: `(session, page) -> (rows, next_cursor, total)` (the services' list functions)."""
BatchFetch = Callable[[AsyncSession, str | None], Awaitable[tuple[Sequence[Any], str | None]]]
"""The rows after a cursor (None: from the start) and the cursor after them, None after the last."""


def neutralise(text: str) -> str:
    """A text cell a spreadsheet will not read as a formula (OWASP: prefix `'`)."""
    return "'" + text if text and text[0] in _FORMULA_STARTS else text


def _text(value: Any) -> Any:
    if value is None:
        return None
    text = value if type(value) is str else value.value if isinstance(value, Enum) else str(value)
    return "'" + text if text and text[0] in _FORMULA_STARTS else text


def _boolean(value: Any) -> Any:
    return None if value is None else "true" if value else "false"


def _instant(value: Any) -> Any:
    if value is None:
        return None
    text: str = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _date(value: Any) -> Any:
    return None if value is None else value.isoformat()


def _json(value: Any) -> Any:
    if value is None:
        return None
    return neutralise(orjson.dumps(value, default=str, option=orjson.OPT_UTC_Z).decode())


def _plain(value: Any) -> Any:
    # csv writes None as an empty field and numbers and UUIDs with str(): JSON's own forms.
    return value


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The annotation without `Annotated` and `| None`; whether it was optional."""
    optional = False
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            args = [arg for arg in get_args(annotation) if arg is not type(None)]
            optional = optional or len(args) < len(get_args(annotation))
            if len(args) != 1:
                return Any, optional
            annotation = args[0]
        else:
            return annotation, optional


def _scalar_converter(annotation: Any) -> Callable[[Any], Any] | None:
    """The converter of a scalar type, None when the type is not a scalar."""
    if not isinstance(annotation, type):
        origin = get_origin(annotation)
        if origin is Literal:
            return _text
        # `Any`: converted by the value's own type.
        return _cell if origin is None else None
    if issubclass(annotation, bool):
        return _boolean
    if issubclass(annotation, Enum) or issubclass(annotation, str):
        return _text
    if issubclass(annotation, int | float | uuid.UUID):
        return _plain
    if issubclass(annotation, datetime):
        return _instant
    if issubclass(annotation, date):
        return _date
    if issubclass(annotation, BaseModel | list | dict | tuple | set | frozenset):
        return None
    return _text


def _joined(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def join(values: Any) -> Any:
        if values is None:
            return None
        return neutralise(LIST_SEPARATOR.join("" if v is None else str(_element(convert, v)) for v in values))

    if convert is _text:
        _JOINED_TEXTS[join] = _joined_texts(join)
    return join


# The `_joined` of text values, and its shortcut for a list of strings (a JSON list: `themes`).
_JOINED_TEXTS: dict[Callable[[Any], Any], Callable[[Any], Any]] = {}


def _joined_texts(join: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def join_texts(values: Any) -> Any:
        if values is None:
            return None
        try:
            # Strings only (a str enum's member is its value): what `join` writes, without a call per value.
            text = LIST_SEPARATOR.join(values)
        except TypeError:
            return join(values)
        return "'" + text if text and text[0] in _FORMULA_STARTS else text

    return join_texts


def _element(convert: Callable[[Any], Any], value: Any) -> Any:
    # Inside a list a value is not neutralised on its own: the joined cell is.
    if convert is _text:
        return value.value if isinstance(value, Enum) else value
    return convert(value)


@dataclass(frozen=True)
class Column:
    name: str
    path: tuple[str, ...]
    convert: Callable[[Any], Any]


def model_columns(model: type[BaseModel]) -> list[Column]:
    """The CSV columns of a read model (see the module's docstring)."""
    columns: list[Column] = []
    _walk(model, (), columns)
    return columns


def _walk(model: type[BaseModel], path: tuple[str, ...], columns: list[Column]) -> None:
    for name, field in model.model_fields.items():
        here = (*path, name)
        annotation, _optional = _unwrap(field.annotation)
        origin = get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            _walk(annotation, here, columns)
            continue
        if origin is dict:
            key, value = (_unwrap(arg)[0] for arg in get_args(annotation))
            convert = _scalar_converter(value)
            if isinstance(key, type) and issubclass(key, Enum) and convert is not None:
                for member in key:
                    columns.append(
                        Column("_".join((*here, str(member.value))), (*here, member.value), convert)
                    )
                continue
        if origin in (list, tuple, set, frozenset):
            args = get_args(annotation)
            element = _scalar_converter(_unwrap(args[0])[0]) if args else None
            if element is not None:
                columns.append(Column("_".join(here), here, _joined(element)))
                continue
        convert = _scalar_converter(annotation)
        columns.append(Column("_".join(here), here, convert if convert is not None else _json))


class CsvColumns:
    """A read model's columns and a fast function from one row (a dict of the model's fields, nested
    objects as dicts, as the repositories' column reads give them; or an object of the model, or one
    that `model.model_validate` reads) to its cells."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model
        self.columns = model_columns(model)
        self.header = [column.name for column in self.columns]
        self._cells = _compile_cells(self.columns)
        self._by_shape: dict[Hashable, Callable[[Any], list[Any]]] = {}
        self._lines: dict[Hashable, Callable[[Any], str] | None] = {}
        self._dict_lines: dict[str, Callable[[Any], str] | None] = {}

    def cells(self, row: Any) -> list[Any]:
        if type(row) is not dict:
            row = self._as_dict(row)
        return self._cells(row)

    def _as_dict(self, row: Any) -> dict[str, Any]:
        if isinstance(row, Mapping):
            return dict(row)
        item: BaseModel = row if isinstance(row, self.model) else self.model.model_validate(row)
        return item.model_dump()

    def rows(self, rows: Iterable[Any]) -> Iterable[list[Any]]:
        if isinstance(rows, Records) and rows.untouched:
            return map(self._driver_cells(rows.driver), rows.driver.rows)
        cells = self._cells
        return (cells(row) if type(row) is dict else self.cells(row) for row in rows)

    def write(self, writer: CsvWriter, rows: Iterable[Any]) -> None:
        """The rows' lines written to `writer`, each made by one function from the row to its line
        (`CsvWriter.write_lines`): the bytes of `writer.write(self.rows(rows))`, for about 60 % of its
        CPU time."""
        delimiter = writer.delimiter
        if isinstance(rows, Records) and rows.untouched:
            driver = rows.driver
            line = self._driver_line(driver, delimiter)
            if line is not None:
                writer.write_lines(driver.rows, line, self._driver_cells(driver), len(self.columns))
                return
        else:
            dicts = [row if type(row) is dict else self._as_dict(row) for row in rows]
            if delimiter not in self._dict_lines:
                self._dict_lines[delimiter] = _compile_line(self.columns, delimiter)
            line = self._dict_lines[delimiter]
            if line is not None:
                writer.write_lines(dicts, line, self._cells, len(self.columns))
                return
            rows = dicts
        writer.write(self.rows(rows))

    def _driver_line(self, driver: DriverRows, delimiter: str) -> Callable[[Any], str] | None:
        """`_driver_cells`'s line function (`_compile_line`)."""
        key = (driver.names, driver.processors, delimiter)
        if key not in self._lines:
            top, namespace, raw = self._driver_reads(driver)
            if len(self._lines) >= _SHAPES:
                self._lines.clear()
            self._lines[key] = _compile_line(self.columns, delimiter, top, namespace, raw)
        return self._lines[key]

    def _driver_cells(self, driver: DriverRows) -> Callable[[Any], list[Any]]:
        """The cells of a row as the driver returns it: its values read by position, each converted by the
        engine's processor (`driver.processors`) where it has one, then as a dict's would be."""
        key = (driver.names, driver.processors)
        found = self._by_shape.get(key)
        if found is None:
            top, namespace, _raw = self._driver_reads(driver)
            found = _compile_cells(self.columns, top, namespace)
            if len(self._by_shape) >= _SHAPES:
                self._by_shape.clear()
            self._by_shape[key] = found
        return found

    def _driver_reads(
        self, driver: DriverRows
    ) -> tuple[Callable[[str], str], dict[str, Any], Callable[[str], bool]]:
        """How a generated function reads a field of the model in a driver's row: by position, through the
        engine's processor; the names those reads use; and whether a field's value is the driver's own,
        without a processor (of its codecs' exact types: `int`, `float`, `str`, its UUID, orjson's values)."""
        positions = {name: index for index, name in enumerate(driver.names)}
        processors = dict(driver.processors)
        namespace: dict[str, Any] = {"_datetime": datetime, "_UTC": UTC}

        def top(name: str) -> str:
            index = positions.get(name)
            if index is None:
                # Not selected: the dict of the row would not have it either (`dict.get` → None).
                return "None"
            processor = processors.get(index)
            if processor is None:
                return f"row[{index}]"
            namespace[f"_p{index}"] = processor
            type_ = driver.types.get(index)
            if isinstance(type_, UTCDateTime) and type_.keeps_utc_as_is(driver.dialect):
                # An instant in UTC as the driver gives it is what the processor would give back.
                return (
                    f"(_w if type(_w := row[{index}]) is _datetime and _w.tzinfo is _UTC else _p{index}(_w))"
                )
            return f"_p{index}(row[{index}])"

        def raw(name: str) -> bool:
            index = positions.get(name)
            return index is not None and index not in processors

        return top, namespace, raw


_EMPTY: dict[str, Any] = {}
# Statements (their result columns and processors) a model's CSV cells are compiled for, at most.
_SHAPES = 64


def _dict_value(name: str) -> str:
    return f"row.get({name!r})"


def _cell_code(
    columns: Sequence[Column],
    top: Callable[[str], str] = _dict_value,
    namespace: dict[str, Any] | None = None,
    *,
    fields: bool = False,
    raw: Callable[[str], bool] = lambda _name: False,
) -> tuple[list[str], list[str], dict[str, Any]]:
    """The source of a function of `row` that reads every cell with no loop over the columns: the lines
    that read the nested objects once per row (`None` → `_EMPTY`), one expression per cell (its value as
    the column's converter gives it), and the names they use. With `fields`, each cell is instead an
    f-string's replacement field, `{...}`, that writes it as the csv writer writes a cell it does not quote
    (`None` → empty, a string's characters as they are, a subclass's too, anything else `str()`). `top`
    gives the expression of a field of the model in the row (a dict's `row.get(name)` by default), with what
    it needs in `namespace`; `raw`, whether a field's values (those inside it too) are of exact types, no
    subclass of `str` among them."""
    # `top` adds what its expressions name to `namespace` as the function is written.
    namespace = {} if namespace is None else namespace
    namespace["_EMPTY"] = _EMPTY
    lines: list[str] = []
    parents: dict[tuple[str, ...], str] = {}

    def parent(path: tuple[str, ...]) -> str:
        if path not in parents:
            value = top(path[0]) if len(path) == 1 else f"{parent(path[:-1])}.get({path[-1]!r})"
            name = f"_n{len(parents)}"
            lines.append(f"    {name} = {value} or _EMPTY")
            parents[path] = name
        return parents[path]

    namespace["_FORMULA_STARTS"] = _FORMULA_STARTS
    namespace["_text"] = _text
    namespace["_instant"] = _instant
    namespace["_str"] = str.__str__
    namespace["_datetime"] = datetime
    namespace["_UTC"] = UTC
    cells = []
    for index, column in enumerate(columns):
        if len(column.path) == 1:
            read = top(column.path[0])
        else:
            read = f"{parent(column.path[:-1])}.get({column.path[-1]!r})"
        # The common cases inline (a call per cell is a good part of an export's cost), the same values as
        # the converters give. An empty cell is `None` in a list for the csv writer, `''` in a line.
        empty = "''" if fields else "None"
        if column.convert is _plain and fields and raw(column.path[0]):
            # Numbers and UUIDs of the driver's types: the csv writer writes them with `str()`, as `!s` does.
            cell = f"'' if (_v := {read}) is None else _v!s"
        elif column.convert is _plain and fields:
            # The csv writer writes a subclass of `str` as its characters, not its `str()`.
            cell = f"'' if (_v := {read}) is None else _str(_v) if isinstance(_v, str) else _v!s"
        elif column.convert is _plain:
            cell = read
        elif column.convert is _instant:
            # In UTC, its date's and time's ISO forms (`isoformat` on an aware instant costs twice as much);
            # anything else as the converter writes it.
            cell = (
                f"{empty} if (_v := {read}) is None "
                "else f'{_v.date().isoformat()}T{_v.time().isoformat()}Z' "
                "if type(_v) is _datetime and _v.tzinfo is _UTC else _instant(_v)"
            )
        elif column.convert is _boolean:
            cell = f"{empty} if (_v := {read}) is None else 'true' if _v else 'false'"
        elif column.convert is _text:
            cell = (
                f"_v if type(_v := {read}) is str and not (_v and _v[0] in _FORMULA_STARTS) "
                f"else {empty} if _v is None else _text(_v)"
            )
        else:
            namespace[f"_c{index}"] = _JOINED_TEXTS.get(column.convert, column.convert)
            cell = (
                f"'' if (_v := _c{index}({read})) is None else _str(_v) if isinstance(_v, str) else _v!s"
                if fields
                else f"_c{index}({read})"
            )
        cells.append("{" + cell + "}" if fields else "(" + cell + ")")
    return lines, cells, namespace


def _compile_cells(
    columns: Sequence[Column],
    top: Callable[[str], str] = _dict_value,
    namespace: dict[str, Any] | None = None,
) -> Callable[[Any], list[Any]]:
    """One function per model from a row to the list of its cells (`_cell_code`), as the csv writer takes
    them: the cost of an export is mostly this, once per row."""
    lines, cells, namespace = _cell_code(columns, top, namespace)
    source = "\n".join(["def cells(row):", *lines, "    return [" + ", ".join(cells) + "]"])
    exec(source, namespace)
    function: Callable[[Any], list[Any]] = namespace["cells"]
    return function


def _compile_line(
    columns: Sequence[Column],
    delimiter: str,
    top: Callable[[str], str] = _dict_value,
    namespace: dict[str, Any] | None = None,
    raw: Callable[[str], bool] = lambda _name: False,
) -> Callable[[Any], str] | None:
    """One function per model from a row to its line without the line's end: its cells as
    `_compile_cells` reads them, each written as the csv writer writes a cell that needs no quotes
    (`_cell_code`'s fields), joined by `delimiter`, in one f-string. Whether a line's cells needed quotes
    is `CsvWriter.write_lines`'s to check. None where an f-string cannot hold the expressions (a field's
    name with a quote or a backslash) or for a single column (whose empty cell the csv writer quotes)."""
    lines, cells, namespace = _cell_code(columns, top, namespace, fields=True, raw=raw)
    body = delimiter.join(cells)
    if len(cells) < 2 or any(c in body for c in '"\\') or delimiter in "{}":
        return None
    source = "\n".join(["def line(row):", *lines, f'    return f"{body}"'])
    exec(source, namespace)
    function: Callable[[Any], str] = namespace["line"]
    return function


_COLUMNS: dict[type[BaseModel], CsvColumns] = {}


def columns_of(model: type[BaseModel]) -> CsvColumns:
    """The model's columns, built once."""
    found = _COLUMNS.get(model)
    if found is None:
        found = _COLUMNS[model] = CsvColumns(model)
    return found


class CsvWriter:
    """Rows to UTF-8 bytes, one chunk at a time (stdlib `csv`, RFC 4180: CRLF, minimal quoting).

    What is written waits in a list of strings, joined once per chunk (an `io.StringIO` would copy a batch
    of text that is not ASCII into a buffer of 4 bytes per character when emptied)."""

    def __init__(self, sep: Separator) -> None:
        self.sep = sep
        self.delimiter = ";" if sep is Separator.semicolon else ","
        self._parts: list[str] = []
        self._writer = csv.writer(
            SimpleNamespace(write=self._parts.append),
            delimiter=self.delimiter,
            quotechar='"',
            doublequote=True,
            lineterminator="\r\n",
            quoting=csv.QUOTE_MINIMAL,
        )

    def start(self, header: Sequence[str]) -> None:
        if self.sep is Separator.semicolon:
            self._parts.append(BOM)
        self._writer.writerow(header)

    def write(self, rows: Iterable[Sequence[Any]]) -> None:
        self._writer.writerows(rows)

    def write_lines(
        self,
        rows: Sequence[Any],
        line: Callable[[Any], str],
        cells: Callable[[Any], Sequence[Any]],
        width: int,
    ) -> None:
        """`rows` written as `write(map(cells, rows))` writes them, from `line(row)` (`_compile_line`: the
        row's `width` cells joined by the delimiter, none quoted) wherever that is the same text: where no
        cell holds the delimiter, a double quote or a line break, the characters that make the csv writer
        quote a cell. The check looks for them in the batch's lines at once (a line holds `width - 1`
        delimiters of its own); a batch where it fails is checked line by line, and a line with such a cell
        is written by the csv writer from `cells(row)`."""
        if not rows:
            return
        lines = list(map(line, rows))
        cells_only = "".join(lines)
        delimiter = self.delimiter
        if (
            cells_only.count(delimiter) == len(lines) * (width - 1)
            and '"' not in cells_only
            and "\n" not in cells_only
            and "\r" not in cells_only
        ):
            lines.append("")  # the last line's end
            self._parts.append("\r\n".join(lines))
            return
        for row, text in zip(rows, lines, strict=True):
            if (
                text.count(delimiter) == width - 1
                and '"' not in text
                and "\n" not in text
                and "\r" not in text
            ):
                self._parts.append(text + "\r\n")
            else:
                self._writer.writerow(cells(row))

    def chunk(self) -> bytes:
        """What was written since the last chunk."""
        data = "".join(self._parts).encode()
        self._parts.clear()
        return data


def _headers(request: Request | None, name: str | None) -> dict[str, str]:
    if name is None and request is not None:
        route_name = getattr(request.scope.get("route"), "name", None) or "export"
        name = route_name.removesuffix("_list")
    return {"Content-Disposition": f'attachment; filename="{name or "export"}.csv"', "Vary": VARY}


def csv_rows_response(
    columns: Sequence[str],
    rows: Iterable[Mapping[str, Any] | Sequence[Any]],
    sep: Separator = Separator.comma,
    *,
    filename: str = "export",
) -> Response:
    """A small table in memory (a stats answer) as CSV: `columns` is the header; a row is a mapping (by
    column name; a missing key is an empty cell; nested mappings are flattened first with `flatten`) or
    a sequence in the columns' order. Cells are converted by their value's type as in `model_columns`:
    text neutralised, numbers as they are, `true`/`false`, `null` empty, instants with `Z`.

    A stats route answers it beside its JSON:

        async def stats_workshops(request: Request, ..., sep: SepQuery = Separator.comma) -> Response:
            answer = await service.workshop_stats(...)
            if scope_accepts_csv(request.scope["headers"]):
                rows = [flatten(item) for item in answer["items"]] + [{"theme": "total", **flatten(...)}]
                return csv_rows_response(columns, rows, sep, filename="stats-workshops")
            ...

    with `responses=csv_header_responses(columns) | problem_responses(...)` documenting `text/csv`."""
    return Response(
        csv_rows(columns, rows, sep),
        media_type=CSV_MEDIA_TYPE,
        headers=_headers(None, filename),
    )


def csv_rows(
    columns: Sequence[str],
    rows: Iterable[Mapping[str, Any] | Sequence[Any]],
    sep: Separator = Separator.comma,
) -> bytes:
    """The bytes of `csv_rows_response` (also written to files by the open-data export)."""
    writer = CsvWriter(sep)
    writer.start(columns)
    writer.write(
        [_cell(value) for value in (_in_order(row, columns) if isinstance(row, Mapping) else row)]
        for row in rows
    )
    return writer.chunk()


def _in_order(row: Mapping[str, Any], columns: Sequence[str]) -> list[Any]:
    flat = flatten(row)
    return [flat.get(column) for column in columns]


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return _boolean(value)
    if isinstance(value, int | float | uuid.UUID):
        return value
    if isinstance(value, datetime):
        return _instant(value)
    if isinstance(value, date):
        return _date(value)
    if isinstance(value, list | tuple):
        return neutralise(LIST_SEPARATOR.join("" if v is None else str(_cell(v)) for v in value))
    if isinstance(value, dict):
        return _json(value)
    return _text(value)


def flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as `parent_child` keys: `{"age_brackets": {"moins_de_12": 3}}` →
    `{"age_brackets_moins_de_12": 3}`."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}_"))
        else:
            flat[name] = value.value if isinstance(value, Enum) else value
    return flat


def csv_model_response(
    request: Request,
    model: type[BaseModel],
    items: Iterable[Any],
    sep: Separator,
    *,
    filename: str | None = None,
) -> Response:
    """A list held in memory (a reference list) as CSV, with the columns of its read model."""
    columns = columns_of(model)
    writer = CsvWriter(sep)
    writer.start(columns.header)
    columns.write(writer, items)
    return Response(writer.chunk(), media_type=CSV_MEDIA_TYPE, headers=_headers(request, filename))


def batch_column(rows: Sequence[Any], name: str) -> list[Any]:
    """One column of a streamed export's batch (the ids of the people it returns, for instance), whatever
    the batch holds: the driver's rows (`Records`, read without making dicts, so that the batch is still
    written from them), dicts, or objects."""
    if isinstance(rows, Records):
        return rows.column(name)
    return [row.get(name) if isinstance(row, Mapping) else getattr(row, name, None) for row in rows]


class CsvExportFailed(Exception):
    """The database failed in the middle of a streamed export: the answer ends there, incomplete."""


class _Export:
    """One streamed export: the detached session, the batches, and whether a statement is under way (a
    stream stopped then leaves the connection in doubt)."""

    def __init__(
        self,
        session: AsyncSession,
        fetch: BatchFetch,
        columns: CsvColumns,
        sep: Separator,
        first: tuple[Sequence[Any], str | None],
        journal: Callable[[Sequence[Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.journal = journal
        self.session = session
        self.fetch = fetch
        self.columns = columns
        self.writer = CsvWriter(sep)
        self.first: tuple[Sequence[Any], str | None] | None = first
        self.in_statement = False
        self.ended = False
        self.body = self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        writer, columns = self.writer, self.columns
        writer.start(columns.header)
        assert self.first is not None
        rows, cursor = self.first
        self.first = None
        while True:
            if self.journal is not None:
                # The batch's journal line is committed before the batch is sent (app.core.audit).
                await self.journal(rows)
            columns.write(writer, rows)
            del rows
            yield writer.chunk()
            if cursor is None:
                return
            self.in_statement = True
            try:
                rows, cursor = await self.fetch(self.session, cursor)
            except Exception as error:
                # Logged once, with the request's id and route, by `app.core.middleware` (an answer cut
                # short), with this cause.
                raise CsvExportFailed("the database failed in the middle of a CSV export") from error
            self.in_statement = False

    async def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        try:
            await self.body.aclose()  # type: ignore[attr-defined]
        finally:
            await end_detached(self.session, in_doubt=self.in_statement)


class CsvStreamResponse(StreamingResponse):
    """A CSV export streamed from its detached session, which it ends whatever becomes of the stream."""

    def __init__(self, export: _Export, headers: Mapping[str, str]) -> None:
        super().__init__(export.body, media_type=CSV_MEDIA_TYPE, headers=headers)
        self.export = export

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.export.end()


async def csv_stream_response(
    request: Request,
    session: AsyncSession,
    model: type[BaseModel],
    fetch: BatchFetch,
    start: str | None,
    sep: Separator,
    *,
    filename: str | None = None,
    journal: Journal | None = None,
) -> Response:
    """Every row from the cursor `start` (None: the first) to the last, as CSV with the columns of `model`.

    The first batch is read here, on the request's session, before anything is answered: its errors are
    the route's problems. The session then goes to the response (see the module's docstring). With
    `journal` (rows that show people), each batch's journal line is written and committed, in a
    transaction of its own, before the batch is sent: a person's data never leaves without its line."""
    first = await fetch(session, start)
    write_line = None
    if journal is not None:
        write_batch = journal_batch(request, journal.resource)

        async def write_line(rows: Sequence[Any]) -> None:
            await write_batch(batch_column(rows, journal.subject))

    export = _Export(detach_session(request), fetch, columns_of(model), sep, first, write_line)
    return CsvStreamResponse(export, _headers(request, filename))


async def csv_list_response(
    request: Request,
    session: AsyncSession,
    page: PageRequest,
    model: type[BaseModel],
    fetch: PageFetch,
    journal: Journal | None = None,
) -> Response:
    """A list route's CSV answer: every row its page function gives, from the page's `cursor` (a
    `next_cursor` of the JSON pages: the export starts after it) to the last, in the route's order and
    with its filters; the page's `limit` and `include_total` do not apply."""
    assert page.csv is not None
    batch = replace(page, limit=BATCH_ROWS, include_total=False, cursor=None)

    async def batches(db: AsyncSession, cursor: str | None) -> tuple[Sequence[Any], str | None]:
        rows, next_cursor, _total = await fetch(db, replace(batch, cursor=cursor))
        return rows, next_cursor

    return await csv_stream_response(request, session, model, batches, page.cursor, page.csv, journal=journal)


async def list_response(
    request: Request,
    session: AsyncSession,
    page: PageRequest,
    model: type[BaseModel],
    fetch: PageFetch,
    journal: Journal | None = None,
) -> Response:
    """A list route's answer: the JSON page (`page_response`), or with `Accept: text/csv` the CSV export
    (`csv_list_response`), from the same page function. With `journal` (a list of people, a route marked
    `app.core.audit.journaled`), the page's journal line goes in the request's transaction; the export's,
    batch by batch (`csv_stream_response`)."""
    if page.csv is not None:
        return await csv_list_response(request, session, page, model, fetch, journal)
    rows, next_cursor, total = await fetch(session, page)
    if journal is not None:
        await record_read(session, resource=journal.resource, subject_ids=batch_column(rows, journal.subject))
    return page_response(request, rows, next_cursor, total)


def csv_responses(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entry: the CSV alternative of a list's 200 (Swagger UI then offers it)."""
    return csv_header_responses(columns_of(model).header)


def csv_header_responses(columns: Sequence[str]) -> dict[int | str, dict[str, Any]]:
    """`csv_responses` for a table without a read model (a stats answer): its header as the example."""
    header = ",".join(columns)
    return {
        200: {
            "description": "The page as JSON; with `Accept: text/csv`, every matching item as CSV "
            "(RFC 4180, UTF-8, streamed, no page limit; `sep` chooses the separator).",
            "content": {
                CSV_MEDIA_TYPE: {
                    "schema": {"type": "string"},
                    "example": header + "\r\n",
                }
            },
        }
    }


def vary_accept(response: Response) -> None:
    """A list answer depends on `Accept` (JSON or CSV): shared caches must keep them apart."""
    response.headers["Vary"] = VARY
