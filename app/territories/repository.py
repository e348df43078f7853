"""Every query of the territories domain."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, case, exists, func, literal, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.columns import ReadColumns
from app.core.pagination import PageRequest, SortKey, fetch_page, parse_sort, parse_uuid
from app.core.paths import path_startswith
from app.territories.models import Territory
from app.territories.schemas import TerritoryRead

# What reads select: the read model's columns, plus (for lists) the sort key that cursors resume from.
READ = ReadColumns(TerritoryRead, Territory.__table__)

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


async def path_of(session: AsyncSession, territory_id: uuid.UUID) -> str | None:
    return (await session.execute(select(Territory.path).where(Territory.id == territory_id))).scalar()


@cache
def _read_by_id() -> Select[Any]:
    # Hot reads are built once: a statement object reused keeps its compiled form and cache key.
    return select(*READ.columns).where(Territory.__table__.c.id == bindparam("id"))


@cache
def _read_by_code() -> Select[Any]:
    table = Territory.__table__
    return select(*READ.columns).where(table.c.kind == bindparam("kind"), table.c.code == bindparam("code"))


async def read_row(session: AsyncSession, territory_id: uuid.UUID) -> Any:
    """The read model's columns of one territory, or None."""
    return (await session.execute(_read_by_id(), {"id": territory_id})).first()


async def read_row_by_code(session: AsyncSession, kind: str, code: str) -> Any:
    return (await session.execute(_read_by_code(), {"kind": kind, "code": code})).first()


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
    q_folded: str | None = None,
) -> Select[Territory]:
    stmt = select(Territory)
    if kind is not None:
        stmt = stmt.where(Territory.kind == kind)
    if code is not None:
        stmt = stmt.where(Territory.code == code)
    if parent_id is not None:
        stmt = stmt.where(Territory.parent_id == parent_id)
    if within_path is not None:
        stmt = stmt.where(path_startswith(Territory.path, within_path))
    if q_folded:
        escaped = q_folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(Territory.name_sort.like(f"%{escaped}%", escape="\\"))
    return stmt


def relevance(q_folded: str) -> ColumnElement[int]:
    """0 for names starting with the query, 1 otherwise (then communes rank by population)."""
    escaped = q_folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return case((Territory.name_sort.like(f"{escaped}%", escape="\\"), literal(0)), else_=literal(1))


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


def by_relevance(q_folded: str) -> Ordering:
    """Names that start with the query first, then the most populated, then by name and id."""

    def row_values(t: Any) -> list[object]:
        # The Python twin of `relevance` and `population_key`, for the row the cursor resumes after.
        starts = 0 if t.name_sort.startswith(q_folded) else 1
        return [starts, t.population if t.population is not None else -1, t.name_sort, t.id]

    return Ordering(
        keys=[
            SortKey("relevance", relevance(q_folded)),
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
    q_folded: str | None = None,
) -> tuple[list[Any], str | None, int | None]:
    """One page of territories as rows of `READ` and the name sort key (one query, and one more
    for the total when asked)."""
    stmt = list_query(
        kind=kind, code=code, parent_id=parent_id, within_path=within_path, q_folded=q_folded
    ).with_only_columns(*READ.columns, Territory.name_sort)
    return await fetch_page(
        session,
        stmt,
        ordering.keys,
        page,
        row_values=ordering.row_values,
        scalars=False,
        hidden=("name_sort",),
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
