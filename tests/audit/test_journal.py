"""The personal-data journal: every answer that shows people has its line (`kind='read'`, the ids of the
people returned), in the answer's transaction; a CSV export's lines are committed batch by batch, each
before its batch is sent."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

import app.core.csv as csv_module
from app.core.csv import _Export, columns_of
from app.core.media import Separator
from app.counsellors.schemas import CounsellorRead
from tests.audit.helpers import events
from tests.conftest import KeyMaker, SameAnswers, Tree, bearer
from tests.positions.helpers import COUNSELLORS, PERSON, POSITIONS, create_counsellor
from tests.workshops.helpers import WORKSHOPS, build_place, create_workshop, person


async def _reads(connection: AsyncConnection, request_id: str) -> list[dict[str, Any]]:
    return await events(connection, request_id=request_id, kind="read")


async def test_a_counsellor_read_by_id_has_its_line_on_both_paths(
    client: httpx.AsyncClient,
    route_client: httpx.AsyncClient,
    admin: dict[str, str],
    tree: Tree,
    make_key: KeyMaker,
    connection: AsyncConnection,
    same_answers: SameAnswers,
) -> None:
    counsellor = await create_counsellor(client, admin, tree.lyon.id)
    url = f"{COUNSELLORS}/{counsellor['id']}"
    manager = bearer(await make_key("territory_manager", [tree.lyon_metro], name="Lyon"))
    # The direct path answers it, and journals it in the answer's transaction.
    await same_answers(url, headers=manager)
    for name, answering in (("direct", client), ("route", route_client)):
        response = await answering.get(url, headers={**manager, "X-Request-ID": f"get-{name}"})
        assert response.status_code == 200, response.text
        (line,) = await _reads(connection, f"get-{name}")
        assert line["action"] == "counsellors_get"
        assert line["resource"] == "counsellors"
        assert line["resource_id"] is None
        assert line["subject_ids"] == [counsellor["id"]]
        assert (line["actor_role"], line["actor_name"]) == ("territory_manager", "Lyon")
        # Unchanged (304): nothing shown, nothing journaled.
        etag = response.headers["etag"]
        again = await answering.get(
            url, headers={**manager, "If-None-Match": etag, "X-Request-ID": f"304-{name}"}
        )
        assert again.status_code == 304
        assert await _reads(connection, f"304-{name}") == []
    # Refused (a viewer): nothing shown, nothing journaled.
    viewer = bearer(await make_key("viewer", [tree.lyon_metro]))
    refused = await client.get(url, headers={**viewer, "X-Request-ID": "refused"})
    assert refused.status_code == 403
    assert await events(connection, request_id="refused") == []


async def test_an_unchanged_put_by_reference_has_its_line_on_both_paths(
    client: httpx.AsyncClient,
    route_client: httpx.AsyncClient,
    tree: Tree,
    make_key: KeyMaker,
    connection: AsyncConnection,
) -> None:
    """An HR system's replay writes nothing, so it has no write event; its answer shows the person (and
    its current assignment) as a read does, so it has a read line. A change has its write event only."""
    manager = bearer(await make_key("territory_manager", [tree.lyon_metro], name="Lyon HR"))
    url = f"{COUNSELLORS}/by-ref/HR-1"
    body = {**PERSON, "territory_id": str(tree.lyon.id)}
    created = await client.put(url, json=body, headers={**manager, "X-Request-ID": "hr-created"})
    assert created.status_code == 201, created.text
    assert await _reads(connection, "hr-created") == []
    for name, answering in (("direct", client), ("route", route_client)):
        replay = await answering.put(url, json=body, headers={**manager, "X-Request-ID": f"hr-{name}"})
        assert (replay.status_code, replay.json()) == (200, created.json())
        (line,) = await events(connection, request_id=f"hr-{name}")
        assert (line["kind"], line["action"]) == ("read", "counsellors_upsert_by_ref")
        assert line["subject_ids"] == [created.json()["id"]]
        assert (line["actor_role"], line["actor_name"]) == ("territory_manager", "Lyon HR")
    changed = await client.put(
        url, json={**body, "phone": None}, headers={**manager, "X-Request-ID": "hr-changed"}
    )
    assert changed.json()["version"] == 2
    assert [e["kind"] for e in await events(connection, request_id="hr-changed")] == ["write"]


async def test_lists_journal_the_people_of_the_page(
    client: httpx.AsyncClient,
    route_client: httpx.AsyncClient,
    admin: dict[str, str],
    tree: Tree,
    connection: AsyncConnection,
) -> None:
    ids = [
        (await create_counsellor(client, admin, tree.lyon.id, email=f"p{i}@example.org"))["id"]
        for i in range(3)
    ]
    # The direct path and the route journal the page alike.
    for name, answering in (("direct", client), ("route", route_client)):
        page = await answering.get(
            COUNSELLORS, params={"limit": 2}, headers={**admin, "X-Request-ID": f"list-{name}"}
        )
        assert page.status_code == 200
        shown = [item["id"] for item in page.json()["items"]]
        (line,) = await _reads(connection, f"list-{name}")
        assert line["action"] == "counsellors_list"
        assert line["subject_ids"] == shown
        assert set(shown) < set(ids)
    empty = await client.get(
        COUNSELLORS,
        params={"territory_id": str(tree.toulouse.id)},
        headers={**admin, "X-Request-ID": "list-0"},
    )
    assert empty.json()["items"] == []
    assert await _reads(connection, "list-0") == []
    by_ref = await client.get(f"{COUNSELLORS}/by-ref/NONE", headers={**admin, "X-Request-ID": "by-ref-404"})
    assert by_ref.status_code in (404, 422)
    assert await _reads(connection, "by-ref-404") == []


async def test_assignments_and_registrations_are_journaled(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tree: Tree,
    make_key: KeyMaker,
    connection: AsyncConnection,
) -> None:
    place = await build_place(client, admin, tree, make_key)
    history = await client.get(
        f"{POSITIONS}/{place.lyon_position['id']}/assignments", headers={**admin, "X-Request-ID": "history"}
    )
    assert history.status_code == 200, history.text
    (line,) = await _reads(connection, "history")
    assert (line["resource"], line["subject_ids"]) == ("assignments", [place.counsellor["id"]])
    assignment = history.json()["items"][0]
    one = await client.get(
        f"/api/v1/assignments/{assignment['id']}", headers={**admin, "X-Request-ID": "assignment"}
    )
    assert one.status_code == 200
    assert [r["subject_ids"] for r in await _reads(connection, "assignment")] == [[place.counsellor["id"]]]
    listed = await client.get("/api/v1/assignments", headers={**admin, "X-Request-ID": "assignments"})
    assert [r["subject_ids"] for r in await _reads(connection, "assignments")] == [
        [item["counsellor_id"] for item in listed.json()["items"]]
    ]

    workshop = await create_workshop(client, admin, place.lyon_position["id"])
    registration = (await client.post(f"{WORKSHOPS}/{workshop['id']}/registrations", json=person(1))).json()
    url = f"{WORKSHOPS}/{workshop['id']}/registrations"
    listed = await client.get(url, headers={**admin, "X-Request-ID": "registrations"})
    assert listed.status_code == 200
    (line,) = await _reads(connection, "registrations")
    assert (line["resource"], line["subject_ids"]) == ("registrations", [registration["id"]])
    # The registrant, with the cancel token and no key: journaled as `public`.
    own = await client.get(
        f"{url}/{registration['id']}",
        headers={"X-Cancel-Token": registration["cancel_token"], "X-Request-ID": "own"},
    )
    assert own.status_code == 200, own.text
    (line,) = await _reads(connection, "own")
    assert (line["actor_role"], line["action"], line["subject_ids"]) == (
        "public",
        "workshops_registrations_get",
        [registration["id"]],
    )


async def test_a_replayed_creation_is_journaled(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, connection: AsyncConnection
) -> None:
    body = {"territory_id": str(tree.lyon.id), "first_name": "Rejeu", "last_name": "Essai"}
    headers = {**admin, "Idempotency-Key": "create-once"}
    first = await client.post(COUNSELLORS, json=body, headers={**headers, "X-Request-ID": "first"})
    assert first.status_code == 201
    assert [e["kind"] for e in await events(connection, request_id="first")] == ["write"]
    replay = await client.post(COUNSELLORS, json=body, headers={**headers, "X-Request-ID": "replay"})
    assert replay.headers["idempotent-replayed"] == "true"
    found = await events(connection, request_id="replay")
    assert [(e["kind"], e["action"], e["subject_ids"]) for e in found] == [
        ("read", "counsellors_create", [first.json()["id"]])
    ]


async def test_a_replayed_registration_is_journaled(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tree: Tree,
    make_key: KeyMaker,
    connection: AsyncConnection,
) -> None:
    place = await build_place(client, admin, tree, make_key)
    workshop = await create_workshop(client, admin, place.lyon_position["id"])
    url = f"{WORKSHOPS}/{workshop['id']}/registrations"
    first = await client.post(url, json=person(4), headers={"Idempotency-Key": "reg-once"})
    assert first.status_code == 201
    replay = await client.post(
        url, json=person(4), headers={"Idempotency-Key": "reg-once", "X-Request-ID": "r2"}
    )
    assert replay.headers["idempotent-replayed"] == "true"
    assert [(e["kind"], e["subject_ids"]) for e in await events(connection, request_id="r2")] == [
        ("read", [first.json()["id"]])
    ]


async def test_a_csv_export_journals_each_batch(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tree: Tree,
    connection: AsyncConnection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The export's lines are written in transactions of their own (in the tests, savepoints inside the
    export's, which its end rolls back): the journal is observed here as it is called."""
    for i in range(5):
        await create_counsellor(client, admin, tree.lyon.id, email=f"csv{i}@example.org")
    monkeypatch.setattr(csv_module, "BATCH_ROWS", 2)
    lines: list[list[str]] = []
    real = csv_module.journal_batch

    def spying(request: Any, resource: str) -> Any:
        assert resource == "counsellors"
        journal = real(request, resource)

        async def write(ids: Sequence[Any]) -> None:
            await journal(ids)
            lines.append([str(i) for i in ids])

        return write

    monkeypatch.setattr(csv_module, "journal_batch", spying)
    response = await client.get(COUNSELLORS, headers={**admin, "Accept": "text/csv"})
    assert response.status_code == 200, response.text
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [len(batch) for batch in lines] == [2, 2, 1]
    assert [i for batch in lines for i in batch] == [row["id"] for row in rows]


async def test_each_batch_is_journaled_before_it_is_sent_and_never_without() -> None:
    """`_Export`: the line of a batch is written before the batch's bytes are yielded; a line that fails to
    be written stops the export before its batch."""
    batches = {None: ([{"id": "a"}, {"id": "b"}], "1"), "1": ([{"id": "c"}], "2"), "2": ([{"id": "d"}], None)}
    seen: list[tuple[str, Any]] = []

    async def fetch(_session: Any, cursor: str | None) -> tuple[Sequence[Any], str | None]:
        return batches[cursor]

    async def journal(rows: Sequence[Any]) -> None:
        ids = [row["id"] for row in rows]
        if ids == ["d"]:
            raise RuntimeError("the journal is unavailable")
        seen.append(("journal", ids))

    columns = columns_of(CounsellorRead)
    export = _Export(None, fetch, columns, Separator.comma, batches[None], journal)  # type: ignore[arg-type]
    sent: list[bytes] = []

    async def consume() -> None:
        async for chunk in export.body:
            seen.append(("chunk", chunk))
            sent.append(chunk)

    with pytest.raises(RuntimeError):
        await consume()
    assert [kind for kind, _ in seen] == ["journal", "chunk", "journal", "chunk"]
    assert seen[0][1] == ["a", "b"]
    assert seen[2][1] == ["c"]
    assert b"\nd," not in b"".join(sent)
