"""ETag / If-Match / If-None-Match on the `version` of mutable resources."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Request, Response

from app.core.problems import PreconditionFailed, PreconditionRequired


def etag(version: int) -> str:
    return f'"{version}"'


def _tags(header: str) -> list[str]:
    tags = []
    for raw in header.split(","):
        tag = raw.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag:
            tags.append(tag)
    return tags


def require_if_match(header: str | None, current_version: int) -> None:
    """428 without If-Match, 412 when it names another version (`*` matches any)."""
    if header is None or not header.strip():
        raise PreconditionRequired(
            'send If-Match with the ETag of your last GET of this object (a quoted version, e.g. "1")'
        )
    tags = _tags(header)
    if "*" in tags or etag(current_version) in tags:
        return
    if any(not (tag.startswith('"') and tag.endswith('"')) for tag in tags if tag != "*"):
        raise PreconditionFailed(
            'If-Match takes ETags as the ETag header gives them, quoted: e.g. "3", not 3'
        )
    raise PreconditionFailed(
        "the object changed since the version you sent: fetch it again, check the change still makes sense, "
        "and retry with its new ETag"
    )


def not_modified(request: Request, version: int) -> Response | None:
    """A 304 when If-None-Match already names the current version."""
    header = request.headers.get("if-none-match")
    if header and ("*" in _tags(header) or etag(version) in _tags(header)):
        return Response(status_code=304, headers={"ETag": etag(version)})
    return None


IF_MATCH_DOC = (
    'Send `If-Match` with the ETag of the version being changed, e.g. `"3"` (428 if absent, 412 if stale).'
)

IfMatchHeader = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description='Required: the ETag of your last GET, e.g. `"3"` (absent → 428, stale → 412).',
        examples=['"1"'],
    ),
]
