"""Reading and validating the open-data files in the tests."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from frictionless import Resource, Schema, validate

from app.opendata import service

CSV_URL = "/api/v1/open-data/lieux-mediation-numerique.csv"
JSON_URL = "/api/v1/open-data/lieux-mediation-numerique.json"
REQUIRED = ("id", "pivot", "nom", "commune", "code_postal", "adresse", "date_maj")


def schema() -> Schema:
    return Schema.from_descriptor(service.schema_descriptor())


def errors_of_csv(content: bytes, tmp_path: Path) -> list[str]:
    """frictionless' report on a CSV file against the standard's schema, one line per error."""
    path = tmp_path / "lieux.csv"
    path.write_bytes(content)
    resource = Resource(
        path=path.name, basepath=str(path.parent), schema=schema(), format="csv", encoding="utf-8"
    )
    report = validate(resource)
    return [error.message for task in report.tasks for error in task.errors] + [
        error.message for error in report.errors
    ]


def errors_of_records(records: list[dict[str, Any]]) -> list[str]:
    """frictionless' report on JSON records, as rows of the standard's columns."""
    names = list(service.field_names())
    rows: list[list[Any]] = [names] + [[record.get(name) for name in names] for record in records]
    report = validate(Resource(data=rows, schema=schema()))
    return [error.message for task in report.tasks for error in task.errors] + [
        error.message for error in report.errors
    ]


def csv_rows(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode("utf-8"), newline="")))
