"""SELECT lists that match read models, so that reads select exactly the columns they return."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from pydantic import BaseModel
from sqlalchemy import ColumnElement, FromClause
from sqlalchemy.types import NullType


class ReadColumns:
    """One labelled column per field of `model`, in the model's order: the table's column of that name, or
    the `computed` expression given for it.

    Built on first use, not at import: a foreign key column declared without a type takes its type from the
    column it refers to only once that table is known, and a label made earlier would keep no type (and
    return raw values, such as SQLite's hex UUIDs)."""

    def __init__(self, model: type[BaseModel], table: FromClause, **computed: Any) -> None:
        self._model = model
        self._table = table
        self._computed = computed

    @cached_property
    def columns(self) -> list[ColumnElement[Any]]:
        columns: list[ColumnElement[Any]] = []
        for name in self._model.model_fields:
            expr = self._computed[name] if name in self._computed else self._table.c[name]
            if isinstance(expr.type, NullType):
                raise TypeError(f"{self._model.__name__}.{name}: the column has no type yet")
            columns.append(expr.label(name))
        return columns
