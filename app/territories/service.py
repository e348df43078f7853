"""Rules of the territories domain: official codes, the parent hierarchy, the subtree paths."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.auth import Principal
from app.core.pagination import PageRequest
from app.core.problems import NotFound, UnknownReference, ValidationFailed
from app.db import new_id, utcnow
from app.territories import referential, search
from app.territories import repository as repo
from app.territories.codes import RANK, TerritoryKind, code_error, fold
from app.territories.errors import (
    InvalidParent,
    PostcodeMismatch,
    TerritoryExists,
    TerritoryInUse,
    UnknownCommune,
)
from app.territories.models import Territory
from app.territories.schemas import TerritoryCreate, TerritoryUpdate


def _words(territory: Territory) -> set[str]:
    return search.tokens(
        code=territory.code,
        name=territory.name,
        siren=territory.siren,
        postcodes=territory.postcodes.split() if territory.postcodes else None,
    )


def _name_sort(name: str) -> str:
    # Folding can lengthen a name (ß → ss, some ligatures → many letters): cut to the column's size, which
    # only affects searches for text beyond the 200th folded character.
    return fold(name)[: search.NAME_SORT_LENGTH]


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
) -> tuple[Sequence[Any], str | None, int | None]:
    """A page of territories, public like each of them: (rows, next_cursor, total).

    `within` keeps a territory and its whole subtree (an unknown id is a 422 on the parameter). `q` matches
    word by word (app.territories.search); without an explicit `sort`, the best matches come first, then
    the most populated."""
    within_path = None
    if within is not None:
        within_path = await repo.path_of(session, within)
        if within_path is None:
            raise ValidationFailed("/query/within", "no territory with this id")
    query = search.parse(q) if q else None
    ordering = repo.by_relevance(query) if query is not None and sort is None else repo.sorted_by(sort)
    return await repo.list_page(
        session,
        page,
        ordering,
        kind=kind.value if kind is not None else None,
        code=code,
        parent_id=parent_id,
        within_path=within_path,
        query=query,
    )


async def get_in_scope(
    session: AsyncSession, territory_id: uuid.UUID, principal: Principal
) -> Territory | None:
    """The territory if it lies in the caller's subtrees (for references in bodies of other domains)."""
    return await repo.get(session, territory_id, principal)


async def in_scope(session: AsyncSession, territory_id: uuid.UUID, principal: Principal) -> bool:
    """Whether the territory exists in the caller's subtrees (a column SELECT: the direct path runs it)."""
    return await repo.exists_in_scope(session, territory_id, principal)


async def find_by_code(session: AsyncSession, kind: TerritoryKind, code: str) -> Territory | None:
    """The territory of this kind and code or, failing that, the one a former code designates (a commune
    merged into another, a delegated commune, a municipal arrondissement: docs/api-changes.md)."""
    # A code that is not valid for the kind cannot exist: no query (and no odd bytes sent to the database).
    if code_error(kind, code):
        return None
    territory = await repo.get_by_code(session, kind.value, code)
    if territory is None:
        territory = await repo.get_by_alias(session, kind.value, code)
    return territory


async def get_by_code(session: AsyncSession, kind: TerritoryKind, code: str) -> Territory:
    territory = await find_by_code(session, kind, code)
    if territory is None:
        raise NotFound(f"no {kind.value} with code {code}")
    return territory


async def path_of(session: AsyncSession, territory_id: uuid.UUID) -> str | None:
    """The materialised path of a territory (its subtree's prefix), or None when there is no such one."""
    return await repo.path_of(session, territory_id)


async def read_by_code(session: AsyncSession, kind: TerritoryKind, code: str) -> Any:
    """The read columns of the territory with this official code, or of the one a former code designates
    (its `code` then differs from the one asked for); 404 if there is none."""
    row = None if code_error(kind, code) else await repo.read_row_by_code(session, kind.value, code)
    if row is None:
        raise NotFound(f"no {kind.value} with code {code}")
    return row


_POSTCODE = re.compile(r"\d{5}", re.ASCII)


async def check_commune(
    session: AsyncSession,
    commune_code: str,
    postcode: str | None = None,
    *,
    code_pointer: str = "/commune_code",
    postcode_pointer: str = "/postcode",
) -> Territory:
    """The current commune that `commune_code` designates (a former code resolves to its commune), checked
    against `postcode` when one is given; for other domains' bodies (a workshop venue...).

    422 `unknown_commune` at `code_pointer`, 422 `postcode_mismatch` at `postcode_pointer`. A commune whose
    postcodes are not known (one created through the API rather than imported) accepts any well-formed
    postcode."""
    commune = await find_by_code(session, TerritoryKind.commune, commune_code)
    if commune is None:
        raise UnknownCommune(code_pointer, f"no commune with INSEE code {commune_code!r}")
    if postcode is None:
        return commune
    known = commune.postcodes.split() if commune.postcodes else None
    if not _POSTCODE.fullmatch(postcode) or (known is not None and postcode not in known):
        expected = f": expected one of {', '.join(known)}" if known else ""
        raise PostcodeMismatch(
            postcode_pointer, f"{postcode!r} is not a postcode of {commune.name} ({commune.code}){expected}"
        )
    return commune


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
        search_name=search.search_name(data.name),
        parent_id=parent.id if parent else None,
        path=(parent.path if parent else "/") + f"{territory_id}/",
        population=data.population,
    )
    async with _writing(session, data.kind, data.code, None):
        repo.add(session, territory)
    await repo.replace_words(session, territory.id, _words(territory))
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
            territory.search_name = search.search_name(changes["name"])
        if "population" in changes:
            territory.population = changes["population"]
        if moving:
            old_path = territory.path
            new_path = (new_parent.path if new_parent else "/") + f"{territory.id}/"
            await repo.move_subtree(session, old_path, new_path)
            territory.parent_id = new_parent.id if new_parent else None
            territory.path = new_path
    if "code" in changes or "name" in changes:
        await repo.replace_words(session, territory.id, _words(territory))
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


# --- the official referential -----------------------------------------------------------------------


class ImportProgress(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self, done: int) -> None: ...


@dataclasses.dataclass
class ImportReport:
    """What an import did: per kind, territories created, updated and unchanged; the same for former codes."""

    created: Counter[str] = dataclasses.field(default_factory=Counter)
    updated: Counter[str] = dataclasses.field(default_factory=Counter)
    unchanged: Counter[str] = dataclasses.field(default_factory=Counter)
    aliases_created: int = 0
    aliases_updated: int = 0
    aliases_unchanged: int = 0
    aliases_removed: int = 0
    # Territories whose path (or search keys) alone changed, as when an ancestor moves: rewritten without a
    # new version, like the descendants of a territory moved through the API. Those outside the referential
    # that followed a moved ancestor are among them.
    rewritten: int = 0
    # Communes still stored under a code that the referential now lists as former (merged since): kept,
    # since other objects may refer to them; an operator reviews and deletes them.
    obsolete: list[str] = dataclasses.field(default_factory=list)


_BATCH = 2000
# A change of these makes a new version of the territory; other columns are derived (path, search keys).
_VERSIONED = ("name", "parent_id", "population", "siren", "postcodes")


def _path_of(
    territory_id: uuid.UUID, parents: dict[uuid.UUID, uuid.UUID | None], paths: dict[uuid.UUID, str]
) -> str:
    """The path as `create` and `update` build it: the parent's path, then the territory's own id."""
    chain = []
    current: uuid.UUID | None = territory_id
    while current is not None and current not in paths:
        chain.append(current)
        current = parents.get(current)
        if len(chain) > len(parents) + 1:
            raise RuntimeError("the territories' parents form a cycle")
    prefix = paths[current] if current is not None else "/"
    for node in reversed(chain):
        prefix = paths[node] = f"{prefix}{node}/"
    return paths[territory_id]


async def import_referential(
    session: AsyncSession, snapshot: referential.Snapshot, progress: ImportProgress | None = None
) -> ImportReport:
    """Loads the referential into the territories, idempotently by (kind, code): new ones are created,
    changed ones updated (their version moves), others left alone; nothing is deleted. Former codes of
    communes become aliases. A région or département the snapshot gives no SIREN keeps its stored one.
    Bulk statements in the caller's transaction (flushes, never commits)."""
    planned, planned_aliases = referential.plan(snapshot)
    total = len(planned) + len(planned_aliases)
    if progress:
        progress.start(total)
    await repo.lock_tree(session)
    await session.flush()
    report = ImportReport()
    states = await repo.all_territory_states(session)
    by_key = {(s["kind"], s["code"]): s for s in states}
    by_id = {s["id"]: s for s in states}

    ids: dict[referential.Key, uuid.UUID] = {}
    for row in planned:
        state = by_key.get(row.key)
        ids[row.key] = state["id"] if state else new_id()
    parents: dict[uuid.UUID, uuid.UUID | None] = {s["id"]: s["parent_id"] for s in states}
    for row in planned:
        parents[ids[row.key]] = ids[row.parent] if row.parent else None
    paths: dict[uuid.UUID, str] = {}

    now = utcnow()
    inserts: list[dict[str, Any]] = []
    visible_changes: list[dict[str, Any]] = []
    derived_changes: list[dict[str, Any]] = []
    words_of: dict[uuid.UUID, set[str]] = {}
    for row in planned:
        territory_id = ids[row.key]
        keys = search.name_keys(row.name)
        state = by_id.get(territory_id)
        siren = row.siren
        if siren is None and state is not None and row.kind in referential.SIREN_OPTIONAL_KINDS:
            # The dataset has no SIREN for a région or a département: a snapshot without one (the shipped
            # one) keeps what an operator loaded.
            siren = state["siren"]
        wanted = {
            "name": row.name,
            "parent_id": parents[territory_id],
            "population": row.population,
            "path": _path_of(territory_id, parents, paths),
            "siren": siren,
            "postcodes": " ".join(row.postcodes) or None,
            "search_name": keys.search_name,
            "name_sort": keys.name_sort,
        }
        if state is None:
            inserts.append(
                {"id": territory_id, "kind": row.kind.value, "code": row.code, "version": 1}
                | wanted
                | {"created_at": now, "updated_at": now}
            )
            report.created[row.kind.value] += 1
        elif any(state[name] != wanted[name] for name in _VERSIONED):
            visible_changes.append({"id": territory_id, **wanted, "updated_at": now})
            report.updated[row.kind.value] += 1
        elif any(state[name] != value for name, value in wanted.items()):
            derived_changes.append({"id": territory_id, **wanted})
            report.unchanged[row.kind.value] += 1
            continue
        else:
            report.unchanged[row.kind.value] += 1
            continue
        if state is None or any(state[n] != wanted[n] for n in ("name", "siren", "postcodes")):
            words_of[territory_id] = search.tokens(
                code=row.code,
                name=row.name,
                siren=siren,
                postcodes=list(row.postcodes),
                name_words=keys.words,
            )

    # Territories outside the referential follow their ancestors' paths, as a move would make them.
    planned_ids = set(ids.values())
    followers = [
        {"id": s["id"], "path": _path_of(s["id"], parents, paths)}
        for s in states
        if s["id"] not in planned_ids and s["path"] != _path_of(s["id"], parents, paths)
    ]
    report.rewritten = len(derived_changes) + len(followers)

    if progress:
        progress.advance(sum(report.unchanged.values()))
    for start in range(0, len(inserts), _BATCH):
        await repo.insert_territories(session, inserts[start : start + _BATCH])
        if progress:
            progress.advance(len(inserts[start : start + _BATCH]))
    for start in range(0, len(visible_changes), _BATCH):
        await repo.update_territories(session, visible_changes[start : start + _BATCH], bump=True)
        if progress:
            progress.advance(len(visible_changes[start : start + _BATCH]))
    await repo.update_territories(session, derived_changes, bump=False)
    await repo.update_territories(session, followers, bump=False)
    await _write_words(session, words_of, by_id)
    await _import_aliases(session, planned_aliases, ids, report, progress)
    report.obsolete = sorted(
        code
        for kind, code in by_key
        if kind == "commune" and code in snapshot.aliases and code not in snapshot.communes
    )
    if inserts or visible_changes:
        await repo.refresh_statistics(session)
    # The ORM's copies of rows written above (versions, paths) are stale now.
    session.expire_all()
    return report


async def after_import(engine: AsyncEngine, report: ImportReport) -> None:
    """Once the import is committed, if it wrote anything: the tables' upkeep that autovacuum would do later
    (`repo.vacuum`)."""
    if report.created.total() or report.updated.total() or report.rewritten:
        await repo.vacuum(engine)


async def _write_words(
    session: AsyncSession, words_of: dict[uuid.UUID, set[str]], existing: dict[uuid.UUID, Any]
) -> None:
    await repo.delete_words(session, [tid for tid in words_of if tid in existing])
    rows = [
        {"territory_id": tid, "token": token} for tid, tokens in words_of.items() for token in sorted(tokens)
    ]
    for start in range(0, len(rows), _BATCH * 5):
        await repo.insert_words(session, rows[start : start + _BATCH * 5])


async def _import_aliases(
    session: AsyncSession,
    planned: list[referential.PlannedAlias],
    ids: dict[referential.Key, uuid.UUID],
    report: ImportReport,
    progress: ImportProgress | None,
) -> None:
    stored = {(a["kind"], a["code"]): a for a in await repo.all_aliases(session)}
    created: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for alias in planned:
        row = {
            "kind": alias.kind.value,
            "code": alias.code,
            "territory_id": ids[alias.target],
            "reason": alias.reason,
            "name": alias.name,
        }
        old = stored.get((alias.kind.value, alias.code))
        if old is None:
            created.append(row)
        elif old != row:
            changed.append(row)
        else:
            report.aliases_unchanged += 1
    await repo.upsert_aliases(session, created, changed)
    report.aliases_created, report.aliases_updated = len(created), len(changed)
    # A code that names a territory of its own again is no longer an alias.
    current = [key for key in stored if key in ids]
    await repo.delete_aliases(session, current)
    report.aliases_removed = len(current)
    if progress:
        progress.advance(len(planned))
