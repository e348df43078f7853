"""ETag, If-Match and If-None-Match on the `version` of mutable resources."""

from __future__ import annotations

import httpx
import pytest
from starlette.requests import Request

from app.core.problems import PreconditionFailed, PreconditionRequired
from app.core.versioning import etag, not_modified, require_if_match
from tests.conftest import Tree
from tests.helpers import assert_problem

TERRITORIES = "/api/v1/territories"


def test_etag_is_the_quoted_version() -> None:
    assert etag(3) == '"3"'


@pytest.mark.parametrize("header", ['"3"', ' "3" ', 'W/"3"', "*", '"1", "3"', '"1","2", "3"', 'W/"2", "3"'])
def test_if_match_accepts_the_current_version(header: str) -> None:
    require_if_match(header, 3)


@pytest.mark.parametrize("header", ['"2"', '"1", "2"', '"03"', 'W/"4"', '"3 "'])
def test_if_match_refuses_other_versions(header: str) -> None:
    with pytest.raises(PreconditionFailed) as raised:
        require_if_match(header, 3)
    assert raised.value.status == 412
    assert raised.value.code == "precondition_failed"
    # The current version is not given away: a client must fetch the object and look at the change.
    assert "3" not in (raised.value.detail or "")
    assert raised.value.extra == {}


@pytest.mark.parametrize("header", ["3", "'3'", '"1", 3'])
def test_an_unquoted_if_match_says_how_to_quote(header: str) -> None:
    with pytest.raises(PreconditionFailed) as raised:
        require_if_match(header, 3)
    assert raised.value.status == 412
    assert 'e.g. "3", not 3' in (raised.value.detail or "")


@pytest.mark.parametrize("header", [None, "", "   "])
def test_if_match_is_required(header: str | None) -> None:
    with pytest.raises(PreconditionRequired) as raised:
        require_if_match(header, 7)
    assert raised.value.status == 428
    assert raised.value.code == "precondition_required"
    assert "If-Match" in (raised.value.detail or "")
    assert "7" not in (raised.value.detail or "")


def _request(if_none_match: str | None) -> Request:
    headers = [] if if_none_match is None else [(b"if-none-match", if_none_match.encode())]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""})


@pytest.mark.parametrize("header", ['"5"', 'W/"5"', "*", '"4", "5"'])
def test_if_none_match_on_the_current_version_is_304(header: str) -> None:
    response = not_modified(_request(header), 5)
    assert response is not None
    assert response.status_code == 304
    assert response.headers["etag"] == '"5"'
    assert response.body == b""


@pytest.mark.parametrize("header", [None, "", '"4"', '"4", "6"'])
def test_if_none_match_on_another_version_is_a_full_answer(header: str | None) -> None:
    assert not_modified(_request(header), 5) is None


async def test_etag_round_trip_over_http(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    url = f"{TERRITORIES}/{tree.lyon.id}"
    first = await client.get(url)
    assert first.status_code == 200
    tag = first.headers["etag"]
    assert tag == f'"{first.json()["version"]}"'

    cached = await client.get(url, headers={"If-None-Match": tag})
    assert cached.status_code == 304
    assert cached.headers["etag"] == tag
    assert cached.content == b""

    body = {"population": 522_000}
    assert_problem(await client.patch(url, json=body, headers=admin), 428, "precondition_required")
    stale = await client.patch(url, json=body, headers={**admin, "If-Match": '"999"'})
    problem = assert_problem(stale, 412, "precondition_failed")
    assert "current_version" not in problem

    changed = await client.patch(url, json=body, headers={**admin, "If-Match": tag})
    assert changed.status_code == 200
    assert changed.headers["etag"] == f'"{first.json()["version"] + 1}"'
    # The old ETag is now stale, for PATCH and for DELETE alike.
    assert_problem(
        await client.patch(url, json=body, headers={**admin, "If-Match": tag}), 412, "precondition_failed"
    )
    assert_problem(await client.delete(url, headers={**admin, "If-Match": tag}), 412, "precondition_failed")
    assert (await client.get(url, headers={"If-None-Match": tag})).status_code == 200
