"""Territories: create, read, change, delete; uniqueness, the parent rule, versions, roles, idempotency."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import KeyMaker, TerritoryMaker, Tree, bearer
from tests.helpers import assert_problem, ids
from tests.territories.helpers import BASE, READ_FIELDS, siren

MERGE_PATCH = "application/merge-patch+json"


async def create(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await client.post(BASE, json=body, headers=headers)


async def patch(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    territory_id: object,
    body: dict[str, Any],
    if_match: str | None = '"1"',
    content_type: str = MERGE_PATCH,
) -> httpx.Response:
    sent = {**headers, "Content-Type": content_type}
    if if_match is not None:
        sent["If-Match"] = if_match
    return await client.patch(f"{BASE}/{territory_id}", content=json.dumps(body), headers=sent)


async def delete(
    client: httpx.AsyncClient, headers: dict[str, str], territory_id: object, if_match: str | None = '"1"'
) -> httpx.Response:
    sent = dict(headers)
    if if_match is not None:
        sent["If-Match"] = if_match
    return await client.delete(f"{BASE}/{territory_id}", headers=sent)


async def within(client: httpx.AsyncClient, root: object) -> set[str]:
    return set(ids(await client.get(BASE, params={"within": str(root), "limit": 200})))


# --- create -----------------------------------------------------------------------------------------


async def test_create_returns_201_with_location_etag_and_the_territory(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    response = await create(
        client,
        admin,
        kind="commune",
        code="69149",
        name="Oullins-Pierre-Bénite",
        parent_id=str(tree.lyon_metro.id),
        population=37_000,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body.keys() == READ_FIELDS
    assert body["kind"] == "commune"
    assert body["code"] == "69149"
    assert body["name"] == "Oullins-Pierre-Bénite"
    assert body["parent_id"] == str(tree.lyon_metro.id)
    assert body["population"] == 37_000
    assert body["version"] == 1
    assert body["created_at"].endswith("Z")
    assert body["updated_at"].endswith("Z")
    uuid.UUID(body["id"])
    assert response.headers["location"] == f"{BASE}/{body['id']}"
    assert response.headers["etag"] == '"1"'
    assert response.headers["content-type"] == "application/json"

    fetched = await client.get(response.headers["location"])
    assert fetched.status_code == 200
    assert fetched.json() == body


async def test_create_without_parent_nor_population(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await create(client, admin, kind="region", code="53", name="Bretagne")
    assert response.status_code == 201, response.text
    assert response.json()["parent_id"] is None
    assert response.json()["population"] is None


async def test_same_kind_and_code_twice_is_409_territory_exists(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    response = await create(client, admin, kind="departement", code="69", name="Rhône bis")
    body = assert_problem(response, 409, "territory_exists")
    assert "69" in body["detail"]
    listed = await client.get(BASE, params={"kind": "departement", "code": "69"})
    assert [t["name"] for t in listed.json()["items"]] == ["Rhône"]


async def test_same_code_under_another_kind_is_allowed(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    region = await create(client, admin, kind="region", code="53", name="Bretagne")
    departement = await create(client, admin, kind="departement", code="53", name="Mayenne")
    assert region.status_code == departement.status_code == 201
    assert region.json()["id"] != departement.json()["id"]
    listed = await client.get(BASE, params={"code": "53", "sort": "name"})
    assert [(t["kind"], t["name"]) for t in listed.json()["items"]] == [
        ("region", "Bretagne"),
        ("departement", "Mayenne"),
    ]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"kind": "region", "code": "84"}, "/name"),
        ({"kind": "region", "code": "84", "name": "   "}, "/name"),
        ({"kind": "region", "code": "84", "name": "x" * 201}, "/name"),
        ({"kind": "canton", "code": "84", "name": "X"}, "/kind"),
        ({"code": "84", "name": "X"}, "/kind"),
        ({"kind": "region", "name": "X"}, "/code"),
        ({"kind": "region", "code": "84", "name": "X", "population": -1}, "/population"),
        ({"kind": "region", "code": "84", "name": "X", "parent_id": "not-a-uuid"}, "/parent_id"),
        ({"kind": "region", "code": "84", "name": "X", "id": str(uuid.uuid4())}, "/id"),
        ({"kind": "region", "code": "84", "name": "X", "version": 3}, "/version"),
    ],
)
async def test_validation_runs_before_uniqueness(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, body: dict[str, Any], pointer: str
) -> None:
    # Région 84 exists: an invalid duplicate is reported as invalid, not as a conflict.
    response = await client.post(BASE, json=body, headers=admin)
    assert_problem(response, 422, "validation_error", pointer)


@pytest.mark.parametrize("name", ["Lyon\x00", "\x00", "Ly\non", "Lyon\x7f", "Ly\u2028on"])
async def test_control_characters_in_names_are_422(
    client: httpx.AsyncClient, admin: dict[str, str], name: str
) -> None:
    response = await create(client, admin, kind="region", code="53", name=name)
    assert_problem(response, 422, "validation_error", "/name")
    assert (await client.get(BASE, params={"code": "53"})).json()["items"] == []


async def test_lone_surrogate_in_name_is_422(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    # Valid JSON, but no UTF-8 text can hold it.
    body = b'{"kind": "region", "code": "53", "name": "Ly\\ud800on"}'
    response = await client.post(BASE, content=body, headers={**admin, "Content-Type": "application/json"})
    assert_problem(response, 422, "validation_error", "/name")


@pytest.mark.parametrize("char", ["ß", "ﷺ", "ǆ"])
async def test_long_names_that_fold_longer_are_kept(
    client: httpx.AsyncClient, admin: dict[str, str], char: str
) -> None:
    # Folding expands some characters (ß → ss; one Arabic ligature → 18 letters): the 200-character limit
    # applies to the name as given.
    name = char * 200
    response = await create(client, admin, kind="region", code="53", name=name)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name
    assert (await client.get(f"{BASE}/region/53")).json()["name"] == name


async def test_invalid_code_of_a_duplicate_is_422(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    response = await create(client, admin, kind="metropole", code="200046978", name="Métropole de Lyon")
    assert_problem(response, 422, "validation_error", "/code")


async def test_invalid_parent_of_a_duplicate_is_422(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    response = await create(
        client, admin, kind="departement", code="69", name="Rhône", parent_id=str(tree.lyon.id)
    )
    assert_problem(response, 422, "invalid_parent", "/parent_id")


async def test_unknown_field_in_body_is_422(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await create(client, admin, kind="region", code="53", name="Bretagne", siren="123")
    body = assert_problem(response, 422, "validation_error", "/siren")
    assert body["errors"][0]["detail"] == "unknown field"


async def test_malformed_json_is_422(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.post(
        BASE, content=b'{"kind": "region",', headers={**admin, "Content-Type": "application/json"}
    )
    assert_problem(response, 422, "validation_error")


# --- the parent rule --------------------------------------------------------------------------------

NEW_CODES = {
    "region": "93",
    "departement": "13",
    "metropole": siren("20005478"),
    "epci": siren("24130017"),
    "commune": "13055",
}


@pytest.mark.parametrize(
    ("kind", "parent_kind", "allowed"),
    [
        ("departement", "region", True),
        ("metropole", "region", True),
        ("metropole", "departement", True),
        ("epci", "region", True),
        ("epci", "departement", True),
        ("commune", "region", True),
        ("commune", "departement", True),
        ("commune", "metropole", True),
        ("commune", "epci", True),
        ("region", "region", False),
        ("region", "departement", False),
        ("region", "commune", False),
        ("departement", "departement", False),
        ("departement", "metropole", False),
        ("metropole", "metropole", False),
        ("metropole", "epci", False),
        ("epci", "metropole", False),
        ("epci", "epci", False),
        ("epci", "commune", False),
        ("commune", "commune", False),
    ],
)
async def test_parent_must_be_of_a_strictly_higher_kind(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    tree: Tree,
    make_territory: TerritoryMaker,
    kind: str,
    parent_kind: str,
    allowed: bool,
) -> None:
    parents = {
        "region": tree.ara,
        "departement": tree.rhone,
        "metropole": tree.lyon_metro,
        "epci": await make_territory(
            "epci", siren("20004065"), "CA Villefranche Beaujolais Saône", tree.rhone
        ),
        "commune": tree.lyon,
    }
    parent = parents[parent_kind]
    response = await create(
        client, admin, kind=kind, code=NEW_CODES[kind], name="Child", parent_id=str(parent.id)
    )
    if allowed:
        assert response.status_code == 201, response.text
        assert response.json()["parent_id"] == str(parent.id)
        assert response.json()["id"] in await within(client, parent.id)
    else:
        body = assert_problem(response, 422, "invalid_parent", "/parent_id")
        assert parent_kind in body["detail"]
        assert (await client.get(BASE, params={"kind": kind, "code": NEW_CODES[kind]})).json()["items"] == []


async def test_unknown_parent_is_422_unknown_reference(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    # API.md, "Who sees what": a reference in a body to an object that does not exist → 422 unknown_reference.
    response = await create(
        client, admin, kind="departement", code="13", name="X", parent_id=str(uuid.uuid4())
    )
    assert_problem(response, 422, "unknown_reference", "/parent_id")


# --- read -------------------------------------------------------------------------------------------


async def test_get_one_with_etag_and_conditional_get(client: httpx.AsyncClient, tree: Tree) -> None:
    response = await client.get(f"{BASE}/{tree.lyon.id}")
    assert response.status_code == 200
    assert response.headers["etag"] == '"1"'
    body = response.json()
    assert body.keys() == READ_FIELDS
    assert body["id"] == str(tree.lyon.id)
    assert (body["kind"], body["code"], body["name"]) == ("commune", "69123", "Lyon")
    assert body["parent_id"] == str(tree.lyon_metro.id)
    assert body["population"] == 520_000
    assert body["version"] == 1

    cached = await client.get(f"{BASE}/{tree.lyon.id}", headers={"If-None-Match": '"1"'})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == '"1"'

    weak = await client.get(f"{BASE}/{tree.lyon.id}", headers={"If-None-Match": 'W/"0", W/"1"'})
    assert weak.status_code == 304

    stale = await client.get(f"{BASE}/{tree.lyon.id}", headers={"If-None-Match": '"0"'})
    assert stale.status_code == 200
    assert stale.json() == body


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("departement/69", "Rhône"),
        ("metropole/200046977", "Métropole de Lyon"),
        ("region/84", "Auvergne-Rhône-Alpes"),
        ("commune/69123", "Lyon"),
    ],
)
async def test_get_by_kind_and_code(client: httpx.AsyncClient, tree: Tree, path: str, name: str) -> None:
    response = await client.get(f"{BASE}/{path}")
    assert response.status_code == 200, response.text
    assert response.json()["name"] == name
    assert response.headers["etag"] == '"1"'
    same = await client.get(f"{BASE}/{response.json()['id']}")
    assert same.json() == response.json()
    cached = await client.get(f"{BASE}/{path}", headers={"If-None-Match": '"1"'})
    assert cached.status_code == 304


async def test_code_only_means_something_with_its_kind(
    client: httpx.AsyncClient, make_territory: TerritoryMaker
) -> None:
    bretagne = await make_territory("region", "53", "Bretagne")
    mayenne = await make_territory("departement", "53", "Mayenne")
    assert (await client.get(f"{BASE}/region/53")).json()["id"] == str(bretagne.id)
    assert (await client.get(f"{BASE}/departement/53")).json()["id"] == str(mayenne.id)


@pytest.mark.parametrize(
    "path", ["departement/13", "commune/69001", "commune/%00", "metropole/200046978", "region/x"]
)
async def test_get_by_unknown_code_is_404(client: httpx.AsyncClient, tree: Tree, path: str) -> None:
    assert_problem(await client.get(f"{BASE}/{path}"), 404, "not_found")


async def test_get_by_unknown_kind_is_422(client: httpx.AsyncClient, tree: Tree) -> None:
    assert_problem(await client.get(f"{BASE}/canton/69"), 422, "validation_error", "/path/kind")


async def test_get_unknown_id_is_404_problem(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get(f"{BASE}/{uuid.uuid4()}"), 404, "not_found")
    assert "errors" not in body


async def test_get_malformed_id_is_422(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get(f"{BASE}/not-a-uuid"), 422, "validation_error", "/path/territory_id")


@pytest.mark.parametrize("suffix", ["", "/{id}", "/departement/69"])
async def test_an_invalid_key_is_401_even_on_public_reads(
    client: httpx.AsyncClient, tree: Tree, suffix: str
) -> None:
    url = BASE + suffix.format(id=tree.rhone.id)
    for headers in (bearer("cnfs_not-a-key"), bearer("nope"), {"Authorization": "Basic dXNlcjpwYXNz"}):
        response = await client.get(url, headers=headers)
        assert_problem(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"].startswith("Bearer")
    # And without a key these reads are public.
    assert (await client.get(url)).status_code == 200


# --- PATCH ------------------------------------------------------------------------------------------


async def test_patch_requires_if_match(client: httpx.AsyncClient, admin: dict[str, str], tree: Tree) -> None:
    response = await patch(client, admin, tree.rhone.id, {"name": "Nouveau Rhône"}, if_match=None)
    body = assert_problem(response, 428, "precondition_required")
    assert "ETag of your last GET" in body["detail"]
    assert (await client.get(f"{BASE}/{tree.rhone.id}")).json()["name"] == "Rhône"


async def test_patch_with_a_stale_version_is_412(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    response = await patch(client, admin, tree.rhone.id, {"name": "Nouveau Rhône"}, if_match='"7"')
    body = assert_problem(response, 412, "precondition_failed")
    assert "fetch it again" in body["detail"]
    assert (await client.get(f"{BASE}/{tree.rhone.id}")).json()["name"] == "Rhône"


async def test_patch_is_a_merge_patch(client: httpx.AsyncClient, admin: dict[str, str], tree: Tree) -> None:
    before = (await client.get(f"{BASE}/{tree.lyon.id}")).json()

    renamed = await patch(client, admin, tree.lyon.id, {"name": "Lyon (ville)"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.headers["etag"] == '"2"'
    body = renamed.json()
    assert body["version"] == 2
    assert body["name"] == "Lyon (ville)"
    # Absent fields are unchanged.
    for field in ("id", "kind", "code", "parent_id", "population", "created_at"):
        assert body[field] == before[field]
    assert body["updated_at"] >= before["updated_at"]

    cleared = await patch(client, admin, tree.lyon.id, {"population": None}, if_match='"2"')
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["population"] is None
    assert cleared.json()["name"] == "Lyon (ville)"
    assert cleared.headers["etag"] == '"3"'

    fetched = await client.get(f"{BASE}/{tree.lyon.id}")
    assert fetched.json() == cleared.json()
    assert fetched.headers["etag"] == '"3"'
    assert (await client.get(f"{BASE}/{tree.lyon.id}", headers={"If-None-Match": '"1"'})).status_code == 200


async def test_patch_accepts_plain_json_and_if_match_star(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    response = await patch(
        client, admin, tree.lyon.id, {"population": 522_250}, if_match="*", content_type="application/json"
    )
    assert response.status_code == 200, response.text
    assert response.json()["population"] == 522_250
    assert response.json()["version"] == 2


async def test_empty_patch_changes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    before = (await client.get(f"{BASE}/{tree.lyon.id}")).json()
    response = await patch(client, admin, tree.lyon.id, {})
    assert response.status_code == 200, response.text
    assert response.json() == before
    assert response.headers["etag"] == '"1"'


@pytest.mark.parametrize("raw", ["[]", "null", '"Lyon"', "42", '{"name": "Lyon"'])
async def test_patch_body_must_be_a_json_object(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, raw: str
) -> None:
    response = await client.patch(
        f"{BASE}/{tree.lyon.id}",
        content=raw,
        headers={**admin, "Content-Type": MERGE_PATCH, "If-Match": '"1"'},
    )
    assert_problem(response, 422, "validation_error")
    assert (await client.get(f"{BASE}/{tree.lyon.id}")).json()["version"] == 1


async def test_put_is_405_with_allow(client: httpx.AsyncClient, admin: dict[str, str], tree: Tree) -> None:
    response = await client.put(f"{BASE}/{tree.lyon.id}", json={"name": "X"}, headers=admin)
    assert_problem(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "PATCH", "DELETE"}


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"name": None}, "/name"),
        ({"code": None}, "/code"),
        ({"name": ""}, "/name"),
        ({"population": -5}, "/population"),
        ({"kind": "region"}, "/kind"),
        ({"version": 9}, "/version"),
        ({"nom": "Lyon"}, "/nom"),
        ({"code": "6912"}, "/code"),
        ({"code": "69123x"}, "/code"),
    ],
)
async def test_invalid_patch_is_422_and_changes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, body: dict[str, Any], pointer: str
) -> None:
    before = (await client.get(f"{BASE}/{tree.lyon.id}")).json()
    response = await patch(client, admin, tree.lyon.id, body)
    assert_problem(response, 422, "validation_error", pointer)
    assert (await client.get(f"{BASE}/{tree.lyon.id}")).json() == before


async def test_patch_code_is_checked_against_the_kind_and_uniqueness(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    # 2A is a département code, not a région code.
    assert_problem(await patch(client, admin, tree.ara.id, {"code": "2A"}), 422, "validation_error", "/code")
    # Région 76 exists.
    assert_problem(await patch(client, admin, tree.ara.id, {"code": "76"}), 409, "territory_exists")
    # Département 69 exists, but no région 69: the pair (kind, code) is what must be unique.
    moved = await patch(client, admin, tree.ara.id, {"code": "69"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["code"] == "69"
    assert (await client.get(f"{BASE}/region/69")).json()["id"] == str(tree.ara.id)
    assert_problem(await client.get(f"{BASE}/region/84"), 404, "not_found")
    # Its own code again is not a conflict with itself.
    same = await patch(client, admin, tree.ara.id, {"code": "69"}, if_match='"2"')
    assert same.status_code == 200, same.text


async def test_patch_parent_moves_the_whole_subtree(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    lyon_side = {str(t.id) for t in (tree.lyon_metro, tree.lyon, tree.villeurbanne)}
    rhone_side = {str(tree.rhone.id), str(tree.villefranche.id)}
    occitanie = {str(t.id) for t in (tree.occ, tree.hg, tree.toulouse)}

    # The métropole (with its communes) goes under the département...
    response = await patch(client, admin, tree.lyon_metro.id, {"parent_id": str(tree.rhone.id)})
    assert response.status_code == 200, response.text
    assert response.json()["parent_id"] == str(tree.rhone.id)
    assert await within(client, tree.rhone.id) == rhone_side | lyon_side

    # ...and the département (with the métropole and its communes) goes to another région.
    response = await patch(client, admin, tree.rhone.id, {"parent_id": str(tree.occ.id)})
    assert response.status_code == 200, response.text
    assert await within(client, tree.occ.id) == occitanie | rhone_side | lyon_side
    assert await within(client, tree.ara.id) == {str(tree.ara.id)}
    # The grandchildren's own rows are untouched: same parent, same version.
    lyon = (await client.get(f"{BASE}/{tree.lyon.id}")).json()
    assert lyon["parent_id"] == str(tree.lyon_metro.id)
    assert lyon["version"] == 1

    # Detached: a root again, with its subtree.
    response = await patch(client, admin, tree.rhone.id, {"parent_id": None}, if_match='"2"')
    assert response.status_code == 200, response.text
    assert response.json()["parent_id"] is None
    assert await within(client, tree.occ.id) == occitanie
    assert await within(client, tree.rhone.id) == rhone_side | lyon_side


async def test_patch_parent_follows_the_parent_rule(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    # Under itself, under its own descendant (a lower kind), under the same rank: all refused.
    assert_problem(
        await patch(client, admin, tree.lyon_metro.id, {"parent_id": str(tree.lyon_metro.id)}),
        422,
        "invalid_parent",
        "/parent_id",
    )
    assert_problem(
        await patch(client, admin, tree.lyon_metro.id, {"parent_id": str(tree.lyon.id)}),
        422,
        "invalid_parent",
        "/parent_id",
    )
    assert_problem(
        await patch(client, admin, tree.ara.id, {"parent_id": str(tree.occ.id)}),
        422,
        "invalid_parent",
        "/parent_id",
    )
    assert_problem(
        await patch(client, admin, tree.lyon.id, {"parent_id": str(uuid.uuid4())}),
        422,
        "unknown_reference",
        "/parent_id",
    )
    assert await within(client, tree.lyon_metro.id) == {
        str(tree.lyon_metro.id),
        str(tree.lyon.id),
        str(tree.villeurbanne.id),
    }


async def test_patch_unknown_id_is_404(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    assert_problem(await patch(client, admin, uuid.uuid4(), {"name": "X"}), 404, "not_found")


# --- DELETE -----------------------------------------------------------------------------------------


async def test_delete_requires_if_match(client: httpx.AsyncClient, admin: dict[str, str], tree: Tree) -> None:
    assert_problem(await delete(client, admin, tree.lyon.id, if_match=None), 428, "precondition_required")
    assert_problem(await delete(client, admin, tree.lyon.id, if_match='"2"'), 412, "precondition_failed")
    assert (await client.get(f"{BASE}/{tree.lyon.id}")).status_code == 200


async def test_delete_is_204_and_frees_kind_and_code(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    response = await delete(client, admin, tree.lyon.id)
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await client.get(f"{BASE}/{tree.lyon.id}"), 404, "not_found")
    assert_problem(await client.get(f"{BASE}/commune/69123"), 404, "not_found")
    assert str(tree.lyon.id) not in await within(client, tree.lyon_metro.id)
    assert_problem(await delete(client, admin, tree.lyon.id), 404, "not_found")

    again = await create(
        client, admin, kind="commune", code="69123", name="Lyon", parent_id=str(tree.lyon_metro.id)
    )
    assert again.status_code == 201, again.text
    assert again.json()["id"] != str(tree.lyon.id)


async def test_delete_with_children_is_409_territory_in_use(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    body = assert_problem(await delete(client, admin, tree.lyon_metro.id), 409, "territory_in_use")
    assert "refer" in body["detail"]
    assert (await client.get(f"{BASE}/{tree.lyon_metro.id}")).status_code == 200
    assert len(await within(client, tree.lyon_metro.id)) == 3
    # Once its children are gone it can go.
    for child in (tree.lyon, tree.villeurbanne):
        assert (await delete(client, admin, child.id)).status_code == 204
    assert (await delete(client, admin, tree.lyon_metro.id)).status_code == 204


async def test_delete_referenced_by_an_api_key_is_409(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree, make_key: KeyMaker
) -> None:
    key = await make_key("viewer", [tree.toulouse])
    assert_problem(await delete(client, admin, tree.toulouse.id), 409, "territory_in_use")
    assert (await client.get(f"{BASE}/{tree.toulouse.id}")).status_code == 200
    # The key still works, with its territory.
    assert (await client.get("/api/v1/me", headers=bearer(key))).json()["territory_ids"] == [
        str(tree.toulouse.id)
    ]


# --- roles ------------------------------------------------------------------------------------------


async def test_writes_without_a_key_are_401(client: httpx.AsyncClient, tree: Tree) -> None:
    responses = [
        await create(client, {}, kind="region", code="53", name="Bretagne"),
        await patch(client, {}, tree.rhone.id, {"name": "X"}),
        await delete(client, {}, tree.lyon.id),
    ]
    for response in responses:
        assert_problem(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert (await client.get(BASE, params={"code": "53"})).json()["items"] == []
    assert (await client.get(f"{BASE}/{tree.rhone.id}")).json()["name"] == "Rhône"
    assert (await client.get(f"{BASE}/{tree.lyon.id}")).status_code == 200


@pytest.mark.parametrize("role", ["viewer", "territory_manager"])
async def test_writes_by_other_roles_are_403(
    client: httpx.AsyncClient, tree: Tree, make_key: KeyMaker, role: str
) -> None:
    headers = bearer(await make_key(role, [tree.rhone]))
    responses = [
        await create(client, headers, kind="commune", code="69019", name="X", parent_id=str(tree.rhone.id)),
        await patch(client, headers, tree.rhone.id, {"name": "X"}),
        await patch(client, headers, tree.villefranche.id, {"population": 1}),
        await delete(client, headers, tree.villefranche.id),
    ]
    for response in responses:
        body = assert_problem(response, 403, "forbidden")
        assert role in body["detail"]
    assert (await client.get(f"{BASE}/{tree.rhone.id}")).json()["name"] == "Rhône"
    assert (await client.get(f"{BASE}/{tree.villefranche.id}")).json()["population"] == 36_000
    assert (await client.get(BASE, params={"code": "69019"})).json()["items"] == []
    # They can read like anyone.
    assert (await client.get(f"{BASE}/{tree.toulouse.id}", headers=headers)).status_code == 200


# --- idempotency ------------------------------------------------------------------------------------


async def test_idempotency_key_replays_the_first_response(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    headers = {**admin, "Idempotency-Key": "create-bretagne-1"}
    body = {"kind": "region", "code": "53", "name": "Bretagne", "population": 3_400_000}
    first = await client.post(BASE, json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers

    # Same body, keys in another order: the same request.
    second = await client.post(BASE, json=dict(reversed(body.items())), headers=headers)
    assert second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert second.headers["location"] == first.headers["location"]
    assert second.headers["etag"] == first.headers["etag"]
    assert second.headers["content-type"] == "application/json"

    listed = await client.get(BASE, params={"kind": "region", "code": "53", "include_total": "true"})
    assert listed.json()["total"] == 1
    assert [t["id"] for t in listed.json()["items"]] == [first.json()["id"]]


async def test_idempotency_key_with_another_body_is_422(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    headers = {**admin, "Idempotency-Key": "create-bretagne-2"}
    first = await client.post(
        BASE, json={"kind": "region", "code": "53", "name": "Bretagne"}, headers=headers
    )
    assert first.status_code == 201
    other = await client.post(
        BASE, json={"kind": "region", "code": "52", "name": "Pays de la Loire"}, headers=headers
    )
    assert_problem(other, 422, "idempotency_key_reused")
    assert (await client.get(BASE, params={"kind": "region", "code": "52"})).json()["items"] == []


async def test_idempotency_key_belongs_to_its_caller(
    client: httpx.AsyncClient, admin: dict[str, str], make_key: KeyMaker
) -> None:
    body = {"kind": "region", "code": "53", "name": "Bretagne"}
    first = await client.post(BASE, json=body, headers={**admin, "Idempotency-Key": "k"})
    assert first.status_code == 201
    other_admin = bearer(await make_key("admin", name="another admin"))
    # Another caller's identical key is not a replay: the request runs, and meets the existing row.
    second = await client.post(BASE, json=body, headers={**other_admin, "Idempotency-Key": "k"})
    assert_problem(second, 409, "territory_exists")
    assert "idempotent-replayed" not in second.headers


async def test_idempotency_key_longer_than_255_is_422(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post(
        BASE,
        json={"kind": "region", "code": "53", "name": "Bretagne"},
        headers={**admin, "Idempotency-Key": "k" * 256},
    )
    assert_problem(response, 422, "validation_error", "/header/Idempotency-Key")
    assert (await client.get(BASE, params={"code": "53"})).json()["items"] == []
    ok = await client.post(
        BASE,
        json={"kind": "region", "code": "53", "name": "Bretagne"},
        headers={**admin, "Idempotency-Key": "k" * 255},
    )
    assert ok.status_code == 201


async def test_a_failed_request_does_not_burn_its_idempotency_key(
    client: httpx.AsyncClient, admin: dict[str, str], tree: Tree
) -> None:
    headers = {**admin, "Idempotency-Key": "retry-me"}
    body = {"kind": "commune", "code": "69019", "name": "Belleville", "parent_id": str(tree.lyon.id)}
    assert_problem(await client.post(BASE, json=body, headers=headers), 422, "invalid_parent")
    # A refused request stores nothing under its key: the corrected retry runs instead of being "reused".
    fixed = {**body, "parent_id": str(tree.rhone.id)}
    response = await client.post(BASE, json=fixed, headers=headers)
    assert response.status_code == 201, response.text
    assert "idempotent-replayed" not in response.headers
