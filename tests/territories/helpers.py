"""Shared assertions and data builders of the territories tests."""

from __future__ import annotations

import httpx
from stdnum import luhn

BASE = "/api/v1/territories"
READ_FIELDS = {"id", "kind", "code", "name", "parent_id", "population", "created_at", "updated_at", "version"}


def siren(prefix: str) -> str:
    """A Luhn-valid SIREN from its first 8 digits."""
    assert len(prefix) == 8
    return prefix + luhn.calc_check_digit(prefix)


def names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]
