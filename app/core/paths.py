"""Subtree tests on materialised paths, written so that each database uses its index.

A path is "/<id>/<id>/.../" of UUIDs: only hex digits, `-` and `/`, so neither LIKE nor GLOB wildcards can
occur in it. PostgreSQL uses LIKE 'prefix%' (the index has text_pattern_ops); SQLite's LIKE ignores case and
skips the index, but GLOB 'prefix*' is case-sensitive and uses it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BindParameter, ColumnElement, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import NullType, String


class PathStartsWith(ColumnElement[bool]):
    # The patterns are bound parameters that take part in traversal, so cached SQL is reused safely.
    # (SQLAlchemy's traversal protocol declares this class-level list; it is never mutated.)
    _traverse_internals = [  # noqa: RUF012
        ("column", InternalTraversal.dp_clauseelement),
        ("like_pattern", InternalTraversal.dp_clauseelement),
        ("glob_pattern", InternalTraversal.dp_clauseelement),
    ]
    inherit_cache = True
    # NullType: a Boolean type would make SQLite render "... GLOB x = 1", which defeats the index.
    type = NullType()  # type: ignore[assignment]

    def __init__(self, column: ColumnElement[str], prefix: str | None, name: str | None = None) -> None:
        self.column = column
        if name is not None:
            # Bound at execution (`prefix_params(name, prefix)`): a statement template for any prefix.
            self.like_pattern: BindParameter[str] = bindparam(f"{name}_like", type_=String())
            self.glob_pattern: BindParameter[str] = bindparam(f"{name}_glob", type_=String())
        else:
            assert prefix is not None
            self.like_pattern = bindparam(None, prefix + "%", unique=True)
            self.glob_pattern = bindparam(None, prefix + "*", unique=True)


@compiles(PathStartsWith)
def _default(element: PathStartsWith, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{compiler.process(element.column, **kw)} LIKE {compiler.process(element.like_pattern, **kw)}"


@compiles(PathStartsWith, "sqlite")
def _sqlite(element: PathStartsWith, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{compiler.process(element.column, **kw)} GLOB {compiler.process(element.glob_pattern, **kw)}"


def path_startswith(column: Any, prefix: str) -> ColumnElement[bool]:
    return PathStartsWith(column, prefix)


def bound_path_startswith(column: Any, name: str) -> ColumnElement[bool]:
    """`path_startswith` whose prefix is given at execution, in the parameters `prefix_params(name, ...)`."""
    return PathStartsWith(column, None, name)


def prefix_params(name: str, prefix: str) -> dict[str, str]:
    return {f"{name}_like": prefix + "%", f"{name}_glob": prefix + "*"}
