"""The direct twins of `GET /counsellors/{id}` and `GET /counsellors` answer exactly as their routes do
(`same_answers`, tests/conftest.py): personal data, so every role's 200, 403 and 404, in the route's order."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import KeyMaker, SameAnswers, bearer
from tests.positions.helpers import COUNSELLORS, World, assign, create_counsellor, create_position, day


async def test_one_counsellor(
    client: httpx.AsyncClient, same_answers: SameAnswers, world: World, make_key: KeyMaker
) -> None:
    admin, tree = world.admin, world.tree
    lyon = await create_counsellor(client, admin, tree.lyon_metro.id, external_ref="L-1")
    colleague = await create_counsellor(client, admin, tree.lyon.id, external_ref="L-2")
    rhone = await create_counsellor(client, admin, tree.rhone.id, external_ref="R-1")
    position = await create_position(client, admin, world.lyon["id"])
    await assign(client, admin, position["id"], lyon["id"], started_on=day(-1))
    anonymised = await create_counsellor(client, admin, tree.lyon_metro.id, external_ref="L-3")
    response = await client.post(f"{COUNSELLORS}/{anonymised['id']}/anonymize", headers=admin)
    assert response.status_code == 200, response.text
    own_key = bearer(await make_key("counsellor", [tree.lyon_metro], counsellor_id=uuid.UUID(lyon["id"])))
    # A counsellor key reads its own record even outside the key's territories.
    away_key = bearer(await make_key("counsellor", [tree.toulouse], counsellor_id=uuid.UUID(rhone["id"])))
    url = f"{COUNSELLORS}/{{}}".format

    first = await same_answers(url(lyon["id"]), headers=admin)
    assert first.status_code == 200
    assert first.json()["current_assignment"] is not None
    expected = [
        (admin, lyon["id"], 200),
        (admin, anonymised["id"], 200),
        (world.lyon_manager, lyon["id"], 200),
        (world.lyon_manager, colleague["id"], 200),
        (world.lyon_manager, rhone["id"], 404),
        (world.rhone_manager, rhone["id"], 200),
        (world.lyon_viewer, lyon["id"], 403),
        (world.lyon_viewer, rhone["id"], 404),
        (own_key, lyon["id"], 200),
        (own_key, colleague["id"], 403),
        (own_key, rhone["id"], 404),
        (away_key, rhone["id"], 200),
        (away_key, lyon["id"], 404),
    ]
    for headers, counsellor_id, status in expected:
        answer = await same_answers(url(counsellor_id), headers=headers)
        assert answer.status_code == status, (headers, counsellor_id, answer.text)
    assert (await same_answers(url(uuid.uuid4()), headers=admin)).status_code == 404
    assert (await same_answers(url(uuid.uuid4()), headers=own_key)).status_code == 404
    assert (await same_answers(url(lyon["id"]))).status_code == 401
    assert (await same_answers(url(lyon["id"]), headers=bearer("cnfs_unknown"))).status_code == 401
    assert (await same_answers(url(lyon["id"]), headers={"Authorization": "Bearer"})).status_code == 401
    unknown = await same_answers(url(lyon["id"]), params={"x": "1"}, headers=admin, direct=False)
    assert unknown.status_code == 422
    assert (await same_answers(url(lyon["id"]), params={"x": "1"}, direct=False)).status_code == 422

    etag = first.headers["etag"]
    for headers in (admin, world.lyon_manager, own_key):
        not_modified = await same_answers(url(lyon["id"]), headers={**headers, "If-None-Match": etag})
        assert not_modified.status_code == 304
    await same_answers(url(lyon["id"]), headers={**world.lyon_viewer, "If-None-Match": etag})  # 403
    await same_answers(url(rhone["id"]), headers={**world.lyon_manager, "If-None-Match": etag})  # 404
    await same_answers(url(lyon["id"]), headers={**admin, "If-None-Match": 'W/"1", "99"'})

    # What the route answers itself: ids it refuses (422) or reads otherwise, and `bulk` (405).
    for odd in ("not-a-uuid", lyon["id"].replace("-", ""), lyon["id"].upper(), "bulk"):
        await same_answers(url(odd), headers=admin, direct=None)
    await same_answers(url("bulk"), headers=admin, direct=False)
    await same_answers(url("not-a-uuid"), headers=admin, direct=False)
    await same_answers(url("not-a-uuid"), direct=False)  # 401 first


async def test_the_list_of_counsellors(
    client: httpx.AsyncClient, same_answers: SameAnswers, world: World, make_key: KeyMaker
) -> None:
    admin, tree = world.admin, world.tree
    lyon = await create_counsellor(client, admin, tree.lyon_metro.id, external_ref="L-1")
    await create_counsellor(client, admin, tree.lyon.id, external_ref="L-2")
    await create_counsellor(client, admin, tree.rhone.id, external_ref="R-1")
    position = await create_position(client, admin, world.lyon["id"])
    await assign(client, admin, position["id"], lyon["id"], started_on=day(-1))
    own_key = bearer(await make_key("counsellor", [tree.lyon_metro], counsellor_id=uuid.UUID(lyon["id"])))

    first = await same_answers(COUNSELLORS, params={"limit": 2}, headers=admin)
    assert first.status_code == 200
    body = first.json()
    assert len(body["items"]) == 2
    assert body["next_cursor"]
    assert body["items"][0]["current_assignment"] is not None
    await same_answers(COUNSELLORS, params={"cursor": body["next_cursor"], "limit": 2}, headers=admin)
    scoped = await same_answers(COUNSELLORS, headers=world.lyon_manager)
    assert [c["external_ref"] for c in scoped.json()["items"]] == ["L-1", "L-2"]
    assert (await same_answers(COUNSELLORS, headers=world.rhone_manager)).status_code == 200
    params: dict[str, str] = {"sort": "-updated_at", "include_total": "true", "within": str(tree.lyon.id)}
    assert (await same_answers(COUNSELLORS, params=params, headers=admin)).json()["total"] == 1
    assert (await same_answers(COUNSELLORS, params={"external_ref": "R-1"}, headers=admin)).status_code == 200
    assert (await same_answers(COUNSELLORS, headers=world.lyon_viewer)).status_code == 403
    assert (await same_answers(COUNSELLORS, headers=own_key)).status_code == 403
    assert (await same_answers(COUNSELLORS)).status_code == 401
    assert (
        await same_answers(COUNSELLORS, params={"within": str(uuid.uuid4())}, headers=admin)
    ).status_code == 422
    await same_answers(COUNSELLORS, params={"limit": "0"}, headers=admin, direct=None)
    await same_answers(COUNSELLORS, params={"x": "1"}, headers=admin, direct=False)
