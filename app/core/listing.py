"""What every list endpoint shares: page parameters, the cursor binding and the Link header."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request

from app.core.auth import Principal, PrincipalDep, resolve_principal
from app.core.media import Separator, SepQuery, scope_accepts_csv
from app.core.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageRequest, binding_for


async def page_request(
    request: Request,
    principal: PrincipalDep,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Page size, 1 to 200. CSV: every item, no page size.")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(
            max_length=2048,
            description="Opaque cursor: `next_cursor` of the previous page. CSV: the export starts after it.",
        ),
    ] = None,
    include_total: Annotated[
        bool, Query(description="Add `total`, the number of matching items (JSON only).")
    ] = False,
    sep: SepQuery = Separator.comma,
) -> PageRequest:
    return make_page_request(request, principal, limit, cursor, include_total, sep)


def make_page_request(
    request: Request,
    principal: Principal,
    limit: int,
    cursor: str | None,
    include_total: bool,
    sep: Separator = Separator.comma,
) -> PageRequest:
    """With `Accept: text/csv`, the page asks for CSV (`csv`, its separator): the route then streams every
    row from `cursor` on (`app.core.csv.csv_list_response`); `limit` and `include_total` do not apply."""
    return PageRequest(
        limit=limit,
        cursor=cursor,
        include_total=include_total,
        binding=binding_for(request, principal.caller),
        cursors=request.app.state.cursors,
        csv=sep if scope_accepts_csv(request.scope["headers"]) else None,
    )


PageDep = Annotated[PageRequest, Depends(page_request)]


async def direct_page_request(
    request: Request, session: Any, limit: int, cursor: str | None, include_total: bool, sep: Separator
) -> PageRequest:
    """`page_request` on the direct path (`app.core.direct`): resolves the caller; the page parameters
    come parsed by the route's own declarations. The direct path answers JSON only (it leaves a request
    for CSV to the route), so `sep` changes nothing here."""
    principal = await resolve_principal(request, session)
    return make_page_request(request, principal, limit, cursor, include_total, sep)
