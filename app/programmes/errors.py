"""Problem types of the programmes domain."""

from app.core.problems import AppError


class ProgrammeExists(AppError):
    status, code, title = 409, "programme_exists", "Programme exists"


class ProgrammeBelowCommitted(AppError):
    status, code, title = 409, "programme_below_committed", "Programme below what is committed"
