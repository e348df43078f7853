"""Problem types of the API keys domain.

Named after the problem they render, like `NotFound` or `Forbidden` in app.core.problems (hence noqa N818)."""

from app.core.problems import AppError


class ApiKeyRevoked(AppError):
    """A revoked key is not rotated: create another."""

    status, code, title = 409, "api_key_revoked", "API key revoked"
