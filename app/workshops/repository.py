"""Every query of the workshops domain (workshops, registrations)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    Table,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    literal,
    null,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.core.auth import Principal, Role
from app.core.columns import ReadColumns
from app.core.direct import prepared
from app.core.pagination import PageRequest, SortKey, fetch_page, parse_datetime, parse_uuid
from app.core.paths import bound_path_startswith, path_startswith, prefix_params
from app.positions.models import Assignment, covers
from app.territories.models import Territory
from app.workshops.models import Registration, RegistrationStatus, Workshop, WorkshopStatus
from app.workshops.schemas import RegistrationRead, WorkshopRead

EARTH_RADIUS_KM = 6371.0088
KM_PER_DEGREE = math.pi * EARTH_RADIUS_KM / 180

_TABLE = Workshop.__table__
READ = ReadColumns(WorkshopRead, _TABLE)
# Who runs a workshop is a personal link between a position and a person (the position's holder): callers
# who may not read personal data see no `counsellor_id` (`_read_columns_template`).
PUBLIC_READ = ReadColumns(WorkshopRead, _TABLE, counsellor_id=null().cast(_TABLE.c.counsellor_id.type))
# What the calendar adds to the read model: the iCalendar SEQUENCE.
CALENDAR_EXTRA = [_TABLE.c.sequence.label("sequence")]
REGISTRATION_READ = ReadColumns(RegistrationRead, Registration.__table__)

_ID_KEY = SortKey("id", Workshop.id, parse=parse_uuid)
_STARTS_AT = SortKey("starts_at", Workshop.starts_at, parse=parse_datetime)
_REGISTRATION_KEYS = [
    SortKey("created_at", Registration.created_at, parse=parse_datetime),
    SortKey("id", Registration.id, parse=parse_uuid),
]


_ID = cast(Table, Workshop.__table__).c.id
_WORKSHOP_ID = bindparam("workshop_id", type_=_ID.type)


@cache
def _read_columns_template(anonymous: bool, scope: tuple[bool, int, bool, bool]) -> list[ColumnElement[Any]]:
    """The read model's columns for a caller of this shape, its values bound (`_scope_params`).

    `counsellor_id` follows the personal-data rules of API.md, those of a position's `current_assignment`:
    admins read it everywhere, territory managers on the workshops of their territories, a counsellor on
    the workshops it runs (its own id); it is null for everyone else (no key, viewers, another territory's
    manager, another counsellor)."""
    is_admin, paths, counsellor, manager = scope
    if anonymous:
        return PUBLIC_READ.columns
    if is_admin:
        return READ.columns
    c = _TABLE.c
    if manager and paths:
        shown: ColumnElement[Any] = case((_territories_template(paths), c.counsellor_id), else_=null())
    elif counsellor:
        shown = case((c.counsellor_id == _scope_counsellor(), c.counsellor_id), else_=null())
    else:
        return PUBLIC_READ.columns
    return ReadColumns(WorkshopRead, _TABLE, counsellor_id=shown).columns


def visible(principal: Principal) -> ColumnElement[bool]:
    """Workshops the caller may read: public ones for everyone; with a key, also those of its territories
    (and, for a counsellor, those it runs); everything for admin."""
    if principal.is_admin:
        return true()
    clauses: list[ColumnElement[bool]] = [Workshop.public.is_(True)]
    if principal.territory_paths:
        clauses.append(principal.territory_clause(Workshop.territory_id))
    if principal.role is Role.counsellor and principal.counsellor_id is not None:
        clauses.append(Workshop.counsellor_id == principal.counsellor_id)
    return or_(*clauses)


def in_scope(principal: Principal) -> ColumnElement[bool]:
    """Workshops of the caller's territories (everything for admin): those whose registrations a manager
    reads and that it may change."""
    if principal.is_admin:
        return true()
    if not principal.territory_paths:
        return false()
    return principal.territory_clause(Workshop.territory_id)


async def read_row(
    session: AsyncSession, workshop_id: uuid.UUID, principal: Principal, *, calendar: bool = False
) -> Any:
    """The workshop as this caller may read it (None when it may not see it); `calendar`: with its
    `sequence` too."""
    stmt = _read_row(principal.is_anonymous, _scope_shape(principal), calendar)
    return (await session.execute(stmt, {"workshop_id": workshop_id, **_scope_params(principal)})).first()


@cache
def _read_row(anonymous: bool, scope: tuple[bool, int, bool, bool], calendar: bool = False) -> Any:
    columns = _read_columns_template(anonymous, scope) + (CALENDAR_EXTRA if calendar else [])
    return prepared(select(*columns).where(_ID == _WORKSHOP_ID, _visible_template(scope)))


async def get(session: AsyncSession, workshop_id: uuid.UUID, *, for_update: bool = False) -> Workshop | None:
    stmt = select(Workshop).where(Workshop.id == workshop_id)
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def is_visible(session: AsyncSession, workshop_id: uuid.UUID, principal: Principal) -> bool:
    stmt = _is_visible(_scope_shape(principal))
    params = {"workshop_id": workshop_id, **_scope_params(principal)}
    return (await session.execute(stmt, params)).first() is not None


@cache
def _is_visible(scope: tuple[bool, int, bool, bool]) -> Any:
    return prepared(select(_ID).where(_ID == _WORKSHOP_ID, _visible_template(scope)))


async def is_in_scope(session: AsyncSession, workshop_id: uuid.UUID, principal: Principal) -> bool:
    stmt = select(Workshop.id).where(Workshop.id == workshop_id, in_scope(principal))
    return (await session.execute(stmt)).first() is not None


async def current_counsellor(session: AsyncSession, position_id: uuid.UUID, day: Any) -> uuid.UUID | None:
    """The counsellor whose assignment covers `day` on the position, if any."""
    stmt = select(Assignment.counsellor_id).where(Assignment.position_id == position_id, covers(day))
    return (await session.execute(stmt)).scalar_one_or_none()


async def holds_position(
    session: AsyncSession, counsellor_id: uuid.UUID, position_id: uuid.UUID, day: Any
) -> bool:
    stmt = select(Assignment.id).where(
        Assignment.position_id == position_id, Assignment.counsellor_id == counsellor_id, covers(day)
    )
    return (await session.execute(stmt)).first() is not None


@dataclass
class Near:
    lat: float
    lon: float
    radius_km: float


@dataclass
class Filters:
    territory_id: uuid.UUID | None = None
    within_path: str | None = None
    department_code: str | None = None
    commune_code: str | None = None
    postcode: str | None = None
    themes_mask: int = 0
    level: str | None = None
    starts_from: datetime | None = None
    starts_to: datetime | None = None
    has_seats: bool = False
    statuses: list[str] = field(default_factory=list)
    near: Near | None = None


def distance_km(near: Near) -> ColumnElement[float]:
    """The haversine distance from `near` to the venue, in SQL (both databases have these functions)."""
    lat1 = math.radians(near.lat)
    dlat = func.radians(Workshop.venue_lat - near.lat) / 2
    dlon = func.radians(Workshop.venue_lon - near.lon) / 2
    a = func.sin(dlat) * func.sin(dlat) + math.cos(lat1) * func.cos(
        func.radians(Workshop.venue_lat)
    ) * func.sin(dlon) * func.sin(dlon)
    expr: ColumnElement[float] = (2 * EARTH_RADIUS_KM * func.asin(func.sqrt(a))).cast(Float)
    return expr


def bounding_box(near: Near) -> ColumnElement[bool]:
    """A box that holds the circle: the index on (lat, lon) narrows the rows before the exact distance."""
    dlat = near.radius_km / KM_PER_DEGREE
    cos_lat = max(math.cos(math.radians(near.lat)), 0.01)
    dlon = min(near.radius_km / (KM_PER_DEGREE * cos_lat), 180.0)
    return and_(
        Workshop.venue_lat.between(near.lat - dlat, near.lat + dlat),
        Workshop.venue_lon.between(near.lon - dlon, near.lon + dlon),
    )


def list_query(principal: Principal, filters: Filters) -> Select[Any]:
    stmt = select(Workshop.id).where(visible(principal))
    f = filters
    if f.territory_id is not None:
        stmt = stmt.where(Workshop.territory_id == f.territory_id)
    if f.within_path is not None:
        subtree = select(Territory.id).where(path_startswith(Territory.path, f.within_path))
        stmt = stmt.where(Workshop.territory_id.in_(subtree))
    if f.department_code is not None:
        stmt = stmt.where(Workshop.venue_department_code == f.department_code)
    if f.commune_code is not None:
        stmt = stmt.where(Workshop.venue_commune_code == f.commune_code)
    if f.postcode is not None:
        stmt = stmt.where(Workshop.venue_postcode == f.postcode)
    if f.themes_mask:
        stmt = stmt.where(Workshop.themes_mask.op("&")(literal(f.themes_mask)) != 0)
    if f.level is not None:
        stmt = stmt.where(Workshop.level == f.level)
    if f.starts_from is not None:
        stmt = stmt.where(Workshop.starts_at >= f.starts_from)
    if f.starts_to is not None:
        stmt = stmt.where(Workshop.starts_at <= f.starts_to)
    if f.has_seats:
        stmt = stmt.where(Workshop.seats_left > 0, Workshop.status == WorkshopStatus.scheduled.value)
    if f.statuses:
        stmt = stmt.where(Workshop.status.in_(f.statuses))
    if f.near is not None:
        stmt = stmt.where(bounding_box(f.near), distance_km(f.near) <= f.near.radius_km)
    return stmt


def sort_keys(sort: str | None, near: Near | None) -> list[SortKey]:
    """`starts_at` (the default, `-starts_at` reversed) or `distance` (with `near`), then the id."""
    if sort == "distance" and near is not None:
        return [SortKey("distance_km", distance_km(near), parse=_parse_float), _ID_KEY]
    desc = sort == "-starts_at"
    return [
        SortKey(_STARTS_AT.name, _STARTS_AT.expr, desc, _STARTS_AT.parse),
        SortKey(_ID_KEY.name, _ID_KEY.expr, desc, _ID_KEY.parse),
    ]


def _parse_float(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError("expected a number")
    return float(value)


async def list_page(
    session: AsyncSession,
    principal: Principal,
    page: PageRequest,
    keys: list[SortKey],
    filters: Filters,
) -> tuple[Sequence[dict[str, Any]], str | None, int | None]:
    """One page as dicts of the read model: one query (and one for the total when asked).

    Without `near`, the statement is a template per shape (the caller's kind of scope, which filters, the
    order), built once, its values bound; a distance search is built for its point."""
    columns = list(_read_columns_template(principal.is_anonymous, _scope_shape(principal)))
    hidden: list[str] = []
    if keys[0].name == "distance_km":
        columns.append(keys[0].expr.label("distance_km"))
        hidden.append("distance_km")
    name = keys[0].name

    def values(row: Any) -> list[object]:
        return [getattr(row, name), row.id]

    if filters.near is not None:
        return await fetch_page(
            session,
            list_query(principal, filters).with_only_columns(*columns).params(_scope_params(principal)),
            keys,
            page,
            row_values=values,
            scalars=False,
            hidden=hidden,
        )
    scope = _scope_shape(principal)
    shape = _filters_shape(filters)

    def build() -> Select[Any]:
        return _list_template(scope, shape).with_only_columns(*columns)

    return await fetch_page(
        session,
        build,
        keys,
        page,
        row_values=values,
        scalars=False,
        hidden=hidden,
        template=("workshops", principal.is_anonymous, scope, shape, tuple((k.name, k.desc) for k in keys)),
        params={**_scope_params(principal), **_filters_params(filters)},
    )


# --- the search as a statement template: its shape, and the values of its bound parameters -------------


def _scope_shape(principal: Principal) -> tuple[bool, int, bool, bool]:
    """(admin, how many territories, a counsellor's key, a territory manager's key)."""
    return (
        principal.is_admin,
        len(principal.territory_paths),
        principal.role is Role.counsellor and principal.counsellor_id is not None,
        principal.role is Role.territory_manager,
    )


def _scope_params(principal: Principal) -> dict[str, Any]:
    params: dict[str, Any] = {"scope_counsellor_id": principal.counsellor_id}
    for i, path in enumerate(principal.territory_paths):
        params.update(prefix_params(f"scope_{i}", path))
    return params


def _scope_counsellor() -> Any:
    return bindparam("scope_counsellor_id", type_=_TABLE.c.counsellor_id.type)


def _territories_template(paths: int) -> ColumnElement[bool]:
    """Workshops of the caller's `paths` territories (and their subtrees), the paths bound."""
    subtree = select(Territory.id).where(
        or_(*(bound_path_startswith(Territory.path, f"scope_{i}") for i in range(paths)))
    )
    return _TABLE.c.territory_id.in_(subtree)


def _visible_template(scope: tuple[bool, int, bool, bool]) -> ColumnElement[bool]:
    """`visible(principal)` for a caller of this shape (`_scope_params` gives its values)."""
    is_admin, paths, counsellor, _manager = scope
    if is_admin:
        return true()
    clauses: list[ColumnElement[bool]] = [Workshop.public.is_(True)]
    if paths:
        clauses.append(_territories_template(paths))
    if counsellor:
        clauses.append(Workshop.counsellor_id == _scope_counsellor())
    return or_(*clauses)


_EQUAL_FILTERS = {
    "territory_id": "territory_id",
    "department_code": "venue_department_code",
    "commune_code": "venue_commune_code",
    "postcode": "venue_postcode",
    "level": "level",
}


def _filters_shape(f: Filters) -> tuple[Any, ...]:
    return (
        tuple(name for name in _EQUAL_FILTERS if getattr(f, name) is not None),
        f.within_path is not None,
        bool(f.themes_mask),
        f.starts_from is not None,
        f.starts_to is not None,
        f.has_seats,
        len(f.statuses),
    )


def _filters_params(f: Filters) -> dict[str, Any]:
    params: dict[str, Any] = {f"f_{name}": getattr(f, name) for name in _EQUAL_FILTERS}
    if f.within_path is not None:
        params.update(prefix_params("f_within", f.within_path))
    params["f_themes_mask"] = f.themes_mask
    params["f_starts_from"] = f.starts_from
    params["f_starts_to"] = f.starts_to
    params.update({f"f_status_{i}": status for i, status in enumerate(f.statuses)})
    return params


@cache
def _list_template(scope: tuple[bool, int, bool, bool], shape: tuple[Any, ...]) -> Select[Any]:
    """`list_query` for a caller and filters of this shape, every value bound."""
    equal, within, themes, starts_from, starts_to, has_seats, statuses = shape
    table = cast(Table, Workshop.__table__)
    c = table.c
    stmt = select(c.id).where(_visible_template(scope))
    for name in equal:
        column = c[_EQUAL_FILTERS[name]]
        stmt = stmt.where(column == bindparam(f"f_{name}", type_=column.type))
    if within:
        subtree = select(Territory.id).where(bound_path_startswith(Territory.path, "f_within"))
        stmt = stmt.where(c.territory_id.in_(subtree))
    if themes:
        stmt = stmt.where(c.themes_mask.op("&")(bindparam("f_themes_mask", type_=c.themes_mask.type)) != 0)
    if starts_from:
        stmt = stmt.where(c.starts_at >= bindparam("f_starts_from", type_=c.starts_at.type))
    if starts_to:
        stmt = stmt.where(c.starts_at <= bindparam("f_starts_to", type_=c.starts_at.type))
    if has_seats:
        stmt = stmt.where(c.seats_left > 0, c.status == WorkshopStatus.scheduled.value)
    if statuses:
        stmt = stmt.where(
            c.status.in_([bindparam(f"f_status_{i}", type_=c.status.type) for i in range(statuses)])
        )
    return stmt


async def list_rows(session: AsyncSession, principal: Principal, stmt: Select[Any], limit: int) -> list[Any]:
    """Up to `limit` rows of `stmt` in date order, unpaginated, with their `sequence` (the calendar feed)."""
    columns = _read_columns_template(principal.is_anonymous, _scope_shape(principal)) + CALENDAR_EXTRA
    stmt = stmt.with_only_columns(*columns).order_by(Workshop.starts_at, Workshop.id)
    return list((await session.execute(stmt.limit(limit), _scope_params(principal))).all())


def add(session: AsyncSession, row: Workshop | Registration) -> None:
    session.add(row)


# --- registrations -------------------------------------------------------------------------------------


@cache
def _email_registered() -> Any:
    c = cast(Table, Registration.__table__).c
    return prepared(
        select(c.id).where(
            c.workshop_id == bindparam("workshop_id", type_=c.workshop_id.type),
            c.email_key == bindparam("email_key", type_=c.email_key.type),
            c.status != RegistrationStatus.cancelled.value,
        )
    )


async def email_registered(session: AsyncSession, workshop_id: uuid.UUID, email_key: str) -> bool:
    """Whether the email holds a live registration on the workshop, as of now (a statement of its own)."""
    params = {"workshop_id": workshop_id, "email_key": email_key}
    return (await session.execute(_email_registered(), params)).first() is not None


async def get_registration(
    session: AsyncSession, workshop_id: uuid.UUID, registration_id: uuid.UUID
) -> Registration | None:
    stmt = select(Registration).where(
        Registration.id == registration_id, Registration.workshop_id == workshop_id
    )
    return (await session.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()


# --- registering: Core statements, built once (the direct path runs them on the driver's connection) ----


@cache
def _lock_for_registration(scope: tuple[bool, int, bool, bool]) -> Any:
    workshops = cast(Table, Workshop.__table__)
    registrations = cast(Table, Registration.__table__).c
    c = workshops.c
    email_registered = exists().where(
        registrations.workshop_id == c.id,
        registrations.email_key == bindparam("email_key", type_=registrations.email_key.type),
        registrations.status != RegistrationStatus.cancelled.value,
    )
    return prepared(
        select(
            c.id,
            c.status,
            c.starts_at,
            c.capacity,
            c.seats_left,
            c.registered_count,
            c.waitlisted_count,
            c.waitlist_capacity,
            email_registered.label("email_registered"),
        )
        .where(c.id == bindparam("workshop_id", type_=c.id.type), _visible_template(scope))
        .with_for_update(of=workshops)
    )


async def lock_for_registration(
    session: AsyncSession, workshop_id: uuid.UUID, principal: Principal, email_key: str
) -> Any:
    """The counters of the workshop, if the caller may see it, its row locked until the end of the
    transaction, and whether `email_key` already holds a live registration on it; None when there is no
    such workshop for this caller (nothing is locked then).

    The email is checked in the same statement, so on the snapshot this statement took before it waited for
    the lock: a registration of the same email committed meanwhile is not seen here, and the INSERT's
    conflict on the unique index then answers it (`insert_registration`)."""
    params = {"workshop_id": workshop_id, "email_key": email_key, **_scope_params(principal)}
    return (await session.execute(_lock_for_registration(_scope_shape(principal)), params)).first()


@cache
def _set_counters() -> Any:
    workshops = cast(Table, Workshop.__table__)
    c = workshops.c
    return prepared(
        update(workshops)
        .where(c.id == bindparam("workshop_id", type_=c.id.type))
        .values(
            registered_count=bindparam("registered_count", type_=c.registered_count.type),
            seats_left=bindparam("seats_left", type_=c.seats_left.type),
            waitlisted_count=bindparam("waitlisted_count", type_=c.waitlisted_count.type),
            version=c.version + 1,
            updated_at=bindparam("updated_at", type_=c.updated_at.type),
        )
        .returning(c.version)
    )


async def set_counters(
    session: AsyncSession,
    workshop_id: uuid.UUID,
    *,
    registered_count: int,
    seats_left: int,
    waitlisted_count: int,
    now: datetime,
) -> None:
    """A workshop's registration counters, as a new version of it.

    On the session path, a Workshop the session already holds takes the new values as its loaded state,
    since the UPDATE changed its row behind the ORM's back."""
    values = {
        "registered_count": registered_count,
        "seats_left": seats_left,
        "waitlisted_count": waitlisted_count,
        "updated_at": now,
    }
    version = (await session.execute(_set_counters(), {"workshop_id": workshop_id, **values})).scalar_one()
    if isinstance(session, AsyncSession):
        for held in list(session.identity_map.values()):
            if isinstance(held, Workshop) and held.id == workshop_id:
                for name, value in {**values, "version": version}.items():
                    set_committed_value(held, name, value)


@cache
def _insert_registration(postgres: bool) -> Any:
    registrations = cast(Table, Registration.__table__)
    module: Any = postgresql if postgres else sqlite
    return prepared(
        module.insert(registrations)
        .values({c.name: bindparam(c.name, type_=c.type) for c in registrations.columns})
        .on_conflict_do_nothing(
            index_elements=["workshop_id", "email_key"],
            # The unique index's own predicate, as text: PostgreSQL infers the index only from the same
            # expression (a bound parameter would not match it).
            index_where=text("status != 'cancelled'"),
        )
        .returning(*REGISTRATION_READ.columns)
    )


async def insert_registration(session: AsyncSession, values: dict[str, Any]) -> Any:
    """A new registration, every column given; returns its read model's columns, or None when the email
    already holds a live registration on the workshop (the unique index's conflict: nothing is written)."""
    statement = _insert_registration(session.get_bind().dialect.name == "postgresql")
    return (await session.execute(statement, values)).first()


async def registration_row(session: AsyncSession, registration_id: uuid.UUID) -> Any:
    return (await session.execute(_registration_row(), {"registration_id": registration_id})).one()


@cache
def _registration_row() -> Any:
    return prepared(
        select(*REGISTRATION_READ.columns).where(
            Registration.id == bindparam("registration_id", type_=Registration.__table__.c.id.type)
        )
    )


async def first_waitlisted(session: AsyncSession, workshop_id: uuid.UUID, count: int) -> list[Registration]:
    stmt = (
        select(Registration)
        .where(
            Registration.workshop_id == workshop_id,
            Registration.status == RegistrationStatus.waitlisted.value,
        )
        .order_by(Registration.waitlist_rank)
        .limit(count)
    )
    return list((await session.execute(stmt)).scalars())


async def shift_ranks(session: AsyncSession, workshop_id: uuid.UUID, above: int, by: int) -> None:
    """Moves the waitlisted registrations ranked after `above` up by `by` places (one UPDATE)."""
    await session.execute(
        update(Registration)
        .where(
            Registration.workshop_id == workshop_id,
            Registration.status == RegistrationStatus.waitlisted.value,
            Registration.waitlist_rank > above,
        )
        .values(waitlist_rank=Registration.waitlist_rank - by)
        .execution_options(synchronize_session=False)
    )


async def cancel_all(session: AsyncSession, workshop_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(Registration)
        .where(
            Registration.workshop_id == workshop_id,
            Registration.status != RegistrationStatus.cancelled.value,
        )
        .values(status=RegistrationStatus.cancelled.value, waitlist_rank=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )


async def registrations_page(
    session: AsyncSession, workshop_id: uuid.UUID, page: PageRequest, status: str | None
) -> tuple[Sequence[dict[str, Any]], str | None, int | None]:
    stmt = select(*REGISTRATION_READ.columns).where(Registration.workshop_id == workshop_id)
    if status is not None:
        stmt = stmt.where(Registration.status == status)
    return await fetch_page(
        session,
        stmt,
        _REGISTRATION_KEYS,
        page,
        row_values=lambda r: [r.created_at, r.id],
        scalars=False,
    )


async def live_registrations(session: AsyncSession, workshop_id: uuid.UUID) -> list[Registration]:
    stmt = select(Registration).where(
        Registration.workshop_id == workshop_id,
        Registration.status != RegistrationStatus.cancelled.value,
    )
    return list((await session.execute(stmt)).scalars())


async def counts(session: AsyncSession, workshop_id: uuid.UUID) -> tuple[int, int]:
    """(confirmed, waitlisted) registrations counted from the rows (the tests compare them to the row's)."""
    stmt = select(
        func.count().filter(Registration.status == RegistrationStatus.confirmed.value),
        func.count().filter(Registration.status == RegistrationStatus.waitlisted.value),
    ).where(Registration.workshop_id == workshop_id)
    row = (await session.execute(stmt)).one()
    return int(row[0]), int(row[1])


# --- personal data (app.personal_data) -----------------------------------------------------------------


async def registrations_due(session: AsyncSession, ended_before: datetime, limit: int) -> list[uuid.UUID]:
    """Up to `limit` registrations still holding personal data whose workshop ended before `ended_before`."""
    stmt = (
        select(Registration.id)
        .join(Workshop, Workshop.id == Registration.workshop_id)
        .where(Workshop.ends_at < ended_before, Registration.anonymized_at.is_(None))
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def erase_registrations(session: AsyncSession, ids: list[uuid.UUID], now: datetime) -> list[uuid.UUID]:
    """Empties the personal columns of these registrations (those not erased yet); the ids of those it
    erased."""
    result = await session.execute(
        update(Registration)
        .where(Registration.id.in_(ids), Registration.anonymized_at.is_(None))
        .values(
            first_name=None,
            last_name=None,
            email=None,
            email_key=None,
            phone=None,
            anonymized_at=now,
            updated_at=now,
        )
        .returning(Registration.id)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())


async def runs_of(session: AsyncSession, counsellor_id: uuid.UUID) -> list[Any]:
    """The workshops a counsellor runs or ran, oldest first: (id, title, starts_at, status)."""
    stmt = (
        select(Workshop.id, Workshop.title, Workshop.starts_at, Workshop.status)
        .where(Workshop.counsellor_id == counsellor_id)
        .order_by(Workshop.starts_at, Workshop.id)
    )
    return list((await session.execute(stmt)).all())


async def summary(session: AsyncSession, workshop_id: uuid.UUID) -> Any:
    """(id, title, starts_at, ends_at, status) of a workshop."""
    stmt = select(Workshop.id, Workshop.title, Workshop.starts_at, Workshop.ends_at, Workshop.status).where(
        Workshop.id == workshop_id
    )
    return (await session.execute(stmt)).one()
