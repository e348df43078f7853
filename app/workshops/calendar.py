"""Workshops as iCalendar (RFC 5545), for calendar apps: one VEVENT per workshop, instants in UTC.

- `SEQUENCE` is the workshop's `sequence`, raised only when its start, end or place change or when it is
  cancelled (RFC 5545 3.8.7.4): a registration, which changes the workshop's `version`, is no update to show.
- `DESCRIPTION` says what a person needs to go: the workshop's own description, where (the venue, or the
  video call's address), its level and themes; and why it is cancelled.
- The calendar has a name (`NAME`, RFC 7986, and `X-WR-CALNAME`, which most calendar apps read).
- `URL` is the workshop's public web page (`WORKSHOP_PAGE_URL`), never built from the request (whose `Host`
  header the client chooses), nor the JSON API, which is no page for a person: no URL when unset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Request, Response

from app.db import utcnow
from app.referentials.data import label

PRODID = "-//ANCT//cnfs-api workshops//FR"
UID_DOMAIN = "workshops.cnfs-api"
MEDIA_TYPE = "text/calendar; charset=utf-8"
FEED_NAME = "Ateliers numériques (CnFS)"


def _location(row: dict[str, Any]) -> str | None:
    venue = row.get("venue")
    if venue:
        return f"{venue['name']}, {venue['address']}, {venue['postcode']}"
    url: str | None = row.get("online_url")
    return url


def page_url(request: Request, workshop_id: Any) -> str | None:
    """The workshop's public page under `WORKSHOP_PAGE_URL`, or None."""
    template: str | None = getattr(request.app.state.settings, "workshop_page_url", None)
    return template.replace("{id}", str(workshop_id)) if template else None


def description(row: dict[str, Any]) -> str:
    """The event's DESCRIPTION: the workshop's own text, then where, the level and the themes."""
    parts: list[str] = []
    if row["status"] == "cancelled":
        parts.append(
            f"Atelier annulé : {row['cancel_reason']}" if row.get("cancel_reason") else "Atelier annulé."
        )
    if row.get("description"):
        parts.append(row["description"])
    venue = row.get("venue")
    if venue:
        parts.append(f"Lieu : {venue['name']}, {venue['address']}, {venue['postcode']}")
    elif row.get("online_url"):
        parts.append(f"En ligne : {row['online_url']}")
    parts.append(f"Niveau : {label('levels', str(row['level']))}")
    themes = ", ".join(label("themes", str(theme)) for theme in row["themes"])
    parts.append(f"Thèmes : {themes}")
    return "\n".join(parts)


def document(request: Request, rows: Sequence[Any], name: str) -> bytes:
    # Imported on the first calendar asked for (about 0.1 s, once per process): icalendar and dateutil
    # hold about 3 MB of RSS in every worker, and most never serve a calendar.
    from icalendar import Calendar, Event

    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("name", name)
    calendar.add("x-wr-calname", name)
    stamp = utcnow().replace(microsecond=0)
    for raw in rows:
        row = raw if isinstance(raw, dict) else raw._asdict()
        event = Event()
        event.add("uid", f"{row['id']}@{UID_DOMAIN}")
        event.add("dtstamp", stamp)
        event.add("dtstart", row["starts_at"])
        event.add("dtend", row["ends_at"])
        event.add("summary", row["title"])
        event.add("description", description(row))
        location = _location(row)
        if location:
            event.add("location", location)
        if row.get("venue"):
            event.add("geo", (row["venue"]["lat"], row["venue"]["lon"]))
        url = page_url(request, row["id"])
        if url:
            event.add("url", url)
        event.add("status", "CANCELLED" if row["status"] == "cancelled" else "CONFIRMED")
        event.add("sequence", row["sequence"])
        event.add("last-modified", row["updated_at"].replace(microsecond=0))
        calendar.add_component(event)
    data: bytes = calendar.to_ical()
    return data


def response(request: Request, rows: Sequence[Any], name: str = FEED_NAME) -> Response:
    return Response(content=document(request, rows, name), media_type=MEDIA_TYPE)
