"""Workshops as iCalendar (RFC 5545), for calendar apps: one VEVENT per workshop, instants in UTC."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Request, Response

from app.core.responses import path_for
from app.db import utcnow

PRODID = "-//ANCT//cnfs-api workshops//FR"
UID_DOMAIN = "workshops.cnfs-api"
MEDIA_TYPE = "text/calendar; charset=utf-8"


def _location(row: dict[str, Any]) -> str | None:
    venue = row.get("venue")
    if venue:
        return f"{venue['name']}, {venue['address']}, {venue['postcode']}"
    url: str | None = row.get("online_url")
    return url


def _url(request: Request, workshop_id: Any) -> str:
    path = path_for(request, "workshops_get", workshop_id=str(workshop_id))
    base = getattr(request.app.state.settings, "public_base_url", None) or ""
    return f"{base}{path}" if base else str(request.base_url).rstrip("/") + str(path)


def document(request: Request, rows: Sequence[Any]) -> bytes:
    # Imported on the first calendar asked for (about 0.1 s, once per process): icalendar and dateutil
    # hold about 3 MB of RSS in every worker, and most never serve a calendar.
    from icalendar import Calendar, Event

    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    stamp = utcnow().replace(microsecond=0)
    for raw in rows:
        row = raw if isinstance(raw, dict) else raw._asdict()
        event = Event()
        event.add("uid", f"{row['id']}@{UID_DOMAIN}")
        event.add("dtstamp", stamp)
        event.add("dtstart", row["starts_at"])
        event.add("dtend", row["ends_at"])
        event.add("summary", row["title"])
        if row.get("description"):
            event.add("description", row["description"])
        location = _location(row)
        if location:
            event.add("location", location)
        if row.get("venue"):
            event.add("geo", (row["venue"]["lat"], row["venue"]["lon"]))
        event.add("url", _url(request, row["id"]))
        event.add("status", "CANCELLED" if row["status"] == "cancelled" else "CONFIRMED")
        event.add("sequence", row["version"])
        event.add("last-modified", row["updated_at"].replace(microsecond=0))
        calendar.add_component(event)
    data: bytes = calendar.to_ical()
    return data


def response(request: Request, rows: Sequence[Any]) -> Response:
    return Response(content=document(request, rows), media_type=MEDIA_TYPE)
