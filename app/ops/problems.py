"""The catalogue of problem types: `/problems/<code>` is where each problem's `type` points."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from app.core.problems import AppError, NotFound, problem_responses
from app.core.routers import plain_router

router = plain_router("/problems", tags=["operations"])


_EXAMPLE: JsonDict = {
    "code": "territory_exists",
    "status": 409,
    "title": "Territory exists",
    "description": "A territory of this kind already has this official code.",
}


class ProblemType(BaseModel):
    code: str = Field(description="The problem's stable `code`.", examples=["territory_exists"])
    status: int = Field(description="The HTTP status it is answered with.", examples=[409])
    title: str = Field(examples=["Territory exists"])
    description: str = Field(examples=["A territory of this kind already has this official code."])

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})


class ProblemCatalogue(BaseModel):
    items: list[ProblemType]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "code": "not_found",
                            "status": 404,
                            "title": "Not found",
                            "description": "No such route or object, or the object lies outside the "
                            "caller's territories.",
                        },
                        _EXAMPLE,
                    ]
                }
            ]
        }
    )


# Problems produced by the shared handlers rather than by an AppError subclass.
_HANDLED = [
    ProblemType(
        code="method_not_allowed",
        status=405,
        title="Method not allowed",
        description="The route exists but not with this method; the Allow header lists the methods.",
    ),
    ProblemType(
        code="payload_too_large",
        status=413,
        title="Request body too large",
        description="The request body is larger than the limit (1 MiB by default).",
    ),
    ProblemType(
        code="conflict",
        status=409,
        title="Conflict",
        description="The change conflicts with another object (a uniqueness or reference rule).",
    ),
    ProblemType(
        code="internal_error",
        status=500,
        title="Internal error",
        description="An unexpected error; quote the request_id when reporting it.",
    ),
    ProblemType(
        code="service_unavailable",
        status=503,
        title="Service unavailable",
        description="The database cannot be reached right now; retry after Retry-After seconds.",
    ),
]


def _subclasses(cls: type[AppError]) -> list[type[AppError]]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_subclasses(sub))
    return out


def catalogue() -> list[ProblemType]:
    by_code = {p.code: p for p in _HANDLED}
    for cls in _subclasses(AppError):
        doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        if cls.code not in by_code:
            by_code[cls.code] = ProblemType(
                code=cls.code, status=cls.status, title=cls.title, description=doc or cls.title
            )
    return sorted(by_code.values(), key=lambda p: p.code)


@router.get("", summary="List the problem types", description="Every stable `code` the API may answer.")
async def problems_list() -> ProblemCatalogue:
    return ProblemCatalogue(items=catalogue())


@router.get(
    "/{code}",
    summary="Describe a problem type",
    description="The page a problem's `type` points to.",
    responses=problem_responses(404),
)
async def problems_get(code: str) -> ProblemType:
    for problem in catalogue():
        if problem.code == code:
            return problem
    raise NotFound(f"no problem type {code!r}; see /problems")
