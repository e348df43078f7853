"""Building responses: JSON straight from rows (orjson), with the conventions' headers (ETag, Location, Link).

The fast path of every read: a repository selects exactly the columns of the read model, the rows become
dicts, and orjson writes them; no ORM object, no pydantic model per row. `OPT_UTC_Z` writes UTC instants
with `Z`, as pydantic does, so that both paths give the same bytes."""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi import Request, Response
from pydantic import BaseModel

from app.core.pagination import link_header
from app.core.versioning import etag, not_modified

JSON_OPTIONS = orjson.OPT_UTC_Z


def _default(value: Any) -> str:
    # asyncpg returns its own UUID class, a uuid.UUID subclass that orjson does not take as one.
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(content: Any) -> bytes:
    return orjson.dumps(content, default=_default, option=JSON_OPTIONS)


def json_response(
    content: Any, *, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        content=dumps(content), status_code=status_code, media_type="application/json", headers=headers
    )


def object_response(
    request: Request | None,
    row: Any,
    *,
    status_code: int = 200,
    location: str | None = None,
) -> Response:
    """One object from its row (a result row of `read_columns`, or a dict), with `ETag` when it has a
    `version`; 304 when `If-None-Match` already names that version."""
    data: dict[str, Any] = row if isinstance(row, dict) else row._asdict()
    version = data.get("version")
    if request is not None and version is not None:
        unchanged = not_modified(request, version)
        if unchanged is not None:
            return unchanged
    headers = {}
    if version is not None:
        headers["ETag"] = etag(version)
    if location is not None:
        headers["Location"] = location
    return json_response(data, status_code=status_code, headers=headers)


def page_response(
    request: Request,
    rows: Sequence[dict[str, Any]],
    next_cursor: str | None,
    total: int | None = None,
) -> Response:
    """A list page `{"items", "next_cursor"[, "total"]}` from dicts (`fetch_page(scalars=False)`), with the
    `Link: rel="next"` header."""
    body: dict[str, Any] = {
        "items": rows,
        "next_cursor": next_cursor,
    }
    if total is not None:
        body["total"] = total
    # The same URL answers CSV with `Accept: text/csv` (`app.core.csv`): caches must keep them apart.
    headers = {"Vary": "Accept"}
    if next_cursor:
        headers["Link"] = link_header(request, next_cursor)
    return json_response(body, headers=headers)


def model_response(
    model: BaseModel,
    *,
    status_code: int = 200,
    version: int | None = None,
    location: str | None = None,
) -> Response:
    headers = {}
    if version is not None:
        headers["ETag"] = etag(version)
    if location is not None:
        headers["Location"] = location
    return Response(
        content=model.model_dump_json(),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


_PATHS: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()


def path_for(request: Request, route_name: str, **params: str) -> str:
    """`app.url_path_for` with the route found once per name: Starlette walks every route on each call.
    The path parameters are plain segments (no convertor), filled in the template the route gave."""
    templates = _PATHS.setdefault(request.app, {})
    template = templates.get(route_name)
    if template is None:
        placeholders = {name: "{" + name + "}" for name in params}
        template = templates[route_name] = str(request.app.url_path_for(route_name, **placeholders))
    return template.format(**params)


def created(
    request: Request, model: BaseModel, route_name: str, version: int | None = None, **params: str
) -> Response:
    """201 with Location (the path of the new object) and, for versioned objects, its ETag."""
    location = path_for(request, route_name, **params)
    return model_response(model, status_code=201, version=version, location=location)
