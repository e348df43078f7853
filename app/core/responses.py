"""Building responses that carry the conventions' headers (Location, ETag, Link)."""

from __future__ import annotations

from fastapi import Request, Response
from pydantic import BaseModel

from app.core.versioning import etag


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


def created(
    request: Request, model: BaseModel, route_name: str, version: int | None = None, **params: str
) -> Response:
    """201 with Location (the path of the new object) and, for versioned objects, its ETag."""
    location = request.app.url_path_for(route_name, **params)
    return model_response(model, status_code=201, version=version, location=str(location))
