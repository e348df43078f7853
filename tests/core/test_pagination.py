"""Keyset pagination: signed cursors bound to the query and the caller, limits, Link headers, totals."""

from __future__ import annotations

import base64
import json
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.core.pagination import Cursors, InvalidCursor, SortKey, parse_uuid
from app.territories.models import Territory
from tests.conftest import KeyMaker, Tree, bearer
from tests.helpers import assert_problem

TERRITORIES = "/api/v1/territories"
KEYS = [SortKey("name", Territory.name_sort), SortKey("id", Territory.id, parse=parse_uuid)]


async def _first_page(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, **params: str
) -> httpx.Response:
    response = await client.get(TERRITORIES, params={"limit": "2", **params}, headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"]
    return response


async def test_pages_walk_the_whole_list_once(client: httpx.AsyncClient, tree: Tree) -> None:
    names: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "4"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get(TERRITORIES, params=params)).json()
        names += [t["name"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    everything = (await client.get(TERRITORIES, params={"limit": "200"})).json()
    assert names == [t["name"] for t in everything["items"]]
    assert len(names) == len(set(names)) == 9


async def test_link_header_points_to_the_next_page(client: httpx.AsyncClient, tree: Tree) -> None:
    response = await _first_page(client, kind="commune")
    cursor = response.json()["next_cursor"]
    link = response.headers["link"]
    assert link.startswith("<")
    assert link.endswith('>; rel="next"')
    url = urlsplit(link[1 : link.index(">")])
    assert url.path == TERRITORIES
    assert parse_qs(url.query) == {"limit": ["2"], "kind": ["commune"], "cursor": [cursor]}

    following = await client.get(link[1 : link.index(">")])
    assert following.status_code == 200
    page = following.json()
    # 4 communes: the second page is the last one.
    assert len(page["items"]) == 2
    assert page["next_cursor"] is None
    assert "link" not in following.headers


async def test_last_page_has_a_null_cursor_and_no_link(client: httpx.AsyncClient, tree: Tree) -> None:
    response = await client.get(TERRITORIES, params={"limit": "9"})
    assert response.json()["next_cursor"] is None
    assert len(response.json()["items"]) == 9
    assert "link" not in response.headers


async def test_total_only_on_request(client: httpx.AsyncClient, tree: Tree) -> None:
    without = await client.get(TERRITORIES, params={"limit": "2"})
    assert "total" not in without.json()
    with_total = await client.get(
        TERRITORIES, params={"limit": "2", "include_total": "true", "kind": "region"}
    )
    assert with_total.json()["total"] == 2
    assert set(with_total.json()) == {"items", "next_cursor", "total"}


@pytest.mark.parametrize("limit", ["0", "201", "-1", "many"])
async def test_limit_out_of_range_is_422(client: httpx.AsyncClient, limit: str) -> None:
    assert_problem(
        await client.get(TERRITORIES, params={"limit": limit}), 422, "validation_error", "/query/limit"
    )


async def test_limit_bounds_are_accepted(client: httpx.AsyncClient, tree: Tree) -> None:
    assert len((await client.get(TERRITORIES, params={"limit": "1"})).json()["items"]) == 1
    assert (await client.get(TERRITORIES, params={"limit": "200"})).status_code == 200


def _flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


async def test_a_tampered_cursor_is_invalid(client: httpx.AsyncClient, tree: Tree) -> None:
    cursor = (await _first_page(client)).json()["next_cursor"]
    body, signature = cursor.split(".")
    tampered = [
        _flip(cursor, len(body) // 2),  # payload changed, signature kept
        f"{body}.{_flip(signature, 3)}",  # signature changed
        body,  # signature dropped
        "garbage",
        "a.b.c",
        "%%%.%%%",
        "é.é",
        cursor + "x",
    ]
    for bad in tampered:
        response = await client.get(TERRITORIES, params={"limit": "2", "cursor": bad})
        problem = assert_problem(response, 422, "invalid_cursor")
        assert "cursor" in problem["detail"]


async def test_a_cursor_is_bound_to_the_filters(client: httpx.AsyncClient, tree: Tree) -> None:
    cursor = (await _first_page(client, kind="commune")).json()["next_cursor"]
    # Another filter value, or the filter dropped: not the same result set.
    for params in ({"kind": "departement"}, {}, {"kind": "commune", "sort": "-name"}):
        response = await client.get(TERRITORIES, params={**params, "cursor": cursor})
        assert_problem(response, 422, "invalid_cursor")
    # The page size may change between pages.
    response = await client.get(TERRITORIES, params={"kind": "commune", "cursor": cursor, "limit": "3"})
    assert response.status_code == 200


async def test_a_cursor_is_bound_to_the_caller(
    client: httpx.AsyncClient, tree: Tree, make_key: KeyMaker
) -> None:
    first, second = await make_key("admin", name="one"), await make_key("admin", name="two")
    cursor = (await _first_page(client, bearer(first))).json()["next_cursor"]
    assert (
        await client.get(TERRITORIES, params={"cursor": cursor}, headers=bearer(first))
    ).status_code == 200
    stolen = await client.get(TERRITORIES, params={"cursor": cursor}, headers=bearer(second))
    assert_problem(stolen, 422, "invalid_cursor")
    anonymous = await client.get(TERRITORIES, params={"cursor": cursor})
    assert_problem(anonymous, 422, "invalid_cursor")


async def test_a_cursor_signed_with_another_secret_is_invalid(client: httpx.AsyncClient, tree: Tree) -> None:
    genuine = (await _first_page(client)).json()["next_cursor"]
    body = genuine.split(".")[0]
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    # Same values and binding, signed with a key the attacker chose.
    forged = Cursors("another-secret").encode(payload["v"], payload["b"])
    assert forged.split(".")[0] == body
    response = await client.get(TERRITORIES, params={"limit": "2", "cursor": forged})
    assert_problem(response, 422, "invalid_cursor")


# --- Cursors, without HTTP ------------------------------------------------------------------------


def test_cursor_round_trip() -> None:
    cursors = Cursors("s3cret")
    row_id = uuid.uuid4()
    cursor = cursors.encode(["lyon", row_id], "binding-1")
    assert "=" not in cursor
    assert "lyon" not in cursor
    assert cursors.decode(cursor, "binding-1", KEYS) == ["lyon", row_id]


def test_cursor_keeps_nulls() -> None:
    cursors = Cursors("s3cret")
    row_id = uuid.uuid4()
    assert cursors.decode(cursors.encode([None, row_id], "b"), "b", KEYS) == [None, row_id]


@pytest.mark.parametrize(
    ("secret", "binding", "keys"),
    [("other", "b", KEYS), ("s3cret", "other-binding", KEYS), ("s3cret", "b", KEYS[:1])],
)
def test_cursor_mismatches_are_invalid(secret: str, binding: str, keys: list[SortKey]) -> None:
    cursor = Cursors("s3cret").encode(["lyon", uuid.uuid4()], "b")
    with pytest.raises(InvalidCursor):
        Cursors(secret).decode(cursor, binding, keys)


def test_a_signed_cursor_with_a_bad_value_is_invalid() -> None:
    cursors = Cursors("s3cret")
    cursor = cursors.encode(["lyon", "not-a-uuid"], "b")
    with pytest.raises(InvalidCursor):
        cursors.decode(cursor, "b", KEYS)
