"""Keyset pagination with opaque, signed cursors bound to the filters and the caller."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any, Generic, TypeVar, cast, overload
from urllib.parse import parse_qsl

from fastapi import Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Integer, Select, and_, bindparam, func, literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from app.core.direct import DriverRows, driver_rows, prepared
from app.core.internals import LRUCache
from app.core.media import Separator
from app.core.problems import AppError, ValidationFailed

T = TypeVar("T")
DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class InvalidCursor(AppError):
    """The pagination cursor is malformed, altered, or belongs to another query or caller."""

    status, code, title = 422, "invalid_cursor", "Invalid cursor"


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page.", examples=[None]
    )
    total: int | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Number of matching items; present only with `include_total=true`.",
    )


class SortKey:
    """One ORDER BY term. `parse` turns the cursor's JSON value back into the bound Python type, and refuses
    a value of another type (ValueError, answered 422 `invalid_cursor`): a cursor is signed, but its signing
    key may have leaked, and a dict or a naive instant must not reach the database. Without `parse`, it is
    chosen from the expression's type (`parser_for`).

    `expr` may be a mapped attribute (`Territory.name_sort`) or any column expression; SQLAlchemy 2.1's
    typing no longer treats the former as a ColumnElement, so it is resolved here once."""

    __slots__ = ("desc", "expr", "name", "parse")

    def __init__(
        self,
        name: str,
        expr: ColumnElement[Any] | QueryableAttribute[Any],
        desc: bool = False,
        parse: Callable[[Any], Any] | None = None,
    ) -> None:
        self.name = name
        self.expr: ColumnElement[Any] = (
            expr.__clause_element__() if isinstance(expr, QueryableAttribute) else expr
        )
        self.desc = desc
        self.parse = parse or parser_for(self.expr)

    def __repr__(self) -> str:
        return f"SortKey({self.name!r}, desc={self.desc})"

    def ordered(self) -> ColumnElement[Any]:
        return self.expr.desc() if self.desc else self.expr.asc()


def _to_json(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, not {type(value).__name__}")
    return value


def parse_uuid(value: Any) -> uuid.UUID:
    return uuid.UUID(_text(value))


def parse_datetime(value: Any) -> datetime:
    parsed = datetime.fromisoformat(_text(value))
    if parsed.tzinfo is None:
        raise ValueError("naive instant")
    return parsed


def parse_date(value: Any) -> date:
    return date.fromisoformat(_text(value))


def parse_str(value: Any) -> str:
    return _text(value)


_INT64 = 2**63


def parse_int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not -_INT64 <= value < _INT64:
        raise ValueError("expected a 64-bit integer")
    return value


def parser_for(expr: ColumnElement[Any]) -> Callable[[Any], Any]:
    """The parser matching an expression's Python type; a key of another type must name its own."""
    try:
        python_type = expr.type.python_type
    except NotImplementedError:
        python_type = object
    parsers: dict[type, Callable[[Any], Any]] = {str: parse_str, int: parse_int, uuid.UUID: parse_uuid}
    if python_type not in parsers:
        raise TypeError(f"sort key {expr} needs an explicit parse (its type is {python_type.__name__})")
    return parsers[python_type]


class Cursors:
    """Signs and reads cursors; the binding ties a cursor to one query and one caller."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def _sign(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(
            hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]
        ).decode()

    def encode(self, values: Sequence[Any], binding: str) -> str:
        payload = json.dumps(
            {"v": [_to_json(v) for v in values], "b": binding}, separators=(",", ":")
        ).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{body}.{self._sign(payload)}".replace("=", "")

    def decode(self, cursor: str, binding: str, keys: Sequence[SortKey]) -> list[Any]:
        try:
            body, sig = cursor.split(".", 1)
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            expected = self._sign(payload).replace("=", "")
            if not hmac.compare_digest(expected, sig):
                raise ValueError("signature")
            data = json.loads(payload)
            values = data["v"]
            if data["b"] != binding:
                raise InvalidCursor("this cursor belongs to another query (other filters, sort or caller)")
            if not isinstance(values, list) or len(values) != len(keys):
                raise ValueError("shape")
            return [None if v is None else k.parse(v) for k, v in zip(keys, values, strict=True)]
        except InvalidCursor:
            raise
        except Exception as exc:
            raise InvalidCursor("the cursor is malformed or was altered; start again without it") from exc


def binding_for(request: Request, caller: str) -> str:
    """Everything that defines the result set except the page position and size, and the CSV separator
    (a JSON page's cursor also starts a CSV export after it)."""
    return _binding(request.scope["path"], request.scope.get("query_string", b""), caller)


@lru_cache(maxsize=1024)
def _binding(path: str, query_string: bytes, caller: str) -> str:
    # The query parsed as Starlette parses it (`request.query_params`); the same lists of one query string
    # come again and again, so the digest is kept for the latest ones.
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    params = sorted((k, v) for k, v in pairs if k not in ("cursor", "limit", "sep"))
    raw = json.dumps([path, params, caller], separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def keyset_after(keys: Sequence[SortKey], values: Sequence[Any]) -> ColumnElement[bool]:
    """Rows strictly after `values` in the order of `keys` (mixed directions allowed)."""
    if all(k.desc == keys[0].desc for k in keys):
        # A row-value comparison lets both databases seek the (sort, id) index instead of scanning.
        left = tuple_(*(k.expr for k in keys))
        right = tuple_(*(literal(v, k.expr.type) for k, v in zip(keys, values, strict=True)))
        return left < right if keys[0].desc else left > right
    clauses = []
    for i, key in enumerate(keys):
        equal = [keys[j].expr == values[j] for j in range(i)]
        step = key.expr < values[i] if key.desc else key.expr > values[i]
        clauses.append(and_(*equal, step))
    return or_(*clauses)


def parse_sort(
    value: str | None, allowed: Mapping[str, SortKey], default: str, tiebreak: SortKey
) -> list[SortKey]:
    """`sort=name` or `sort=-name`; the id tiebreak keeps the order total."""
    raw = value or default
    desc = raw.startswith("-")
    name = raw[1:] if desc else raw
    if name not in allowed:
        raise ValidationFailed(
            "/query/sort", f"sort by one of: {', '.join(sorted(allowed))} (prefix - to reverse)"
        )
    key = allowed[name]
    chosen = SortKey(key.name, key.expr, desc != key.desc, key.parse)
    return [chosen, SortKey(tiebreak.name, tiebreak.expr, chosen.desc, tiebreak.parse)]


@dataclass
class PageRequest:
    limit: int
    cursor: str | None
    include_total: bool
    binding: str
    cursors: Cursors
    # The CSV separator when the client asked for CSV (`Accept: text/csv`), None for JSON.
    csv: Separator | None = None


def keyset_after_bound(keys: Sequence[SortKey]) -> ColumnElement[bool]:
    """`keyset_after` with the cursor's values given at execution (`_after_0`, `_after_1`, ...)."""
    values = [bindparam(f"_after_{i}", type_=k.expr.type) for i, k in enumerate(keys)]
    if all(k.desc == keys[0].desc for k in keys):
        left = tuple_(*(k.expr for k in keys))
        right = tuple_(*values)
        return left < right if keys[0].desc else left > right
    clauses = []
    for i, key in enumerate(keys):
        equal = [keys[j].expr == values[j] for j in range(i)]
        step = key.expr < values[i] if key.desc else key.expr > values[i]
        clauses.append(and_(*equal, step))
    return or_(*clauses)


# Statement templates of list pages, by the shape their caller names (see `fetch_page`).
_TEMPLATES: LRUCache[Hashable, tuple[Select[Any], Select[Any]]] = LRUCache(1000)
_PAGE_LIMIT = "_page_limit"


def _page_template(
    template: Hashable, build: Callable[[], Select[Any]], keys: Sequence[SortKey], after: bool
) -> tuple[Select[Any], Select[Any]]:
    key = (template, after)
    found = _TEMPLATES.get(key)
    if found is None:
        stmt = build()
        total = prepared(select(func.count()).select_from(stmt.order_by(None).subquery()))
        if after:
            stmt = stmt.where(keyset_after_bound(keys))
        page = stmt.order_by(*(k.ordered() for k in keys)).limit(bindparam(_PAGE_LIMIT, type_=Integer()))
        found = (prepared(page), total)
        _TEMPLATES[key] = found
    return found


async def fetch_page(
    session: AsyncSession,
    stmt: Select[Any] | Callable[[], Select[Any]],
    keys: Sequence[SortKey],
    page: PageRequest,
    *,
    row_values: Callable[[Any], Sequence[Any]],
    scalars: bool = True,
    hidden: Sequence[str] | None = None,
    template: Hashable | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[Sequence[Any], str | None, int | None]:
    """Runs one query for the page (limit + 1 rows) and, when asked, one for the total.

    With `scalars=True` the page holds ORM objects. Otherwise `stmt` selects columns (see
    `app.core.columns.read_columns`) and the page holds dicts ready to serialise: `row_values` reads the
    cursor's values from the row before the `hidden` columns (sort keys the client does not see) are
    dropped.

    A statement template: with `template` (a hashable naming the statement's shape: which filters, which
    sort), `stmt` is a function that builds the statement with every value a bound parameter given in
    `params`; it is called once per shape, and the page's statement (keyset, order, limit) is built once
    too. The statement is then the same object on every request, compiled once
    (`app.core.direct.prepared`)."""
    total = None
    if template is not None:
        page_stmt, total_stmt = _page_template(
            template, stmt if callable(stmt) else lambda: cast(Select[Any], stmt), keys, bool(page.cursor)
        )
        values = dict(params or {})
        values[_PAGE_LIMIT] = page.limit + 1
        if page.cursor:
            decoded = page.cursors.decode(page.cursor, page.binding, keys)
            values.update({f"_after_{i}": v for i, v in enumerate(decoded)})
        if page.include_total:
            total = (await session.execute(total_stmt, params or {})).scalar_one()
        if page.csv is not None and not scalars:
            batch = await _records(session, page_stmt, values, page, row_values, hidden)
            if batch is not None:
                return batch
        result = await _run(session, page_stmt, values, scalars)
    else:
        assert not callable(stmt)
        if page.include_total:
            total = (
                await session.execute(select(func.count()).select_from(stmt.order_by(None).subquery()))
            ).scalar_one()
        if page.cursor:
            stmt = stmt.where(keyset_after(keys, page.cursors.decode(page.cursor, page.binding, keys)))
        stmt = stmt.order_by(*(k.ordered() for k in keys)).limit(page.limit + 1)
        if page.csv is not None and not scalars:
            batch = await _records(session, stmt, None, page, row_values, hidden)
            if batch is not None:
                return batch
        result = await _run(session, stmt, None, scalars)
    rows: list[Any] = list(result.scalars().all() if scalars else result.all())
    next_cursor = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        next_cursor = page.cursors.encode(row_values(rows[-1]), page.binding)
    if not scalars and rows:
        # The row's field names once per page (SQLAlchemy's rows and the direct path's both have them):
        # `Row._asdict` builds them again for every row.
        fields = rows[0]._fields
        rows = [dict(zip(fields, row, strict=False)) for row in rows]
        for name in hidden or ():
            for row in rows:
                del row[name]
    return rows, next_cursor, total


class Records(Sequence[dict[str, Any]]):
    """A CSV batch of a page function (`fetch_page` of a SELECT of columns, `page.csv` set): its rows as
    the driver returned them, which the CSV writer turns into cells without a row object or a dict per row
    (`app.core.csv`).

    Read as a sequence, it is what a page holds otherwise: the dicts of the read model, made on first use
    and kept, so that a service that looks at its page's rows or changes them (a position's current
    assignment filled in, a counsellor's nested training) sees and changes the same dicts as on a JSON
    page, and the CSV writer then writes those (`untouched` is False). Only a batch that its page function
    hands on as it is reaches the writer as the driver's rows: one source of statements, filters and
    rights for both."""

    __slots__ = ("_dicts", "_hidden", "driver")

    def __init__(self, driver: DriverRows, hidden: Sequence[str]) -> None:
        self.driver = driver
        self._hidden = tuple(hidden)
        self._dicts: list[dict[str, Any]] | None = None

    @property
    def untouched(self) -> bool:
        """Whether nobody read the rows as dicts (the driver's rows are then the batch)."""
        return self._dicts is None

    def dicts(self) -> list[dict[str, Any]]:
        if self._dicts is None:
            fields = self.driver.names
            processors = self.driver.processors
            dicts = []
            for raw in self.driver.rows:
                row = list(raw)
                for index, processor in processors:
                    row[index] = processor(row[index])
                dicts.append(dict(zip(fields, row, strict=True)))
            for name in self._hidden:
                for item in dicts:
                    del item[name]
            self._dicts = dicts
        return self._dicts

    def column(self, name: str) -> list[Any]:
        """One column's values, as the dicts would hold them, without making the dicts (an export's
        journal of the people it returned reads the ids of each batch)."""
        if self._dicts is not None:
            return [row.get(name) for row in self._dicts]
        index = self.driver.names.index(name)
        processor = dict(self.driver.processors).get(index)
        values = [raw[index] for raw in self.driver.rows]
        return values if processor is None else [processor(value) for value in values]

    def __len__(self) -> int:
        return len(self.driver.rows)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        return self.dicts()[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.dicts())


async def _records(
    session: AsyncSession,
    stmt: Select[Any],
    values: dict[str, Any] | None,
    page: PageRequest,
    row_values: Callable[[Any], Sequence[Any]],
    hidden: Sequence[str] | None,
) -> tuple[Records, str | None, None] | None:
    """A CSV batch read on the driver (`Records`); None when it must go through the engine (the direct
    path's session, a transaction not begun yet, a statement the driver path does not run)."""
    if not isinstance(session, AsyncSession):
        return None
    driver = await driver_rows(await session.connection(), stmt, values)
    if driver is None:
        return None
    next_cursor = None
    if len(driver.rows) > page.limit:
        driver.rows = driver.rows[: page.limit]
        next_cursor = page.cursors.encode(row_values(driver.processed(driver.rows[-1])), page.binding)
    return Records(driver, hidden or ()), next_cursor, None


async def _run(session: AsyncSession, stmt: Select[Any], values: dict[str, Any] | None, scalars: bool) -> Any:
    """The page's statement. A SELECT of columns runs on the session's connection: the same transaction,
    without the ORM's result loading, which costs a fifth of a long list's rows (a CSV export's); the direct
    path's session runs it as it is."""
    if scalars or not isinstance(session, AsyncSession):
        return await session.execute(stmt, values)
    return await (await session.connection()).execute(stmt, values)


def next_page_url(request: Request, next_cursor: str) -> str:
    """A relative reference (RFC 8288 resolves it against the request's URL), or an absolute one under
    PUBLIC_BASE_URL: never built from the request's Host header, which the client chooses."""
    url = request.url.include_query_params(cursor=next_cursor)
    base = getattr(getattr(request.app.state, "settings", None), "public_base_url", None) or ""
    return f"{base}{url.path}?{url.query}"


def link_header(request: Request, next_cursor: str) -> str:
    return f'<{next_page_url(request, next_cursor)}>; rel="next"'


def set_link_header(request: Request, response: Response, next_cursor: str | None) -> None:
    if next_cursor:
        response.headers["Link"] = link_header(request, next_cursor)
