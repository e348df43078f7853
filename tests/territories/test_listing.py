"""GET /territories: filters, subtree, accent-insensitive search and its ranking, sort, cursor pagination."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.territories.models import Territory
from tests.conftest import KeyMaker, TerritoryMaker, Tree, bearer
from tests.helpers import assert_problem, ids, next_link
from tests.territories.helpers import BASE, READ_FIELDS, names, siren


async def listing(client: httpx.AsyncClient, **params: Any) -> httpx.Response:
    response = await client.get(BASE, params={"limit": 200, **params})
    assert response.status_code == 200, response.text
    return response


def id_set(*territories: Territory) -> set[str]:
    return {str(t.id) for t in territories}


# --- filters ----------------------------------------------------------------------------------------


async def test_public_list_shape(client: httpx.AsyncClient, tree: Tree) -> None:
    response = await client.get(BASE)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body.keys() == {"items", "next_cursor"}
    assert body["next_cursor"] is None
    assert "link" not in response.headers
    assert len(body["items"]) == 9
    assert all(item.keys() == READ_FIELDS for item in body["items"])
    lyon = next(item for item in body["items"] if item["code"] == "69123")
    assert lyon == (await client.get(f"{BASE}/{tree.lyon.id}")).json()


async def test_filter_by_kind(client: httpx.AsyncClient, tree: Tree) -> None:
    communes = await listing(client, kind="commune")
    assert set(ids(communes)) == id_set(tree.lyon, tree.villeurbanne, tree.villefranche, tree.toulouse)
    assert {item["kind"] for item in communes.json()["items"]} == {"commune"}
    assert set(ids(await listing(client, kind="region"))) == id_set(tree.ara, tree.occ)
    assert ids(await listing(client, kind="epci")) == []


async def test_filter_by_code_across_kinds(
    client: httpx.AsyncClient, tree: Tree, make_territory: TerritoryMaker
) -> None:
    bretagne = await make_territory("region", "53", "Bretagne")
    mayenne = await make_territory("departement", "53", "Mayenne", bretagne)
    assert set(ids(await listing(client, code="53"))) == id_set(bretagne, mayenne)
    assert ids(await listing(client, code="53", kind="departement")) == [str(mayenne.id)]
    assert ids(await listing(client, code="69")) == [str(tree.rhone.id)]
    assert ids(await listing(client, code="99")) == []


async def test_filter_by_parent(client: httpx.AsyncClient, tree: Tree) -> None:
    assert set(ids(await listing(client, parent_id=str(tree.lyon_metro.id)))) == id_set(
        tree.lyon, tree.villeurbanne
    )
    # Only direct children: the communes of the métropole are not children of the région.
    assert set(ids(await listing(client, parent_id=str(tree.ara.id)))) == id_set(tree.rhone, tree.lyon_metro)
    assert ids(await listing(client, parent_id=str(tree.lyon.id))) == []


async def test_within_is_the_root_and_its_whole_subtree(client: httpx.AsyncClient, tree: Tree) -> None:
    assert set(ids(await listing(client, within=str(tree.ara.id)))) == id_set(
        tree.ara, tree.rhone, tree.lyon_metro, tree.lyon, tree.villeurbanne, tree.villefranche
    )
    assert set(ids(await listing(client, within=str(tree.occ.id)))) == id_set(
        tree.occ, tree.hg, tree.toulouse
    )
    assert set(ids(await listing(client, within=str(tree.lyon_metro.id)))) == id_set(
        tree.lyon_metro, tree.lyon, tree.villeurbanne
    )
    assert ids(await listing(client, within=str(tree.lyon.id))) == [str(tree.lyon.id)]
    # Combined with other filters.
    assert set(ids(await listing(client, within=str(tree.ara.id), kind="commune"))) == id_set(
        tree.lyon, tree.villeurbanne, tree.villefranche
    )


async def test_within_an_unknown_territory_is_422(client: httpx.AsyncClient, tree: Tree) -> None:
    response = await client.get(BASE, params={"within": "0190aaaa-0000-7000-8000-000000000000"})
    assert_problem(response, 422, "validation_error", "/query/within")
    response = await client.get(BASE, params={"within": "lyon"})
    assert_problem(response, 422, "validation_error", "/query/within")


@pytest.mark.parametrize(
    ("params", "pointer"),
    [
        ({"kindd": "region"}, "/query/kindd"),
        ({"kind": "canton"}, "/query/kind"),
        ({"parent_id": "x"}, "/query/parent_id"),
        ({"sort": "population"}, "/query/sort"),
        ({"sort": "--name"}, "/query/sort"),
        ({"limit": "201"}, "/query/limit"),
        ({"limit": "0"}, "/query/limit"),
        ({"limit": "-1"}, "/query/limit"),
        ({"limit": "ten"}, "/query/limit"),
        ({"include_total": "maybe"}, "/query/include_total"),
        ({"q": ""}, "/query/q"),
        ({"q": "x" * 101}, "/query/q"),
    ],
)
async def test_invalid_query_is_422(
    client: httpx.AsyncClient, tree: Tree, params: dict[str, str], pointer: str
) -> None:
    assert_problem(await client.get(BASE, params=params), 422, "validation_error", pointer)


@pytest.mark.parametrize("param", ["q", "code"])
async def test_control_characters_in_text_filters_are_422(
    client: httpx.AsyncClient, tree: Tree, param: str
) -> None:
    # PostgreSQL cannot even compare a text holding NUL: this must not reach the database.
    for value in ("\x00", "Ly\x00on", "69\x07"):
        assert_problem(
            await client.get(BASE, params={param: value}), 422, "validation_error", f"/query/{param}"
        )


async def test_limit_bounds_are_inclusive(client: httpx.AsyncClient, tree: Tree) -> None:
    assert len((await client.get(BASE, params={"limit": 1})).json()["items"]) == 1
    assert len((await client.get(BASE, params={"limit": 200})).json()["items"]) == 9


async def test_list_auth(client: httpx.AsyncClient, tree: Tree, make_key: KeyMaker) -> None:
    response = await client.get(BASE, headers=bearer("cnfs_revoked-or-invented"))
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")
    # Territories are public reference data: a scoped key sees them all too.
    viewer = bearer(await make_key("viewer", [tree.toulouse]))
    assert len((await client.get(BASE, headers=viewer)).json()["items"]) == 9


# --- search -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("metropole", ["Métropole de Lyon"]),
        ("MÉTROPOLE DE", ["Métropole de Lyon"]),
        ("VILLEURBANNE", ["Villeurbanne"]),
        ("villeurbanne", ["Villeurbanne"]),
        ("saone", ["Villefranche-sur-Saône"]),
        ("SAÔNE", ["Villefranche-sur-Saône"]),
        ("sur-sa", ["Villefranche-sur-Saône"]),
        ("garonne", ["Haute-Garonne"]),
        ("  LYON ", ["Lyon", "Métropole de Lyon"]),
        # Word by word, in any order, each word a prefix; hyphens and apostrophes are spaces.
        ("haute garonne", ["Haute-Garonne"]),
        ("garonne haute", ["Haute-Garonne"]),
        ("villefranche saone", ["Villefranche-sur-Saône"]),
        ("vill sa", ["Villefranche-sur-Saône"]),
        ("lyon metro", ["Métropole de Lyon"]),
        # Words are matched from their start, not inside.
        ("ranche", []),
        # Official codes and SIREN.
        ("69123", ["Lyon"]),
        ("200046977", ["Métropole de Lyon"]),
        ("6912", ["Lyon"]),
        ("84", ["Auvergne-Rhône-Alpes"]),
        ("rhone", ["Auvergne-Rhône-Alpes", "Rhône"]),
        ("%", []),
        ("_", []),
        ("\\", []),
        ("paris", []),
    ],
)
async def test_q_is_case_and_accent_insensitive(
    client: httpx.AsyncClient, tree: Tree, q: str, expected: list[str]
) -> None:
    assert sorted(names(await listing(client, q=q))) == sorted(expected)


async def test_q_ranks_match_quality_first_then_population(
    client: httpx.AsyncClient, tree: Tree, make_territory: TerritoryMaker
) -> None:
    await make_territory("commune", "69019", "Belleville-en-Beaujolais", tree.rhone, 13_000)
    await make_territory("commune", "69286", "Rillieux-la-Pape", tree.lyon_metro, 31_000)
    await make_territory(
        "commune", "69244", "Villeneuve", tree.rhone
    )  # no population known: last of its group
    await make_territory("commune", "69256", "Vaulx-en-Velin", tree.lyon_metro, 52_000)
    await make_territory("commune", "01244", "Lyons", tree.rhone, 9_000_000)
    await make_territory("commune", "01245", "Bron-Ville", tree.lyon_metro, 42_000)

    ranked = await listing(client, q="ville")
    assert names(ranked) == [
        "Bron-Ville",  # "ville" is a whole word of the name
        "Villeurbanne",  # the name starts with "ville", 150 000
        "Villefranche-sur-Saône",  # the name starts with "ville", 36 000
        "Villeneuve",  # the name starts with "ville", unknown population
    ]
    # The whole name, then whole words, then the start of a name, whatever the populations.
    assert names(await listing(client, q="lyon")) == ["Lyon", "Métropole de Lyon", "Lyons"]
    # A code before a name.
    assert names(await listing(client, q="01244")) == ["Lyons"]
    # An explicit sort replaces the ranking.
    assert names(await listing(client, q="ville", sort="name")) == [
        "Bron-Ville",
        "Villefranche-sur-Saône",
        "Villeneuve",
        "Villeurbanne",
    ]
    assert names(await listing(client, q="ville", sort="-name"))[0] == "Villeurbanne"


async def test_q_ranking_pages_like_one_page(
    client: httpx.AsyncClient, tree: Tree, make_territory: TerritoryMaker
) -> None:
    for i in range(12):
        await make_territory("commune", f"01{i:03d}", f"Saint-Denis {i}", population=(i % 4) * 1000 or None)
        await make_territory("commune", f"03{i:03d}", f"Villers-Saint-{i}", population=i * 100)
    whole = ids(await listing(client, q="saint"))
    assert len(whole) == 24
    assert await follow_pages(client, {"q": "saint", "limit": 5}) == whole
    first_names = names(await listing(client, q="saint"))[:12]
    assert all(name.startswith("Saint-Denis") for name in first_names)


# --- sort -------------------------------------------------------------------------------------------

TREE_BY_NAME = [
    "Auvergne-Rhône-Alpes",
    "Haute-Garonne",
    "Lyon",
    "Métropole de Lyon",
    "Occitanie",
    "Rhône",
    "Toulouse",
    "Villefranche-sur-Saône",
    "Villeurbanne",
]


async def test_sort_by_name_ignores_case_and_accents(client: httpx.AsyncClient, tree: Tree) -> None:
    # Without folding, "Métropole" would sort after "Villeurbanne" in code point order.
    assert names(await listing(client)) == TREE_BY_NAME
    assert names(await listing(client, sort="name")) == TREE_BY_NAME
    assert names(await listing(client, sort="-name")) == TREE_BY_NAME[::-1]


# --- pagination -------------------------------------------------------------------------------------


async def follow_pages(client: httpx.AsyncClient, params: dict[str, Any]) -> list[str]:
    """Every id, following `next_cursor` and checking that the Link header says the same."""
    seen: list[str] = []
    response = await client.get(BASE, params=params)
    for _ in range(100):
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= int(params.get("limit", 50))
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        link = next_link(response)
        if cursor is None:
            assert link is None
            return seen
        assert len(body["items"]) == int(params.get("limit", 50))
        assert link is not None
        by_cursor = await client.get(BASE, params={**params, "cursor": cursor})
        by_link = await client.get(link)
        assert by_link.json() == by_cursor.json()
        response = by_link
    raise AssertionError("pagination does not end")


@pytest.fixture
async def communes(make_territory: TerritoryMaker, tree: Tree) -> list[Territory]:
    """25 communes under the Rhône, some sharing a name so that the id tiebreak matters."""
    made = []
    for i in range(25):
        name = "Saint-Martin" if i % 5 == 0 else f"Commune {i:02d}"
        made.append(await make_territory("commune", f"69{i + 300:03d}", name, tree.rhone, 1000 + i))
    return made


@pytest.mark.parametrize("sort", [None, "name", "-name"])
async def test_cursor_pagination_has_no_duplicates_nor_gaps(
    client: httpx.AsyncClient, communes: list[Territory], sort: str | None
) -> None:
    params: dict[str, Any] = {"kind": "commune", "parent_id": str(communes[0].parent_id)}
    if sort:
        params["sort"] = sort
    whole = ids(await client.get(BASE, params={**params, "limit": 200}))
    assert len(whole) == 26  # with Villefranche-sur-Saône
    paged = await follow_pages(client, {**params, "limit": 7})
    assert paged == whole
    assert len(set(paged)) == 26


async def test_pagination_over_everything_with_default_limit(
    client: httpx.AsyncClient, communes: list[Territory]
) -> None:
    everything = ids(await client.get(BASE, params={"limit": 200}))
    assert len(everything) == 9 + 25
    assert await follow_pages(client, {"limit": 3}) == everything
    first = await client.get(BASE)
    assert len(first.json()["items"]) == 34
    assert first.json()["next_cursor"] is None


async def test_total_only_when_asked(client: httpx.AsyncClient, communes: list[Territory]) -> None:
    params = {"kind": "commune", "limit": 7}
    plain = await client.get(BASE, params=params)
    assert "total" not in plain.json()
    counted = await client.get(BASE, params={**params, "include_total": "true"})
    assert counted.json()["total"] == 29
    assert len(counted.json()["items"]) == 7
    # The next page (cursor bound to the same query) still counts everything.
    following = await client.get(next_link(counted) or "")
    assert following.status_code == 200, following.text
    assert following.json()["total"] == 29
    assert set(ids(following)).isdisjoint(ids(counted))
    assert (await client.get(BASE, params={"kind": "epci", "include_total": "true"})).json() == {
        "items": [],
        "next_cursor": None,
        "total": 0,
    }


def _flip(cursor: str, index: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    old = cursor[index]
    new = alphabet[(alphabet.index(old) + 1) % len(alphabet)] if old in alphabet else "A"
    return cursor[:index] + new + cursor[index + 1 :]


async def test_tampered_cursor_is_422_invalid_cursor(
    client: httpx.AsyncClient, communes: list[Territory]
) -> None:
    params = {"kind": "commune", "limit": 7}
    cursor = (await client.get(BASE, params=params)).json()["next_cursor"]
    assert cursor
    for index in (0, 5, len(cursor) // 2, len(cursor) - 2):
        response = await client.get(BASE, params={**params, "cursor": _flip(cursor, index)})
        assert_problem(response, 422, "invalid_cursor")
    for garbage in ("abc", "abc.def", ".", "x" * 300):
        assert_problem(await client.get(BASE, params={**params, "cursor": garbage}), 422, "invalid_cursor")
    assert (await client.get(BASE, params={**params, "cursor": cursor})).status_code == 200


async def test_cursor_is_bound_to_its_filters_and_caller(
    client: httpx.AsyncClient, admin: dict[str, str], communes: list[Territory]
) -> None:
    params = {"kind": "commune", "limit": 7}
    cursor = (await client.get(BASE, params=params)).json()["next_cursor"]
    for other in (
        {"kind": "departement"},
        {"kind": "commune", "q": "saint"},
        {"kind": "commune", "sort": "-name"},
        {"kind": "commune", "parent_id": str(communes[0].parent_id)},
        {},
    ):
        response = await client.get(BASE, params={**other, "limit": 7, "cursor": cursor})
        assert_problem(response, 422, "invalid_cursor")
    # Another caller cannot replay it either.
    assert_problem(
        await client.get(BASE, params={**params, "cursor": cursor}, headers=admin), 422, "invalid_cursor"
    )
    # The page size may change between pages.
    assert (await client.get(BASE, params={**params, "limit": 11, "cursor": cursor})).status_code == 200


async def test_list_makes_a_constant_number_of_queries(
    client: httpx.AsyncClient, admin: dict[str, str], communes: list[Territory], count_queries: Any
) -> None:
    counts = []
    for limit in (2, 20):
        for headers in ({}, admin):
            params = {"limit": limit, "within": str(communes[0].parent_id), "include_total": "true"}
            with count_queries() as counter:
                response = await client.get(BASE, params=params, headers=headers)
            assert len(response.json()["items"]) == limit
            counts.append(counter.count)
    public_small, admin_small, public_large, admin_large = counts
    assert public_small == public_large
    assert admin_small == admin_large
    with count_queries() as counter:
        response = await client.get(BASE, params={"limit": 200, "q": "commune"})
    assert len(response.json()["items"]) == 20
    assert counter.count == 1


# --- a larger tree ----------------------------------------------------------------------------------


async def test_subtree_of_a_larger_tree(
    client: httpx.AsyncClient, admin: dict[str, str], make_territory: TerritoryMaker
) -> None:
    region = await make_territory("region", "11", "Île-de-France")
    nodes: dict[str, set[str]] = {}
    epcis: dict[str, list[Territory]] = {}
    for d, dep_code in enumerate(("77", "78", "91")):
        departement = await make_territory("departement", dep_code, f"Département {dep_code}", region)
        members = {str(departement.id)}
        epcis[dep_code] = []
        for e in range(2):
            epci = await make_territory("epci", siren(f"2{d}{e}00000"), f"EPCI {dep_code}-{e}", departement)
            epcis[dep_code].append(epci)
            members.add(str(epci.id))
            for c in range(5):
                commune = await make_territory(
                    "commune", f"{dep_code}{e * 5 + c + 1:03d}", f"Commune {dep_code}-{e}-{c}", epci, 100 * c
                )
                members.add(str(commune.id))
        nodes[dep_code] = members

    for dep_code, members in nodes.items():
        assert len(members) == 1 + 2 + 10
        root = (await client.get(f"{BASE}/departement/{dep_code}")).json()["id"]
        assert set(ids(await listing(client, within=root))) == members
        assert await follow_pages(client, {"within": root, "limit": 4}) == ids(
            await listing(client, within=root)
        )
    everything = set(ids(await listing(client, within=str(region.id))))
    assert everything == {str(region.id)} | set().union(*nodes.values())
    assert len(everything) == 1 + 3 + 6 + 30
    counted = await client.get(
        BASE, params={"within": str(region.id), "kind": "commune", "include_total": "true"}
    )
    assert counted.json()["total"] == 30

    # Moving an EPCI with its communes to another département moves the whole branch.
    moved = epcis["77"][0]
    target = (await client.get(f"{BASE}/departement/78")).json()["id"]
    response = await client.patch(
        f"{BASE}/{moved.id}", json={"parent_id": target}, headers={**admin, "If-Match": '"1"'}
    )
    assert response.status_code == 200, response.text
    branch = set(ids(await listing(client, within=str(moved.id))))
    assert len(branch) == 6
    assert set(ids(await listing(client, within=target))) == nodes["78"] | branch
    source = (await client.get(f"{BASE}/departement/77")).json()["id"]
    assert set(ids(await listing(client, within=source))) == nodes["77"] - branch
