"""The load benchmark's scenarios, in one table.

A scenario is one request (driven by wrk with plain headers) or a cycle of requests (driven by a generated wrk
Lua script, one connection per wrk thread so that each connection runs its own cycle, and the whole cycle
counts as one operation). Paths, headers and bodies are templates filled from the dataset:
`{departement_id}`, `{commune_code}`, `{agreement_id}`, `{agreement_version}`, `{programme_id}`,
`{write_territory_id}`, `{key_admin}`, `{key_territory_manager}`, `{key_viewer}`; in a cycle, `{id}` is the id
of the previous step's answer and `{unique}` a value unique to the request (for unique references).

A scenario may also bring its own wrk Lua script (`lua`). To add a scenario: append a `Scenario` to
SCENARIOS; if the reference and the minimal FastAPI apps do not implement it yet, set `apps=SERVICE_ONLY`
(the table then shows the service alone), or add its handler to `bench.shared` and one route to each of
`bench.reference_app` and `bench.minimal_fastapi_app`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SERVICE, REFERENCE, MINIMAL = "service", "reference", "minimal"
APPS = (SERVICE, REFERENCE, MINIMAL)
ALL_APPS = frozenset(APPS)
SERVICE_ONLY = frozenset({SERVICE})
POSTGRESQL, SQLITE = "postgresql", "sqlite"
BOTH_DATABASES = frozenset({POSTGRESQL, SQLITE})


@dataclass(frozen=True)
class Step:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    expect: int = 200


@dataclass(frozen=True)
class Scenario:
    name: str
    steps: tuple[Step, ...]
    apps: frozenset[str] = ALL_APPS
    databases: frozenset[str] = BOTH_DATABASES
    # Fields whose values differ by nature from one answer to the next (new ids, clocks): compared by
    # presence only.
    volatile: frozenset[str] = frozenset()
    # SQL run after each measured run (writes), so that every app starts from the same data.
    cleanup: tuple[str, ...] = ()
    # A wrk Lua script of the scenario's own (a template like the paths), for what a cycle of steps cannot
    # express; the steps still serve the start-up comparison and the statement count. It must print
    # "BENCH ops=<n> failures=<n>" in done() if its operations are not single requests.
    lua: str | None = None


def get(path: str, expect: int = 200, **headers: str) -> tuple[Step, ...]:
    return (Step("GET", path, {k.replace("_", "-"): v for k, v in headers.items()}, expect=expect),)


ADMIN = "Bearer {key_admin}"
MANAGER = "Bearer {key_territory_manager}"
WRITE_PREFIX = "BENCH-W-"

SCENARIOS: list[Scenario] = [
    Scenario("territory by kind/code", get("/api/v1/territories/commune/{commune_code}")),
    Scenario("communes, first page of 50", get("/api/v1/territories?kind=commune&limit=50")),
    Scenario("a département's subtree", get("/api/v1/territories?within={departement_id}&limit=50")),
    Scenario("name search q='eglise 12'", get("/api/v1/territories?q=eglise%2012&limit=20")),
    Scenario("agreements, 50 per page, admin key", get("/api/v1/agreements?limit=50", Authorization=ADMIN)),
    Scenario(
        "agreements, 50 per page, scoped key", get("/api/v1/agreements?limit=50", Authorization=MANAGER)
    ),
    Scenario(
        "one agreement, If-None-Match → 304",
        get(
            "/api/v1/agreements/{agreement_id}",
            expect=304,
            Authorization=ADMIN,
            If_None_Match='"{agreement_version}"',
        ),
    ),
    Scenario(
        "create and sign an agreement (pair)",
        (
            Step(
                "POST",
                "/api/v1/agreements",
                {"Authorization": ADMIN, "Content-Type": "application/json"},
                '{{"programme_id":"{programme_id}","territory_id":"{write_territory_id}",'
                '"kind":"convention","reference":"' + WRITE_PREFIX + '{{unique}}","positions_granted":1,'
                '"starts_on":"2026-03-01"}}',
                expect=201,
            ),
            Step(
                "POST",
                "/api/v1/agreements/{{id}}/sign",
                {"Authorization": ADMIN, "Content-Type": "application/json"},
                '{{"signed_on":"2026-03-02"}}',
            ),
        ),
        databases=frozenset({POSTGRESQL}),
        volatile=frozenset({"id", "reference", "created_at", "updated_at"}),
        cleanup=(f"DELETE FROM agreements WHERE reference LIKE '{WRITE_PREFIX}%'",),
    ),
]


def context(dataset: dict[str, Any]) -> dict[str, str]:
    """The template values of a dataset (see `bench.dataset.Dataset`)."""
    values = {k: str(v) for k, v in dataset.items() if not isinstance(v, dict)}
    values.update({f"key_{role}": secret for role, secret in dataset["keys"].items()})
    return values


def fill(step: Step, values: dict[str, str]) -> Step:
    """The step with the dataset's values in; `{id}` and `{unique}` stay for the cycle to fill."""
    return Step(
        step.method,
        step.path.format(**values),
        {k: v.format(**values) for k, v in step.headers.items()},
        step.body.format(**values) if step.body is not None else None,
        step.expect,
    )
