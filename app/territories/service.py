"""Rules of the territories domain: official codes, the parent hierarchy, the subtree paths."""

from __future__ import annotations

import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.problems import NotFound, ValidationFailed
from app.db import new_id
from app.territories import repository as repo
from app.territories.codes import RANK, TerritoryKind, code_error, fold
from app.territories.errors import InvalidParent, TerritoryExists, TerritoryInUse
from app.territories.models import Territory
from app.territories.schemas import TerritoryCreate, TerritoryUpdate


async def get_visible(session: AsyncSession, territory_id: uuid.UUID, principal: Principal) -> Territory:
    """Territories are public reference data: anyone may read any of them."""
    territory = await repo.get(session, territory_id)
    if territory is None:
        raise NotFound("no territory with this id")
    return territory


async def get_in_scope(session: AsyncSession, territory_id: uuid.UUID, principal: Principal) -> Territory | None:
    """The territory if it lies in the caller's subtrees (for references in bodies of other domains)."""
    return await repo.get(session, territory_id, principal)


async def get_by_code(session: AsyncSession, kind: TerritoryKind, code: str) -> Territory:
    territory = await repo.get_by_code(session, kind.value, code)
    if territory is None:
        raise NotFound(f"no {kind.value} with code {code}")
    return territory


def _check_code(kind: TerritoryKind, code: str) -> None:
    error = code_error(kind, code)
    if error:
        raise ValidationFailed("/code", error)


async def _resolve_parent(session: AsyncSession, kind: TerritoryKind, parent_id: uuid.UUID | None) -> Territory | None:
    if parent_id is None:
        return None
    parent = await repo.get(session, parent_id)
    if parent is None:
        raise InvalidParent("no territory with this id")
    if RANK[TerritoryKind(parent.kind)] >= RANK[kind]:
        raise InvalidParent(f"a {kind.value} cannot be inside a {parent.kind}: the parent must be of a higher kind")
    return parent


async def create(session: AsyncSession, data: TerritoryCreate) -> Territory:
    _check_code(data.kind, data.code)
    parent = await _resolve_parent(session, data.kind, data.parent_id)
    if await repo.exists_with_code(session, data.kind.value, data.code, None):
        raise TerritoryExists(f"a {data.kind.value} with code {data.code} already exists")
    territory_id = new_id()
    territory = Territory(
        id=territory_id,
        kind=data.kind.value,
        code=data.code,
        name=data.name,
        name_sort=fold(data.name),
        parent_id=parent.id if parent else None,
        path=(parent.path if parent else "/") + f"{territory_id}/",
        depth=(parent.depth + 1) if parent else 0,
        population=data.population,
    )
    repo.add(session, territory)
    await session.flush()
    return territory


async def update(session: AsyncSession, territory: Territory, patch: TerritoryUpdate) -> Territory:
    changes = patch.changes()
    kind = TerritoryKind(territory.kind)
    for field in ("code", "name"):
        if field in changes and changes[field] is None:
            raise ValidationFailed(f"/{field}", "cannot be null")
    if "code" in changes:
        _check_code(kind, changes["code"])
    new_parent: Territory | None = None
    if "parent_id" in changes and changes["parent_id"] != territory.parent_id:
        new_parent = await _resolve_parent(session, kind, changes["parent_id"])
    if "code" in changes and changes["code"] != territory.code:
        if await repo.exists_with_code(session, kind.value, changes["code"], territory.id):
            raise TerritoryExists(f"a {kind.value} with code {changes['code']} already exists")
        territory.code = changes["code"]
    if "name" in changes:
        territory.name = changes["name"]
        territory.name_sort = fold(changes["name"])
    if "population" in changes:
        territory.population = changes["population"]
    if "parent_id" in changes and changes["parent_id"] != territory.parent_id:
        old_path = territory.path
        new_path = (new_parent.path if new_parent else "/") + f"{territory.id}/"
        new_depth = (new_parent.depth + 1) if new_parent else 0
        await repo.move_subtree(session, old_path, new_path, new_depth - territory.depth)
        territory.parent_id = new_parent.id if new_parent else None
        territory.path = new_path
        territory.depth = new_depth
    await session.flush()
    return territory


async def delete(session: AsyncSession, territory: Territory) -> None:
    """Refused while anything refers to it (children, keys, agreements...): every such foreign key restricts."""
    try:
        async with session.begin_nested():
            await repo.delete(session, territory)
            await session.flush()
    except IntegrityError as exc:
        raise TerritoryInUse("other objects refer to this territory; remove them first") from exc
