"""Problem types of the territories domain.

Named after the problem they render, like `NotFound` or `Forbidden` in app.core.problems (hence noqa N818)."""

from app.core.problems import AppError, FieldError


class TerritoryExists(AppError):
    """A territory of this kind already has this official code."""

    status, code, title = 409, "territory_exists", "Territory exists"


class TerritoryInUse(AppError):
    """Other objects (child territories, agreements, API keys...) refer to this territory."""

    status, code, title = 409, "territory_in_use", "Territory in use"


class InvalidParent(AppError):
    """The parent must be of a strictly higher kind: région > département > métropole/EPCI > commune."""

    status, code, title = 422, "invalid_parent", "Invalid parent"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, errors=[FieldError(pointer="/parent_id", detail=detail)])


class UnknownCommune(AppError):
    """No current commune has this INSEE code, nor had it formerly (codes of merged, delegated or associated
    communes and of municipal arrondissements still designate their commune)."""

    status, code, title = 422, "unknown_commune", "Unknown commune"

    def __init__(self, pointer: str, detail: str) -> None:
        super().__init__(detail, errors=[FieldError(pointer=pointer, detail=detail)])


class PostcodeMismatch(AppError):
    """The postcode is not one of the commune's (La Poste's list in the official referential)."""

    status, code, title = 422, "postcode_mismatch", "Postcode mismatch"

    def __init__(self, pointer: str, detail: str) -> None:
        super().__init__(detail, errors=[FieldError(pointer=pointer, detail=detail)])
