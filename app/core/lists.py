"""`column IN (values)` for long lists of text, with the whole list in one bound parameter.

An expanding IN renders and binds one placeholder per value on every execution, and PostgreSQL plans each
list length anew: for the HR bulk's thousand references, that costs more than reading the rows. Here the
list is one parameter: a text array on PostgreSQL (`= ANY($1::VARCHAR[])`), a JSON array on SQLite
(`IN (SELECT value FROM json_each(?))`); both use the column's index, and the statement is the same
whatever the number of values."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, bindparam
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import Boolean, String, TypeDecorator, TypeEngine


class TextList(TypeDecorator[list[str]]):
    """A list of strings bound as one value: a PostgreSQL array, elsewhere a JSON array."""

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(String()))
        return dialect.type_descriptor(String())

    def process_bind_param(self, value: list[str] | None, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return json.dumps(value)


class TextIn(ColumnElement[bool]):
    # The values are a bound parameter that takes part in traversal, so cached SQL is reused safely.
    # (SQLAlchemy's traversal protocol declares this class-level list; it is never mutated.)
    _traverse_internals = [  # noqa: RUF012
        ("column", InternalTraversal.dp_clauseelement),
        ("values", InternalTraversal.dp_clauseelement),
    ]
    inherit_cache = True
    type = Boolean()

    def __init__(self, column: ColumnElement[Any], values: Iterable[str]) -> None:
        self.column = column
        self.values: BindParameter[list[str]] = bindparam(None, list(values), type_=TextList(), unique=True)


@compiles(TextIn)
def _default(element: TextIn, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    return f"{column} IN (SELECT value FROM json_each({compiler.process(element.values, **kw)}))"


@compiles(TextIn, "postgresql")
def _postgresql(element: TextIn, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{compiler.process(element.column, **kw)} = ANY({compiler.process(element.values, **kw)})"


def text_in(column: Any, values: Iterable[str]) -> ColumnElement[bool]:
    """`column IN values` (text values), the values bound as one parameter."""
    return TextIn(column, values)
