"""The one query of the open-data export: the venues of public in-person workshops, aggregated in SQL."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import NamedTuple

from sqlalchemy import ColumnElement, Select, and_, bindparam, case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.positions.models import Position
from app.referentials.data import THEME_BITS
from app.territories.models import Territory
from app.workshops.models import Workshop, WorkshopFormat, WorkshopStatus


class VenueRow(NamedTuple):
    """One spelling of a venue as its workshops stored it, for one employer: the service merges the
    spellings of one place."""

    commune_code: str | None
    postcode: str | None
    name: str | None
    address: str | None
    lat: float | None
    lon: float | None
    commune_name: str | None
    employer_siren: str | None
    workshops: int
    updated_at: datetime
    themes_mask: int


def _themes_union(mask: ColumnElement[int]) -> ColumnElement[int]:
    """The OR of the rows' theme masks, on both databases (SQLite has no bit_or): each bit is the max of
    that bit over the rows, and the bits add up without carrying."""
    total: ColumnElement[int] = literal(0)
    for bit in THEME_BITS.values():
        total = total + func.max(mask.op("&")(bit))
    return total


@cache
def venues_statement() -> Select[tuple[object, ...]]:
    """GROUP BY over the venue as stored (commune, postcode, name, address) and the position, within the
    window (`since`, bound per call: a range of `ix_workshops_starts_at`), one row per spelling and
    position; then the employer's SIREN and the commune's name, joined on that result rather than on every
    workshop."""
    w = Workshop.__table__.c
    name = Workshop.venue["name"].as_string()
    address = Workshop.venue["address"].as_string()
    grouped = (
        select(
            w.venue_commune_code.label("commune_code"),
            w.venue_postcode.label("postcode"),
            name.label("name"),
            address.label("address"),
            # The mean of the points its workshops give: one point per spelling, whatever the geocoding.
            func.avg(w.venue_lat).label("lat"),
            func.avg(w.venue_lon).label("lon"),
            w.position_id.label("position_id"),
            func.count().label("workshops"),
            func.max(w.updated_at).label("updated_at"),
            _themes_union(w.themes_mask).label("themes_mask"),
        )
        .where(
            w.starts_at >= bindparam("since", type_=w.starts_at.type),
            w.public.is_(True),
            w.format == WorkshopFormat.in_person.value,
            w.status != WorkshopStatus.cancelled.value,
        )
        .group_by(w.venue_commune_code, w.venue_postcode, name, address, w.position_id)
        .subquery("venues")
    )
    employer = aliased(Territory, name="employer")
    commune = aliased(Territory, name="commune")
    # The employer is the agreement's territory: a commune's SIREN is stored beside it; a métropole's or an
    # EPCI's code is its SIREN; a département's or a région's is stored when the imported referential
    # carried it (the dataset has none: scripts/build_referential.py --sirens). Otherwise no pivot.
    employer_siren = func.coalesce(
        employer.siren, case((employer.kind.in_(("metropole", "epci")), employer.code), else_=None)
    )
    return (
        select(
            grouped.c.commune_code,
            grouped.c.postcode,
            grouped.c.name,
            grouped.c.address,
            grouped.c.lat,
            grouped.c.lon,
            commune.name.label("commune_name"),
            employer_siren.label("employer_siren"),
            grouped.c.workshops,
            grouped.c.updated_at,
            grouped.c.themes_mask,
        )
        .select_from(grouped)
        .join(Position, Position.id == grouped.c.position_id)
        .join(employer, employer.id == Position.agreement_territory_id)
        .outerjoin(commune, and_(commune.kind == "commune", commune.code == grouped.c.commune_code))
    )


async def venue_rows(session: AsyncSession, since: datetime) -> list[VenueRow]:
    """The venue rows of the workshops that start at `since` or later."""
    result = await session.execute(venues_statement(), {"since": since})
    # The statement selects the fields in VenueRow's order: a row is taken as it comes.
    return [VenueRow._make(row) for row in result.all()]
