"""Rules of the territories domain: official codes, the parent hierarchy, the subtree paths."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.pagination import PageRequest
from app.core.problems import NotFound, UnknownReference, ValidationFailed
from app.db import new_id
from app.territories import repository as repo
from app.territories.codes import RANK, TerritoryKind, code_error, fold
from app.territories.errors import InvalidParent, TerritoryExists, TerritoryInUse
from app.territories.models import NAME_SORT_LENGTH, Territory
from app.territories.schemas import TerritoryCreate, TerritoryUpdate


def _name_sort(name: str) -> str:
    # Folding can lengthen a name (ß → ss, some ligatures → many letters): cut to the column's size, which
    # only affects searches for text beyond the 200th folded character.
    return fold(name)[:NAME_SORT_LENGTH]


async def get(session: AsyncSession, territory_id: uuid.UUID) -> Territory:
    """Territories are public reference data: anyone may read any of them (404 if there is none)."""
    territory = await repo.get(session, territory_id)
    if territory is None:
        raise NotFound("no territory with this id")
    return territory


async def read(session: AsyncSession, territory_id: uuid.UUID) -> Any:
    """The read columns of a territory (public, like every territory; 404 if there is none)."""
    row = await repo.read_row(session, territory_id)
    if row is None:
        raise NotFound("no territory with this id")
    return row


async def list_territories(
    session: AsyncSession,
    page: PageRequest,
    *,
    kind: TerritoryKind | None = None,
    code: str | None = None,
    parent_id: uuid.UUID | None = None,
    within: uuid.UUID | None = None,
    q: str | None = None,
    sort: str | None = None,
) -> tuple[list[Any], str | None, int | None]:
    """A page of territories, public like each of them: (rows, next_cursor, total).

    `within` keeps a territory and its whole subtree (an unknown id is a 422 on the parameter). `q` matches
    within folded names (case and accents ignored); without an explicit `sort`, names that start with it
    come first, then the most populated (API.md, "Territories")."""
    within_path = None
    if within is not None:
        within_path = await repo.path_of(session, within)
        if within_path is None:
            raise ValidationFailed("/query/within", "no territory with this id")
    q_folded = fold(q) if q else None
    ordering = repo.by_relevance(q_folded) if q_folded and sort is None else repo.sorted_by(sort)
    return await repo.list_page(
        session,
        page,
        ordering,
        kind=kind.value if kind is not None else None,
        code=code,
        parent_id=parent_id,
        within_path=within_path,
        q_folded=q_folded,
    )


async def get_in_scope(
    session: AsyncSession, territory_id: uuid.UUID, principal: Principal
) -> Territory | None:
    """The territory if it lies in the caller's subtrees (for references in bodies of other domains)."""
    return await repo.get(session, territory_id, principal)


async def read_by_code(session: AsyncSession, kind: TerritoryKind, code: str) -> Any:
    """The read columns of the territory with this official code (404 if there is none)."""
    # A code that is not valid for the kind cannot exist: no query (and no odd bytes sent to the database).
    row = None if code_error(kind, code) else await repo.read_row_by_code(session, kind.value, code)
    if row is None:
        raise NotFound(f"no {kind.value} with code {code}")
    return row


def _check_code(kind: TerritoryKind, code: str) -> None:
    error = code_error(kind, code)
    if error:
        raise ValidationFailed("/code", error)


async def _resolve_parent(
    session: AsyncSession, kind: TerritoryKind, parent_id: uuid.UUID | None
) -> Territory | None:
    if parent_id is None:
        return None
    parent = await repo.get(session, parent_id)
    if parent is None:
        # API.md, "Who sees what": a body's reference to a missing object is `unknown_reference`.
        raise UnknownReference("/parent_id", "no territory with this id")
    if RANK[TerritoryKind(parent.kind)] >= RANK[kind]:
        raise InvalidParent(
            f"a {kind.value} cannot be inside a {parent.kind}: the parent must be of a strictly higher kind"
        )
    return parent


@asynccontextmanager
async def _writing(
    session: AsyncSession, kind: TerritoryKind, code: str, exclude_id: uuid.UUID | None
) -> AsyncIterator[None]:
    """Applies the block's changes in a savepoint, so that a concurrent write of the same (kind, code) that
    won the race between our check and our flush is still answered `territory_exists`, not a bare conflict.

    The savepoint opens before the block: `begin_nested` flushes pending changes first, outside of it."""
    try:
        async with session.begin_nested():
            yield
            await session.flush()
    except IntegrityError:
        if await repo.exists_with_code(session, kind.value, code, exclude_id):
            raise TerritoryExists(f"a {kind.value} with code {code} already exists") from None
        raise


async def create(session: AsyncSession, data: TerritoryCreate) -> Territory:
    _check_code(data.kind, data.code)
    if data.parent_id is not None:
        # Before reading the parent's path: a move in flight would otherwise leave this child on the old path.
        await repo.lock_tree(session)
    parent = await _resolve_parent(session, data.kind, data.parent_id)
    if await repo.exists_with_code(session, data.kind.value, data.code, None):
        raise TerritoryExists(f"a {data.kind.value} with code {data.code} already exists")
    territory_id = new_id()
    territory = Territory(
        id=territory_id,
        kind=data.kind.value,
        code=data.code,
        name=data.name,
        name_sort=_name_sort(data.name),
        parent_id=parent.id if parent else None,
        path=(parent.path if parent else "/") + f"{territory_id}/",
        population=data.population,
    )
    async with _writing(session, data.kind, data.code, None):
        repo.add(session, territory)
    return territory


async def update(session: AsyncSession, territory: Territory, patch: TerritoryUpdate) -> Territory:
    changes = patch.changes()
    kind = TerritoryKind(territory.kind)
    for field in ("code", "name"):
        if field in changes and changes[field] is None:
            raise ValidationFailed(f"/{field}", "cannot be null")
    if "code" in changes:
        _check_code(kind, changes["code"])
    moving = "parent_id" in changes and changes["parent_id"] != territory.parent_id
    new_parent: Territory | None = None
    if moving:
        await repo.lock_tree(session)
        # The path was read before the lock: an ancestor may have moved meanwhile (which changes the path
        # but not the version).
        await session.refresh(territory, ["path"])
        new_parent = await _resolve_parent(session, kind, changes["parent_id"])
    code = changes.get("code") or territory.code
    if code != territory.code and await repo.exists_with_code(session, kind.value, code, territory.id):
        raise TerritoryExists(f"a {kind.value} with code {code} already exists")
    async with _writing(session, kind, code, territory.id):
        if code != territory.code:
            territory.code = code
        if "name" in changes:
            territory.name = changes["name"]
            territory.name_sort = _name_sort(changes["name"])
        if "population" in changes:
            territory.population = changes["population"]
        if moving:
            old_path = territory.path
            new_path = (new_parent.path if new_parent else "/") + f"{territory.id}/"
            await repo.move_subtree(session, old_path, new_path)
            territory.parent_id = new_parent.id if new_parent else None
            territory.path = new_path
    return territory


async def delete(session: AsyncSession, territory: Territory) -> None:
    """Refused while anything refers to it (children, keys, agreements...): such foreign keys restrict."""
    try:
        async with session.begin_nested():
            await repo.delete(session, territory)
            await session.flush()
    except IntegrityError as exc:
        raise TerritoryInUse("other objects refer to this territory; remove them first") from exc


async def get_many(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[Territory]:
    """The territories among `ids` that exist (for references in other domains' bodies)."""
    return await repo.get_many(session, ids)
