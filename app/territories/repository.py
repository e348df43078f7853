"""Every query of the territories domain."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy import (
    delete as sql_delete,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.auth import Principal
from app.core.columns import ReadColumns
from app.core.direct import prepared
from app.core.pagination import PageRequest, SortKey, fetch_page, parse_sort, parse_uuid
from app.core.paths import bound_path_startswith, path_startswith, prefix_params
from app.territories import search
from app.territories.models import Territory, TerritoryAlias, TerritoryWord
from app.territories.schemas import TerritoryRead

# What reads select: the read model's columns; lists add the columns that their cursors resume from.
READ = ReadColumns(TerritoryRead, Territory.__table__)
_CURSOR_COLUMNS = ("name_sort", "siren", "search_name")

# One advisory lock serialises the writes that read or rewrite paths (PostgreSQL only: SQLite's
# BEGIN IMMEDIATE already serialises every writer).
_TREE_LOCK_ID = int.from_bytes(hashlib.sha256(b"territories.tree").digest()[:8], "big", signed=True)


def visible(principal: Principal) -> ColumnElement[bool]:
    return principal.path_clause(Territory.path.expression)


async def lock_tree(session: AsyncSession) -> None:
    """Taken by every write that reads a parent's path (create under a parent) or rewrites paths (a move).

    Without it, a child created while one of its ancestors moves could keep the ancestor's old path: the
    move's UPDATE cannot see a row that is not committed yet, and no row lock makes the two transactions
    meet."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _TREE_LOCK_ID})


async def get(
    session: AsyncSession, territory_id: uuid.UUID, principal: Principal | None = None
) -> Territory | None:
    stmt = select(Territory).where(Territory.id == territory_id)
    if principal is not None:
        stmt = stmt.where(visible(principal))
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_by_code(session: AsyncSession, kind: str, code: str) -> Territory | None:
    stmt = select(Territory).where(Territory.kind == kind, Territory.code == code)
    return (await session.execute(stmt)).scalar_one_or_none()


@cache
def _path_of() -> Any:
    return prepared(select(Territory.path).where(Territory.__table__.c.id == bindparam("id")))


async def path_of(session: AsyncSession, territory_id: uuid.UUID) -> str | None:
    return (await session.execute(_path_of(), {"id": territory_id})).scalar()


@cache
def _read_by_id() -> Select[Any]:
    # Hot reads are built once: a statement object reused keeps its compiled form and cache key.
    return prepared(select(*READ.columns).where(Territory.__table__.c.id == bindparam("id")))


@cache
def _read_by_code() -> Any:
    """The territory with this code or, failing that, the one this former code designates: one statement,
    the current code first."""
    table = Territory.__table__
    current = select(*READ.columns, literal(0).label("former")).where(
        table.c.kind == bindparam("kind"), table.c.code == bindparam("code")
    )
    former = (
        select(*READ.columns, literal(1).label("former"))
        .join(TerritoryAlias, TerritoryAlias.territory_id == Territory.id)
        .where(TerritoryAlias.kind == bindparam("kind"), TerritoryAlias.code == bindparam("code"))
    )
    union = current.union_all(former).subquery()
    return prepared(select(*(union.c[c.name] for c in READ.columns)).order_by(union.c.former).limit(1))


async def read_row(session: AsyncSession, territory_id: uuid.UUID) -> Any:
    """The read model's columns of one territory, or None."""
    return (await session.execute(_read_by_id(), {"id": territory_id})).first()


async def read_row_by_code(session: AsyncSession, kind: str, code: str) -> Any:
    """The read columns of the territory with this code or, failing that, of the one this former code
    designates (its `code` then differs), or None."""
    return (await session.execute(_read_by_code(), {"kind": kind, "code": code})).first()


@lru_cache(maxsize=256)
def _exists_in_scope(principal: Principal) -> Any:
    return prepared(
        select(Territory.id).where(
            Territory.id == bindparam("territory_id", type_=Territory.__table__.c.id.type),
            principal.path_clause(Territory.path),
        )
    )


async def exists_in_scope(session: AsyncSession, territory_id: uuid.UUID, principal: Principal) -> bool:
    stmt = _exists_in_scope(principal)
    return (await session.execute(stmt, {"territory_id": territory_id})).first() is not None


async def get_many(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[Territory]:
    if not ids:
        return []
    return list((await session.execute(select(Territory).where(Territory.id.in_(ids)))).scalars())


def list_query(
    *,
    kind: str | None = None,
    code: str | None = None,
    parent_id: uuid.UUID | None = None,
    within_path: str | None = None,
    query: search.Query | None = None,
) -> Select[Any]:
    """The territories matching the filters, every value a bound parameter (`list_params`)."""
    territories = cast(Table, Territory.__table__)
    stmt = select(territories)
    if kind is not None:
        stmt = stmt.where(territories.c.kind == bindparam("f_kind", type_=territories.c.kind.type))
    if code is not None:
        stmt = stmt.where(territories.c.code == bindparam("f_code", type_=territories.c.code.type))
    if parent_id is not None:
        stmt = stmt.where(
            territories.c.parent_id == bindparam("f_parent_id", type_=territories.c.parent_id.type)
        )
    if within_path is not None:
        stmt = stmt.where(bound_path_startswith(territories.c.path, "f_within"))
    if query is not None:
        stmt = stmt.where(matches(query))
    return stmt


def list_params(
    *,
    kind: str | None = None,
    code: str | None = None,
    parent_id: uuid.UUID | None = None,
    within_path: str | None = None,
    query: search.Query | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {"f_kind": kind, "f_code": code, "f_parent_id": parent_id}
    if within_path is not None:
        params.update(prefix_params("f_within", within_path))
    if query is not None:
        params.update(search_params(query))
    return params


def _shape(query: search.Query) -> tuple[Any, ...]:
    """What the SQL of a search depends on: how many words and variants, not which ones."""
    return (
        tuple(len(group) for group in query.by_selectivity()),
        tuple(len(words) for words in query.alternatives),
        len(query.phrases),
        query.code is not None,
    )


def search_params(query: search.Query) -> dict[str, Any]:
    """The values of the search's bound parameters (`matches` and `match_quality` of its shape)."""
    params: dict[str, Any] = {}
    for i, group in enumerate(query.by_selectivity()):
        for j, prefix in enumerate(group):
            params.update(prefix_params(f"q_word_{i}_{j}", prefix))
    if query.code is not None:
        params["q_code"] = query.code
    for i, phrase in enumerate(query.phrases):
        params[f"q_name_{i}"] = phrase
        params.update(prefix_params(f"q_name_start_{i}", phrase + " "))
        params.update(prefix_params(f"q_name_prefix_{i}", phrase))
    for i, words in enumerate(query.alternatives):
        for j, word in enumerate(words):
            params[f"q_whole_{i}_{j}"] = f"% {word} %"
    return params


def _starts_a_word(word: Table | Any, group: int, size: int) -> ColumnElement[bool]:
    # Words hold only [a-z0-9]: no LIKE or GLOB wildcard can occur in a prefix.
    return or_(*(bound_path_startswith(word.c.token, f"q_word_{group}_{j}") for j in range(size)))


@cache
def _matches(shape: tuple[Any, ...]) -> ColumnElement[bool]:
    groups = shape[0]
    if not groups:
        return false()
    words = cast(Table, TerritoryWord.__table__)
    territories = cast(Table, Territory.__table__)
    condition: list[ColumnElement[bool]] = [
        territories.c.id.in_(select(words.c.territory_id).where(_starts_a_word(words, 0, groups[0])))
    ]
    for group, size in enumerate(groups[1:], start=1):
        word = words.alias(f"word_{group}")
        condition.append(
            exists().where(word.c.territory_id == territories.c.id, _starts_a_word(word, group, size))
        )
    return and_(*condition)


def matches(query: search.Query) -> ColumnElement[bool]:
    """Each word of the query starts one of the territory's words (values: `search_params`).

    The likely rarest word drives the search through the (token) index; every other word is checked on
    the candidates through the primary key (territory_id, token). Built once per shape of query."""
    return _matches(_shape(query))


@cache
def _match_quality(shape: tuple[Any, ...]) -> ColumnElement[int]:
    _groups, alternatives, phrases, has_code = shape
    territories = cast(Table, Territory.__table__)
    whens: list[tuple[ColumnElement[bool], Any]] = []
    if has_code:
        code = bindparam("q_code", type_=territories.c.code.type)
        whens.append((or_(territories.c.code == code, territories.c.siren == code), literal(search.CODE)))
    if phrases:
        name = territories.c.search_name
        padded = literal(" ") + name + literal(" ")
        whens += [
            (
                name.in_([bindparam(f"q_name_{i}", type_=name.type) for i in range(phrases)]),
                literal(search.NAME),
            ),
            (
                or_(*(bound_path_startswith(name, f"q_name_start_{i}") for i in range(phrases))),
                literal(search.NAME_START),
            ),
            (
                and_(
                    *(
                        or_(*(padded.like(bindparam(f"q_whole_{i}_{j}")) for j in range(size)))
                        for i, size in enumerate(alternatives)
                    )
                ),
                literal(search.WHOLE_WORDS),
            ),
            (
                or_(*(bound_path_startswith(name, f"q_name_prefix_{i}") for i in range(phrases))),
                literal(search.NAME_PREFIX),
            ),
        ]
    if not whens:
        return literal(search.WORDS)
    return case(*whens, else_=literal(search.WORDS))


def match_quality(query: search.Query) -> ColumnElement[int]:
    """The match quality of app.territories.search (CODE best, WORDS worst; values: `search_params`); the
    Python twin is `search.Query.quality`. Names hold only [a-z0-9] and single spaces: no LIKE or GLOB
    wildcard occurs."""
    return _match_quality(_shape(query))


@cache
def population_key() -> ColumnElement[int]:
    return func.coalesce(Territory.population, -1)


@dataclass(frozen=True)
class Ordering:
    """The ORDER BY of a list and, for the cursor, the same values read back from a row of the page."""

    keys: list[SortKey]
    row_values: Callable[[Any], Sequence[object]]


_ID_KEY = SortKey("id", Territory.id, parse=parse_uuid)
_SORTS = {"name": SortKey("name", Territory.name_sort)}


def sorted_by(sort: str | None) -> Ordering:
    """`name` (the default) or `-name`, then the id; 422 for any other value."""
    return Ordering(
        keys=parse_sort(sort, _SORTS, "name", _ID_KEY),
        row_values=lambda t: [t.name_sort, t.id],
    )


def by_relevance(query: search.Query) -> Ordering:
    """The best matches first (code, whole name, start of the name, words), then the most populated, then
    by name and id: a total order, so that the cursor resumes exactly."""

    def row_values(t: Any) -> list[object]:
        # The Python twin of `match_quality` and `population_key`, for the row the cursor resumes after.
        quality = query.quality(t.code, t.siren, t.search_name)
        return [quality, t.population if t.population is not None else -1, t.name_sort, t.id]

    return Ordering(
        keys=[
            SortKey("relevance", match_quality(query)),
            SortKey("population", population_key(), desc=True),
            SortKey("name", Territory.name_sort),
            _ID_KEY,
        ],
        row_values=row_values,
    )


async def list_page(
    session: AsyncSession,
    page: PageRequest,
    ordering: Ordering,
    *,
    kind: str | None = None,
    code: str | None = None,
    parent_id: uuid.UUID | None = None,
    within_path: str | None = None,
    query: search.Query | None = None,
) -> tuple[Sequence[Any], str | None, int | None]:
    """One page of territories as dicts of `READ` (one query, and one more for the total when asked).

    The statement is a template per shape (which filters, which shape of search, which order), built once
    (`fetch_page`); the values are bound parameters."""
    filters = {"kind": kind, "code": code, "parent_id": parent_id, "within_path": within_path, "query": query}
    template = (
        "territories",
        tuple(name for name, value in filters.items() if value is not None and name != "query"),
        None if query is None else _shape(query),
        tuple((k.name, k.desc) for k in ordering.keys),
    )

    def build() -> Select[Any]:
        return list_query(
            kind=kind, code=code, parent_id=parent_id, within_path=within_path, query=query
        ).with_only_columns(*READ.columns, *(Territory.__table__.c[name] for name in _CURSOR_COLUMNS))

    return await fetch_page(
        session,
        build,
        ordering.keys,
        page,
        row_values=ordering.row_values,
        scalars=False,
        hidden=_CURSOR_COLUMNS,
        template=template,
        params=list_params(kind=kind, code=code, parent_id=parent_id, within_path=within_path, query=query),
    )


async def exists_with_code(session: AsyncSession, kind: str, code: str, exclude_id: uuid.UUID | None) -> bool:
    condition = exists().where(Territory.kind == kind, Territory.code == code)
    if exclude_id is not None:
        condition = condition.where(Territory.id != exclude_id)
    return bool((await session.execute(select(condition))).scalar())


async def move_subtree(session: AsyncSession, old_path: str, new_path: str) -> None:
    """Rewrites the paths of every descendant after a change of parent (one UPDATE)."""
    await session.execute(
        update(Territory)
        .where(path_startswith(Territory.path, old_path), Territory.path != old_path)
        .values(path=literal(new_path) + func.substr(Territory.path, len(old_path) + 1))
        .execution_options(synchronize_session=False)
    )


def add(session: AsyncSession, territory: Territory) -> None:
    session.add(territory)


async def delete(session: AsyncSession, territory: Territory) -> None:
    await session.delete(territory)


# --- words and aliases ------------------------------------------------------------------------------


async def replace_words(session: AsyncSession, territory_id: uuid.UUID, tokens: set[str]) -> None:
    await session.execute(sql_delete(TerritoryWord).where(TerritoryWord.territory_id == territory_id))
    if tokens:
        await session.execute(
            insert(TerritoryWord), [{"territory_id": territory_id, "token": t} for t in sorted(tokens)]
        )


async def get_by_alias(session: AsyncSession, kind: str, code: str) -> Territory | None:
    stmt = (
        select(Territory)
        .join(TerritoryAlias, TerritoryAlias.territory_id == Territory.id)
        .where(TerritoryAlias.kind == kind, TerritoryAlias.code == code)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


# --- bulk statements of the referential import -------------------------------------------------------

_T = cast(Table, Territory.__table__)
_W = cast(Table, TerritoryWord.__table__)
_A = cast(Table, TerritoryAlias.__table__)
STATE_COLUMNS = (
    "id",
    "kind",
    "code",
    "name",
    "parent_id",
    "path",
    "population",
    "siren",
    "postcodes",
    "search_name",
    "name_sort",
)


async def all_territory_states(session: AsyncSession) -> list[dict[str, Any]]:
    """Every territory's stored fields that the import compares (one query)."""
    rows = await session.execute(select(*(_T.c[name] for name in STATE_COLUMNS)))
    return [dict(row._mapping) for row in rows]


async def all_aliases(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(select(_A))
    return [dict(row._mapping) for row in rows]


async def insert_territories(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(_T), rows)


async def update_territories(session: AsyncSession, rows: list[dict[str, Any]], *, bump: bool) -> None:
    """Rows of {"id", <columns>...} (the same columns in each); `bump` moves the version and updated_at,
    for changes a client can see."""
    if not rows:
        return
    columns = [name for name in rows[0] if name != "id"]
    values: dict[str, Any] = {name: bindparam(f"v_{name}") for name in columns}
    if bump:
        values["version"] = _T.c.version + 1
    params = [{"v_id": row["id"], **{f"v_{name}": row[name] for name in columns}} for row in rows]
    await session.execute(
        update(_T)
        .where(_T.c.id == bindparam("v_id"))
        .values(values)
        .execution_options(synchronize_session=False),
        params,
    )


async def delete_words(session: AsyncSession, territory_ids: list[uuid.UUID]) -> None:
    for start in range(0, len(territory_ids), 1000):
        await session.execute(
            sql_delete(_W).where(_W.c.territory_id.in_(territory_ids[start : start + 1000]))
        )


async def insert_words(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(_W), rows)


async def upsert_aliases(
    session: AsyncSession, created: list[dict[str, Any]], changed: list[dict[str, Any]]
) -> None:
    if created:
        await session.execute(insert(_A), created)
    if changed:
        await session.execute(
            update(_A)
            .where(_A.c.kind == bindparam("v_kind"), _A.c.code == bindparam("v_code"))
            .values(
                territory_id=bindparam("v_territory_id"),
                reason=bindparam("v_reason"),
                name=bindparam("v_name"),
            ),
            [{f"v_{k}": v for k, v in row.items()} for row in changed],
        )


async def delete_aliases(session: AsyncSession, keys: list[tuple[str, str]]) -> None:
    if keys:
        await session.execute(sql_delete(_A).where(tuple_(_A.c.kind, _A.c.code).in_(keys)))


async def vacuum(engine: AsyncEngine) -> None:
    """After a bulk load, outside its transaction (PostgreSQL): VACUUM marks the new rows visible to every
    transaction, so that a subtree's ids are read from the path index alone (`ix_territories_path`, the
    scope of every scoped list) instead of visiting the table for each of them; ANALYZE refreshes the
    statistics. Autovacuum would do both, later."""
    if engine.dialect.name != "postgresql":
        return
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM (ANALYZE) territories, territory_words, territory_aliases"))


async def refresh_statistics(session: AsyncSession) -> None:
    """After a bulk load, PostgreSQL's planner needs fresh statistics to drive the search from the rarest word
    (measured: 15 ms before, 1.3 ms after, for `st etienne`). SQLite already picks that plan without them."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("ANALYZE territories, territory_words, territory_aliases"))
