"""What the reference app and the minimal FastAPI app share: database access, SQL, key check, JSON.

Both apps run exactly these functions, so that they differ only in their web layer. The SQL follows the
service's statements one for one (read from the app's repositories and services), with two differences that
the service's fast path is meant to reach as well: the API key and its territories are read in one statement
(a join) rather than two, and a connection is not pinged before use. A read of one statement runs without
BEGIN/COMMIT (one statement is its own snapshot); a read of several (a page and its current assignments, a
subtree and its page, a counsellor and its current assignment) runs in one snapshot, as the service reads it
(`snapshot`); writes run in one transaction, taking the same row locks in the same order
(the programme first). The territory search parses `q` with the service's own `app.territories.search.parse`
(words, abbreviations, the code) and runs the service's word-table SQL and ranking, written out by hand.

The answers have the service's shape: the same fields in the same order, `{"items": [...], "next_cursor":
...}` with a signed cursor bound to the query and the caller, `Link` and `ETag` headers, 304 on a matching
`If-None-Match`, and a problem+json with the service's `code` on errors. PostgreSQL through an asyncpg pool;
SQLite through a small pool of aiosqlite connections (reads only: the write scenarios run on PostgreSQL; the
workshops, which the SQLite dataset has none of, too)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson
import uuid_utils

from app.referentials import data as referentials
from app.territories import search
from app.territories.codes import TerritoryKind, code_error

ORJSON_OPTIONS = orjson.OPT_UTC_Z
KEY_PREFIX = "cnfs_"
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
READER_ROLES = frozenset({"admin", "territory_manager", "viewer"})
KINDS = frozenset(k.value for k in TerritoryKind)


def dumps(value: Any) -> bytes:
    # asyncpg returns its own UUID subclass, which orjson does not take natively.
    return orjson.dumps(value, default=str, option=ORJSON_OPTIONS)


# --- database access ----------------------------------------------------------------------------------


TIMEOUTS = {"lock_timeout": "5000", "statement_timeout": "30000"}


class PgDatabase:
    """An asyncpg pool; connections are handed out as asyncpg connections (behind PgBouncer, wrapped so that
    every statement runs under the server's timeouts: `BouncedConnection`)."""

    dialect = "postgresql"

    def __init__(self, pool: Any, bounced: bool = False) -> None:
        self.pool = pool
        self.bounced = bounced

    @classmethod
    async def open(cls, url: str, size: int = 10) -> PgDatabase:
        import asyncpg

        dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        if os.environ.get("BENCH_PGBOUNCER"):
            # Through PgBouncer in transaction mode (`bench.load --pgbouncer`): what asyncpg documents for
            # it, no statement cache. PgBouncer refuses the timeouts as start-up parameters: they are set
            # in each transaction (`BouncedConnection`), as the service sets them.
            pool = await asyncpg.create_pool(
                dsn, min_size=min(2, size), max_size=size, statement_cache_size=0
            )
            return cls(pool, bounced=True)
        pool = await asyncpg.create_pool(dsn, min_size=min(2, size), max_size=size, server_settings=TIMEOUTS)
        return cls(pool)

    def acquire(self) -> Any:
        if self.bounced:
            return self._bounced()
        return self.pool.acquire()

    @asynccontextmanager
    async def _bounced(self) -> AsyncIterator[BouncedConnection]:
        async with self.pool.acquire() as conn:
            yield BouncedConnection(conn)

    async def close(self) -> None:
        await self.pool.close()

    def sql(self, text: str) -> str:
        return text

    @staticmethod
    def path_prefix(column: str, param: str) -> str:
        # The service's range in byte order (app.core.paths), which a generic plan reads from the index.
        upper = f"left({param}, -1) || chr(ascii(right({param}, 1)) + 1)"
        return f"({column} ~>=~ {param} AND {column} ~<~ ({upper}))"

    @staticmethod
    def path_pattern(prefix: str) -> str:
        return prefix

    @staticmethod
    def arg(value: Any) -> Any:
        return value


_SET_TIMEOUTS = "; ".join(f"SET LOCAL {name} = {value}" for name, value in TIMEOUTS.items())


class BouncedConnection:
    """An asyncpg connection behind PgBouncer (transaction mode) with the server's timeouts on every
    statement, as the service has them there (`app.core.direct`): a statement outside a transaction runs in
    one of its own, begun with its timeouts in one string of the simple protocol (BEGIN; SET LOCAL ...),
    then committed; a transaction begins the same way. Without this, behind PgBouncer the reference would
    run with no server-side timeout at all, which the service does not allow itself."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    async def _alone(self, method: str, *args: Any, **kwargs: Any) -> Any:
        conn = self.conn
        if conn.is_in_transaction():
            return await getattr(conn, method)(*args, **kwargs)
        await conn.execute(f"BEGIN; {_SET_TIMEOUTS}")
        try:
            result = await getattr(conn, method)(*args, **kwargs)
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")
        return result

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        return await self._alone("fetch", *args, **kwargs)

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        return await self._alone("fetchrow", *args, **kwargs)

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        return await self._alone("fetchval", *args, **kwargs)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await self._alone("execute", *args, **kwargs)

    async def executemany(self, *args: Any, **kwargs: Any) -> Any:
        return await self._alone("executemany", *args, **kwargs)

    @asynccontextmanager
    async def transaction(self, isolation: str | None = None, readonly: bool = False) -> AsyncIterator[None]:
        # (asyncpg's own transactions refuse to nest in one begun by hand: a savepoint is made here.)
        if self.conn.is_in_transaction():
            await self.conn.execute("SAVEPOINT bounced")
            try:
                yield
            except BaseException:
                await self.conn.execute("ROLLBACK TO SAVEPOINT bounced")
                raise
            await self.conn.execute("RELEASE SAVEPOINT bounced")
            return
        begin = "BEGIN"
        if isolation is not None:
            begin += " ISOLATION LEVEL " + isolation.replace("_", " ").upper()
        if readonly:
            begin += " READ ONLY"
        await self.conn.execute(f"{begin}; {_SET_TIMEOUTS}")
        try:
            yield
        except BaseException:
            await self.conn.execute("ROLLBACK")
            raise
        await self.conn.execute("COMMIT")


_PLACEHOLDER = re.compile(r"\$(\d+)")
_UUID_COLUMNS = frozenset(
    {
        "id",
        "parent_id",
        "programme_id",
        "territory_id",
        "api_key_id",
        "agreement_id",
        "agreement_territory_id",
        "position_id",
        "counsellor_id",
        "a_id",
        "a_position_id",
        "a_counsellor_id",
    }
)
_TIME_COLUMNS = frozenset({"created_at", "updated_at", "expires_at", "revoked_at", "anonymized_at"})


def _sqlite_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


class SqliteConnection:
    """asyncpg's connection methods over aiosqlite, converting values as SQLAlchemy stores them (UUIDs as 32
    hex digits, timestamps as naive UTC text)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @staticmethod
    def _args(args: Sequence[Any]) -> list[Any]:
        out: list[Any] = []
        for value in args:
            if isinstance(value, uuid.UUID):
                out.append(value.hex)
            elif isinstance(value, datetime):
                out.append(value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" "))
            elif isinstance(value, date):
                out.append(value.isoformat())
            else:
                out.append(value)
        return out

    @staticmethod
    def _row(names: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for name, value in zip(names, values, strict=True):
            if value is not None and name in _UUID_COLUMNS:
                value = str(uuid.UUID(hex=value))
            elif name in _TIME_COLUMNS:
                value = _sqlite_time(value)
            row[name] = value
        return row

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async with self.conn.execute(sql, self._args(args)) as cursor:
            names = [d[0] for d in cursor.description]
            return [self._row(names, r) for r in await cursor.fetchall()]

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        async with self.conn.execute(sql, self._args(args)) as cursor:
            names = [d[0] for d in cursor.description]
            row = await cursor.fetchone()
            return None if row is None else self._row(names, row)

    async def execute(self, sql: str, *args: Any) -> str:
        await self.conn.execute(sql, self._args(args))
        return ""

    @asynccontextmanager
    async def transaction(self, mode: str = "IMMEDIATE") -> AsyncIterator[None]:
        await self.conn.execute(f"BEGIN {mode}")
        try:
            yield
        except BaseException:
            await self.conn.execute("ROLLBACK")
            raise
        await self.conn.execute("COMMIT")


class SqliteDatabase:
    """A few aiosqlite connections (each has its own thread), in WAL mode like the app's."""

    dialect = "sqlite"

    def __init__(self, connections: list[Any]) -> None:
        self.connections = connections
        self.free: asyncio.Queue[Any] = asyncio.Queue()
        for conn in connections:
            self.free.put_nowait(conn)
        self._sql: dict[str, str] = {}

    @classmethod
    async def open(cls, url: str, size: int = 4) -> SqliteDatabase:
        import aiosqlite

        path = url.split("///", 1)[-1]
        connections = []
        for _ in range(size):
            conn = await aiosqlite.connect(path, isolation_level=None)
            for pragma in ("foreign_keys=ON", "journal_mode=WAL", "busy_timeout=5000", "synchronous=NORMAL"):
                await conn.execute(f"PRAGMA {pragma}")
            connections.append(conn)
        return cls(connections)

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[SqliteConnection]:
        conn = await self.free.get()
        try:
            yield SqliteConnection(conn)
        finally:
            self.free.put_nowait(conn)

    async def close(self) -> None:
        for conn in self.connections:
            await conn.close()

    def sql(self, text: str) -> str:
        converted = self._sql.get(text)
        if converted is None:
            converted = (
                _PLACEHOLDER.sub(r"?\1", text).replace(" FOR UPDATE", "").replace(" FOR KEY SHARE", "")
            )
            self._sql[text] = converted
        return converted

    @staticmethod
    def path_prefix(column: str, param: str) -> str:
        return f"{column} GLOB {param}"

    @staticmethod
    def path_pattern(prefix: str) -> str:
        return prefix + "*"

    @staticmethod
    def arg(value: Any) -> Any:
        return value


Database = PgDatabase | SqliteDatabase


async def open_database(url: str) -> Database:
    if url.startswith("postgresql"):
        return await PgDatabase.open(url, int(os.environ.get("BENCH_POOL_SIZE", "10")))
    return await SqliteDatabase.open(url, int(os.environ.get("BENCH_SQLITE_CONNECTIONS", "4")))


# --- replies ------------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


_PROBLEM_TITLES = {
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    422: "Invalid request",
}


def problem(status: int, code: str, detail: str) -> Reply:
    body = {
        "type": f"/problems/{code}",
        "title": _PROBLEM_TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
    }
    headers = {"content-type": "application/problem+json"}
    if status == 401:
        headers["www-authenticate"] = 'Bearer realm="cnfs-api"'
    return Reply(status, dumps(body), headers)


def json_reply(body: Any, status: int = 200, version: int | None = None, **headers: str) -> Reply:
    out = {"content-type": "application/json", **headers}
    if version is not None:
        out["etag"] = f'"{version}"'
    return Reply(status, dumps(body), out)


def _tags(header: str) -> list[str]:
    return [t.strip().removeprefix("W/") for t in header.split(",") if t.strip()]


def not_modified(if_none_match: str | None, version: int) -> Reply | None:
    if if_none_match:
        tags = _tags(if_none_match)
        if "*" in tags or f'"{version}"' in tags:
            return Reply(304, b"", {"etag": f'"{version}"'})
    return None


# --- cursors (the service's format: signed, bound to the query and the caller) ----------------------


def _json_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def encode_cursor(secret: bytes, values: Iterable[Any], binding: str) -> str:
    payload = orjson.dumps({"v": [_json_value(v) for v in values], "b": binding}, default=str)
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    sig = base64.urlsafe_b64encode(hmac.new(secret, payload, hashlib.sha256).digest()[:16]).decode()
    return f"{body}.{sig}".replace("=", "")


def binding_for(path: str, params: Iterable[tuple[str, str]], caller: str) -> str:
    kept = sorted((k, v) for k, v in params if k not in ("cursor", "limit"))
    raw = orjson.dumps([path, kept, caller])
    return hashlib.sha256(raw).hexdigest()[:24]


def link_header(base_url: str, path: str, params: Sequence[tuple[str, str]], cursor: str) -> str:
    from urllib.parse import urlencode

    query = urlencode([(k, v) for k, v in params if k != "cursor"] + [("cursor", cursor)])
    return f'<{base_url}{path}?{query}>; rel="next"'


# --- the key check ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    role: str
    key_id: str | None = None
    paths: tuple[str, ...] = ()
    territory_ids: tuple[Any, ...] = ()
    counsellor_id: Any = None

    @property
    def name(self) -> str:
        return self.key_id or "public"


ANONYMOUS = Caller("public")

KEY_SQL = (
    "SELECT k.id, k.role, k.counsellor_id, t.id AS territory_id, t.path FROM api_keys AS k"
    " LEFT JOIN api_key_territories AS kt ON kt.api_key_id = k.id"
    " LEFT JOIN territories AS t ON t.id = kt.territory_id"
    " WHERE k.secret_hash = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2)"
)


async def caller_for(db: Database, conn: Any, authorization: str | None) -> Caller | Reply:
    """The caller of a request: anonymous without a key, else its role and territory paths (one statement).
    A malformed, unknown, revoked or expired key is a 401 problem."""
    if authorization is None:
        return ANONYMOUS
    scheme, _, secret = authorization.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        return problem(401, "unauthenticated", "the Authorization header must be `Bearer <api key>`")
    if not secret.startswith(KEY_PREFIX):
        return problem(401, "unauthenticated", "invalid API key")
    digest = hashlib.sha256(secret.encode()).hexdigest()
    rows = await conn.fetch(db.sql(KEY_SQL), digest, datetime.now(UTC))
    if not rows:
        return problem(401, "unauthenticated", "invalid, revoked or expired API key")
    first = rows[0]
    return Caller(
        role=first["role"],
        key_id=str(first["id"]),
        paths=tuple(r["path"] for r in rows if r["path"] is not None),
        territory_ids=tuple(as_uuid(r["territory_id"]) for r in rows if r["territory_id"] is not None),
        counsellor_id=first["counsellor_id"],
    )


def require_reader(caller: Caller | Reply, roles: frozenset[str] = READER_ROLES) -> Caller | Reply:
    if isinstance(caller, Reply):
        return caller
    if caller.role == "public":
        return problem(401, "unauthenticated", "this operation needs an API key")
    if caller.role not in roles:
        return problem(403, "forbidden", f"the {caller.role} role may not do this")
    return caller


def scope_clause(db: Database, caller: Caller, column: str, first_param: int) -> tuple[str, list[Any]]:
    """The service's territory scope: rows whose territory lies in one of the caller's subtrees."""
    if caller.role == "admin":
        return "", []
    if not caller.paths:
        return " AND false" if db.dialect == "postgresql" else " AND 0", []
    ors = " OR ".join(
        db.path_prefix("territories.path", f"${first_param + i}") for i in range(len(caller.paths))
    )
    clause = f" AND {column} IN (SELECT territories.id FROM territories WHERE {ors})"
    return clause, [db.path_pattern(p) for p in caller.paths]


# --- territories --------------------------------------------------------------------------------------

TERRITORY_COLUMNS = "id, kind, code, name, parent_id, population, created_at, updated_at, version"


def territory_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "code": row["code"],
        "name": row["name"],
        "parent_id": row["parent_id"],
        "population": row["population"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "version": row["version"],
    }


async def territory_by_code(db: Database, kind: str, code: str, if_none_match: str | None) -> Reply:
    if kind not in KINDS:
        return problem(422, "validation_error", "unknown kind")
    if code_error(TerritoryKind(kind), code):
        return problem(404, "not_found", f"no {kind} with code {code}")
    async with db.acquire() as conn:
        row = await conn.fetchrow(
            db.sql(f"SELECT {TERRITORY_COLUMNS} FROM territories WHERE kind = $1 AND code = $2"), kind, code
        )
    if row is None:
        return problem(404, "not_found", f"no {kind} with code {code}")
    return not_modified(if_none_match, row["version"]) or json_reply(
        territory_json(row), version=row["version"]
    )


TERRITORY_LIST_PARAMS = frozenset({"kind", "code", "parent_id", "within", "q", "sort", "limit", "cursor"})


@dataclass(frozen=True)
class ListRequest:
    """What a list needs besides its filters: the page size, the caller, and the request's URL parts for the
    cursor binding and the Link header."""

    limit: int
    caller: str
    path: str
    params: Sequence[tuple[str, str]]
    base_url: str
    secret: bytes


def _page(
    rows: list[Any], page: ListRequest, values: Any, render: Any, extra: Mapping[str, str] | None = None
) -> Reply:
    headers = dict(extra or {})
    next_cursor = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        binding = binding_for(page.path, page.params, page.caller)
        next_cursor = encode_cursor(page.secret, values(rows[-1]), binding)
        headers["link"] = link_header(page.base_url, page.path, page.params, next_cursor)
    return json_reply({"items": [render(r) for r in rows], "next_cursor": next_cursor}, **headers)


def _search_sql(db: Database, query: search.Query, args: list[Any]) -> tuple[list[str], str]:
    """The service's word search (app.territories.repository: `matches`, `match_quality`): the likely
    rarest word of the query drives through the (token) index, every other word is checked on the
    candidates through the primary key; then the match quality, the population, the name and the id."""

    def param(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    def starts_a_word(column: str, prefixes: tuple[str, ...]) -> str:
        # Words hold only [a-z0-9]: no LIKE or GLOB wildcard can occur in a prefix.
        return "(" + " OR ".join(db.path_prefix(column, param(db.path_pattern(p))) for p in prefixes) + ")"

    driving, *others = query.by_selectivity()
    where = [
        "id IN (SELECT territory_words.territory_id FROM territory_words WHERE "
        + starts_a_word("territory_words.token", driving)
        + ")"
    ]
    for alternatives in others:
        where.append(
            "EXISTS (SELECT 1 FROM territory_words AS w WHERE w.territory_id = territories.id AND "
            + starts_a_word("w.token", alternatives)
            + ")"
        )
    whens = []
    if query.code is not None:
        code = param(query.code)
        whens.append(f"WHEN code = {code} OR siren = {code} THEN {search.CODE}")
    phrases = query.phrases
    whens += [
        f"WHEN search_name IN ({', '.join(param(p) for p in phrases)}) THEN {search.NAME}",
        "WHEN ("
        + " OR ".join(db.path_prefix("search_name", param(db.path_pattern(p + " "))) for p in phrases)
        + f") THEN {search.NAME_START}",
        "WHEN ("
        + " AND ".join(
            "(" + " OR ".join(f"(' ' || search_name || ' ') LIKE {param(f'% {w} %')}" for w in words) + ")"
            for words in query.alternatives
        )
        + f") THEN {search.WHOLE_WORDS}",
        "WHEN ("
        + " OR ".join(db.path_prefix("search_name", param(db.path_pattern(p))) for p in phrases)
        + f") THEN {search.NAME_PREFIX}",
    ]
    order = f"CASE {' '.join(whens)} ELSE {search.WORDS} END, coalesce(population, -1) DESC, name_sort, id"
    return where, order


def journal_snapshot(db: Database, conn: Any) -> Any:
    """`snapshot` for an answer that writes its journal line: REPEATABLE READ that may write on PostgreSQL,
    BEGIN IMMEDIATE on SQLite (`app.db.journal_execution_options`)."""
    if db.dialect == "sqlite":
        return conn.transaction("IMMEDIATE")
    return conn.transaction(isolation="repeatable_read")


def snapshot(db: Database, conn: Any) -> Any:
    """One snapshot for an answer read in several statements, as the service reads it (the caller's key
    before it, on its own): REPEATABLE READ and READ ONLY on PostgreSQL, a DEFERRED transaction on SQLite."""
    if db.dialect == "sqlite":
        return conn.transaction("DEFERRED")
    return conn.transaction(isolation="repeatable_read", readonly=True)


async def territories_list(
    db: Database,
    page: ListRequest,
    *,
    kind: str | None = None,
    within: uuid.UUID | None = None,
    q: str | None = None,
) -> Reply:
    """Public. Filters `kind`, `within` (a subtree), `q` (the service's word search and ranking)."""
    if kind is not None and kind not in KINDS:
        return problem(422, "validation_error", "unknown kind")
    query = search.parse(q) if q else None
    async with db.acquire() as conn, snapshot(db, conn) if within is not None else nullcontext():
        where: list[str] = []
        args: list[Any] = []
        if kind is not None:
            args.append(kind)
            where.append(f"kind = ${len(args)}")
        if within is not None:
            root = await conn.fetchrow(db.sql("SELECT path FROM territories WHERE id = $1"), within)
            if root is None:
                return problem(422, "validation_error", "no territory with this id")
            args.append(db.path_pattern(root["path"]))
            where.append(db.path_prefix("path", f"${len(args)}"))
        order = "name_sort, id"
        if query is not None:
            if query.empty:
                where.append("1 = 0")
            else:
                matching, order = _search_sql(db, query, args)
                where += matching
        args.append(page.limit + 1)
        sql = (
            f"SELECT {TERRITORY_COLUMNS}, name_sort, siren, search_name FROM territories"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" ORDER BY {order} LIMIT ${len(args)}"
        )
        rows = await conn.fetch(db.sql(sql), *args)

    def values(row: Mapping[str, Any]) -> list[Any]:
        if query is not None:
            quality = query.quality(row["code"], row["siren"], row["search_name"])
            population = row["population"] if row["population"] is not None else -1
            return [quality, population, row["name_sort"], row["id"]]
        return [row["name_sort"], row["id"]]

    return _page(rows, page, values, territory_json)


# --- agreements ---------------------------------------------------------------------------------------

AGREEMENT_COLUMNS = (
    "id, programme_id, territory_id, kind, reference, status, positions_granted, subsidy_per_position_cents,"
    " signed_on, starts_on, ends_on, terminated_on, termination_reason, created_at, updated_at, version"
)


def agreement_select(today_param: int) -> str:
    """The agreement's columns and its position counts in one SELECT, as the service reads them: open
    positions (not closed) and occupied ones (open, with an assignment covering the day at `$today_param`)."""
    return (
        f"SELECT {AGREEMENT_COLUMNS},"
        " (SELECT count(*) FROM positions WHERE positions.agreement_id = agreements.id"
        " AND positions.closed_on IS NULL) AS positions_open,"
        " (SELECT count(*) FROM positions WHERE positions.agreement_id = agreements.id"
        " AND positions.closed_on IS NULL AND EXISTS (SELECT 1 FROM assignments"
        f" WHERE assignments.position_id = positions.id AND assignments.started_on <= ${today_param}"
        f" AND (assignments.ended_on IS NULL OR assignments.ended_on >= ${today_param})))"
        " AS positions_occupied FROM agreements"
    )


def agreement_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "programme_id": row["programme_id"],
        "territory_id": row["territory_id"],
        "kind": row["kind"],
        "reference": row["reference"],
        "status": row["status"],
        "positions_granted": row["positions_granted"],
        "subsidy_per_position_cents": row["subsidy_per_position_cents"],
        "subsidy_total_cents": row["positions_granted"] * row["subsidy_per_position_cents"],
        "signed_on": row["signed_on"],
        "starts_on": row["starts_on"],
        "ends_on": row["ends_on"],
        "terminated_on": row["terminated_on"],
        "termination_reason": row["termination_reason"],
        # Rows written by create and sign carry no counts: a new agreement has no position yet.
        "positions_open": row.get("positions_open", 0),
        "positions_occupied": row.get("positions_occupied", 0),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "version": row["version"],
    }


AGREEMENT_LIST_PARAMS = frozenset(
    {"programme_id", "territory_id", "within", "status", "kind", "sort", "limit", "cursor", "include_total"}
)


async def agreements_list(db: Database, page: ListRequest, authorization: str | None) -> Reply:
    """Readers only; a scoped key sees the agreements of its subtrees. Oldest first (the default sort)."""
    async with db.acquire() as conn:
        caller = require_reader(await caller_for(db, conn, authorization))
        if isinstance(caller, Reply):
            return caller
        scope, args = scope_clause(db, caller, "territory_id", 2)
        args = [today(), *args, page.limit + 1]
        sql = f"{agreement_select(1)} WHERE true{scope} ORDER BY created_at, id LIMIT ${len(args)}"
        rows = await conn.fetch(db.sql(sql), *args)
    page = ListRequest(page.limit, caller.name, page.path, page.params, page.base_url, page.secret)
    return _page(rows, page, lambda r: [r["created_at"], r["id"]], agreement_json)


async def agreement_get(
    db: Database, agreement_id: uuid.UUID, authorization: str | None, if_none_match: str | None
) -> Reply:
    async with db.acquire() as conn:
        caller = require_reader(await caller_for(db, conn, authorization))
        if isinstance(caller, Reply):
            return caller
        scope, args = scope_clause(db, caller, "territory_id", 3)
        row = await conn.fetchrow(
            db.sql(f"{agreement_select(1)} WHERE id = $2{scope}"), today(), agreement_id, *args
        )
        if row is None:
            return problem(404, "not_found", "no agreement with this id")
    return not_modified(if_none_match, row["version"]) or json_reply(
        agreement_json(row), version=row["version"]
    )


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _date(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else None
    except ValueError:
        return None


def _strict_int(value: Any, high: int) -> int | None:
    return value if type(value) is int and 0 <= value <= high else None


@dataclass(frozen=True)
class AgreementInput:
    programme_id: uuid.UUID
    territory_id: uuid.UUID
    kind: str
    reference: str
    positions_granted: int
    subsidy_per_position_cents: int | None
    starts_on: date
    ends_on: date | None


_CREATE_FIELDS = frozenset(
    {
        "programme_id",
        "territory_id",
        "kind",
        "reference",
        "positions_granted",
        "subsidy_per_position_cents",
        "starts_on",
        "ends_on",
    }
)


def parse_agreement(body: bytes) -> AgreementInput | Reply:
    """The checks of the service's input model (types, bounds, no unknown field), by hand."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return problem(422, "validation_error", "the body is not JSON")
    if not isinstance(data, dict) or set(data) - _CREATE_FIELDS:
        return problem(422, "validation_error", "a JSON object with the agreement's fields only")
    programme_id = _uuid(data.get("programme_id"))
    territory_id = _uuid(data.get("territory_id"))
    reference = data.get("reference")
    reference = reference.strip() if isinstance(reference, str) else None
    positions = _strict_int(data.get("positions_granted"), 100_000)
    subsidy = data.get("subsidy_per_position_cents")
    starts_on = _date(data.get("starts_on"))
    ends_on = _date(data["ends_on"]) if data.get("ends_on") is not None else None
    if (
        programme_id is None
        or territory_id is None
        or data.get("kind") not in ("preliminary", "convention")
        or not reference
        or len(reference) > 64
        or positions is None
        or (subsidy is not None and _strict_int(subsidy, 10**9) is None)
        or starts_on is None
        or (data.get("ends_on") is not None and ends_on is None)
    ):
        return problem(422, "validation_error", "invalid agreement")
    return AgreementInput(
        programme_id, territory_id, data["kind"], reference, positions, subsidy, starts_on, ends_on
    )


def new_id() -> uuid.UUID:
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)


def _change_sql(db: Database, resource: str) -> str:
    """The change feed's row, as the service writes it in the same transaction."""
    xid = "pg_current_xact_id()::text::bigint" if db.dialect == "postgresql" else "0"
    return db.sql(
        "INSERT INTO changes (xid, resource, object_id, action, version, territory_id, occurred_at)"
        f" VALUES ({xid}, '{resource}', $1, $2, $3, $4, $5)"
    )


def _audit_sql(db: Database) -> str:
    """The audit trail's row (`app.core.audit`), as the service writes it in the same transaction."""
    return db.sql(
        "INSERT INTO audit_events (id, occurred_at, kind, action, resource, resource_id, actor_key_id,"
        " actor_name, actor_role, request_id, changes, subject_ids)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    )


_AUDIT_BOOKKEEPING = frozenset({"id", "created_at", "updated_at", "version"})


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, default=str, option=orjson.OPT_UTC_Z).decode()


def _audit_args(
    db: Database,
    caller: Caller,
    kind: str,
    action: str,
    resource: str,
    resource_id: Any,
    changes: dict[str, Any] | None,
    subject_ids: list[str] | None,
    now: datetime,
) -> list[Any]:
    """The audit row's values: a write's changed fields or a read's people (the ids of the answer)."""
    postgres = db.dialect == "postgresql"

    def ident(value: Any) -> Any:
        if value is None:
            return None
        return uuid.UUID(str(value)) if postgres else uuid.UUID(str(value)).hex

    return [
        ident(new_id()),
        now if postgres else now.replace(tzinfo=None),
        kind,
        action,
        resource,
        ident(resource_id),
        ident(caller.key_id),
        None,
        caller.role,
        None,
        _json_text(changes),
        _json_text(subject_ids),
    ]


# A registration's fields that its audit event masks (`app.workshops.models`; tests/test_bench.py compares).
REGISTRATION_MASKED = frozenset(
    {"first_name", "last_name", "email", "email_key", "phone", "cancel_token_hash"}
)


def _masked(row: Mapping[str, Any], masked: frozenset[str]) -> dict[str, Any]:
    return {k: "***" if k in masked and v is not None else v for k, v in row.items()}


def _created(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: {"before": None, "after": v} for k, v in row.items() if k not in _AUDIT_BOOKKEEPING}


async def agreement_create(db: Database, data: AgreementInput, authorization: str | None) -> Reply:
    """Admin. The service's statements, in its order, in one transaction: the programme locked and its
    version moved on (one UPDATE), one SELECT for the territory (share-locked), the reference and the
    programme's live totals, the INSERT, the change."""
    if data.ends_on is not None and data.ends_on < data.starts_on:
        return problem(422, "validation_error", "ends_on must be on or after starts_on")
    async with db.acquire() as conn:
        caller = require_reader(await caller_for(db, conn, authorization), frozenset({"admin"}))
        if isinstance(caller, Reply):
            return caller
        now = datetime.now(UTC)
        async with conn.transaction():
            programme = await conn.fetchrow(
                db.sql(
                    "UPDATE programmes SET version = version + 1, updated_at = $1 WHERE id = $2"
                    " RETURNING id, positions_target, budget_cents, subsidy_per_position_cents"
                ),
                now,
                data.programme_id,
            )
            if programme is None:
                return problem(422, "unknown_reference", "no programme with this id")
            share = " FOR KEY SHARE" if db.dialect == "postgresql" else ""
            live = "programme_id = $1 AND status IN ('draft', 'signed')"
            checks = await conn.fetchrow(
                db.sql(
                    f"SELECT (SELECT id FROM territories WHERE id = $2{share}) AS territory_id,"
                    " EXISTS (SELECT 1 FROM agreements WHERE programme_id = $1 AND reference = $3) AS taken,"
                    " (SELECT coalesce(sum(positions_granted), 0)"
                    f" FROM agreements WHERE {live}) AS positions,"
                    " (SELECT coalesce(sum(positions_granted * subsidy_per_position_cents), 0)"
                    f" FROM agreements WHERE {live}) AS cents"
                ),
                data.programme_id,
                data.territory_id,
                data.reference,
            )
            assert checks is not None
            if checks["territory_id"] is None:
                return problem(422, "unknown_reference", "no territory with this id")
            if checks["taken"]:
                return problem(
                    409,
                    "agreement_reference_exists",
                    f"the programme already has an agreement with reference {data.reference}",
                )
            per_position = (
                data.subsidy_per_position_cents
                if data.subsidy_per_position_cents is not None
                else programme["subsidy_per_position_cents"]
            )
            if int(checks["positions"]) + data.positions_granted > programme["positions_target"]:
                return problem(409, "programme_positions_exceeded", "the programme has no positions left")
            if int(checks["cents"]) + data.positions_granted * per_position > programme["budget_cents"]:
                return problem(409, "programme_budget_exceeded", "the programme has no budget left")
            row = {
                "id": new_id(),
                "programme_id": data.programme_id,
                "territory_id": data.territory_id,
                "kind": data.kind,
                "reference": data.reference,
                "status": "draft",
                "positions_granted": data.positions_granted,
                "subsidy_per_position_cents": per_position,
                "signed_on": None,
                "starts_on": data.starts_on,
                "ends_on": data.ends_on,
                "terminated_on": None,
                "termination_reason": None,
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
            await conn.execute(
                db.sql(
                    "INSERT INTO agreements (id, programme_id, territory_id, kind, reference, status,"
                    " positions_granted, subsidy_per_position_cents, signed_on, starts_on, ends_on,"
                    " terminated_on, termination_reason, created_at, updated_at, version)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
                ),
                *row.values(),
            )
            await conn.execute(_change_sql(db, "agreements"), row["id"], "created", 1, data.territory_id, now)
            await conn.execute(
                _audit_sql(db),
                *_audit_args(
                    db,
                    caller,
                    "write",
                    "agreements_create",
                    "agreements",
                    row["id"],
                    _created(row),
                    None,
                    now,
                ),
            )
    return json_reply(agreement_json(row), 201, 1, location=f"/api/v1/agreements/{row['id']}")


def parse_sign(body: bytes) -> date | Reply:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return problem(422, "validation_error", "the body is not JSON")
    signed_on = (
        _date(data.get("signed_on")) if isinstance(data, dict) and set(data) == {"signed_on"} else None
    )
    return signed_on if signed_on is not None else problem(422, "validation_error", "signed_on: a date")


async def agreement_sign(
    db: Database, agreement_id: uuid.UUID, signed_on: date, authorization: str | None
) -> Reply:
    """Admin. draft → signed, as the service does it: the agreement's row locked and read, updated (its
    columns returned), the change."""
    async with db.acquire() as conn:
        caller = require_reader(await caller_for(db, conn, authorization), frozenset({"admin"}))
        if isinstance(caller, Reply):
            return caller
        async with conn.transaction():
            lock = " FOR UPDATE" if db.dialect == "postgresql" else ""
            row = await conn.fetchrow(
                db.sql(f"SELECT id, territory_id, status, version FROM agreements WHERE id = $1{lock}"),
                agreement_id,
            )
            if row is None:
                return problem(404, "not_found", "no agreement with this id")
            if row["status"] != "draft":
                return problem(
                    409,
                    "invalid_transition",
                    f"only a draft can be signed; this agreement is {row['status']}",
                )
            now = datetime.now(UTC)
            signed = await conn.fetchrow(
                db.sql(
                    "UPDATE agreements SET status = 'signed', signed_on = $1, version = version + 1,"
                    f" updated_at = $2 WHERE id = $3 RETURNING {AGREEMENT_COLUMNS}"
                ),
                signed_on,
                now,
                agreement_id,
            )
            assert signed is not None
            await conn.execute(
                _change_sql(db, "agreements"),
                agreement_id,
                "updated",
                signed["version"],
                signed["territory_id"],
                now,
            )
            changes = {
                "status": {"before": row["status"], "after": signed["status"]},
                "signed_on": {"before": None, "after": signed_on},
            }
            await conn.execute(
                _audit_sql(db),
                *_audit_args(
                    db, caller, "write", "agreements_sign", "agreements", agreement_id, changes, None, now
                ),
            )
    return json_reply(agreement_json(signed), version=signed["version"])


# --- positions ----------------------------------------------------------------------------------------

POSITION_COLUMNS = (
    "id, agreement_id, territory_id, external_ref, typology, opened_on, closed_on, close_reason, created_at,"
    " updated_at, version"
)
POSITION_LIST_PARAMS = frozenset(
    {
        "agreement_id",
        "territory_id",
        "within",
        "status",
        "external_ref",
        "updated_since",
        "sort",
        "limit",
        "cursor",
        "include_total",
    }
)
PERSONAL_READERS = frozenset({"admin", "territory_manager"})
# The assignment covering a day (API.md, "Dates": `ended_on` is inclusive).
COVERS = "started_on <= $1 AND (ended_on IS NULL OR ended_on >= $1)"


def today() -> date:
    return datetime.now(UTC).date()


def position_json(
    row: Mapping[str, Any], current: Mapping[str, Any] | None, personal: bool
) -> dict[str, Any]:
    if row["closed_on"] is not None:
        status, current = "closed", None
    else:
        status = "occupied" if current is not None else "vacant"
    shown = current if current is not None and personal else None
    return {
        "id": row["id"],
        "agreement_id": row["agreement_id"],
        "territory_id": row["territory_id"],
        "external_ref": row["external_ref"],
        "typology": row["typology"],
        "status": status,
        "current_assignment": None
        if shown is None
        else {
            "id": shown["id"],
            "counsellor_id": shown["counsellor_id"],
            "contract_type": shown["contract_type"],
            "started_on": shown["started_on"],
            "ends_on": shown["ends_on"],
        },
        "opened_on": row["opened_on"],
        "closed_on": row["closed_on"],
        "close_reason": row["close_reason"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "version": row["version"],
    }


def as_uuid(value: Any) -> uuid.UUID:
    """A UUID read back (asyncpg's own UUID type, or SQLite's text) as a parameter for either database."""
    return value if type(value) is uuid.UUID else uuid.UUID(str(value))


def _in_list(first: int, count: int) -> str:
    return ", ".join(f"${first + i}" for i in range(count))


async def positions_list(db: Database, page: ListRequest, authorization: str | None) -> Reply:
    """Readers; a scoped key sees the positions of its subtrees. Oldest first (the default sort). The
    service's statements: the page, then the current assignments of its positions (one query)."""
    async with db.acquire() as conn:
        caller = require_reader(await caller_for(db, conn, authorization))
        if isinstance(caller, Reply):
            return caller
        scope, args = scope_clause(db, caller, "territory_id", 1)
        args.append(page.limit + 1)
        async with snapshot(db, conn):
            rows, current = await _positions_page(db, conn, page.limit, scope, args)
    personal = caller.role in PERSONAL_READERS
    page = ListRequest(page.limit, caller.name, page.path, page.params, page.base_url, page.secret)
    return _page(
        rows,
        page,
        lambda r: [r["created_at"], r["id"]],
        lambda r: position_json(r, current.get(str(r["id"])), personal),
    )


async def _positions_page(
    db: Database, conn: Any, limit: int, scope: str, args: list[Any]
) -> tuple[list[Any], dict[str, Mapping[str, Any]]]:
    """The page, then the current assignments of its positions (one query)."""
    rows = await conn.fetch(
        db.sql(
            f"SELECT {POSITION_COLUMNS} FROM positions WHERE true{scope}"
            f" ORDER BY created_at, id LIMIT ${len(args)}"
        ),
        *args,
    )
    current: dict[str, Mapping[str, Any]] = {}
    if rows:
        shown = rows[:limit]
        found = await conn.fetch(
            db.sql(
                "SELECT id, position_id, counsellor_id, contract_type, started_on, ends_on"
                f" FROM assignments WHERE position_id IN ({_in_list(2, len(shown))}) AND {COVERS}"
            ),
            today(),
            *(as_uuid(r["id"]) for r in shown),
        )
        current = {str(a["position_id"]): a for a in found}
    return rows, current


# --- counsellors --------------------------------------------------------------------------------------

COUNSELLOR_COLUMNS = (
    "id, territory_id, external_ref, first_name, last_name, email, phone, training_label, training_hours,"
    " certified_on, pix_level, anonymized_at, created_at, updated_at, version"
)
CURRENT_OF_COUNSELLOR = (
    "SELECT id, position_id, contract_type, started_on, ends_on FROM assignments"
    " WHERE counsellor_id = $1 AND started_on <= $2 AND (ended_on IS NULL OR ended_on >= $2)"
)


def counsellor_json(row: Mapping[str, Any], current: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "id": row["id"],
        "territory_id": row["territory_id"],
        "external_ref": row["external_ref"],
        "first_name": row["first_name"],
        "last_name": row["last_name"],
        "email": row["email"],
        "phone": row["phone"],
        "training": {
            "label": row["training_label"],
            "hours": row["training_hours"],
            "certified_on": row["certified_on"],
            "pix_level": row["pix_level"],
        },
        "current_assignment": None
        if current is None
        else {
            "id": current["id"],
            "position_id": current["position_id"],
            "contract_type": current["contract_type"],
            "started_on": current["started_on"],
            "ends_on": current["ends_on"],
        },
        "anonymized_at": row["anonymized_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "version": row["version"],
    }


async def counsellor_get(
    db: Database, counsellor_id: uuid.UUID, authorization: str | None, if_none_match: str | None
) -> Reply:
    """Admin and territory managers (in scope); a counsellor key reads its own record; a viewer or
    another counsellor in scope → 403, out of scope → 404. Then the current assignment (one query)."""
    async with db.acquire() as conn:
        caller = require_reader(
            await caller_for(db, conn, authorization), READER_ROLES | frozenset({"counsellor"})
        )
        if isinstance(caller, Reply):
            return caller
        own = caller.role == "counsellor" and str(caller.counsellor_id) == str(counsellor_id)
        scope, args = ("", []) if own else scope_clause(db, caller, "territory_id", 2)
        async with journal_snapshot(db, conn):
            row = await conn.fetchrow(
                db.sql(f"SELECT {COUNSELLOR_COLUMNS} FROM counsellors WHERE id = $1{scope}"),
                counsellor_id,
                *args,
            )
            if row is None:
                return problem(404, "not_found", "no counsellor with this id")
            if not own and caller.role not in PERSONAL_READERS:
                return problem(
                    403, "forbidden", "counsellors are personal data: your role may not read this one"
                )
            unchanged = not_modified(if_none_match, row["version"])
            if unchanged is not None:
                return unchanged
            current = await conn.fetchrow(db.sql(CURRENT_OF_COUNSELLOR), counsellor_id, today())
            # The personal-data journal's line, in the answer's transaction, as the service writes it.
            await conn.execute(
                _audit_sql(db),
                *_audit_args(
                    db,
                    caller,
                    "read",
                    "counsellors_get",
                    "counsellors",
                    None,
                    None,
                    [str(as_uuid(row["id"]))],
                    datetime.now(UTC),
                ),
            )
    return json_reply(counsellor_json(row, current), version=row["version"])


COUNSELLOR_LIST_PARAMS = frozenset(
    {"territory_id", "within", "external_ref", "updated_since", "sort", "limit", "cursor", "include_total"}
)


async def counsellors_list(db: Database, page: ListRequest, authorization: str | None) -> Reply:
    """Admin and territory managers (a scoped key sees the counsellors of its subtrees); viewers and
    counsellor keys → 403. Oldest first (the default sort). The service's statements: the page, the
    current assignments of its counsellors (one query), and the page's journal line in its transaction."""
    async with db.acquire() as conn:
        caller = require_reader(await caller_for(db, conn, authorization), PERSONAL_READERS)
        if isinstance(caller, Reply):
            return caller
        scope, args = scope_clause(db, caller, "territory_id", 1)
        args.append(page.limit + 1)
        async with journal_snapshot(db, conn):
            rows = await conn.fetch(
                db.sql(
                    f"SELECT {COUNSELLOR_COLUMNS} FROM counsellors WHERE true{scope}"
                    f" ORDER BY created_at, id LIMIT ${len(args)}"
                ),
                *args,
            )
            shown = rows[: page.limit]
            current: dict[str, Mapping[str, Any]] = {}
            if shown:
                found = await conn.fetch(
                    db.sql(
                        "SELECT counsellor_id, id, position_id, contract_type, started_on, ends_on"
                        f" FROM assignments WHERE counsellor_id IN ({_in_list(2, len(shown))}) AND {COVERS}"
                    ),
                    today(),
                    *(as_uuid(r["id"]) for r in shown),
                )
                current = {str(as_uuid(a["counsellor_id"])): a for a in found}
                # The personal-data journal's line, in the answer's transaction, as the service writes it.
                await conn.execute(
                    _audit_sql(db),
                    *_audit_args(
                        db,
                        caller,
                        "read",
                        "counsellors_list",
                        "counsellors",
                        None,
                        None,
                        [str(as_uuid(r["id"])) for r in shown],
                        datetime.now(UTC),
                    ),
                )
    page = ListRequest(page.limit, caller.name, page.path, page.params, page.base_url, page.secret)
    return _page(
        rows,
        page,
        lambda r: [r["created_at"], r["id"]],
        lambda r: counsellor_json(r, current.get(str(as_uuid(r["id"])))),
    )


@dataclass(frozen=True)
class CounsellorInput:
    """The body of `PUT /counsellors/by-ref/{external_ref}`, as stored columns."""

    territory_id: uuid.UUID | None
    columns: dict[str, Any]


_UPSERT_FIELDS = frozenset({"territory_id", "first_name", "last_name", "email", "phone", "training"})
_TRAINING_FIELDS = frozenset({"label", "hours", "certified_on", "pix_level"})
_TRAINING_LABELS = frozenset({"CCP1", "CCP2", "CCP2_CCP3"})
_TRAINING_HOURS = frozenset({70, 105, 175, 280, 315, 350, 420})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")
_PHONE = re.compile(r"^\+?[0-9][0-9 .()-]{4,30}$")


def _text(value: Any, low: int, high: int, pattern: re.Pattern[str] | None = None) -> str | None:
    if not isinstance(value, str) or not low <= len(value) <= high or _CONTROL.search(value):
        return None
    return value if pattern is None or pattern.match(value) else None


def parse_counsellor(body: bytes) -> CounsellorInput | Reply:
    """The checks of the service's input model (types, bounds, printable text, no unknown field), by hand."""
    invalid = problem(422, "validation_error", "invalid counsellor")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return problem(422, "validation_error", "the body is not JSON")
    if not isinstance(data, dict) or set(data) - _UPSERT_FIELDS:
        return invalid
    first_name = _text(data.get("first_name"), 1, 100)
    last_name = _text(data.get("last_name"), 1, 100)
    email, phone = data.get("email"), data.get("phone")
    territory_id = data.get("territory_id")
    training = data.get("training") or {}
    if (
        first_name is None
        or last_name is None
        or (email is not None and _text(email, 3, 254, _EMAIL) is None)
        or (phone is not None and _text(phone, 6, 32, _PHONE) is None)
        or (territory_id is not None and _uuid(territory_id) is None)
        or not isinstance(training, dict)
        or set(training) - _TRAINING_FIELDS
    ):
        return invalid
    label, hours = training.get("label"), training.get("hours")
    certified_on, pix = training.get("certified_on"), training.get("pix_level")
    if (
        (label is not None and label not in _TRAINING_LABELS)
        or (hours is not None and (type(hours) is not int or hours not in _TRAINING_HOURS))
        or (certified_on is not None and _date(certified_on) is None)
        or (pix is not None and (type(pix) is not int or not 1 <= pix <= 3))
    ):
        return invalid
    columns = {
        "first_name": first_name,
        "last_name": last_name,
        "email": email,
        "phone": phone,
        "training_label": label,
        "training_hours": hours,
        "certified_on": _date(certified_on) if certified_on is not None else None,
        "pix_level": pix,
    }
    return CounsellorInput(_uuid(territory_id) if territory_id is not None else None, columns)


def _same(stored: Any, wanted: Any) -> bool:
    # SQLite returns dates as text.
    if isinstance(wanted, date) and isinstance(stored, str):
        return stored == wanted.isoformat()
    return bool(stored == wanted)


# The replay's one statement (`counsellor_upsert`); the assignment's columns under names the SQLite connection
# converts as it converts `assignments.*`.
_SYNC_STATE = (
    "SELECT t.path AS employer_path, "
    + ", ".join(f"c.{name}" for name in COUNSELLOR_COLUMNS.split(", "))
    + ", a.id AS a_id, a.position_id AS a_position_id, a.contract_type AS a_contract_type,"
    " a.started_on AS a_started_on, a.ends_on AS a_ends_on"
    " FROM territories t"
    " LEFT JOIN counsellors c ON c.territory_id = t.id AND c.external_ref = $2"
    " LEFT JOIN assignments a ON a.counsellor_id = c.id AND a.started_on <= $3"
    " AND (a.ended_on IS NULL OR a.ended_on >= $3)"
    " WHERE t.id = $1"
)
_CURRENT = ("id", "position_id", "contract_type", "started_on", "ends_on")


async def counsellor_upsert(
    db: Database,
    external_ref: str,
    data: CounsellorInput,
    authorization: str | None,
) -> Reply:
    """Admin and territory managers. A replay first, as the service's direct path: the employer (its path
    checked against the caller's), its counsellor and that one's current assignment in one statement; when
    nothing differs, that is the answer, with its journal line. Otherwise the service's statements in one
    transaction: the employer checked in the caller's scope, the counsellor locked by (employer,
    external_ref), then created (201) or updated when a field differs (its version moves, a change enters
    the feed), and its current assignment read."""
    if not 1 <= len(external_ref) <= 64 or _CONTROL.search(external_ref):
        return problem(422, "validation_error", "external_ref: printable, 1 to 64 characters")
    async with db.acquire() as conn:
        caller = require_reader(await caller_for(db, conn, authorization), PERSONAL_READERS)
        if isinstance(caller, Reply):
            return caller
        employer = data.territory_id
        if employer is None:
            if len(caller.territory_ids) != 1:
                return problem(422, "validation_error", "territory_id: required unless your key has one")
            employer = caller.territory_ids[0]
        state = await conn.fetchrow(db.sql(_SYNC_STATE), employer, external_ref, today())
        in_scope = state is not None and (
            caller.role == "admin" or any(state["employer_path"].startswith(p) for p in caller.paths)
        )
        if in_scope and state["id"] is not None and all(_same(state[k], v) for k, v in data.columns.items()):
            current = None if state["a_id"] is None else {name: state[f"a_{name}"] for name in _CURRENT}
            # The answer shows the person: its journal line, in a transaction of its own after the read, as
            # the service writes it.
            async with conn.transaction():
                await conn.execute(
                    _audit_sql(db),
                    *_audit_args(
                        db,
                        caller,
                        "read",
                        "counsellors_upsert_by_ref",
                        "counsellors",
                        None,
                        None,
                        [str(as_uuid(state["id"]))],
                        datetime.now(UTC),
                    ),
                )
            return json_reply(counsellor_json(state, current), version=state["version"])
        async with conn.transaction():
            if caller.role == "admin":
                found = await conn.fetchrow(db.sql("SELECT id FROM territories WHERE id = $1"), employer)
            else:
                ors = " OR ".join(db.path_prefix("path", f"${2 + i}") for i in range(len(caller.paths))) or (
                    "false" if db.dialect == "postgresql" else "0"
                )
                found = await conn.fetchrow(
                    db.sql(f"SELECT id FROM territories WHERE id = $1 AND ({ors})"),
                    employer,
                    *(db.path_pattern(p) for p in caller.paths),
                )
            if found is None:
                return problem(422, "unknown_reference", "no territory with this id in your territories")
            row = await conn.fetchrow(
                db.sql(
                    f"SELECT {COUNSELLOR_COLUMNS} FROM counsellors"
                    " WHERE territory_id = $1 AND external_ref = $2 FOR UPDATE"
                ),
                employer,
                external_ref,
            )
            now = datetime.now(UTC)
            created = row is None
            changed: dict[str, Any] = {}
            if row is None:
                row = {
                    "id": new_id(),
                    "territory_id": employer,
                    "external_ref": external_ref,
                    **data.columns,
                    "anonymized_at": None,
                    "created_at": now,
                    "updated_at": now,
                    "version": 1,
                }
                await conn.execute(
                    db.sql(
                        f"INSERT INTO counsellors ({COUNSELLOR_COLUMNS}) VALUES"
                        " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
                    ),
                    *row.values(),
                )
            else:
                if row["anonymized_at"] is not None:
                    return problem(409, "counsellor_anonymized", "this counsellor was anonymised")
                changed = {k: v for k, v in data.columns.items() if not _same(row[k], v)}
                if changed:
                    row = {**row, **data.columns, "updated_at": now, "version": row["version"] + 1}
                    await conn.execute(
                        db.sql(
                            "UPDATE counsellors SET first_name = $1, last_name = $2, email = $3, phone = $4,"
                            " training_label = $5, training_hours = $6, certified_on = $7, pix_level = $8,"
                            " updated_at = $9, version = $10 WHERE id = $11"
                        ),
                        *data.columns.values(),
                        now,
                        row["version"],
                        as_uuid(row["id"]),
                    )
            if created or changed:
                await conn.execute(
                    _change_sql(db, "counsellors"),
                    as_uuid(row["id"]),
                    "created" if created else "updated",
                    row["version"],
                    employer,
                    now,
                )
            current = await conn.fetchrow(db.sql(CURRENT_OF_COUNSELLOR), as_uuid(row["id"]), today())
    body = counsellor_json(row, current)
    if created:
        return json_reply(body, 201, 1, location=f"/api/v1/counsellors/{row['id']}")
    return json_reply(body, version=row["version"])


# --- workshops ----------------------------------------------------------------------------------------

WORKSHOP_FIELDS = (
    "id",
    "position_id",
    "counsellor_id",
    "territory_id",
    "title",
    "description",
    "themes",
    "level",
    "format",
    "venue",
    "online_url",
    "starts_at",
    "ends_at",
    "duration_minutes",
    "capacity",
    "waitlist_capacity",
    "registered_count",
    "waitlisted_count",
    "seats_left",
    "status",
    "public",
    "cancel_reason",
    "walk_ins",
    "created_at",
    "updated_at",
    "version",
)
WORKSHOP_COLUMNS = ", ".join(WORKSHOP_FIELDS)
# Callers without a key see who runs a workshop through no field at all (`counsellor_id` null).
PUBLIC_WORKSHOP_COLUMNS = WORKSHOP_COLUMNS.replace("counsellor_id", "CAST(NULL AS UUID) AS counsellor_id", 1)
# Every column of the row, as the service's `SELECT ... FOR UPDATE` of the ORM object reads it.
WORKSHOP_ROW_COLUMNS = (
    "id, position_id, counsellor_id, territory_id, title, description, themes, themes_mask, level, format,"
    " venue, venue_commune_code, venue_department_code, venue_postcode, venue_lat, venue_lon, online_url,"
    " starts_at, ends_at, duration_minutes, capacity, waitlist_capacity, registered_count, waitlisted_count,"
    " seats_left, status, public, cancel_reason, walk_ins, created_at, updated_at, version"
)
WORKSHOP_LIST_PARAMS = frozenset(
    {
        "territory_id",
        "within",
        "department_code",
        "commune_code",
        "postcode",
        "theme",
        "level",
        "from",
        "to",
        "has_seats",
        "status",
        "near",
        "radius_km",
        "sort",
        "limit",
        "cursor",
        "include_total",
    }
)
# What the reference serves of the search: first pages of these filters, in date order.
WORKSHOP_SEARCH_SERVED = frozenset({"department_code", "commune_code", "postcode", "theme", "limit"})
_JSON_FIELDS = ("themes", "venue", "walk_ins")
_DEPARTMENT = re.compile(r"^(\d{2}|2[AB]|97\d)$")
_COMMUNE = re.compile(r"^([013-9]\d|2[AB1-9])\d{3}$")
_POSTCODE = re.compile(r"^\d{5}$")


THEME_BITS = dict(referentials.THEME_BITS)


def workshop_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The read model, in its field order; the JSON columns (text from asyncpg) decoded."""
    out = {name: row[name] for name in WORKSHOP_FIELDS}
    for name in _JSON_FIELDS:
        value = out[name]
        if isinstance(value, str):
            out[name] = orjson.loads(value)
    return out


def workshop_visible(db: Database, caller: Caller, first_param: int) -> tuple[str, list[Any]]:
    """The service's `visible`: public workshops for everyone; with a key, those of its territories too (and
    a counsellor's own); everything for admin."""
    if caller.role == "admin":
        return "", []
    ors = ["public IS true"]
    args: list[Any] = []
    if caller.paths:
        paths = " OR ".join(
            db.path_prefix("territories.path", f"${first_param + i}") for i in range(len(caller.paths))
        )
        ors.append(f"territory_id IN (SELECT territories.id FROM territories WHERE {paths})")
        args += [db.path_pattern(p) for p in caller.paths]
    if caller.role == "counsellor" and caller.counsellor_id is not None:
        args.append(caller.counsellor_id)
        ors.append(f"counsellor_id = ${first_param + len(args) - 1}")
    return (" AND " + ors[0] if len(ors) == 1 else " AND (" + " OR ".join(ors) + ")"), args


def _workshop_columns(caller: Caller) -> str:
    return PUBLIC_WORKSHOP_COLUMNS if caller.role == "public" else WORKSHOP_COLUMNS


@dataclass(frozen=True)
class WorkshopSearch:
    department_code: str | None = None
    commune_code: str | None = None
    postcode: str | None = None
    themes: tuple[str, ...] = ()


def check_workshop_params(names: Iterable[str]) -> Reply | None:
    """422 for a parameter the service does not know (as the service answers) or the reference does not
    serve."""
    names = set(names)
    unknown = names - WORKSHOP_LIST_PARAMS
    if unknown:
        return problem(422, "validation_error", f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    if names - WORKSHOP_SEARCH_SERVED:
        return problem(422, "validation_error", "the reference serves first pages of some filters only")
    return None


def parse_workshop_search(params: Sequence[tuple[str, str]]) -> WorkshopSearch | Reply:
    """The search's filters that the reference serves, checked as the service checks them."""
    error = check_workshop_params(k for k, _ in params)
    if error is not None:
        return error
    values = dict(params)
    themes = tuple(v for k, v in params if k == "theme")
    checks = (
        ("department_code", _DEPARTMENT),
        ("commune_code", _COMMUNE),
        ("postcode", _POSTCODE),
    )
    for name, pattern in checks:
        if name in values and not pattern.match(values[name]):
            return problem(422, "validation_error", f"{name}: invalid")
    if any(t not in THEME_BITS for t in themes):
        return problem(422, "validation_error", "theme: a value of the themes referential")
    return WorkshopSearch(
        values.get("department_code"), values.get("commune_code"), values.get("postcode"), themes
    )


async def workshops_list(
    db: Database, page: ListRequest, search: WorkshopSearch, authorization: str | None
) -> Reply:
    """Public. The service's one statement: the visible workshops matching the filters, starting from now,
    in (starts_at, id) order, `limit + 1` rows."""
    async with db.acquire() as conn:
        caller = await caller_for(db, conn, authorization)
        if isinstance(caller, Reply):
            return caller
        where, args = workshop_visible(db, caller, 1)
        for column, value in (
            ("venue_department_code", search.department_code),
            ("venue_commune_code", search.commune_code),
            ("venue_postcode", search.postcode),
        ):
            if value is not None:
                args.append(value)
                where += f" AND {column} = ${len(args)}"
        mask = 0
        for theme in search.themes:
            mask |= THEME_BITS[theme]
        if mask:
            args.append(mask)
            where += f" AND (themes_mask & ${len(args)}) != 0"
        args += [datetime.now(UTC), page.limit + 1]
        rows = await conn.fetch(
            db.sql(
                f"SELECT {_workshop_columns(caller)} FROM workshops WHERE true{where}"
                f" AND starts_at >= ${len(args) - 1} ORDER BY starts_at, id LIMIT ${len(args)}"
            ),
            *args,
        )
    page = ListRequest(page.limit, caller.name, page.path, page.params, page.base_url, page.secret)
    return _page(rows, page, lambda r: [r["starts_at"], r["id"]], workshop_json)


async def workshop_get(
    db: Database, workshop_id: uuid.UUID, authorization: str | None, if_none_match: str | None
) -> Reply:
    """Public for public workshops; ETag, and 304 on a matching If-None-Match."""
    async with db.acquire() as conn:
        caller = await caller_for(db, conn, authorization)
        if isinstance(caller, Reply):
            return caller
        where, args = workshop_visible(db, caller, 2)
        row = await conn.fetchrow(
            db.sql(f"SELECT {_workshop_columns(caller)} FROM workshops WHERE id = $1{where}"),
            workshop_id,
            *args,
        )
    if row is None:
        return problem(404, "not_found", "no workshop with this id")
    return not_modified(if_none_match, row["version"]) or json_reply(
        workshop_json(row), version=row["version"]
    )


REGISTRATION_FIELDS = (
    "id",
    "workshop_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "age_bracket",
    "social_status",
    "status",
    "waitlist_rank",
    "attendance",
    "created_at",
    "anonymized_at",
)
_REGISTRATION_INPUT = frozenset({"first_name", "last_name", "email", "phone", "age_bracket", "social_status"})
_REGISTRANT_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_REGISTRANT_PHONE = re.compile(r"^\+?[0-9 .()-]{3,32}$")
_FORBIDDEN_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _enum_values(name: str) -> frozenset[str]:
    return frozenset(item.value for item in getattr(referentials, name))


AGE_BRACKETS = _enum_values("AgeBracket")
SOCIAL_STATUSES = _enum_values("SocialStatus")


@dataclass(frozen=True)
class RegistrationInput:
    first_name: str
    last_name: str
    email: str
    phone: str | None = None
    age_bracket: str | None = None
    social_status: str | None = None


def _free_text(value: Any, low: int, high: int, pattern: re.Pattern[str] | None = None) -> str | None:
    """The input model's rules: a string, stripped, its length within bounds, no control character."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not low <= len(value) <= high or _FORBIDDEN_TEXT.search(value):
        return None
    return value if pattern is None or pattern.match(value) else None


def parse_registration(body: bytes) -> RegistrationInput | Reply:
    """The checks of the service's `RegistrationCreate`, by hand."""
    invalid = problem(422, "validation_error", "invalid registration")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return problem(422, "validation_error", "the body is not JSON")
    if not isinstance(data, dict) or set(data) - _REGISTRATION_INPUT:
        return invalid
    first_name = _free_text(data.get("first_name"), 1, 100)
    last_name = _free_text(data.get("last_name"), 1, 100)
    email = _free_text(data.get("email"), 3, 254, _REGISTRANT_EMAIL)
    phone = data.get("phone")
    age, social = data.get("age_bracket"), data.get("social_status")
    if (
        first_name is None
        or last_name is None
        or email is None
        or (phone is not None and _free_text(phone, 3, 32, _REGISTRANT_PHONE) is None)
        or (age is not None and age not in AGE_BRACKETS)
        or (social is not None and social not in SOCIAL_STATUSES)
    ):
        return invalid
    return RegistrationInput(
        first_name, last_name, email, phone.strip() if phone is not None else None, age, social
    )


async def workshop_register(
    db: Database, workshop_id: uuid.UUID, data: RegistrationInput, authorization: str | None
) -> Reply:
    """Public for public workshops. The service's statements, in one transaction: the workshop's counters
    read and its row locked if the caller may see it, with whether the email holds a live registration;
    the counters' UPDATE (a new version); the INSERT returning the registration, nothing on the unique
    index's conflict (409, all rolled back); the audit trail's event, its personal fields masked. Confirmed
    while seats are left, then waitlisted, then 409 `workshop_full`."""
    already = problem(409, "already_registered", "this email address is already registered on this workshop")
    async with db.acquire() as conn:
        caller = await caller_for(db, conn, authorization)
        if isinstance(caller, Reply):
            return caller
        try:
            return await _register_in_transaction(db, conn, caller, workshop_id, data, already)
        except _AlreadyRegistered:
            return already


class _AlreadyRegistered(Exception):
    """Rolls the registration's transaction back (the INSERT met the unique index)."""


async def _register_in_transaction(
    db: Database, conn: Any, caller: Any, workshop_id: uuid.UUID, data: RegistrationInput, already: Reply
) -> Reply:
    async with conn.transaction():
        where, args = workshop_visible(db, caller, 3)
        email_key = data.email.lower()
        row = await conn.fetchrow(
            db.sql(
                "SELECT id, status, starts_at, capacity, seats_left, registered_count, waitlisted_count,"
                " waitlist_capacity, EXISTS (SELECT 1 FROM registrations WHERE registrations.workshop_id"
                " = workshops.id AND registrations.email_key = $2 AND registrations.status != 'cancelled')"
                f" AS email_registered FROM workshops WHERE id = $1{where} FOR UPDATE OF workshops"
            ),
            workshop_id,
            email_key,
            *args,
        )
        if row is None:
            return problem(404, "not_found", "no workshop with this id")
        now = datetime.now(UTC)
        if row["status"] != "scheduled":
            return problem(409, "workshop_closed", f"this workshop is {row['status']}")
        if row["starts_at"] <= now:
            return problem(409, "workshop_closed", "this workshop has already started")
        if row["email_registered"]:
            return already
        registered, seats_left, waitlisted = (
            row["registered_count"],
            row["seats_left"],
            row["waitlisted_count"],
        )
        if seats_left > 0:
            status, rank = "confirmed", None
            registered, seats_left = registered + 1, seats_left - 1
        elif waitlisted < row["waitlist_capacity"]:
            waitlisted += 1
            status, rank = "waitlisted", waitlisted
        else:
            return problem(409, "workshop_full", "every seat and waitlist place is taken")
        await conn.execute(
            db.sql(
                "UPDATE workshops SET registered_count = $1, seats_left = $2, waitlisted_count = $3,"
                " version = version + 1, updated_at = $4 WHERE id = $5"
            ),
            registered,
            seats_left,
            waitlisted,
            now,
            workshop_id,
        )
        token = "ct_" + secrets.token_urlsafe(24)
        registration = {
            "id": new_id(),
            "workshop_id": workshop_id,
            "first_name": data.first_name,
            "last_name": data.last_name,
            "email": data.email,
            "email_key": email_key,
            "phone": data.phone,
            "age_bracket": data.age_bracket,
            "social_status": data.social_status,
            "status": status,
            "waitlist_rank": rank,
            "attendance": "unknown",
            "cancel_token_hash": hashlib.sha256(token.encode()).hexdigest(),
            "created_at": now,
            "updated_at": now,
        }
        stored = await conn.fetchrow(
            db.sql(
                f"INSERT INTO registrations ({', '.join(registration)}) VALUES"
                f" ({', '.join(f'${i + 1}' for i in range(len(registration)))})"
                " ON CONFLICT (workshop_id, email_key) WHERE status != 'cancelled' DO NOTHING"
                f" RETURNING {', '.join(REGISTRATION_FIELDS)}"
            ),
            *registration.values(),
        )
        if stored is None:
            raise _AlreadyRegistered
        await conn.execute(
            _audit_sql(db),
            *_audit_args(
                db,
                caller,
                "write",
                "workshops_register",
                "registrations",
                registration["id"],
                _created(_masked(registration, REGISTRATION_MASKED)),
                None,
                now,
            ),
        )
    body = {name: stored[name] for name in REGISTRATION_FIELDS}
    body["cancel_token"] = token
    location = f"/api/v1/workshops/{workshop_id}/registrations/{registration['id']}"
    return json_reply(body, 201, location=location)


# --- workshops as CSV (the export's reference) ------------------------------------------------------------

CSV_BATCH_ROWS = 1000
_VENUE_FIELDS = ("name", "address", "postcode", "commune_code", "lat", "lon")
_AGE_BRACKETS = tuple(b.value for b in referentials.AgeBracket)
_SOCIAL_STATUSES = tuple(s.value for s in referentials.SocialStatus)
WORKSHOP_CSV_HEADER = [
    *WORKSHOP_FIELDS[: WORKSHOP_FIELDS.index("venue")],
    *(f"venue_{name}" for name in _VENUE_FIELDS),
    *WORKSHOP_FIELDS[WORKSHOP_FIELDS.index("venue") + 1 : WORKSHOP_FIELDS.index("walk_ins")],
    "walk_ins_total",
    *(f"walk_ins_age_brackets_{b}" for b in _AGE_BRACKETS),
    *(f"walk_ins_social_statuses_{s}" for s in _SOCIAL_STATUSES),
    *WORKSHOP_FIELDS[WORKSHOP_FIELDS.index("walk_ins") + 1 :],
]
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_TEXT_FIELDS = frozenset({"title", "description", "level", "format", "online_url", "status", "cancel_reason"})
_INSTANT_FIELDS = frozenset({"starts_at", "ends_at", "created_at", "updated_at"})


def _csv_text(value: str | None) -> str | None:
    if value is None:
        return None
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _csv_instant(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def workshop_csv_cells(row: Mapping[str, Any]) -> list[Any]:
    """One workshop as the service's CSV writes it (`app.core.csv`): nested objects flattened, lists joined
    with `|`, booleans `true`/`false`, instants with `Z`, text neutralised."""
    cells: list[Any] = []
    for name in WORKSHOP_FIELDS:
        value = row[name]
        if name == "venue":
            venue = orjson.loads(value) if isinstance(value, str) else (value or {})
            cells += [
                _csv_text(venue.get(f))
                if f in ("name", "address", "postcode", "commune_code")
                else venue.get(f)
                for f in _VENUE_FIELDS
            ]
        elif name == "walk_ins":
            walk_ins = orjson.loads(value) if isinstance(value, str) else (value or {})
            ages = walk_ins.get("age_brackets") or {}
            statuses = walk_ins.get("social_statuses") or {}
            cells.append(walk_ins.get("total"))
            cells += [ages.get(b) for b in _AGE_BRACKETS]
            cells += [statuses.get(s) for s in _SOCIAL_STATUSES]
        elif name == "themes":
            themes = orjson.loads(value) if isinstance(value, str) else value
            cells.append(_csv_text("|".join(themes)))
        elif name == "public":
            cells.append("true" if value else "false")
        elif name in _INSTANT_FIELDS:
            cells.append(_csv_instant(value))
        elif name in _TEXT_FIELDS:
            cells.append(_csv_text(value))
        else:
            cells.append(value)
    return cells


async def workshops_csv(
    db: PgDatabase, search: WorkshopSearch, starts_from: datetime, authorization: str | None
) -> Reply | AsyncIterator[bytes]:
    """The search from `starts_from` on, every row as CSV: the service's statement in keyset batches of
    1 000 rows, in one REPEATABLE READ, READ ONLY transaction held for the stream's life (PostgreSQL)."""
    import csv
    import io

    async with db.acquire() as conn:
        caller = await caller_for(db, conn, authorization)
    if isinstance(caller, Reply):
        return caller
    where, args = workshop_visible(db, caller, 1)
    for column, value in (
        ("venue_department_code", search.department_code),
        ("venue_commune_code", search.commune_code),
        ("venue_postcode", search.postcode),
    ):
        if value is not None:
            args.append(value)
            where += f" AND {column} = ${len(args)}"
    mask = 0
    for theme in search.themes:
        mask |= THEME_BITS[theme]
    if mask:
        args.append(mask)
        where += f" AND (themes_mask & ${len(args)}) != 0"
    args.append(starts_from)
    where += f" AND starts_at >= ${len(args)}"
    n = len(args)
    first = (
        f"SELECT {_workshop_columns(caller)} FROM workshops WHERE true{where}"
        f" ORDER BY starts_at, id LIMIT {CSV_BATCH_ROWS}"
    )
    after = (
        f"SELECT {_workshop_columns(caller)} FROM workshops WHERE true{where}"
        f" AND (starts_at, id) > (${n + 1}, ${n + 2}) ORDER BY starts_at, id LIMIT {CSV_BATCH_ROWS}"
    )

    async def stream() -> AsyncIterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(WORKSHOP_CSV_HEADER)
        async with db.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await conn.fetch(first, *args)
            while True:
                writer.writerows(workshop_csv_cells(row) for row in rows)
                chunk = buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
                yield chunk
                if len(rows) < CSV_BATCH_ROWS:
                    return
                last = rows[-1]
                rows = await conn.fetch(after, *args, last["starts_at"], last["id"])

    return stream()


# --- open data ----------------------------------------------------------------------------------------

# The service's statement (app.opendata.repository.venues_statement), written out: the venues of public
# in-person workshops held within the window, one row per spelling and position, then the employer's SIREN
# and the commune's name. The spellings of one place are merged in Python by the service's own `build`.
_THEMES_UNION = "0" + "".join(f" + max(themes_mask & {bit})" for bit in referentials.THEME_BITS.values())


def _open_data_sql(dialect: str) -> str:
    if dialect == "sqlite":
        name, address, public = (
            "json_extract(venue, '$.name')",
            "json_extract(venue, '$.address')",
            "public = 1",
        )
    else:
        name, address, public = "venue ->> 'name'", "venue ->> 'address'", "public"
    return (
        "SELECT v.commune_code, v.postcode, v.name, v.address, v.lat, v.lon, c.name AS commune_name, "
        "coalesce(e.siren, CASE WHEN e.kind IN ('metropole', 'epci') THEN e.code END) AS employer_siren, "
        "v.workshops, v.updated_at, v.themes_mask FROM ("
        f"SELECT venue_commune_code AS commune_code, venue_postcode AS postcode, {name} AS name, "
        f"{address} AS address, avg(venue_lat) AS lat, avg(venue_lon) AS lon, position_id, "
        f"count(*) AS workshops, max(updated_at) AS updated_at, {_THEMES_UNION} AS themes_mask "
        f"FROM workshops WHERE starts_at >= $1 AND {public} AND format = 'in_person' "
        "AND status != 'cancelled' "
        f"GROUP BY venue_commune_code, venue_postcode, {name}, {address}, position_id) AS v "
        "JOIN positions AS p ON p.id = v.position_id "
        "JOIN territories AS e ON e.id = p.agreement_territory_id "
        "LEFT OUTER JOIN territories AS c ON c.kind = 'commune' AND c.code = v.commune_code"
    )


OPEN_DATA_CACHE_CONTROL = "public, max-age=3600"


async def open_data_lieux(db: Database, authorization: str | None) -> Reply:
    """The venues in the standard of lieux de médiation numérique, as the service's JSON."""
    from datetime import timedelta

    from app.opendata import service as opendata
    from app.opendata.repository import VenueRow

    since = datetime.now(UTC) - timedelta(days=opendata.WINDOW_DAYS)
    async with db.acquire() as conn:
        caller = await caller_for(db, conn, authorization)
        if isinstance(caller, Reply):
            return caller
        rows = await conn.fetch(db.sql(_open_data_sql(db.dialect)), db.arg(since))
    export = opendata.build([VenueRow(*row.values()) for row in rows])
    return Reply(
        200,
        opendata.to_json(export.records),
        {"content-type": "application/json", "cache-control": OPEN_DATA_CACHE_CONTROL},
    )


# --- statistics ---------------------------------------------------------------------------------------
#
# The service's own statements: `app.stats.repository` (and the territory's path from
# `app.territories.repository`) builds each one once per shape against a stand-in session that keeps the
# statement, compiled for the database's dialect with marker values where the request's values go; a
# request fills its values into the positions those markers took. The answer is composed as
# `app.stats.service` composes it (its `split` of the date range, its keys and breakdowns), and callers
# without a key get the same `app.stats.disclosure.protect`.

STATS_POSITION_PARAMS = frozenset({"programme_id", "territory_id", "within", "group_by"})
STATS_WORKSHOP_PARAMS = frozenset({"territory_id", "within", "from", "to", "group_by"})
_MARK_TERRITORY = uuid.UUID(int=0xB1)
_MARK_PROGRAMME = uuid.UUID(int=0xB2)
_MARK_PATH = "/bench-mark-path/"
_MARK_STARTS = datetime(1901, 1, 1, tzinfo=UTC)
_MARK_ENDS = datetime(1901, 1, 2, tzinfo=UTC)
_MARKS = {
    "territory_id": _MARK_TERRITORY,
    "programme_id": _MARK_PROGRAMME,
    "first_month": "bench-mark-first",
    "last_month": "bench-mark-last",
    "month": "bench-mark-month",
    "starts": _MARK_STARTS,
    "ends": _MARK_ENDS,
}


class _NoRows:
    def all(self) -> list[Any]:
        return []

    def scalar(self) -> None:
        return None


class _Keeper:
    """A stand-in for a session: keeps the statement a repository function executes, answers no row."""

    def __init__(self) -> None:
        self.statement: Any = None
        self.params: Any = None

    async def execute(self, statement: Any, params: Any = None) -> _NoRows:
        self.statement, self.params = statement, params
        return _NoRows()


@dataclass(frozen=True)
class Template:
    """A statement's SQL in one dialect and, for each of its positional parameters, where its value comes
    from: a constant, a request's value (by name), the path (within a constant), or a function of the
    moment (`today`)."""

    sql: str
    params: tuple[tuple[str, Any], ...]

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        out = []
        for how, what in self.params:
            if how == "value":
                out.append(values[what])
            elif how == "path":
                out.append(what.replace(_MARK_PATH, values["path"]))
            elif how == "call":
                out.append(what())
            else:
                out.append(what)
        return out


def _dialect(name: str) -> Any:
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql.asyncpg import dialect as pg

        return pg()
    from sqlalchemy.dialects.sqlite.aiosqlite import dialect as sqlite

    return sqlite()


def _template(keeper: _Keeper, dialect: str) -> Template:
    compiled = keeper.statement.compile(
        dialect=_dialect(dialect), compile_kwargs={"render_postcompile": True}
    )
    values = compiled.construct_params(keeper.params)
    params: list[tuple[str, Any]] = []
    for name in compiled.positiontup or ():
        bind = compiled.binds.get(name)
        value = values[name]
        marked = [k for k, mark in _MARKS.items() if type(value) is type(mark) and value == mark]
        if bind is not None and bind.callable is not None:
            params.append(("call", bind.callable))
        elif isinstance(value, str) and _MARK_PATH in value:
            params.append(("path", value))
        elif marked:
            params.append(("value", marked[0]))
        else:
            params.append(("const", value))
    return Template(str(compiled), tuple(params))


_TEMPLATES: dict[tuple[Any, ...], Template] = {}


async def _stats_template(dialect: str, what: str, *shape: Any) -> Template:
    """The template of one of the statistics statements for this shape of request (built on first use)."""
    key = (dialect, what, *shape)
    found = _TEMPLATES.get(key)
    if found is not None:
        return found
    from app.stats import repository as stats
    from app.territories import repository as territories_repository

    keeper: Any = _Keeper()
    if what == "path":
        await territories_repository.path_of(keeper, _MARK_TERRITORY)
    else:
        group_by, has_territory, has_within, *rest = shape
        place = stats.Place(
            territory_id=_MARK_TERRITORY if has_territory else None,
            within_path=_MARK_PATH if has_within else None,
        )
        if what == "granted":
            await stats.granted_sums(keeper, group_by, _MARK_PROGRAMME if rest[0] else None, place)
        elif what == "positions":
            await stats.position_sums(keeper, group_by, _MARK_PROGRAMME if rest[0] else None, place)
        elif what == "rollup":
            first, last = rest
            await stats.workshop_rollup_sums(
                keeper,
                group_by,
                place,
                _MARKS["first_month"] if first else None,
                _MARKS["last_month"] if last else None,
            )
        else:
            await stats.workshop_edge_sums(keeper, group_by, place, _MARK_STARTS, _MARK_ENDS, _MARKS["month"])
    found = _TEMPLATES[key] = _template(keeper, dialect)
    return found


async def _stats_rows(db: Database, conn: Any, template: Template, values: Mapping[str, Any]) -> list[Any]:
    rows = await conn.fetch(template.sql, *template.args(values))
    # asyncpg's records read by position; the SQLite stand-in answers dictionaries.
    return [tuple(row.values()) if isinstance(row, dict) else row for row in rows]


def _stats_key(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


def _stats_uuids(params: Mapping[str, str], names: Iterable[str]) -> dict[str, uuid.UUID | None] | Reply:
    out: dict[str, uuid.UUID | None] = {}
    for name in names:
        raw = params.get(name)
        try:
            out[name] = uuid.UUID(raw) if raw is not None else None
        except ValueError:
            return problem(422, "validation_error", f"{name}: not a UUID")
    return out


async def _stats_place(
    db: Database, conn: Any, ids: Mapping[str, uuid.UUID | None]
) -> dict[str, Any] | Reply:
    """The service's `place`: each territory filter names a territory that exists (its path for within)."""
    values: dict[str, Any] = {"territory_id": ids.get("territory_id")}
    for name in ("territory_id", "within"):
        value = ids.get(name)
        if value is not None:
            template = await _stats_template(db.dialect, "path")
            found = await _stats_rows(db, conn, template, {"territory_id": value})
            path = found[0][0] if found else None
            if path is None:
                return problem(422, "validation_error", f"{name}: no territory with this id")
            if name == "within":
                values["path"] = path
    return values


def _position_figures(granted: Sequence[Any] | None, positions: Sequence[Any] | None) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "granted": int(granted[1]) if granted else 0,
        "open": int(positions[1]) if positions else 0,
        "occupied": int(positions[2]) if positions else 0,
        "vacant": 0,
        "closed": int(positions[3]) if positions else 0,
        "subsidy_committed_cents": int(granted[2]) if granted else 0,
        "occupancy_rate": None,
    }
    return _occupancy(figures)


def _occupancy(figures: dict[str, Any]) -> dict[str, Any]:
    figures["vacant"] = figures["open"] - figures["occupied"]
    figures["occupancy_rate"] = figures["occupied"] / figures["open"] if figures["open"] else None
    return figures


async def position_stats(db: Database, params: Sequence[tuple[str, str]], authorization: str | None) -> Reply:
    """Public. The service's statements in one snapshot: the territory filters' paths, then the granted
    sums and the positions' sums."""
    from app.territories.codes import TerritoryKind as Kind

    query = dict(params)
    unknown = set(query) - STATS_POSITION_PARAMS
    if unknown:
        return problem(422, "validation_error", f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    group_by = query.get("group_by", "none")
    if group_by not in ("none", "territory", "kind"):
        return problem(422, "validation_error", "group_by: territory, kind or none")
    ids = _stats_uuids(query, ("programme_id", "territory_id", "within"))
    if isinstance(ids, Reply):
        return ids
    if ids["programme_id"] is not None:
        return problem(422, "validation_error", "the reference serves no programme filter")
    async with db.acquire() as conn:
        caller = await caller_for(db, conn, authorization)
        if isinstance(caller, Reply):
            return caller
        async with snapshot(db, conn):
            values = await _stats_place(db, conn, ids)
            if isinstance(values, Reply):
                return values
            shape = (group_by, ids["territory_id"] is not None, ids["within"] is not None, False)
            granted_rows = await _stats_rows(
                db, conn, await _stats_template(db.dialect, "granted", *shape), values
            )
            position_rows = await _stats_rows(
                db, conn, await _stats_template(db.dialect, "positions", *shape), values
            )
    granted = {_stats_key(r[0]): r for r in granted_rows if r[1] is not None}
    positions = {_stats_key(r[0]): r for r in position_rows if r[1] is not None}
    if group_by == "none":
        return json_reply({"totals": _position_figures(granted.get(""), positions.get("")), "items": []})
    keys: list[Any] = (
        [kind.value for kind in Kind] if group_by == "kind" else sorted(granted.keys() | positions.keys())
    )
    field_name = "kind" if group_by == "kind" else "territory_id"
    items = [{field_name: key, **_position_figures(granted.get(key), positions.get(key))} for key in keys]
    totals: dict[str, Any] = {
        name: sum(item[name] for item in items)
        for name in ("granted", "open", "occupied", "vacant", "closed", "subsidy_committed_cents")
    }
    return json_reply({"totals": _occupancy(totals), "items": items})


def _stats_threshold() -> int:
    return int(os.environ.get("STATS_DISCLOSURE_THRESHOLD", "11"))


async def workshop_stats(db: Database, params: Sequence[tuple[str, str]], authorization: str | None) -> Reply:
    """Public. The service's statements in one snapshot: the territory filters' paths, the rollup's sums
    over the whole months of the range, the workshops' own sums for the partial months at its edges."""
    from app.referentials.data import Level, Theme
    from app.stats import service as stats_service
    from app.stats.disclosure import protect
    from app.stats.models import ALL_THEMES, COUNTS

    query = dict(params)
    unknown = set(query) - STATS_WORKSHOP_PARAMS
    if unknown:
        return problem(422, "validation_error", f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    group_by = query.get("group_by", "none")
    if group_by not in ("none", "theme", "month", "territory", "level"):
        return problem(422, "validation_error", "group_by: theme, month, territory, level or none")
    ids = _stats_uuids(query, ("territory_id", "within"))
    if isinstance(ids, Reply):
        return ids
    try:
        starts = date.fromisoformat(query["from"]) if "from" in query else None
        ends = date.fromisoformat(query["to"]) if "to" in query else None
    except ValueError:
        return problem(422, "validation_error", "from, to: dates YYYY-MM-DD")
    if starts is not None and ends is not None and starts > ends:
        return problem(422, "validation_error", "to must be on or after from")
    cut = stats_service.split(starts, ends)
    width = len(COUNTS) + sum(len(values) for _, values in stats_service.BREAKDOWNS)
    sums: dict[Any, list[int]] = {}

    def add(rows: Iterable[Sequence[Any]]) -> None:
        for row in rows:
            if row[1] is None:
                continue
            into = sums.setdefault(_stats_key(row[0]), [0] * width)
            for i, value in enumerate(row[1:]):
                into[i] += int(value or 0)

    async with db.acquire() as conn:
        caller = await caller_for(db, conn, authorization)
        if isinstance(caller, Reply):
            return caller
        async with snapshot(db, conn):
            values = await _stats_place(db, conn, ids)
            if isinstance(values, Reply):
                return values
            shape = (group_by, ids["territory_id"] is not None, ids["within"] is not None)
            if cut.whole:
                template = await _stats_template(
                    db.dialect, "rollup", *shape, cut.first_month is not None, cut.last_month is not None
                )
                values.update(first_month=cut.first_month, last_month=cut.last_month)
                add(await _stats_rows(db, conn, template, values))
            for edge_starts, edge_ends, month in cut.edges:
                template = await _stats_template(db.dialect, "edge", *shape)
                values.update(starts=edge_starts, ends=edge_ends, month=month)
                add(await _stats_rows(db, conn, template, values))

    def figures(values: list[int]) -> dict[str, Any]:
        out: dict[str, Any] = dict(zip(COUNTS, values, strict=False))
        offset = len(COUNTS)
        for name, keys in stats_service.BREAKDOWNS:
            out[name] = dict(zip(keys, values[offset : offset + len(keys)], strict=True))
            offset += len(keys)
        return out

    empty = [0] * width
    if group_by == "none":
        answer: dict[str, Any] = {"totals": figures(sums.get(ALL_THEMES, empty)), "items": []}
    else:
        if group_by == "theme":
            keys: list[Any] = [theme.value for theme in Theme]
            total = sums.get(ALL_THEMES, empty)
        else:
            if group_by == "level":
                keys = [level.value for level in Level]
            else:
                keys = sorted(key for key, found in sums.items() if any(found))
            total = [sum(column) for column in zip(*sums.values(), strict=True)] if sums else empty
        field_name = stats_service.KEY_FIELDS[group_by]
        items = [{field_name: key, **figures(sums.get(key, empty))} for key in keys]
        answer = {"totals": figures(total), "items": items}
    if caller.role == "public":
        totals = answer["totals"]
        for name, _ in stats_service.BREAKDOWNS:
            rows, cells = protect(
                [item[name] for item in answer["items"]],
                [item["attendees"] for item in answer["items"]],
                totals[name],
                totals["attendees"],
                _stats_threshold(),
            )
            for item, row in zip(answer["items"], rows, strict=True):
                item[name] = row
            totals[name] = cells
    return json_reply(answer)
