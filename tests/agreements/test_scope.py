"""Who reads agreements and amendments: admin everywhere, managers and viewers in their subtrees."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.agreements.helpers import (
    AGREEMENTS,
    PROGRAMMES,
    agreement_body,
    amend,
    create_programme,
    create_signed,
    merge_patch,
)
from tests.conftest import KeyMaker, Tree, bearer
from tests.helpers import assert_problem, ids


@pytest.fixture
async def world(client: httpx.AsyncClient, admin: dict[str, str], tree: Tree) -> dict[str, Any]:
    programme = await create_programme(client, admin)
    lyon = await create_signed(
        client, admin, programme["id"], tree.lyon_metro.id, reference="L", positions_granted=50
    )
    rhone = await create_signed(
        client, admin, programme["id"], tree.rhone.id, reference="R", positions_granted=15
    )
    amendment = (await amend(client, admin, rhone["id"], "add_positions", 1)).json()
    lyon_amendment = (await amend(client, admin, lyon["id"], "add_positions", 1)).json()
    return {
        "programme": programme,
        "lyon": lyon,
        "rhone": rhone,
        "amendment": amendment,
        "lyon_amendment": lyon_amendment,
    }


@pytest.mark.parametrize("role", ["territory_manager", "viewer"])
async def test_a_rhone_reader_sees_only_the_rhone(
    client: httpx.AsyncClient, make_key: KeyMaker, tree: Tree, world: dict[str, Any], role: str
) -> None:
    reader = bearer(await make_key(role, [tree.rhone]))
    rhone, lyon = world["rhone"]["id"], world["lyon"]["id"]
    assert (await client.get(f"{AGREEMENTS}/{rhone}", headers=reader)).status_code == 200
    assert_problem(await client.get(f"{AGREEMENTS}/{lyon}", headers=reader), 404, "not_found")
    assert ids(await client.get(AGREEMENTS, headers=reader)) == [rhone]
    assert (
        ids(await client.get(AGREEMENTS, params={"territory_id": str(tree.lyon_metro.id)}, headers=reader))
        == []
    )
    assert ids(await client.get(AGREEMENTS, params={"within": str(tree.ara.id)}, headers=reader)) == [rhone]
    assert ids(await client.get(AGREEMENTS, params={"include_total": "true"}, headers=reader)) == [rhone]
    assert (await client.get(AGREEMENTS, params={"include_total": "true"}, headers=reader)).json()[
        "total"
    ] == 1

    assert ids(await client.get(f"{AGREEMENTS}/{rhone}/amendments", headers=reader)) == [
        world["amendment"]["id"]
    ]
    own = await client.get(f"{AGREEMENTS}/{rhone}/amendments/{world['amendment']['id']}", headers=reader)
    assert own.status_code == 200
    assert_problem(await client.get(f"{AGREEMENTS}/{lyon}/amendments", headers=reader), 404, "not_found")
    other = await client.get(
        f"{AGREEMENTS}/{lyon}/amendments/{world['lyon_amendment']['id']}", headers=reader
    )
    assert_problem(other, 404, "not_found")


async def test_a_region_reader_sees_its_descendants(
    client: httpx.AsyncClient, make_key: KeyMaker, tree: Tree, world: dict[str, Any]
) -> None:
    reader = bearer(await make_key("viewer", [tree.ara]))
    assert set(ids(await client.get(AGREEMENTS, headers=reader))) == {
        world["rhone"]["id"],
        world["lyon"]["id"],
    }
    occitanie = bearer(await make_key("viewer", [tree.occ]))
    assert ids(await client.get(AGREEMENTS, headers=occitanie)) == []
    assert_problem(
        await client.get(f"{AGREEMENTS}/{world['rhone']['id']}", headers=occitanie), 404, "not_found"
    )


async def test_a_commune_reader_does_not_see_its_ancestors_agreements(
    client: httpx.AsyncClient, make_key: KeyMaker, tree: Tree, world: dict[str, Any]
) -> None:
    reader = bearer(await make_key("territory_manager", [tree.villefranche]))
    assert ids(await client.get(AGREEMENTS, headers=reader)) == []
    assert_problem(await client.get(f"{AGREEMENTS}/{world['rhone']['id']}", headers=reader), 404, "not_found")


async def test_a_counsellor_may_not_read_agreements(
    client: httpx.AsyncClient, make_key: KeyMaker, tree: Tree, world: dict[str, Any]
) -> None:
    counsellor = bearer(await make_key("counsellor", [tree.rhone]))
    rhone = world["rhone"]["id"]
    for url in (AGREEMENTS, f"{AGREEMENTS}/{rhone}", f"{AGREEMENTS}/{rhone}/amendments"):
        assert_problem(await client.get(url, headers=counsellor), 403, "forbidden")
    assert (
        await client.get(f"{PROGRAMMES}/{world['programme']['id']}", headers=counsellor)
    ).status_code == 200


async def test_agreements_are_not_public(client: httpx.AsyncClient, world: dict[str, Any]) -> None:
    rhone = world["rhone"]["id"]
    for url in (
        AGREEMENTS,
        f"{AGREEMENTS}/{rhone}",
        f"{AGREEMENTS}/{rhone}/amendments",
        f"{AGREEMENTS}/{rhone}/amendments/{world['amendment']['id']}",
    ):
        response = await client.get(url)
        assert_problem(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert (await client.get(f"{PROGRAMMES}/{world['programme']['id']}")).status_code == 200


@pytest.mark.parametrize("role", ["territory_manager", "viewer"])
async def test_only_an_admin_writes_agreements(
    client: httpx.AsyncClient, make_key: KeyMaker, tree: Tree, world: dict[str, Any], role: str
) -> None:
    writer = bearer(await make_key(role, [tree.rhone]))
    rhone = world["rhone"]["id"]
    body = agreement_body(world["programme"]["id"], tree.rhone.id, reference="NEW")
    assert_problem(await client.post(AGREEMENTS, json=body, headers=writer), 403, "forbidden")
    assert_problem(
        await merge_patch(client, writer, f"{AGREEMENTS}/{rhone}", {"positions_granted": 1}), 403, "forbidden"
    )
    sign = await client.post(f"{AGREEMENTS}/{rhone}/sign", json={"signed_on": "2021-03-01"}, headers=writer)
    assert_problem(sign, 403, "forbidden")
    end = await client.post(
        f"{AGREEMENTS}/{rhone}/terminate", json={"terminated_on": "2022-01-01", "reason": "x"}, headers=writer
    )
    assert_problem(end, 403, "forbidden")
    assert_problem(await amend(client, writer, rhone, "add_positions", 1), 403, "forbidden")
    assert_problem(await client.post(AGREEMENTS, json=body), 401, "unauthenticated")
