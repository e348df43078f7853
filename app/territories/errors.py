"""Problem types of the territories domain.

Named after the problem they render, like `NotFound` or `Forbidden` in app.core.problems (hence noqa N818)."""

from app.core.problems import AppError, FieldError


class TerritoryExists(AppError):
    status, code, title = 409, "territory_exists", "Territory exists"


class TerritoryInUse(AppError):
    status, code, title = 409, "territory_in_use", "Territory in use"


class InvalidParent(AppError):
    status, code, title = 422, "invalid_parent", "Invalid parent"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, errors=[FieldError(pointer="/parent_id", detail=detail)])
