"""Shared assertions and data builders of the territories tests."""

from __future__ import annotations

import re
from typing import Any

import httpx
from stdnum import luhn

BASE = "/api/v1/territories"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "code", "request_id"}
READ_FIELDS = {"id", "kind", "code", "name", "parent_id", "population", "created_at", "updated_at", "version"}
_LINK_NEXT = re.compile(r'^<([^>]+)>;\s*rel="next"$')


def assert_problem(
    response: httpx.Response, status: int, code: str, pointer: str | None = None
) -> dict[str, Any]:
    """An RFC 9457 problem with the contract's extra members; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["type"].endswith("/" + code)
    assert body["title"]
    assert body["detail"]
    assert body["instance"] == response.request.url.path
    assert body["request_id"] == response.headers["x-request-id"]
    if pointer is not None:
        assert body["errors"][0]["pointer"] == pointer, body["errors"]
    return body


def siren(prefix: str) -> str:
    """A Luhn-valid SIREN from its first 8 digits."""
    assert len(prefix) == 8
    return prefix + luhn.calc_check_digit(prefix)


def next_link(response: httpx.Response) -> str | None:
    """The target of the `Link: <...>; rel="next"` header, or None."""
    header = response.headers.get("link")
    if header is None:
        return None
    match = _LINK_NEXT.match(header)
    assert match, header
    return match.group(1)


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]
