"""GET /audit-events: admin only, its filters, keyset pages bound to the filters, the total and CSV."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import audit
from tests.conftest import KeyMaker, Tree, bearer
from tests.helpers import assert_problem, next_link
from tests.positions.helpers import COUNSELLORS, create_counsellor

EVENTS = "/api/v1/audit-events"


async def test_admin_only(client: httpx.AsyncClient, tree: Tree, make_key: KeyMaker) -> None:
    assert_problem(await client.get(EVENTS), 401, "unauthenticated")
    for role in ("territory_manager", "viewer", "counsellor"):
        key = await make_key(role, [tree.lyon_metro])
        assert_problem(await client.get(EVENTS, headers=bearer(key)), 403, "forbidden")


async def test_filters_pages_and_csv(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, make_key: KeyMaker, session: AsyncSession
) -> None:
    manager_key = await make_key("territory_manager", [tree.lyon_metro], name="Lyon")
    manager = bearer(manager_key)
    started = datetime.now(UTC) - timedelta(seconds=1)
    counsellor = await create_counsellor(client, manager, tree.lyon.id)
    other = await create_counsellor(client, admin, tree.lyon.id, email="other@example.org")
    # The manager reads the first counsellor twice; the admin lists both.
    for _ in range(2):
        assert (await client.get(f"{COUNSELLORS}/{counsellor['id']}", headers=manager)).status_code == 200
    assert (await client.get(COUNSELLORS, headers=admin)).status_code == 200

    about = await client.get(EVENTS, params={"resource_id": counsellor["id"]}, headers=admin)
    assert about.status_code == 200, about.text
    items = about.json()["items"]
    # Newest first: the list that showed them, the two reads, the creation.
    assert [(e["kind"], e["action"]) for e in items] == [
        ("read", "counsellors_list"),
        ("read", "counsellors_get"),
        ("read", "counsellors_get"),
        ("write", "counsellors_create"),
    ]
    assert items[0]["subject_ids"] == sorted(
        [counsellor["id"], other["id"]], key=items[0]["subject_ids"].index
    )
    assert counsellor["id"] in items[0]["subject_ids"]
    assert items[3]["resource_id"] == counsellor["id"]
    assert items[3]["actor"]["name"] == "Lyon"
    assert items[3]["actor"]["role"] == "territory_manager"
    assert items[3]["changes"]["first_name"] == {"before": None, "after": "***"}

    manager_id = items[3]["actor"]["key_id"]
    by_actor = await client.get(EVENTS, params={"actor": manager_id}, headers=admin)
    assert {e["actor"]["key_id"] for e in by_actor.json()["items"]} == {manager_id}
    assert len(by_actor.json()["items"]) == 3
    reads = await client.get(
        EVENTS, params={"actor": manager_id, "kind": "read", "resource": "counsellors"}, headers=admin
    )
    assert [e["action"] for e in reads.json()["items"]] == ["counsellors_get", "counsellors_get"]
    nothing = await client.get(EVENTS, params={"resource": "workshops", "actor": manager_id}, headers=admin)
    assert nothing.json()["items"] == []

    later = datetime.now(UTC) + timedelta(hours=1)
    window = {"from": started.isoformat(), "to": later.isoformat(), "resource_id": counsellor["id"]}
    assert len((await client.get(EVENTS, params=window, headers=admin)).json()["items"]) == 4
    past = {"to": started.isoformat(), "resource_id": counsellor["id"]}
    assert (await client.get(EVENTS, params=past, headers=admin)).json()["items"] == []
    backwards = await client.get(
        EVENTS, params={"from": later.isoformat(), "to": started.isoformat()}, headers=admin
    )
    assert_problem(backwards, 422, "validation_error", "/query/to")
    assert_problem(
        await client.get(EVENTS, params={"kind": "delete"}, headers=admin), 422, "validation_error"
    )

    # Keyset pages, the total, the Link header; a cursor is bound to its filters.
    params = {"resource_id": counsellor["id"], "limit": 3, "include_total": "true"}
    first = await client.get(EVENTS, params=params, headers=admin)
    assert first.json()["total"] == 4
    assert len(first.json()["items"]) == 3
    cursor = first.json()["next_cursor"]
    assert next_link(first) is not None
    second = await client.get(EVENTS, params={**params, "cursor": cursor}, headers=admin)
    assert [e["id"] for e in first.json()["items"] + second.json()["items"]] == [e["id"] for e in items]
    assert second.json()["next_cursor"] is None
    forged = await client.get(EVENTS, params={"resource_id": other["id"], "cursor": cursor}, headers=admin)
    assert_problem(forged, 422, "invalid_cursor")

    exported = await client.get(
        EVENTS, params={"resource_id": counsellor["id"]}, headers={**admin, "Accept": "text/csv"}
    )
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [row["id"] for row in rows] == [e["id"] for e in items]
    assert rows[3]["actor_role"] == "territory_manager"
    assert rows[3]["actor_key_id"] == manager_id
    assert json.loads(rows[3]["changes"])["first_name"] == {"before": None, "after": "***"}

    # The CLI's events: actor `system`.
    with audit.acting("cli_purge"):
        await audit.record_read(session, resource="counsellors", subject_ids=[uuid.UUID(other["id"])])
    await session.flush()
    cli = await client.get(EVENTS, params={"resource_id": other["id"], "limit": 1}, headers=admin)
    assert cli.json()["items"][0]["actor"] == {"key_id": None, "name": None, "role": "system"}
    assert cli.json()["items"][0]["action"] == "cli_purge"
