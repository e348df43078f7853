"""Nothing the service answers is built from the `Host` header, which the client chooses (a cache in front
would otherwise keep a link to the attacker's site): every route of the application, enumerated from
`app.routes`, its path parameters filled with the ids of real objects, with an admin key and without, through
the direct path and through the routes, answers no `evil.example` in any header or body (PUBLIC_BASE_URL is
unset, the default)."""

from __future__ import annotations

import re
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from tests.conftest import KeyMaker, Tree
from tests.helpers import MERGE_PATCH
from tests.workshops.helpers import WORKSHOPS, build_place, create_workshop, person, register, workshop_body

EVIL = "evil.example"
_PARAM = re.compile(r"{([a-z_]+)(?::[a-z_]+)?}")


def _route_paths(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every route (HEAD with GET), and the static mount's root."""
    found: list[tuple[str, str]] = []
    for route in iter_route_contexts(app.router.routes):
        path = getattr(route, "path", None)
        if path is None:
            continue
        methods = sorted(getattr(route, "methods", None) or {"GET"})
        found.extend((method, path) for method in methods)
    return sorted(set(found), key=lambda item: (item[0] != "GET", item[1], item[0]))


def _fill(path: str, ids: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "code":
            return "not_found" if path.startswith("/problems") else "69"
        return ids.get(name, "00000000-0000-0000-0000-000000000000")

    return _PARAM.sub(value, path)


def _leaks(response: httpx.Response) -> list[str]:
    where = [f"header {k}: {v}" for k, v in response.headers.items() if EVIL in v.lower()]
    if EVIL.encode() in response.content.lower():
        where.append(f"body: {response.text[:300]}")
    return where


async def test_no_answer_is_built_from_the_host_header(
    client: httpx.AsyncClient,
    route_client: httpx.AsyncClient,
    app: FastAPI,
    admin: dict[str, str],
    tree: Tree,
    make_key: KeyMaker,
) -> None:
    place = await build_place(client, admin, tree, make_key)
    workshop = await create_workshop(
        client, admin, place.lyon_position["id"], capacity=1, waitlist_capacity=2
    )
    registration = (await register(client, workshop["id"], 1)).json()
    waiting = (await register(client, workshop["id"], 2)).json()
    agreement = place.world.lyon
    amendment = await client.post(
        f"/api/v1/agreements/{agreement['id']}/amendments",
        json={
            "kind": "add_positions",
            "positions": 1,
            "reason": "difficultes_de_recrutement",
            "effective_on": "2022-09-01",
        },
        headers=admin,
    )
    assert amendment.status_code == 201, amendment.text
    assignments = await client.get("/api/v1/assignments", headers=admin)
    key = await client.post("/api/v1/api-keys", json={"name": "sweep", "role": "admin"}, headers=admin)
    assert key.status_code == 201, key.text
    ids = {
        "territory_id": str(tree.lyon.id),
        "kind": "departement",
        "programme_id": agreement["programme_id"],
        "agreement_id": agreement["id"],
        "amendment_id": amendment.json()["id"],
        "position_id": place.lyon_position["id"],
        "counsellor_id": place.counsellor["id"],
        "external_ref": "RH-0001",
        "assignment_id": assignments.json()["items"][0]["id"],
        "workshop_id": workshop["id"],
        "registration_id": registration["id"],
        "name": "themes",
        "key_id": key.json()["id"],
    }
    bodies: dict[tuple[str, str], Any] = {
        ("POST", "/api/v1/workshops"): workshop_body(place.lyon_position["id"]),
        ("POST", "/api/v1/workshops/{workshop_id}/registrations"): person(3),
        ("POST", "/api/v1/api-keys"): {"name": "another", "role": "admin"},
        ("PUT", "/api/v1/counsellors/by-ref/{external_ref}"): {
            "territory_id": str(tree.lyon_metro.id),
            "first_name": "Camille",
            "last_name": "Exemple",
        },
    }
    routes = _route_paths(app)
    assert len(routes) > 60
    checked = 0
    leaks: list[str] = []
    for method, template in routes:
        url = _fill(template, ids)
        for callers in ({}, admin):
            headers = {"Host": EVIL, **callers}
            content: bytes | None = None
            if method in ("POST", "PUT", "PATCH"):
                body = bodies.get((method, template), {})
                content = httpx.Request("POST", "/", json=body).content
                headers["Content-Type"] = MERGE_PATCH if method == "PATCH" else "application/json"
                headers["If-Match"] = '"1"'
            for api in (client, route_client) if method == "GET" else (client,):
                response = await api.request(method, url, content=content, headers=headers)
                assert response.status_code < 500, (method, url, response.text)
                leaks += [f"{method} {url} ({'key' if callers else 'no key'}): {w}" for w in _leaks(response)]
                checked += 1
    # Beyond the routes: a trailing slash, an unknown path, another method, a paged list, the registrant's
    # token, a preflight, the static files' mount.
    extra = [
        ("GET", f"{WORKSHOPS}/", {}),
        ("GET", "/nowhere", {}),
        ("DELETE", WORKSHOPS, {}),
        ("GET", WORKSHOPS, {"limit": "1"}),
        ("GET", "/api/v1/territories", {"limit": "1"}),
        ("GET", f"{WORKSHOPS}/{workshop['id']}/registrations/{waiting['id']}", {}),
        ("OPTIONS", WORKSHOPS, {}),
        ("GET", "/static-offline-docs/swagger-ui.css", {}),
    ]
    for method, url, params in extra:
        headers = {
            "Host": EVIL,
            "X-Cancel-Token": waiting["cancel_token"],
            "Origin": "https://app.example.fr",
            "Access-Control-Request-Method": "GET",
        }
        response = await client.request(method, url, params=params, headers=headers)
        assert response.status_code < 500, (method, url, response.text)
        leaks += [f"{method} {url}: {w}" for w in _leaks(response)]
        checked += 1
    assert not leaks, "\n".join(leaks)
    assert checked > 150
