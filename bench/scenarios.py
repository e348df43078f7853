"""The load benchmark's scenarios, in one table.

A scenario is one request (driven by wrk with plain headers) or a cycle of requests (driven by a generated wrk
Lua script, one connection per wrk thread so that each connection runs its own cycle, and the whole cycle
counts as one operation). Paths, headers and bodies are templates filled from the dataset:
`{departement_id}` (the Rhône), `{commune_code}` (Lyon, 69123), `{agreement_id}`, `{agreement_version}`,
`{programme_id}`, `{write_territory_id}`, `{counsellor_id}` and `{counsellor_ref}` (a counsellor employed by
the Rhône), `{counsellors_in_scope}`, `{key_admin}`, `{key_territory_manager}`, `{key_viewer}` (both on the
Rhône), `{workshop_id}` and `{workshop_version}` (an upcoming public workshop of the Rhône),
`{workshop_register_id}`, `{workshops_register_ids}` and `{workshops_register_commune}` (the registration
scenario's workshops, see `bench.workshops_dataset`); in a cycle, `{id}` is the id of the previous step's
answer and `{unique}` a value unique to the request (for unique references).

A scenario may also bring its own wrk Lua script (`lua`), or be measured without wrk (`driver="sequential"`):
its cycles run one after the other through one HTTP client, for `--duration` seconds, only the last step of
each cycle timed, and its throughput counted in `items` per operation (the HR bulk: items per second).

To add a scenario: append a `Scenario` to SCENARIOS; if the reference and the minimal FastAPI apps do not
implement it yet, set `apps=SERVICE_ONLY` (the table then shows the service alone), or add its handler to
`bench.shared` and one route to each of `bench.reference_app` and `bench.minimal_fastapi_app`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.dataset import COUNSELLOR_BODY

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
    # "wrk", or "sequential": cycles one at a time through one client, the last step timed (see above).
    driver: str = "wrk"
    # What one operation counts for in the throughput column (items of a bulk request).
    items: int = 1
    # At most this many operations per app for the in-process CPU column (heavy operations).
    max_cpu_passes: int = 1000
    # The service with its rate limits on, counters in "memory" or in "redis" (`RATE_LIMIT_BACKENDS`), set
    # high enough never to refuse: the cost of the limiter beside the scenario named `base`. Such a row is
    # measured only when `--rate-limits` names its backend.
    rate_limits: str | None = None
    base: str | None = None


POSTGRESQL_ONLY = frozenset({POSTGRESQL})
# The rate limiter's counters: in each worker's memory, or in Redis (shared by the workers).
RATE_LIMIT_BACKENDS = ("memory", "redis")
REDIS_URL = "redis://127.0.0.1:6379/0"
# Limits no run reaches: the limiter counts every request and never refuses one.
UNREACHABLE_LIMIT = "1000000000/minute"


def get(path: str, expect: int = 200, **headers: str) -> tuple[Step, ...]:
    return (Step("GET", path, {k.replace("_", "-"): v for k, v in headers.items()}, expect=expect),)


ADMIN = "Bearer {key_admin}"
MANAGER = "Bearer {key_territory_manager}"
WRITE_PREFIX = "BENCH-W-"
BULK_ITEMS = 1000
JSON = "application/json"


def _bulk_body(items: int = BULK_ITEMS) -> str:
    """A bulk request of `items` new counsellors of the key's only territory (a template: `{unique}` makes
    the references of each request new; braces doubled for `str.format`)."""
    item = (
        '{{{{"external_ref":"' + WRITE_PREFIX + '{{{{unique}}}}-{n}","first_name":"Dominique",'
        '"last_name":"Fictif","email":"dominique.fictif@example.org",'
        '"training":{{{{"label":"CCP2","hours":105,"pix_level":1}}}}}}}}'
    )
    return '{{"items":[' + ",".join(item.format(n=n) for n in range(items)) + "]}}"


# The idempotent HR sync of an existing counsellor, each request another of the Rhône's counsellors (they
# all hold the dataset's values, so that nothing changes): wrk's requests rotate over their references.
_UPSERT_LUA = (
    """
local refs = {{}}
for i = 0, {counsellors_in_scope} - 1 do
  refs[#refs + 1] = string.format("BENCH-C-0000-%03d", i)
end
local n = 0
local headers = {{
  ["Authorization"] = "Bearer {key_territory_manager}", ["Content-Type"] = "application/json"
}}
local body = '"""
    + COUNSELLOR_BODY.replace("{", "{{").replace("}", "}}")
    + """'
function request()
  n = n + 1
  return wrk.format("PUT", "/api/v1/counsellors/by-ref/" .. refs[(n % #refs) + 1], headers, body)
end
"""
)

# Rows written by a scenario, removed after each run: the dataset has no entry in the change feed, so every
# entry there comes from a write scenario. (The idempotent PUT by-ref writes nothing: it sends the values
# that the dataset's counsellors hold.)
CHANGES_CLEANUP = "DELETE FROM changes"
COUNSELLOR_CLEANUP = (CHANGES_CLEANUP, f"DELETE FROM counsellors WHERE external_ref LIKE '{WRITE_PREFIX}%'")

# The registration scenario: anonymous registrations of new people (their addresses under this prefix),
# each request on the next of the workshops reserved for it (10 000 seats each, so that none fills up).
REGISTRANT_PREFIX = "bench-w-"
REGISTRATION_BODY = (
    '{{"first_name":"Dominique","last_name":"Fictif","email":"'
    + REGISTRANT_PREFIX
    + '{{unique}}@example.org"}}'
)
_REGISTER_LUA = (
    """
local ids = {{}}
for id in ("{workshops_register_ids}"):gmatch("%S+") do
  ids[#ids + 1] = id
end
local threads = {{}}
local next_thread = 0
tid = 0
local n = 0
local headers = {{["Content-Type"] = "application/json"}}

function setup(thread)
  next_thread = next_thread + 1
  thread:set("tid", next_thread)
  table.insert(threads, thread)
end

function request()
  n = n + 1
  local id = ids[((tid * 7919 + n) % #ids) + 1]
  local body = '{{"first_name":"Dominique","last_name":"Fictif","email":"""
    + f'"{REGISTRANT_PREFIX}'
    + """' .. tid .. "-" .. n .. '@example.org"}}'
  return wrk.format("POST", "/api/v1/workshops/" .. id .. "/registrations", headers, body)
end
"""
)
# The registration scenario's writes undone: its workshops are alone in their commune and had no
# registration, so they go back to their state in the dataset (no registration, version 1).
REGISTRATION_CLEANUP = (
    "DELETE FROM registrations WHERE workshop_id IN"
    " (SELECT id FROM workshops WHERE venue_commune_code = '{workshops_register_commune}')",
    "UPDATE workshops SET registered_count = 0, waitlisted_count = 0, seats_left = capacity, version = 1,"
    " updated_at = created_at WHERE venue_commune_code = '{workshops_register_commune}' AND version <> 1",
)
# The statistics: a year of the dataset's history (every workshop of it is over), the Rhône's subtree or
# the whole country. Their names all start with "stats" (`--only stats`).
STATS_YEAR = "from=2025-01-01&to=2025-12-31"
STATS_DEPARTEMENT = f"/api/v1/stats/workshops?within={{departement_id}}&{STATS_YEAR}&group_by=theme"
VIEWER = "Bearer {key_viewer}"
WORKSHOP_SEARCH = "workshops: Rhône, insertion_professionnelle, upcoming, 20 per page"
ONE_WORKSHOP = "one workshop, anonymous"
OPEN_DATA_JSON = "open data: venues as JSON (no key)"
ONE_WORKSHOP_PATH = "/api/v1/workshops/{workshop_id}"

SCENARIOS: list[Scenario] = [
    Scenario("territory by kind/code", get("/api/v1/territories/commune/{commune_code}")),
    Scenario("communes, first page of 50", get("/api/v1/territories?kind=commune&limit=50")),
    Scenario("a département's subtree", get("/api/v1/territories?within={departement_id}&limit=50")),
    Scenario(
        "name search q='villefranche saone'", get("/api/v1/territories?q=villefranche%20saone&limit=20")
    ),
    Scenario("name search q='st etienne'", get("/api/v1/territories?q=st%20etienne&limit=20")),
    Scenario("code search q='69123'", get("/api/v1/territories?q=69123&limit=20")),
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
        cleanup=(CHANGES_CLEANUP, f"DELETE FROM agreements WHERE reference LIKE '{WRITE_PREFIX}%'"),
    ),
    Scenario("positions, 50 per page, scoped key", get("/api/v1/positions?limit=50", Authorization=MANAGER)),
    Scenario(
        "counsellors, 50 per page, scoped key (journaled)",
        get("/api/v1/counsellors?limit=50", Authorization=MANAGER),
    ),
    Scenario("one counsellor, scoped key", get("/api/v1/counsellors/{counsellor_id}", Authorization=MANAGER)),
    Scenario(
        "PUT counsellor by-ref, unchanged (idempotent)",
        (
            Step(
                "PUT",
                "/api/v1/counsellors/by-ref/{counsellor_ref}",
                {"Authorization": MANAGER, "Content-Type": JSON},
                COUNSELLOR_BODY.replace("{", "{{").replace("}", "}}"),
            ),
        ),
        databases=frozenset({POSTGRESQL}),
        lua=_UPSERT_LUA,
        cleanup=COUNSELLOR_CLEANUP,
    ),
    Scenario(
        "HR bulk: 1 000 new counsellors (items/s)",
        (
            Step(
                "POST",
                "/api/v1/counsellors/bulk",
                {"Authorization": MANAGER, "Content-Type": JSON},
                _bulk_body(),
                207,
            ),
        ),
        apps=SERVICE_ONLY,
        databases=frozenset({POSTGRESQL}),
        volatile=frozenset({"id"}),
        cleanup=COUNSELLOR_CLEANUP,
        driver="sequential",
        items=BULK_ITEMS,
        max_cpu_passes=5,
    ),
    Scenario(
        "HR bulk: the same 1 000 again (items/s)",
        (
            Step(
                "POST",
                "/api/v1/counsellors/bulk",
                {"Authorization": MANAGER, "Content-Type": JSON},
                _bulk_body(),
                207,
            ),
            Step(
                "POST",
                "/api/v1/counsellors/bulk",
                {"Authorization": MANAGER, "Content-Type": JSON},
                _bulk_body(),
                207,
            ),
        ),
        apps=SERVICE_ONLY,
        databases=frozenset({POSTGRESQL}),
        volatile=frozenset({"id"}),
        cleanup=COUNSELLOR_CLEANUP,
        driver="sequential",
        items=BULK_ITEMS,
        max_cpu_passes=5,
    ),
    Scenario(
        WORKSHOP_SEARCH,
        get("/api/v1/workshops?department_code=69&theme=insertion_professionnelle&limit=20"),
        databases=POSTGRESQL_ONLY,
    ),
    Scenario(ONE_WORKSHOP, get(ONE_WORKSHOP_PATH), databases=POSTGRESQL_ONLY),
    Scenario(
        "one workshop, If-None-Match → 304",
        get(ONE_WORKSHOP_PATH, expect=304, If_None_Match='"{workshop_version}"'),
        databases=POSTGRESQL_ONLY,
    ),
    Scenario(
        "register to a workshop (anonymous)",
        (
            Step(
                "POST",
                "/api/v1/workshops/{workshop_register_id}/registrations",
                {"Content-Type": JSON},
                REGISTRATION_BODY,
                201,
            ),
        ),
        databases=POSTGRESQL_ONLY,
        volatile=frozenset({"id", "email", "created_at", "cancel_token"}),
        cleanup=REGISTRATION_CLEANUP,
        lua=_REGISTER_LUA,
    ),
    Scenario(
        OPEN_DATA_JSON,
        get("/api/v1/open-data/lieux-mediation-numerique.json"),
        databases=POSTGRESQL_ONLY,
        # A national export per request, which a map or a cache reloads a few times a day: measured one
        # request at a time, not under wrk's 32 connections.
        driver="sequential",
        max_cpu_passes=3,
    ),
    Scenario(
        "open data: venues as CSV (no key)",
        get("/api/v1/open-data/lieux-mediation-numerique.csv"),
        apps=SERVICE_ONLY,
        databases=POSTGRESQL_ONLY,
        driver="sequential",
        max_cpu_passes=3,
    ),
    Scenario(
        "stats: workshops of the Rhône in 2025 by theme", get(STATS_DEPARTEMENT), databases=POSTGRESQL_ONLY
    ),
    Scenario(
        "stats: workshops of the Rhône in 2025 by theme, viewer key",
        get(STATS_DEPARTEMENT, Authorization=VIEWER),
        databases=POSTGRESQL_ONLY,
    ),
    Scenario(
        "stats: workshops national by month, 2021-2027",
        get("/api/v1/stats/workshops?group_by=month"),
        databases=POSTGRESQL_ONLY,
    ),
    Scenario(
        "stats: workshops national in 2025 by territory",
        get(f"/api/v1/stats/workshops?{STATS_YEAR}&group_by=territory"),
        databases=POSTGRESQL_ONLY,
    ),
    Scenario("stats: positions by territory", get("/api/v1/stats/positions?group_by=territory")),
    *(
        Scenario(
            f"{ONE_WORKSHOP}, rate limits in {'Redis' if backend == 'redis' else backend}",
            get(ONE_WORKSHOP_PATH),
            apps=SERVICE_ONLY,
            databases=POSTGRESQL_ONLY,
            rate_limits=backend,
            base=ONE_WORKSHOP,
        )
        for backend in RATE_LIMIT_BACKENDS
    ),
]


def context(dataset: dict[str, Any]) -> dict[str, str]:
    """The template values of a dataset (see `bench.dataset.Dataset`)."""
    values = {k: str(v) for k, v in dataset.items() if not isinstance(v, dict)}
    values.update({f"key_{role}": secret for role, secret in dataset["keys"].items()})
    values["workshop_register_id"] = (dataset.get("workshops_register_ids") or "").split(" ")[0]
    return values


def needs_workshops(scenario: Scenario) -> bool:
    """Whether the scenario reads or writes the workshops (which only the PostgreSQL dataset has)."""
    return any("/workshops" in step.path or "/open-data" in step.path for step in scenario.steps)


def cleanup_statements(scenario: Scenario, values: dict[str, str]) -> tuple[str, ...]:
    """The scenario's cleanup SQL with the dataset's values in."""
    return tuple(statement.format(**values) for statement in scenario.cleanup)


def rate_limit_settings(backend: str) -> dict[str, str]:
    """The service's settings (environment variables) for its rate limits on, with this backend."""
    if backend not in RATE_LIMIT_BACKENDS:
        raise ValueError(f"rate limit backend: one of {', '.join(RATE_LIMIT_BACKENDS)}")
    settings = {
        "RATE_LIMITS_ENABLED": "true",
        "RATE_LIMIT_PER_KEY": UNREACHABLE_LIMIT,
        "RATE_LIMIT_PER_ADDRESS": UNREACHABLE_LIMIT,
        "RATE_LIMIT_REGISTRATION": UNREACHABLE_LIMIT,
    }
    if backend == "redis":
        settings["REDIS_URL"] = REDIS_URL
    return settings


def fill(step: Step, values: dict[str, str]) -> Step:
    """The step with the dataset's values in; `{id}` and `{unique}` stay for the cycle to fill."""
    return Step(
        step.method,
        step.path.format(**values),
        {k: v.format(**values) for k, v in step.headers.items()},
        step.body.format(**values) if step.body is not None else None,
        step.expect,
    )
