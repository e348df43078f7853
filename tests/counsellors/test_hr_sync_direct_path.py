"""The HR sync's replay on the direct path (PUT by reference, bulk) answers exactly as the routes do (see
tests/core/test_direct_path.py), and writes nothing: every request below is sent from the same database
state through the app with the direct path and through the one without (the `same_writes` fixture), and
the direct path answers only what writes nothing (an unchanged counsellor, a refusal before any write)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import KeyMaker, SameWrites, bearer
from tests.positions.helpers import (
    CHANGES,
    COUNSELLORS,
    PERSON,
    World,
    assign,
    create_position,
    day,
    end_assignment,
)

BULK = f"{COUNSELLORS}/bulk"
WRITTEN = frozenset({"id", "created_at", "updated_at"})


def person(ref: str, **changes: Any) -> dict[str, Any]:
    return {"external_ref": ref, **PERSON, "email": f"{ref.lower()}@example.org", **changes}


async def _changes(client: httpx.AsyncClient, world: World) -> list[Any]:
    response = await client.get(
        CHANGES, params={"resource": "counsellors", "limit": "200"}, headers=world.admin
    )
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


async def test_put_by_ref_answers_the_same(
    client: httpx.AsyncClient, world: World, make_key: KeyMaker, same_writes: SameWrites
) -> None:
    url = f"{COUNSELLORS}/by-ref/M-1"
    lyon = str(world.tree.lyon_metro.id)
    # New: the route creates it (the direct path declines), both ways alike but for the new id.
    created = await same_writes(
        "PUT", url, json=PERSON, headers=world.lyon_manager, direct=False, volatile=WRITTEN
    )
    assert created.status_code == 201, created.text
    # Unchanged: answered by the direct path, for each caller that may write it.
    for headers, body in (
        (world.lyon_manager, PERSON),
        (world.lyon_manager, {**PERSON, "territory_id": lyon}),
        (world.lyon_manager, {**PERSON, "territory_id": None}),
        (world.admin, {**PERSON, "territory_id": lyon}),
        (bearer(await make_key("territory_manager", [world.tree.ara])), {**PERSON, "territory_id": lyon}),
    ):
        answer = await same_writes("PUT", url, json=body, headers=headers)
        assert (answer.status_code, answer.json()) == (200, created.json())
        assert answer.headers["etag"] == '"1"'
    # With its current assignment.
    position = await create_position(client, world.admin, world.lyon["id"])
    held = await assign(client, world.admin, position["id"], created.json()["id"], started_on=day(-3))
    answer = await same_writes("PUT", url, json=PERSON, headers=world.lyon_manager)
    assert answer.json()["current_assignment"]["id"] == held["id"]
    # Ended yesterday: none covers today.
    ended = await end_assignment(client, world.admin, held["id"], day(-1))
    assert ended.status_code == 200, ended.text
    answer = await same_writes("PUT", url, json=PERSON, headers=world.lyon_manager)
    assert answer.json()["current_assignment"] is None
    # Refused by the checks that come before the body: the same problems from the direct path.
    rhone_manager = world.rhone_manager
    for headers in (
        {},
        bearer("cnfs_unknown"),
        {"Authorization": "Basic x"},
        world.lyon_viewer,
        bearer(await make_key("counsellor", [world.tree.lyon_metro])),
    ):
        answer = await same_writes("PUT", url, json=PERSON, headers=headers)
        assert answer.status_code in (401, 403), answer.text
    await same_writes(
        "PUT", url, json=PERSON, params={"x": "1"}, headers=world.lyon_manager, direct=False
    )  # the route's 422
    # An HR key of another territory: its own employer has no M-1 (the route creates one there); naming
    # Lyon is a 422 `unknown_reference`.
    await same_writes("PUT", url, json=PERSON, headers=rhone_manager, direct=False, volatile=WRITTEN)
    refused = await same_writes("PUT", url, json={**PERSON, "territory_id": lyon}, headers=rhone_manager)
    assert refused.json()["code"] == "unknown_reference"
    # The employer is needed when the key has not exactly one territory: 422 from the direct path.
    refused = await same_writes("PUT", url, json=PERSON, headers=world.admin)
    assert refused.json()["errors"][0]["pointer"] == "/territory_id"
    # What changes goes through the route.
    for body in (
        {**PERSON, "phone": None},
        {**PERSON, "training": None},
        {**PERSON, "training": {**PERSON["training"], "pix_level": 3}},
        {key: value for key, value in PERSON.items() if key != "email"},
        {**PERSON, "first_name": "Dominique"},
    ):
        changed = await same_writes(
            "PUT",
            url,
            json=body,
            headers=world.lyon_manager,
            direct=False,
            volatile=frozenset({"updated_at"}),
        )
        assert changed.status_code == 200, changed.text
        # The route's change is kept: its replay is answered directly.
        replayed = await same_writes("PUT", url, json=body, headers=world.lyon_manager)
        assert replayed.json() == changed.json()
    version = replayed.json()["version"]
    # If-Match goes through the route, current or stale.
    for if_match in (f'"{version}"', '"1"', "*"):
        await same_writes(
            "PUT", url, json=body, headers={**world.lyon_manager, "If-Match": if_match}, direct=False
        )
    # Invalid requests: the route's 422 (or 413, 415...) whatever the caller.
    for request in (
        {"json": {**PERSON, "email": "nope"}},
        {"json": {**PERSON, "unknown": 1}},
        {"json": {**PERSON, "training": {"pix_level": "2"}}},
        {"json": {**PERSON, "first_name": " "}},
        {"json": [PERSON]},
        {"json": {**PERSON, "territory_id": "lyon"}},
        {"content": b'{"first_name": "Camille",', "headers": {"Content-Type": "application/json"}},
        {"content": b"", "headers": {"Content-Type": "application/json"}},
        {
            "content": b'{"first_name": "Camille", "last_name": "Exemple"}',
            "headers": {"Content-Type": "text/plain"},
        },
        {"content": b'{"first_name": "Camille", "last_name": "Exemple"}'},
    ):
        headers = {**world.lyon_manager, **request.pop("headers", {})}
        await same_writes("PUT", url, headers=headers, direct=False, **request)
        await same_writes("PUT", url, headers={}, direct=None, **request)
    # Larger than the body limit: 413 both ways.
    huge = b'{"first_name": "' + b"x" * (1024 * 1024) + b'"}'
    too_large = await same_writes(
        "PUT",
        url,
        content=huge,
        headers={**world.lyon_manager, "Content-Type": "application/json"},
        direct=None,
    )
    assert too_large.status_code == 413
    for ref in ("M%001", "M" * 65):
        await same_writes(
            "PUT", f"{COUNSELLORS}/by-ref/{ref}", json=PERSON, headers=world.lyon_manager, direct=False
        )
    # Another reference: created by the route.
    await same_writes(
        "PUT",
        f"{COUNSELLORS}/by-ref/M-2",
        json=PERSON,
        headers=world.lyon_manager,
        direct=False,
        volatile=WRITTEN,
    )


async def test_an_unchanged_put_changes_nothing(
    client: httpx.AsyncClient, world: World, count_queries: Any
) -> None:
    url = f"{COUNSELLORS}/by-ref/M-1"
    created = await client.put(url, json=PERSON, headers=world.lyon_manager)
    assert created.status_code == 201, created.text
    before = await _changes(client, world)
    for _ in range(3):
        with count_queries() as counter:
            answer = await client.put(url, json=PERSON, headers=world.lyon_manager)
        assert (answer.status_code, answer.json()) == (200, created.json())
        # The key, the employer with the counsellor and its current assignment, the answer's journal line.
        assert counter.count == 3, counter.statements
        assert "INSERT INTO audit_events" in counter.statements[-1]
    assert await _changes(client, world) == before
    changed = await client.put(url, json={**PERSON, "phone": None}, headers=world.lyon_manager)
    assert changed.json()["version"] == 2
    assert [c["version"] for c in await _changes(client, world)] == [1, 2]


async def test_bulk_answers_the_same(
    client: httpx.AsyncClient, world: World, make_key: KeyMaker, same_writes: SameWrites
) -> None:
    lyon = str(world.tree.lyon_metro.id)
    people = [person(f"B-{n}") for n in range(5)]
    first = await same_writes(
        "POST", BULK, json={"items": people}, headers=world.lyon_manager, direct=False, volatile=WRITTEN
    )
    assert [r["status"] for r in first.json()["items"]] == [201] * 5
    # The replay: answered directly, as a whole or atomically, by each caller that may write them.
    for headers, items in (
        (world.lyon_manager, people),
        (world.lyon_manager, [{**p, "territory_id": lyon} for p in people]),
        (world.admin, [{**p, "territory_id": lyon} for p in people]),
        (
            bearer(await make_key("territory_manager", [world.tree.ara])),
            [{**p, "territory_id": lyon} for p in people],
        ),
    ):
        for params in (None, {"atomic": "false"}, {"atomic": "true"}):
            answer = await same_writes("POST", BULK, json={"items": items}, params=params, headers=headers)
            assert [(r["status"], r["version"]) for r in answer.json()["items"]] == [(200, 1)] * 5
    # The same references in the Rhône, new there: the route creates them.
    await same_writes(
        "POST", BULK, json={"items": people}, headers=world.rhone_manager, direct=False, volatile=WRITTEN
    )
    # Refusals before any write, with the other items unchanged: answered directly.
    refused_items = [
        *people[:2],
        {**people[2], "email": "nope"},
        people[1],  # twice in the request
        "not an object",
        {**people[3], "territory_id": str(world.tree.rhone.id)},  # outside the key's territories
        people[4],
    ]
    answer = await same_writes("POST", BULK, json={"items": refused_items}, headers=world.lyon_manager)
    assert [r["status"] for r in answer.json()["items"]] == [200, 200, 422, 422, 422, 422, 200]
    answer = await same_writes(
        "POST", BULK, json={"items": refused_items}, params={"atomic": "true"}, headers=world.lyon_manager
    )
    assert answer.json()["code"] == "bulk_rejected"
    # An item outside the key's territories that names nobody: a new counsellor as far as the direct path
    # can tell before validating, so the route answers (the same 422 in its result).
    nobody = [
        *people[:2],
        {**people[3], "external_ref": "B-nobody", "territory_id": str(world.tree.rhone.id)},
    ]
    answer = await same_writes("POST", BULK, json={"items": nobody}, headers=world.lyon_manager, direct=False)
    assert [r["status"] for r in answer.json()["items"]] == [200, 200, 422]
    # A reference that validation trims: the direct path cannot tell before validating, the route can.
    padded = [{**people[0], "external_ref": f" {people[0]['external_ref']} "}]
    answer = await same_writes("POST", BULK, json={"items": padded}, headers=world.lyon_manager, direct=False)
    assert [(r["status"], r["external_ref"]) for r in answer.json()["items"]] == [(200, "B-0")]
    # An HR key of another territory: Lyon is out of its reach (422 per item).
    others = [{**p, "territory_id": lyon} for p in people]
    answer = await same_writes("POST", BULK, json={"items": others}, headers=world.rhone_manager)
    assert {r["problem"]["code"] for r in answer.json()["items"]} == {"unknown_reference"}
    await same_writes(
        "POST", BULK, json={"items": others}, params={"atomic": "true"}, headers=world.rhone_manager
    )
    # The employer is needed when the key has not exactly one territory: refused per item, directly.
    await same_writes("POST", BULK, json={"items": people}, headers=world.admin)
    # Callers refused before the body.
    for headers in ({}, bearer("cnfs_unknown"), world.lyon_viewer):
        answer = await same_writes("POST", BULK, json={"items": people}, headers=headers)
        assert answer.status_code in (401, 403)
    await same_writes(
        "POST", BULK, json={"items": people}, params={"x": "1"}, headers=world.lyon_manager, direct=False
    )
    # A changed or a new item: the route writes.
    changed = [*people[:4], {**people[4], "phone": None}]
    answer = await same_writes(
        "POST", BULK, json={"items": changed}, headers=world.lyon_manager, direct=False
    )
    assert [r["version"] for r in answer.json()["items"]] == [1, 1, 1, 1, 2]
    await same_writes("POST", BULK, json={"items": changed}, headers=world.lyon_manager)  # its replay
    await same_writes(
        "POST",
        BULK,
        json={"items": [*changed, person("B-new")]},
        params={"atomic": "true"},
        headers=world.lyon_manager,
        direct=False,
        volatile=WRITTEN,
    )
    # What the route answers itself: an Idempotency-Key, invalid requests.
    await same_writes(
        "POST",
        BULK,
        json={"items": changed},
        headers={**world.lyon_manager, "Idempotency-Key": "k-1"},
        direct=False,
    )
    await same_writes(
        "POST",
        BULK,
        json={"items": changed},
        params={"atomic": "1"},
        headers=world.lyon_manager,
        direct=None,  # `atomic=1` is read as the route reads it; the twin answers only what writes nothing
    )
    for request in (
        {"json": {"items": []}},
        {"json": {"items": changed * 201}},
        {"json": {"items": changed, "atomic": True}},
        {"json": changed},
        {"content": b'{"items": [', "headers": {"Content-Type": "application/json"}},
        {"content": b'{"items": []}'},
    ):
        headers = {**world.lyon_manager, **request.pop("headers", {})}
        await same_writes("POST", BULK, headers=headers, direct=False, **request)
        await same_writes("POST", BULK, headers={}, direct=None, **request)


async def test_a_replayed_bulk_on_the_direct_path_writes_nothing(
    client: httpx.AsyncClient, world: World, count_queries: Any
) -> None:
    # References that JSON and SQL quote.
    odd = ['B-"quoted"', "B-back\\slash", "B-l'apostrophe", "B-é→ü", "B-%_*"]
    people = [person(f"B-{n}") for n in range(45)] + [person(ref) for ref in odd]
    first = await client.post(BULK, json={"items": people}, headers=world.lyon_manager)
    assert first.status_code == 207, first.text
    before = await _changes(client, world)
    with count_queries() as counter:
        again = await client.post(BULK, json={"items": people}, headers=world.lyon_manager)
    assert again.status_code == 207
    assert [(r["id"], r["version"], r["status"]) for r in again.json()["items"]] == [
        (r["id"], 1, 200) for r in first.json()["items"]
    ]
    # The key, the employers in scope, the rows: whatever the number of items.
    assert counter.count == 3, counter.statements
    assert await _changes(client, world) == before
