"""The direct twins of `GET /agreements` and `GET /agreements/{id}` answer exactly as the routes do
(`same_answers`, tests/conftest.py): every role, the filters, pages, 404, 304, and what they hand over."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from app.core.direct import answer_observers
from tests.agreements.helpers import (
    AGREEMENTS,
    agreement_body,
    create_agreement,
    create_programme,
    create_signed,
    get_programme,
)
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
    unknown = await same_answers(url(rhone), params={"x": "1"}, headers=admin, direct=False)
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
    # Spellings the route accepts are read alike by the twin (the route's own declarations parse them).
    for params in ({"territory_id": str(tree.rhone.id).replace("-", "")}, {"include_total": "yes"}):
        await same_answers(AGREEMENTS, params=params, headers=admin)
    await same_answers(AGREEMENTS, params={"unknown": "1"}, headers=admin, direct=False)  # 422
    await same_answers(AGREEMENTS, params={"unknown": "1"}, direct=False)  # 422 before the 401

    for params in (
        {"status": "lost"},
        {"kind": "other"},
        {"programme_id": "x"},
        {"within": "not-a-uuid"},
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "ten"},
        {"cursor": "x" * 2049},
    ):
        await same_answers(AGREEMENTS, params=params, headers=admin, direct=False)
        await same_answers(AGREEMENTS, params=params, headers=world["counsellor"], direct=False)  # 403
        await same_answers(AGREEMENTS, params=params, direct=False)  # 401
    # Repeated parameters: the last one counts, both ways.
    await same_answers(AGREEMENTS, params=[("status", "draft"), ("status", "signed")], headers=admin)


async def _both(
    client: httpx.AsyncClient, route_client: httpx.AsyncClient, method: str, url: str, **kwargs: Any
) -> tuple[httpx.Response, httpx.Response, list[str]]:
    """The request through the test app (direct path on) then through the route app; and which routes
    the direct path answered itself."""
    seen: list[str] = []
    answer_observers.append(seen.append)
    try:
        direct = await client.request(method, url, **kwargs)
    finally:
        answer_observers.remove(seen.append)
    return direct, await route_client.request(method, url, **kwargs), seen


_VOLATILE = ("id", "reference", "created_at", "updated_at")


def _same(direct: httpx.Response, route: httpx.Response, *volatile: str) -> None:
    assert direct.status_code == route.status_code, (direct.text, route.text)
    a, b = direct.json(), route.json()
    for name in (*volatile, "request_id"):
        a.pop(name, None)
        b.pop(name, None)
    assert a == b
    assert set(direct.headers) == set(route.headers)


async def test_create_and_sign_answer_the_same(
    client: httpx.AsyncClient,
    route_client: httpx.AsyncClient,
    admin: dict[str, str],
    world: dict[str, Any],
    tree: Tree,
) -> None:
    """Each write changes the shared data: a write through each app is compared with the values that must
    differ (ids, references, instants) set aside, and the programme's totals count both."""
    programme_id = world["programme"]["id"]
    before = (await get_programme(client, programme_id))["positions_granted"]

    def body(reference: str, **changes: Any) -> dict[str, Any]:
        return agreement_body(
            programme_id, tree.villeurbanne.id, **{"reference": reference, "positions_granted": 1, **changes}
        )

    seen: list[str] = []
    answer_observers.append(seen.append)
    try:
        created = await client.post(AGREEMENTS, json=body("D-1"), headers=admin)
    finally:
        answer_observers.remove(seen.append)
    assert seen == ["agreements_create"]
    routed = await route_client.post(AGREEMENTS, json=body("D-2"), headers=admin)
    assert created.status_code == 201, created.text
    _same(created, routed, *_VOLATILE)
    assert created.headers["location"] == f"{AGREEMENTS}/{created.json()['id']}"
    assert created.headers["etag"] == routed.headers["etag"] == '"1"'
    for refused in (
        body("D-1"),  # 409 agreement_reference_exists
        {**body("D-3"), "programme_id": str(uuid.uuid4())},  # 422 unknown_reference
        {**body("D-4"), "territory_id": str(uuid.uuid4())},  # 422 unknown_reference
        body("D-5", positions_granted=100_000),  # 409 programme_positions_exceeded
    ):
        direct, route, seen = await _both(
            client, route_client, "POST", AGREEMENTS, json=refused, headers=admin
        )
        _same(direct, route)
        assert direct.status_code in (409, 422), direct.text
        assert seen == ["agreements_create"]
    for headers in (world["manager"], {}, bearer("cnfs_unknown")):  # 403, 401, 401
        direct, route, _ = await _both(
            client, route_client, "POST", AGREEMENTS, json=body("D-6"), headers=headers
        )
        assert direct.status_code in (401, 403)
        _same(direct, route)
    # What the route answers itself: an invalid body, an Idempotency-Key.
    for kwargs in (
        {"json": {**body("D-7"), "positions_granted": -1}, "headers": admin},
        {"content": b"{", "headers": {**admin, "Content-Type": "application/json"}},
        {"json": body("D-8"), "headers": {**admin, "Idempotency-Key": "k-1"}},
    ):
        seen = []
        answer_observers.append(seen.append)
        try:
            await client.post(AGREEMENTS, **kwargs)  # type: ignore[arg-type]
        finally:
            answer_observers.remove(seen.append)
        assert seen == [], kwargs

    sign = {"signed_on": "2026-03-02"}
    first, second = created.json()["id"], routed.json()["id"]
    seen = []
    answer_observers.append(seen.append)
    try:
        signed = await client.post(f"{AGREEMENTS}/{first}/sign", json=sign, headers=admin)
    finally:
        answer_observers.remove(seen.append)
    assert seen == ["agreements_sign"]
    signed_routed = await route_client.post(f"{AGREEMENTS}/{second}/sign", json=sign, headers=admin)
    assert signed.status_code == 200, signed.text
    _same(signed, signed_routed, *_VOLATILE)
    assert signed.json()["status"] == "signed"
    assert signed.headers["etag"] == '"2"'
    # Signed again, a stale If-Match, an unknown agreement, a manager's key, no key: the same problems.
    for url, headers in (
        (f"{AGREEMENTS}/{first}/sign", admin),
        (f"{AGREEMENTS}/{world['draft']['id']}/sign", {**admin, "If-Match": '"7"'}),
        (f"{AGREEMENTS}/{uuid.uuid4()}/sign", admin),
        (f"{AGREEMENTS}/{world['draft']['id']}/sign", world["manager"]),
        (f"{AGREEMENTS}/{world['draft']['id']}/sign", {}),
    ):
        direct, route, _ = await _both(client, route_client, "POST", url, json=sign, headers=headers)
        assert direct.status_code in (401, 403, 404, 409, 412), direct.text
        _same(direct, route)
    # The programme counts the drafts of both paths (and the one with an Idempotency-Key).
    assert (await get_programme(client, programme_id))["positions_granted"] == before + 3
