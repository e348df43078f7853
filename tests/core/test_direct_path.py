"""The direct path (app/core/direct.py) answers exactly as the FastAPI routes do.

Every request below goes to two apps on the same test transaction: the test app (direct path on) and one
with `direct_path=False`, and the answers must be the same: status, headers (but the request id) and body.
The requests cover what the direct handlers answer themselves (the common case) and what they hand over to
the route (invalid or unusual parameters, a bad key). Domains add their own requests in
`tests/<domain>/test_direct_path.py` with the `same_answers` fixture (tests/conftest.py)."""

from __future__ import annotations

import uuid

from tests.conftest import KeyMaker, SameAnswers, Tree, bearer


async def test_territories_answer_the_same(same_answers: SameAnswers, tree: Tree, make_key: KeyMaker) -> None:
    scoped = bearer(await make_key("territory_manager", [tree.rhone]))
    base = "/api/v1/territories"
    await same_answers(f"{base}/departement/69")
    await same_answers(f"{base}/commune/69123", headers=scoped)
    await same_answers(f"{base}/commune/99999")  # 404
    await same_answers(f"{base}/commune/6912")  # not a commune code: 404
    await same_answers(f"{base}/planet/69", direct=False)  # not a kind: the route's 422
    await same_answers(f"{base}/departement/{'9' * 17}", direct=False)  # too long
    await same_answers(f"{base}/departement/69", params={"x": "1"}, direct=False)  # unknown: the route's 422
    await same_answers(f"{base}/departement/69", headers=bearer("cnfs_unknown"))  # 401
    await same_answers(f"{base}/departement/69", headers={"Authorization": "Basic x"})  # 401
    first = await same_answers(f"{base}/departement/69")
    await same_answers(f"{base}/departement/69", headers={"If-None-Match": first.headers["etag"]})  # 304

    await same_answers(base)
    await same_answers(base, params={"kind": "commune", "limit": "2"})
    page = await same_answers(base, params={"kind": "commune", "limit": "2", "include_total": "true"})
    cursor = page.json()["next_cursor"]
    assert cursor
    await same_answers(base, params={"kind": "commune", "limit": "2", "cursor": cursor})
    await same_answers(base, params={"kind": "commune", "limit": "3", "cursor": cursor})  # 422 invalid_cursor
    await same_answers(base, params={"kind": "commune", "limit": "2", "cursor": "garbage"})
    await same_answers(base, params={"within": str(tree.rhone.id)})
    await same_answers(base, params={"within": str(uuid.uuid4())})  # 422 unknown territory
    await same_answers(base, params={"parent_id": str(tree.lyon_metro.id), "sort": "-name"})
    await same_answers(base, params={"q": "villefranche saone"})
    await same_answers(base, params={"q": "69123"})
    await same_answers(base, params={"q": "st etienne", "kind": "commune"})
    await same_answers(base, params={"code": "69"})
    await same_answers(base, params={"sort": "population"})  # 422 from the service
    await same_answers(base, headers=scoped)
    for params in (
        {"kind": "planet"},
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "x"},
        {"limit": "+5"},
        {"include_total": "yes"},
        {"within": "not-a-uuid"},
        {"within": str(tree.rhone.id).replace("-", "")},
        {"q": ""},
        {"q": "x" * 101},
        {"q": "a\x00b"},
        {"code": "1" * 17},
        {"unknown": "1"},
    ):
        await same_answers(base, params=params, direct=None)
    # Repeated parameters: the last one counts, both ways.
    await same_answers(base, params=[("kind", "commune"), ("kind", "departement")])
