"""A cursor re-signed with a leaked key is still safe: values of the wrong type are 422 `invalid_cursor`."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from app.core.pagination import Cursors, SortKey, parse_datetime, parse_int, parse_str, parse_uuid
from app.territories.models import Territory
from tests.agreements.helpers import AGREEMENTS, create_agreement, create_programme
from tests.conftest import Tree
from tests.helpers import assert_problem

# The suite's SECRET_KEY (see conftest), standing for a leaked one.
SECRET = "test-secret-" + "x" * 32

NOT_SCALARS: list[Any] = [{"a": 1}, ["x"], True, 1.5]


def wrong_values(original: Any) -> list[Any]:
    """Values of another type than the cursor's own: strings for a number, a naive instant for an instant."""
    if isinstance(original, int):
        return [*NOT_SCALARS, "12", 2**70]
    wrong = [*NOT_SCALARS, 12]
    if len(original) == 36 and original.count("-") == 4:
        wrong.append("not a uuid")
    if "T" in original and original.endswith(("+00:00", "Z")):
        wrong += ["2021-03-01T10:00:00", "not an instant"]
    return wrong


def forge(cursor: str, position: int, value: Any) -> str:
    body = cursor.split(".", 1)[0]
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["v"][position] = value
    payload = json.dumps(data, separators=(",", ":")).encode()
    forged_body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    signature = Cursors(SECRET)._sign(payload).replace("=", "")
    return f"{forged_body}.{signature}"


async def _assert_refused(client: httpx.AsyncClient, url: str, params: dict[str, str], headers: Any) -> None:
    first = await client.get(url, params=params, headers=headers)
    cursor = first.json()["next_cursor"]
    assert cursor, first.text
    values = json.loads(base64.urlsafe_b64decode(cursor.split(".")[0] + "==="))["v"]
    for position, original in enumerate(values):
        for value in wrong_values(original):
            forged = forge(cursor, position, value)
            response = await client.get(url, params={**params, "cursor": forged}, headers=headers)
            assert_problem(response, 422, "invalid_cursor")
    # The forging itself is right: the untouched values go through.
    same = forge(cursor, 0, values[0])
    assert (await client.get(url, params={**params, "cursor": same}, headers=headers)).status_code == 200


@pytest.mark.parametrize(
    "params", [{"limit": "1"}, {"limit": "1", "q": "lyon"}, {"limit": "1", "sort": "-name"}]
)
async def test_territory_cursors(client: httpx.AsyncClient, tree: Tree, params: dict[str, str]) -> None:
    await _assert_refused(client, "/api/v1/territories", params, None)


@pytest.mark.parametrize("sort", ["created_at", "-reference"])
async def test_agreement_cursors(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, sort: str
) -> None:
    programme = await create_programme(client, admin)
    for n, territory in enumerate((tree.lyon_metro, tree.rhone)):
        await create_agreement(client, admin, programme["id"], territory.id, reference=f"CONV-{n}")
    await _assert_refused(client, AGREEMENTS, {"limit": "1", "sort": sort}, admin)


def test_parsers_refuse_other_types() -> None:
    for parse, good in (
        (parse_str, "x"),
        (parse_int, 3),
        (parse_uuid, "019abc3e-5f6a-7b8c-9d0e-1f2a3b4c5d6e"),
    ):
        assert parse(good) is not None
        for bad in ({"a": 1}, [1], None if parse is not parse_str else 1.5, True):
            if bad is not None:
                with pytest.raises(ValueError):
                    parse(bad)
    with pytest.raises(ValueError):
        parse_datetime("2021-03-01T10:00:00")
    assert parse_datetime("2021-03-01T10:00:00+00:00").tzinfo is not None
    assert SortKey("name", Territory.name_sort).parse is parse_str
