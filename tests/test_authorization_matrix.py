"""Who may call what: every /api/v1 route, every method, for each kind of caller and each kind of object.

API.md's "Roles" and "Who sees what", as one table (`RULES`, below): for each route (its name, the operation
id) the outcome each caller gets on each object. The test sends every request (each in a savepoint rolled
back, on one world built once) and compares the status and the problem's `code`; a route of the application
without a rule fails `test_every_route_has_a_rule`, naming it.

The callers (`ACTORS`): `none` (no key), `viewer` (territory A), `counsellor` (A, bound to the counsellor who
holds A's position and organises A's workshops), `manager_a` and `manager_b` (territory managers of A and B),
`admin`. Registration routes also try `token` and `bad_token` (no key; the registration's X-Cancel-Token, or
another's). The objects: `A` and `B` (an object in each territory; public for workshops), `A_private` and
`B_private` (workshops that are not public), `A_other` (in A, another counsellor's: workshops, counsellors);
a route without an object on its path takes `A` and `B` as what its body refers to (a creation), or `None`
(a list: `LIST`).

To declare a rule for a new route, add one entry to `RULES`:

    "webhooks_list": Rule(scoped(200, "admin", "territory_manager"), objects=LIST),
    "webhooks_get": Rule(
        scoped(200, "admin", "territory_manager"), lambda w, o: Call({"subscription_id": w.hook[o]["id"]})
    ),

`Rule(expect, call, objects, actors)`: `expect(actor, obj)` gives the (status, problem code) that caller
gets; the helpers below cover the documented cases (`everyone`, `key_holders`, `admin_only`,
`scoped(status, *roles, outside=..., seen_by=...)`, `public_or_scoped`, `organisers`, and `but(expect,
<actor>=outcome)` for exceptions); `call(world, obj)` gives the path parameters, body, headers and query of a
request that the allowed callers see succeed (`Call`); `objects` lists the objects tried (`A`/`B` by default,
`LIST` = none, `WORKSHOP_OBJECTS` adds the private and the other counsellor's workshops). A new kind of
object (`w.hook` above) is a field of `World`, built for A and B in `build_world`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.api_keys.models import ApiKey
from app.webhooks.models import WebhookDelivery
from app.workshops.models import Workshop
from tests.agreements.helpers import PROGRAMME, create_agreement, create_programme, create_signed
from tests.conftest import KeyMaker, Tree, bearer
from tests.positions.helpers import PERSON, assign, create_counsellor, create_position, day
from tests.workshops.helpers import create_workshop, person, register, workshop_body

API = "/api/v1"

# --- callers and objects -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    name: str
    role: str | None  # None: no key
    scope: str | None = None  # "A", "B", or "*" (admin)


NONE = Actor("none", None)
VIEWER = Actor("viewer", "viewer", "A")
COUNSELLOR = Actor("counsellor", "counsellor", "A")
MANAGER_A = Actor("manager_a", "territory_manager", "A")
MANAGER_B = Actor("manager_b", "territory_manager", "B")
ADMIN = Actor("admin", "admin", "*")
ACTORS = (NONE, VIEWER, COUNSELLOR, MANAGER_A, MANAGER_B, ADMIN)
TOKEN = Actor("token", None)
BAD_TOKEN = Actor("bad_token", None)

LIST: tuple[str | None, ...] = (None,)
OBJECTS: tuple[str | None, ...] = ("A", "B")
WORKSHOP_OBJECTS: tuple[str | None, ...] = ("A", "B", "A_private", "B_private", "A_other")

Outcome = tuple[int, str | None]
Expect = Callable[[Actor, str | None], Outcome]

UNAUTHENTICATED: Outcome = (401, "unauthenticated")
FORBIDDEN: Outcome = (403, "forbidden")
NOT_FOUND: Outcome = (404, "not_found")
UNKNOWN_REFERENCE: Outcome = (422, "unknown_reference")


def ok(status: int | Outcome) -> Outcome:
    return status if isinstance(status, tuple) else (status, None)


def _others(obj: str | None) -> bool:
    """A workshop in A organised by another counsellor than the `counsellor` caller's."""
    return obj is not None and obj.endswith("_other")


def _territory(obj: str | None) -> str | None:
    return None if obj is None else obj.split("_")[0]


def in_scope(actor: Actor, obj: str | None) -> bool:
    return actor.scope == "*" or obj is None or actor.scope == _territory(obj)


def is_public(obj: str | None) -> bool:
    return obj is not None and not obj.endswith("_private")


def everyone(status: int | Outcome) -> Expect:
    """Public: any caller, any object."""
    return lambda actor, obj: ok(status)


def key_holders(status: int | Outcome) -> Expect:
    """Any key; 401 without one."""
    return lambda actor, obj: UNAUTHENTICATED if actor.role is None else ok(status)


def admin_only(status: int | Outcome) -> Expect:
    """401 without a key, 403 for any other role (before the object is looked up)."""
    return lambda actor, obj: (
        UNAUTHENTICATED if actor.role is None else ok(status) if actor.role == "admin" else FORBIDDEN
    )


def scoped(
    status: int | Outcome, *roles: str, outside: Outcome = NOT_FOUND, seen_by: tuple[str, ...] = ()
) -> Expect:
    """`roles` within their territories: 401 without a key, 403 for another role, `outside` (404 on a path,
    422 unknown_reference for a body's reference) for an object outside the caller's territories. The roles
    `seen_by` see the object without the right to this form of it: 403 within their territories, 404
    outside (its existence is not revealed)."""

    def expect(actor: Actor, obj: str | None) -> Outcome:
        if actor.role is None:
            return UNAUTHENTICATED
        if actor.role in seen_by:
            return FORBIDDEN if in_scope(actor, obj) else NOT_FOUND
        if actor.role not in roles:
            return FORBIDDEN
        return ok(status) if in_scope(actor, obj) else outside

    return expect


def organisers(status: int | Outcome) -> Expect:
    """A workshop's writes: its counsellor, its territory's managers, admin. Another writer gets 403 when it
    sees the workshop (public) and 404 when it does not; a viewer is refused by its role (403)."""

    def expect(actor: Actor, obj: str | None) -> Outcome:
        if actor.role is None:
            return UNAUTHENTICATED
        if actor.role not in WORKSHOP_WRITERS:
            return FORBIDDEN
        if in_scope(actor, obj) and not (actor.role == "counsellor" and _others(obj)):
            return ok(status)
        return FORBIDDEN if is_public(obj) or in_scope(actor, obj) else NOT_FOUND

    return expect


def public_or_scoped(status: int | Outcome) -> Expect:
    """A public object for everyone, a non-public one within the caller's territories (404 outside)."""
    return lambda actor, obj: (
        ok(status) if is_public(obj) or (actor.role and in_scope(actor, obj)) else NOT_FOUND
    )


def but(expect: Expect, **exceptions: Outcome | Callable[[str | None], Outcome]) -> Expect:
    """`expect` except for the named actors (an outcome, or a function of the object)."""

    def changed(actor: Actor, obj: str | None) -> Outcome:
        exception = exceptions.get(actor.name)
        if exception is None:
            return expect(actor, obj)
        return exception if isinstance(exception, tuple) else exception(obj)

    return changed


# --- requests ------------------------------------------------------------------------------------------


@dataclass
class Call:
    """A request on the route: path parameters, JSON body, headers."""

    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)


def if_match(row: dict[str, Any]) -> dict[str, str]:
    return {"If-Match": f'"{row["version"]}"'}


@dataclass
class World:
    tree: Tree
    keys: dict[str, dict[str, str]]
    programme: dict[str, Any]
    signed: dict[str, dict[str, Any]]  # "A"/"B": a signed agreement with positions
    draft: dict[str, dict[str, Any]]
    bare: dict[str, dict[str, Any]]  # a signed agreement without positions (terminate, amendments)
    amendment: dict[str, dict[str, Any]]
    position: dict[str, dict[str, Any]]  # held by `counsellor`
    vacant: dict[str, dict[str, Any]]
    counsellor: dict[str, dict[str, Any]]  # holds `position`; the counsellor key's in A
    free: dict[str, dict[str, Any]]  # a counsellor without a position
    assignment: dict[str, dict[str, Any]]
    workshop: dict[str, dict[str, Any]]  # A, B, A_private, B_private
    started: dict[str, dict[str, Any]]  # a started workshop, for the activity report
    registration: dict[str, dict[str, Any]]  # on workshop A / B, with its cancel_token
    spare_key: str
    leaf: dict[str, Any]  # a territory nothing refers to
    hook: dict[str, dict[str, Any]]  # a webhook subscription of A / B
    delivery: dict[str, str]  # the id of a failed delivery of `hook`

    def territory(self, obj: str | None) -> uuid.UUID:
        return self.tree.ara.id if _territory(obj) == "A" else self.tree.occ.id


def _obj(obj: str | None) -> str:
    assert obj is not None
    return obj


# --- the rules -----------------------------------------------------------------------------------------

PERSONAL_READERS = ("admin", "territory_manager")
READERS = ("admin", "territory_manager", "viewer")
WRITERS = ("admin", "territory_manager")
WORKSHOP_WRITERS = ("admin", "territory_manager", "counsellor")


def _registrations(status: int | Outcome) -> Expect:
    """A workshop's registrations (personal data): its organiser, its territory managers, admin. Another
    caller who sees the workshop (public, or in scope) → 403; one who does not → 404; no key → 401."""

    def expect(actor: Actor, obj: str | None) -> Outcome:
        if actor.role is None:
            return UNAUTHENTICATED
        visible = is_public(obj) or in_scope(actor, obj)
        if actor.role in WORKSHOP_WRITERS and in_scope(actor, obj):
            if actor.role == "counsellor" and _others(obj):
                return FORBIDDEN
            return ok(status)
        return FORBIDDEN if visible else NOT_FOUND

    return expect


def _registration(status: int | Outcome) -> Expect:
    """One registration: `_registrations`, or the registrant with its cancel token (a wrong token → 403)."""
    return but(_registrations(status), token=ok(status), bad_token=FORBIDDEN)


def _registrant_only(status: int | Outcome) -> Expect:
    """The registrant's own rights (access, erasure): its cancel token only; a wrong token → 403; no token →
    401 without a key, 403 with one."""

    def expect(actor: Actor, obj: str | None) -> Outcome:
        if actor is TOKEN:
            return ok(status)
        return UNAUTHENTICATED if actor.role is None and actor is not BAD_TOKEN else FORBIDDEN

    return expect


REGISTRATION_ACTORS = (*ACTORS, TOKEN, BAD_TOKEN)


@dataclass
class Rule:
    expect: Expect
    call: Callable[[World, str | None], Call] = lambda w, o: Call()
    objects: tuple[str | None, ...] = OBJECTS
    actors: tuple[Actor, ...] = ACTORS


def _counsellor_body(w: World, o: str | None, ref: str = "NEW-REF") -> dict[str, Any]:
    return {**PERSON, "email": "nouvelle.personne@example.org", "territory_id": str(w.territory(o))}


RULES: dict[str, Rule] = {
    # Territories, programmes, referentials, statistics, open data: public reads, admin writes.
    "territories_list": Rule(everyone(200), objects=LIST),
    "territories_get_by_code": Rule(everyone(200), lambda w, o: Call({"kind": "region", "code": "84"}), LIST),
    "territories_get": Rule(everyone(200), lambda w, o: Call({"territory_id": w.territory(o)})),
    "territories_create": Rule(
        admin_only(201), lambda w, o: Call(json={"kind": "region", "code": "93", "name": "PACA"}), LIST
    ),
    "territories_update": Rule(
        admin_only(200),
        lambda w, o: Call({"territory_id": w.leaf["id"]}, {"name": "X"}, if_match(w.leaf)),
        LIST,
    ),
    "territories_delete": Rule(
        admin_only(204), lambda w, o: Call({"territory_id": w.leaf["id"]}, None, if_match(w.leaf)), LIST
    ),
    "programmes_list": Rule(everyone(200), objects=LIST),
    "programmes_get": Rule(everyone(200), lambda w, o: Call({"programme_id": w.programme["id"]}), LIST),
    "programmes_create": Rule(
        admin_only(201),
        lambda w, o: Call(json={**PROGRAMME, "code": "AUTRE"}),
        LIST,
    ),
    "programmes_update": Rule(
        admin_only(200),
        lambda w, o: Call({"programme_id": w.programme["id"]}, {"name": "X"}, if_match(w.programme)),
        LIST,
    ),
    "referentials_list": Rule(everyone(200), objects=LIST),
    "referentials_get": Rule(everyone(200), lambda w, o: Call({"name": "themes"}), LIST),
    "stats_positions": Rule(everyone(200), objects=LIST),
    "stats_workshops": Rule(everyone(200), objects=LIST),
    "open_data_lieux_csv": Rule(everyone(200), objects=LIST),
    "open_data_lieux_json": Rule(everyone(200), objects=LIST),
    # Agreements: admin writes; admin, territory managers and viewers read within their territories.
    "agreements_list": Rule(scoped(200, *READERS), objects=LIST),
    "agreements_get": Rule(
        scoped(200, *READERS), lambda w, o: Call({"agreement_id": w.signed[_obj(o)]["id"]})
    ),
    "agreements_create": Rule(
        admin_only(201),
        lambda w, o: Call(
            json={
                "programme_id": w.programme["id"],
                "territory_id": str(w.territory(o)),
                "kind": "convention",
                "reference": "NEW",
                "positions_granted": 1,
                "starts_on": "2021-03-01",
            }
        ),
    ),
    "agreements_update": Rule(
        admin_only(200),
        lambda w, o: Call(
            {"agreement_id": w.draft[_obj(o)]["id"]}, {"reference": "X"}, if_match(w.draft[_obj(o)])
        ),
    ),
    "agreements_sign": Rule(
        admin_only(200),
        lambda w, o: Call({"agreement_id": w.draft[_obj(o)]["id"]}, {"signed_on": "2021-03-02"}),
    ),
    "agreements_terminate": Rule(
        admin_only(200),
        lambda w, o: Call(
            {"agreement_id": w.bare[_obj(o)]["id"]}, {"terminated_on": day(), "reason": "Fin anticipée."}
        ),
    ),
    "agreements_amendments_list": Rule(
        scoped(200, *READERS), lambda w, o: Call({"agreement_id": w.bare[_obj(o)]["id"]})
    ),
    "agreements_amendments_get": Rule(
        scoped(200, *READERS),
        lambda w, o: Call(
            {"agreement_id": w.bare[_obj(o)]["id"], "amendment_id": w.amendment[_obj(o)]["id"]}
        ),
    ),
    "agreements_amendments_create": Rule(
        admin_only(201),
        lambda w, o: Call(
            {"agreement_id": w.bare[_obj(o)]["id"]},
            {
                "kind": "add_positions",
                "positions": 1,
                "reason": "autre",
                "reason_detail": "x",
                "effective_on": day(),
            },
        ),
    ),
    # Positions: readers within their territories; admin and territory managers write.
    "positions_list": Rule(scoped(200, *READERS), objects=LIST),
    "positions_get": Rule(
        scoped(200, *READERS), lambda w, o: Call({"position_id": w.position[_obj(o)]["id"]})
    ),
    "positions_create": Rule(
        scoped(201, *WRITERS, outside=UNKNOWN_REFERENCE),
        lambda w, o: Call(json={"agreement_id": w.signed[_obj(o)]["id"], "opened_on": "2021-04-01"}),
    ),
    "positions_update": Rule(
        scoped(200, *WRITERS),
        lambda w, o: Call(
            {"position_id": w.vacant[_obj(o)]["id"]}, {"external_ref": "NOUVEAU"}, if_match(w.vacant[_obj(o)])
        ),
    ),
    "positions_close": Rule(
        scoped(200, *WRITERS),
        lambda w, o: Call({"position_id": w.vacant[_obj(o)]["id"]}, {"closed_on": day(), "reason": "Fin."}),
    ),
    "positions_assignments_list": Rule(
        scoped(200, *PERSONAL_READERS, seen_by=("viewer",)),
        lambda w, o: Call({"position_id": w.position[_obj(o)]["id"]}),
    ),
    "positions_assignments_create": Rule(
        scoped(201, *WRITERS),
        lambda w, o: Call(
            {"position_id": w.vacant[_obj(o)]["id"]},
            {"counsellor_id": w.free[_obj(o)]["id"], "contract_type": "CDD", "started_on": day()},
        ),
    ),
    "assignments_list": Rule(scoped(200, *PERSONAL_READERS), objects=LIST),
    "assignments_get": Rule(
        scoped(200, *PERSONAL_READERS, seen_by=("viewer",)),
        lambda w, o: Call({"assignment_id": w.assignment[_obj(o)]["id"]}),
    ),
    "assignments_end": Rule(
        scoped(200, *WRITERS),
        lambda w, o: Call(
            {"assignment_id": w.assignment[_obj(o)]["id"]}, {"ended_on": day(), "end_reason": "demission"}
        ),
    ),
    # Counsellors (personal data): admin and the employer's territory managers; the counsellor itself.
    "counsellors_list": Rule(scoped(200, *PERSONAL_READERS), objects=LIST),
    "counsellors_get": Rule(
        but(
            scoped(200, *PERSONAL_READERS, seen_by=("viewer",)),
            counsellor=lambda o: {"A": ok(200), "A_other": FORBIDDEN}.get(_obj(o), NOT_FOUND),
        ),
        lambda w, o: Call({"counsellor_id": w.counsellor[_obj(o)]["id"]}),
        ("A", "B", "A_other"),
    ),
    "counsellors_get_by_ref": Rule(
        scoped(200, *PERSONAL_READERS),
        lambda w, o: Call(
            {"external_ref": w.counsellor[_obj(o)]["external_ref"]},
            query={"territory_id": w.counsellor[_obj(o)]["territory_id"]},
        ),
    ),
    "counsellors_create": Rule(
        scoped(201, *WRITERS, outside=UNKNOWN_REFERENCE), lambda w, o: Call(json=_counsellor_body(w, o))
    ),
    "counsellors_update": Rule(
        scoped(200, *WRITERS),
        lambda w, o: Call(
            {"counsellor_id": w.free[_obj(o)]["id"]}, {"phone": None}, if_match(w.free[_obj(o)])
        ),
    ),
    "counsellors_anonymize": Rule(
        admin_only(200), lambda w, o: Call({"counsellor_id": w.free[_obj(o)]["id"]})
    ),
    "counsellors_upsert_by_ref": Rule(
        scoped(201, *WRITERS, outside=UNKNOWN_REFERENCE),
        lambda w, o: Call({"external_ref": "NEW-REF"}, _counsellor_body(w, o)),
    ),
    "counsellors_bulk": Rule(
        # 207 whatever each item's fate: an item outside the caller's territories is refused on its own (the
        # code compared is then the first item's problem's).
        scoped(207, *WRITERS, outside=(207, "unknown_reference")),
        lambda w, o: Call(json={"items": [{**_counsellor_body(w, o), "external_ref": "NEW-REF"}]}),
    ),
    # Workshops: public ones for everyone; writers within their territories (a counsellor: its own).
    "workshops_list": Rule(everyone(200), objects=LIST),
    "workshops_calendar": Rule(everyone(200), objects=LIST),
    "workshops_get": Rule(
        public_or_scoped(200), lambda w, o: Call({"workshop_id": w.workshop[_obj(o)]["id"]}), WORKSHOP_OBJECTS
    ),
    "workshops_get_calendar": Rule(
        public_or_scoped(200), lambda w, o: Call({"workshop_id": w.workshop[_obj(o)]["id"]}), WORKSHOP_OBJECTS
    ),
    "workshops_create": Rule(
        but(
            scoped(201, *WORKSHOP_WRITERS, outside=UNKNOWN_REFERENCE),
            counsellor=lambda o: ok(201) if o == "A" else UNKNOWN_REFERENCE,
        ),
        lambda w, o: Call(json=workshop_body(w.position[_obj(o)]["id"])),
        ("A", "B", "A_other"),
    ),
    "workshops_update": Rule(
        organisers(200),
        lambda w, o: Call(
            {"workshop_id": w.workshop[_obj(o)]["id"]}, {"title": "X"}, if_match(w.workshop[_obj(o)])
        ),
        WORKSHOP_OBJECTS,
    ),
    "workshops_cancel": Rule(
        organisers(200),
        lambda w, o: Call({"workshop_id": w.workshop[_obj(o)]["id"]}, {"reason": "Intervenant malade."}),
        WORKSHOP_OBJECTS,
    ),
    "workshops_attendance": Rule(
        organisers(200),
        lambda w, o: Call(
            {"workshop_id": w.started[_obj(o)]["id"]}, {"registrations": [], "walk_ins": {"total": 0}}
        ),
    ),
    "workshops_register": Rule(
        public_or_scoped(201),
        lambda w, o: Call({"workshop_id": w.workshop[_obj(o)]["id"]}, person(99)),
        WORKSHOP_OBJECTS,
    ),
    "workshops_registrations_list": Rule(
        _registrations(200), lambda w, o: Call({"workshop_id": w.workshop[_obj(o)]["id"]}), WORKSHOP_OBJECTS
    ),
    "workshops_registrations_get": Rule(
        _registration(200), lambda w, o: _registration_call(w, o), actors=REGISTRATION_ACTORS
    ),
    "workshops_registrations_cancel": Rule(
        _registration(204), lambda w, o: _registration_call(w, o), actors=REGISTRATION_ACTORS
    ),
    # Change feed: any key but a counsellor's (it is for HR systems, managers and viewers); /me: any key.
    "changes_list": Rule(but(key_holders(200), counsellor=FORBIDDEN), objects=LIST),
    "me_get": Rule(key_holders(200), objects=LIST),
    # API keys: admin only.
    "api_keys_list": Rule(admin_only(200), objects=LIST),
    "api_keys_create": Rule(admin_only(201), lambda w, o: Call(json={"name": "n", "role": "admin"}), LIST),
    "api_keys_get": Rule(admin_only(200), lambda w, o: Call({"key_id": w.spare_key}), LIST),
    "api_keys_delete": Rule(admin_only(204), lambda w, o: Call({"key_id": w.spare_key}), LIST),
    "api_keys_rotate": Rule(admin_only(200), lambda w, o: Call({"key_id": w.spare_key}), LIST),
    # Webhook subscriptions: admin, and territory managers for subscriptions within their territories.
    "webhook_subscriptions_list": Rule(scoped(200, *WRITERS), objects=LIST),
    "webhook_subscriptions_create": Rule(
        scoped(201, *WRITERS, outside=UNKNOWN_REFERENCE),
        lambda w, o: Call(json={"url": HOOK_URL, "territory_ids": [str(w.territory(o))]}),
    ),
    "webhook_subscriptions_get": Rule(scoped(200, *WRITERS), lambda w, o: _hook_call(w, o)),
    "webhook_subscriptions_update": Rule(
        scoped(200, *WRITERS),
        lambda w, o: _hook_call(w, o, json={"status": "paused"}, headers=if_match(w.hook[_obj(o)])),
    ),
    "webhook_subscriptions_delete": Rule(
        scoped(204, *WRITERS), lambda w, o: _hook_call(w, o, headers=if_match(w.hook[_obj(o)]))
    ),
    "webhook_subscriptions_rotate_secret": Rule(scoped(200, *WRITERS), lambda w, o: _hook_call(w, o)),
    "webhook_subscriptions_deliveries": Rule(scoped(200, *WRITERS), lambda w, o: _hook_call(w, o)),
    "webhook_subscriptions_delivery_retry": Rule(
        scoped(200, *WRITERS),
        lambda w, o: Call({"subscription_id": w.hook[_obj(o)]["id"], "delivery_id": w.delivery[_obj(o)]}),
    ),
    # Audit trail and journal: admin only.
    "audit_events_list": Rule(admin_only(200), objects=LIST),
    # Personal data (GDPR): a counsellor's, admin only; a registrant's, only with its cancel token (a key
    # holder without it → 403 whatever the object, before any lookup).
    "counsellors_personal_data": Rule(
        admin_only(200), lambda w, o: Call({"counsellor_id": w.counsellor[_obj(o)]["id"]})
    ),
    "workshops_registrations_personal_data": Rule(
        _registrant_only(200), lambda w, o: _registration_call(w, o), actors=REGISTRATION_ACTORS
    ),
    "workshops_registrations_erase_personal_data": Rule(
        _registrant_only(204), lambda w, o: _registration_call(w, o), actors=REGISTRATION_ACTORS
    ),
}


# A public address, never contacted: creating a subscription only checks where its URL leads.
HOOK_URL = "https://93.184.215.14/hooks"


def _hook_call(w: World, o: str | None, **request: Any) -> Call:
    return Call({"subscription_id": w.hook[_obj(o)]["id"]}, **request)


def _registration_call(w: World, o: str | None) -> Call:
    registration = w.registration[_obj(o)]
    return Call({"workshop_id": registration["workshop_id"], "registration_id": registration["id"]})


# --- the world -----------------------------------------------------------------------------------------


async def build_world(
    client: httpx.AsyncClient, session: AsyncSession, tree: Tree, make_key: KeyMaker, admin: dict[str, str]
) -> World:
    programme = await create_programme(client, admin)
    where = {"A": tree.lyon_metro, "B": tree.toulouse}
    signed, draft, bare, amendment, position, vacant, counsellor, free, assignment = ({} for _ in range(9))
    workshop: dict[str, dict[str, Any]] = {}
    started: dict[str, dict[str, Any]] = {}
    registration: dict[str, dict[str, Any]] = {}
    for o, territory in where.items():
        signed[o] = await create_signed(
            client, admin, programme["id"], territory.id, reference=f"S{o}", positions_granted=5
        )
        draft[o] = await create_agreement(
            client, admin, programme["id"], territory.id, reference=f"D{o}", positions_granted=1
        )
        bare[o] = await create_signed(
            client, admin, programme["id"], territory.id, reference=f"T{o}", positions_granted=2
        )
        response = await client.post(
            f"{API}/agreements/{bare[o]['id']}/amendments",
            json={
                "kind": "add_positions",
                "positions": 1,
                "reason": "autre",
                "reason_detail": "x",
                "effective_on": day(),
            },
            headers=admin,
        )
        assert response.status_code == 201, response.text
        amendment[o] = response.json()
        position[o] = await create_position(client, admin, signed[o]["id"])
        vacant[o] = await create_position(client, admin, signed[o]["id"])
        counsellor[o] = await create_counsellor(
            client, admin, territory.id, email=f"c.{o}@example.org", external_ref=f"REF-{o}"
        )
        free[o] = await create_counsellor(client, admin, territory.id, email=f"f.{o}@example.org")
        assignment[o] = await assign(client, admin, position[o]["id"], counsellor[o]["id"])
        workshop[o] = await create_workshop(client, admin, position[o]["id"])
        workshop[f"{o}_private"] = await create_workshop(client, admin, position[o]["id"], public=False)
        started[o] = await create_workshop(client, admin, position[o]["id"])
        response = await register(client, workshop[o]["id"], 1 if o == "A" else 2)
        assert response.status_code == 201, response.text
        registration[o] = response.json()
    other_position = await create_position(client, admin, signed["A"]["id"])
    other = await create_counsellor(client, admin, where["A"].id, email="o.A@example.org")
    await assign(client, admin, other_position["id"], other["id"])
    workshop["A_other"] = await create_workshop(client, admin, other_position["id"])
    position["A_other"], counsellor["A_other"] = other_position, other
    await session.execute(
        update(Workshop)
        .where(Workshop.id.in_([uuid.UUID(s["id"]) for s in started.values()]))
        .values(starts_at=datetime.now(UTC) - timedelta(hours=3))
    )
    await session.flush()
    keys = {
        "viewer": bearer(await make_key("viewer", [tree.ara])),
        "counsellor": bearer(await make_key("counsellor", [tree.ara], counsellor_id=counsellor["A"]["id"])),
        "manager_a": bearer(await make_key("territory_manager", [tree.ara])),
        "manager_b": bearer(await make_key("territory_manager", [tree.occ])),
        "admin": admin,
    }
    spare = await client.post(f"{API}/api-keys", json={"name": "spare", "role": "admin"}, headers=admin)
    leaf = await client.post(
        f"{API}/territories",
        json={"kind": "commune", "code": "69001", "name": "Affoux", "parent_id": str(tree.rhone.id)},
        headers=admin,
    )
    assert leaf.status_code == 201, leaf.text
    hook: dict[str, dict[str, Any]] = {}
    delivery: dict[str, str] = {}
    for o, territory in where.items():
        body = {"url": HOOK_URL, "territory_ids": [str(territory.id)]}
        created = await client.post(f"{API}/webhook-subscriptions", json=body, headers=admin)
        assert created.status_code == 201, created.text
        hook[o] = created.json()
        failed = WebhookDelivery(
            id=uuid.uuid4(),
            subscription_id=uuid.UUID(hook[o]["id"]),
            change_xid=0,
            change_seq=1,
            resource="territories",
            object_id=territory.id,
            action="updated",
            object_version=1,
            territory_id=territory.id,
            occurred_at=datetime.now(UTC),
            status="failed",
            attempts=9,
            created_at=datetime.now(UTC),
        )
        session.add(failed)
        await session.flush()
        delivery[o] = str(failed.id)
    # Their versions as they are now (agreements and registrations changed them).
    programme = await _get(client, admin, f"{API}/programmes/{programme['id']}")
    for o in workshop:
        workshop[o] = await _get(client, admin, f"{API}/workshops/{workshop[o]['id']}")
    return World(
        tree,
        keys,
        programme,
        signed,
        draft,
        bare,
        amendment,
        position,
        vacant,
        counsellor,
        free,
        assignment,
        workshop,
        started,
        registration,
        spare.json()["id"],
        leaf.json(),
        hook,
        delivery,
    )


async def _get(client: httpx.AsyncClient, headers: dict[str, str], path: str) -> dict[str, Any]:
    response = await client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _headers(world: World, actor: Actor, obj: str | None) -> dict[str, str]:
    if actor is TOKEN:
        return {"X-Cancel-Token": world.registration[_obj(obj)]["cancel_token"]}
    if actor is BAD_TOKEN:
        other = "B" if obj == "A" else "A"
        return {"X-Cancel-Token": world.registration[other]["cancel_token"]}
    return {} if actor.role is None else world.keys[actor.name]


def api_routes(app: FastAPI) -> Iterator[tuple[str, str, str]]:
    """(name, method, path format) of every route under /api/v1."""
    for context in iter_route_contexts(app.router.routes):
        path = context.path_format
        if path and path.startswith(API + "/") and isinstance(context.original_route, APIRoute):
            for method in sorted(context.methods or ()):
                yield str(context.name), method, path


def _items(response: httpx.Response) -> list[dict[str, Any]]:
    if response.status_code != 200 or response.headers.get("content-type") != "application/json":
        return []
    body = response.json()
    items = body.get("items") if isinstance(body, dict) else None
    return [item for item in items or [] if isinstance(item, dict)]


def _code(response: httpx.Response) -> str | None:
    """The problem's code; for a bulk answer (207), its first item's problem's."""
    if response.headers.get("content-type") == "application/problem+json":
        code: str = response.json()["code"]
        return code
    if response.status_code == 207:
        problem = response.json()["items"][0]["problem"]
        return None if problem is None else str(problem["code"])
    return None


def test_every_route_has_a_rule(app: FastAPI) -> None:
    missing = sorted(
        {f"{name} ({method} {path})" for name, method, path in api_routes(app) if name not in RULES}
    )
    assert not missing, (
        "routes without an authorization rule in tests/test_authorization_matrix.py RULES: "
        + ", ".join(missing)
    )
    stale = sorted(set(RULES) - {name for name, _m, _p in api_routes(app)})
    assert not stale, f"rules for routes the application does not have: {stale}"


@pytest.fixture
async def world(
    client: httpx.AsyncClient, session: AsyncSession, tree: Tree, make_key: KeyMaker, admin: dict[str, str]
) -> World:
    return await build_world(client, session, tree, make_key, admin)


async def test_every_route_answers_each_caller_as_documented(
    app: FastAPI, client: httpx.AsyncClient, connection: AsyncConnection, tree: Tree, world: World
) -> None:
    a_side = {str(t.id) for t in (tree.ara, tree.rhone, tree.lyon_metro, tree.lyon, tree.villeurbanne)}
    b_side = {str(t.id) for t in (tree.occ, tree.hg, tree.toulouse)}
    outside = {"A": b_side, "B": a_side}
    mismatches: list[str] = []
    count = 0
    for name, method, path in api_routes(app):
        rule = RULES[name]
        for obj in rule.objects:
            call = rule.call(world, obj)
            url = path.format(**call.params)
            for actor in rule.actors:
                expected = rule.expect(actor, obj)
                savepoint = await connection.begin_nested()
                try:
                    response = await client.request(
                        method,
                        url,
                        json=call.json,
                        params=call.query,
                        headers={**call.headers, **_headers(world, actor, obj)},
                    )
                finally:
                    await savepoint.rollback()
                count += 1
                actual = (response.status_code, _code(response))
                where = f"{name} {method} obj={obj} actor={actor.name}"
                if actual != expected:
                    detail = response.text[:200] if response.status_code >= 400 else ""
                    mismatches.append(f"{where}: expected {expected}, got {actual} {detail}")
                elif obj is None and actor.scope in outside:
                    # A scoped caller's list shows nothing of the other territory (but public workshops).
                    shown = [
                        item["id"]
                        for item in _items(response)
                        if item.get("territory_id") in outside[actor.scope] and not item.get("public")
                    ]
                    if shown:
                        mismatches.append(f"{where}: lists objects outside its territories: {shown}")
    assert not mismatches, f"{len(mismatches)} of {count} requests:\n" + "\n".join(mismatches)


async def test_every_route_refuses_an_expired_revoked_or_replaced_key(
    app: FastAPI,
    client: httpx.AsyncClient,
    session: AsyncSession,
    make_key: KeyMaker,
    admin: dict[str, str],
) -> None:
    """401 on every route (the public ones too, and those the direct path answers), whatever the body."""
    expired = await make_key("admin", name="expired")
    revoked = await make_key("admin", name="revoked")
    rotated = await make_key("admin", name="rotated")
    ids = {
        s: (await client.get(f"{API}/me", headers=bearer(s))).json()["key_id"]
        for s in (expired, revoked, rotated)
    }
    await session.execute(
        update(ApiKey).where(ApiKey.id == uuid.UUID(ids[expired])).values(expires_at=datetime.now(UTC))
    )
    await session.flush()
    assert (await client.delete(f"{API}/api-keys/{ids[revoked]}", headers=admin)).status_code == 204
    rotation = await client.post(
        f"{API}/api-keys/{ids[rotated]}/rotate", json={"grace_seconds": 0}, headers=admin
    )
    assert rotation.status_code == 200, rotation.text
    refused = []
    for name, method, path in api_routes(app):
        url = path.format(**{p: uuid.uuid4() for p in _placeholders(path)})
        for secret in (expired, revoked, rotated):
            response = await client.request(method, url, json={}, headers=bearer(secret))
            if (response.status_code, _code(response)) != UNAUTHENTICATED:
                refused.append(f"{name} {method}: {response.status_code} {response.text[:120]}")
    assert not refused, refused


def _placeholders(path: str) -> list[str]:
    return [segment.split("}")[0] for segment in path.split("{")[1:]]


def _reads_a_body(app: FastAPI) -> set[tuple[str, str]]:
    """(name, method) of every /api/v1 route that reads a JSON body."""
    return {
        (str(context.name), method)
        for context in iter_route_contexts(app.router.routes)
        if isinstance(context.original_route, APIRoute)
        and context.original_route.dependant.body_params
        and (context.path_format or "").startswith(API + "/")
        for method in context.methods or ()
    }


async def test_a_body_that_is_not_json_meets_the_callers_checks_first(
    app: FastAPI,
    client: httpx.AsyncClient,
    route_client: httpx.AsyncClient,
    connection: AsyncConnection,
    world: World,
) -> None:
    """FastAPI reads a JSON body before it resolves the route's dependencies: a body that is not JSON must
    not answer its 422 before the caller's 401 or 403. For every route that reads a body, each caller gets
    what the rule gives it on every object (401 without a key, 403 for a role the route refuses), and
    whoever passes those checks gets the body's 422 `validation_error`; an unknown key gets its 401. Both
    ways: the direct path (whose twins resolve the caller before they read the body) and the routes."""
    bodies = _reads_a_body(app)
    assert len(bodies) > 20, bodies
    mismatches: list[str] = []
    for name, method, path in api_routes(app):
        if (name, method) not in bodies:
            continue
        rule = RULES[name]
        obj = rule.objects[0]
        call = rule.call(world, obj)
        callers: list[tuple[str, dict[str, str], Outcome]] = [
            ("unknown key", bearer("cnfs_unknown"), UNAUTHENTICATED)
        ]
        for actor in rule.actors:
            outcomes = {rule.expect(actor, o) for o in rule.objects}
            expected = (
                outcomes.pop() if outcomes in ({UNAUTHENTICATED}, {FORBIDDEN}) else (422, "validation_error")
            )
            callers.append((actor.name, _headers(world, actor, obj), expected))
        for caller, headers, expected in callers:
            # Not JSON; nested too deeply for the decoder; not UTF-8.
            for broken in (b'{"name": ', b"[" * 5000, b'"\xff"'):
                for way, sender in (("direct", client), ("route", route_client)):
                    savepoint = await connection.begin_nested()
                    try:
                        response = await sender.request(
                            method,
                            path.format(**call.params),
                            content=broken,
                            params=call.query,
                            headers={**call.headers, **headers, "Content-Type": "application/json"},
                        )
                    finally:
                        await savepoint.rollback()
                    actual = (response.status_code, _code(response))
                    if actual != expected:
                        mismatches.append(
                            f"{name} {method} {way} caller={caller} body={broken[:10]!r}: expected "
                            f"{expected}, got {actual} {response.text[:160]}"
                        )
    assert not mismatches, "\n".join(mismatches)
