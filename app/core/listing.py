"""What every list endpoint shares: page parameters, the cursor binding and the Link header."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from app.core.auth import PrincipalDep
from app.core.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageRequest, binding_for


async def page_request(
    request: Request,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size, 1 to 200.")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=2048, description="Opaque cursor: `next_cursor` of the previous page.")
    ] = None,
    include_total: Annotated[bool, Query(description="Add `total`, the number of matching items.")] = False,
) -> PageRequest:
    return PageRequest(
        limit=limit,
        cursor=cursor,
        include_total=include_total,
        binding=binding_for(request, principal.caller),
        cursors=request.app.state.cursors,
    )


PageDep = Annotated[PageRequest, Depends(page_request)]
