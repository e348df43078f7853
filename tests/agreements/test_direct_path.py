"""The direct twins of `GET /agreements` and `GET /agreements/{id}` answer exactly as the routes do
(`same_answers`, tests/conftest.py): every role, the filters, pages, 404, 304, and what they hand over."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.agreements.helpers import AGREEMENTS, create_agreement, create_programme, create_signed
from tests.conftest import KeyMaker, SameAnswers, Tree, bearer


@pytest.fixture
async def world(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, make_key: KeyMaker
) -> dict[str, Any]:
    programme = await create_programme(client, admin)
    lyon = await create_signed(
        client, admin, programme["id"], tree.lyon_metro.id, reference="L-1", positions_granted=5
    )
    rhone = await create_signed(
        client, admin, programme["id"], tree.rhone.id, reference="R-1", positions_granted=3
    )
    draft = await create_agreement(
        client, admin, programme["id"], tree.villefranche.id, reference="V-1", kind="preliminary"
    )
    toulouse = await create_signed(
        client, admin, programme["id"], tree.toulouse.id, reference="T-1", positions_granted=2
    )
    return {
        "programme": programme,
        "lyon": lyon,
        "rhone": rhone,
        "draft": draft,
        "toulouse": toulouse,
        "manager": bearer(await make_key("territory_manager", [tree.rhone])),
        "viewer": bearer(await make_key("viewer", [tree.lyon_metro])),
        "counsellor": bearer(await make_key("counsellor", [tree.rhone])),
    }


async def test_one_agreement(same_answers: SameAnswers, admin: dict[str, str], world: dict[str, Any]) -> None:
    lyon, rhone = world["lyon"]["id"], world["rhone"]["id"]
    manager, viewer = world["manager"], world["viewer"]
    url = f"{AGREEMENTS}/{{}}".format

    first = await same_answers(url(lyon), headers=admin)
    assert first.status_code == 200
    assert first.json()["id"] == lyon
    assert (await same_answers(url(rhone), headers=manager)).status_code == 200
    assert (await same_answers(url(world["draft"]["id"]), headers=manager)).status_code == 200
    assert (await same_answers(url(lyon), headers=manager)).status_code == 404  # outside its subtree
    assert (await same_answers(url(lyon), headers=viewer)).status_code == 200
    assert (await same_answers(url(rhone), headers=viewer)).status_code == 404
    assert (await same_answers(url(uuid.uuid4()), headers=admin)).status_code == 404
    assert (await same_answers(url(rhone), headers=world["counsellor"])).status_code == 403
    assert (await same_answers(url(rhone))).status_code == 401  # anonymous
    assert (await same_answers(url(rhone), headers=bearer("cnfs_unknown"))).status_code == 401
    assert (await same_answers(url(rhone), headers={"Authorization": "Basic x"})).status_code == 401
    unknown = await same_answers(url(rhone), params={"x": "1"}, headers=admin)
    assert unknown.status_code == 422
    etag = first.headers["etag"]
    not_modified = await same_answers(url(lyon), headers={**admin, "If-None-Match": etag})
    assert not_modified.status_code == 304
    await same_answers(url(lyon), headers={**admin, "If-None-Match": '"999"'})
    await same_answers(url(lyon), headers={**admin, "If-None-Match": "*"})
    # Ids the route refuses (422), or reads otherwise: the route answers.
    for odd in ("not-a-uuid", lyon.replace("-", ""), lyon.upper(), "{" + lyon + "}"):
        await same_answers(url(odd), headers=admin, direct=None)
    await same_answers(url("not-a-uuid"), headers=world["counsellor"], direct=False)  # 403 first
    await same_answers(url("not-a-uuid"), direct=False)  # 401 first


async def test_agreement_lists(
    same_answers: SameAnswers, admin: dict[str, str], tree: Tree, world: dict[str, Any]
) -> None:
    manager, viewer = world["manager"], world["viewer"]
    everything = await same_answers(AGREEMENTS, headers=admin)
    assert len(everything.json()["items"]) == 4
    assert len((await same_answers(AGREEMENTS, headers=manager)).json()["items"]) == 2
    assert len((await same_answers(AGREEMENTS, headers=viewer)).json()["items"]) == 1
    assert (await same_answers(AGREEMENTS, headers=world["counsellor"])).status_code == 403
    assert (await same_answers(AGREEMENTS)).status_code == 401
    assert (await same_answers(AGREEMENTS, headers=bearer("cnfs_unknown"))).status_code == 401

    page = await same_answers(AGREEMENTS, params={"limit": "1", "include_total": "true"}, headers=admin)
    cursor = page.json()["next_cursor"]
    assert cursor
    assert page.json()["total"] == 4
    assert "link" in page.headers
    following = {"limit": "1", "include_total": "true", "cursor": cursor}
    second = await same_answers(AGREEMENTS, params=following, headers=admin)
    assert second.status_code == 200
    assert second.json()["next_cursor"]
    await same_answers(AGREEMENTS, params={"limit": "1", "cursor": cursor}, headers=admin)  # 422: other set
    await same_answers(AGREEMENTS, params={"limit": "2", "cursor": cursor}, headers=admin)  # other limit
    await same_answers(AGREEMENTS, params={"limit": "1", "cursor": cursor}, headers=manager)  # other caller
    await same_answers(AGREEMENTS, params={"cursor": "garbage"}, headers=admin)
    await same_answers(AGREEMENTS, params={"include_total": "true"}, headers=manager)

    for params in (
        {"programme_id": world["programme"]["id"]},
        {"programme_id": str(uuid.uuid4())},
        {"territory_id": str(tree.rhone.id)},
        {"within": str(tree.ara.id)},
        {"within": str(tree.rhone.id), "status": "draft"},
        {"within": str(uuid.uuid4())},  # 422: no such territory
        {"status": "signed"},
        {"status": "terminated"},
        {"kind": "preliminary"},
        {"kind": "convention", "sort": "-reference"},
        {"sort": "reference"},
        {"sort": "-created_at", "limit": "2"},
        {"sort": "population"},  # 422 from the service
    ):
        await same_answers(AGREEMENTS, params=params, headers=admin)
        await same_answers(AGREEMENTS, params=params, headers=manager)
    await same_answers(AGREEMENTS, params={"within": str(tree.ara.id)}, headers=viewer)
    await same_answers(AGREEMENTS, params={"territory_id": str(tree.rhone.id).upper()}, headers=admin)
    await same_answers(AGREEMENTS, params={"unknown": "1"}, headers=admin)  # 422
    await same_answers(AGREEMENTS, params={"unknown": "1"})  # 422 before the 401

    for params in (
        {"status": "lost"},
        {"kind": "other"},
        {"programme_id": "x"},
        {"territory_id": str(tree.rhone.id).replace("-", "")},
        {"within": "not-a-uuid"},
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "ten"},
        {"include_total": "yes"},
        {"cursor": "x" * 2049},
    ):
        await same_answers(AGREEMENTS, params=params, headers=admin, direct=False)
        await same_answers(AGREEMENTS, params=params, headers=world["counsellor"], direct=False)  # 403
        await same_answers(AGREEMENTS, params=params, direct=False)  # 401
    # Repeated parameters: the last one counts, both ways.
    await same_answers(AGREEMENTS, params=[("status", "draft"), ("status", "signed")], headers=admin)
