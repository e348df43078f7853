"""SELECT lists that match read models, so that reads select exactly the columns they return."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import ColumnElement, FromClause


def read_columns(model: type[BaseModel], table: FromClause, **computed: Any) -> list[ColumnElement[Any]]:
    """One labelled column per field of `model`, in the model's order: the table's column of that name, or
    the `computed` expression given for it."""
    columns: list[ColumnElement[Any]] = []
    for name in model.model_fields:
        expr = computed[name] if name in computed else table.c[name]
        columns.append(expr.label(name))
    return columns
