"""Problem types of the programmes domain."""

from app.core.problems import AppError


class ProgrammeExists(AppError):
    """A programme already has this code."""

    status, code, title = 409, "programme_exists", "Programme exists"


class ProgrammeBelowCommitted(AppError):
    """The positions target or budget cannot go below what agreements already commit."""

    status, code, title = 409, "programme_below_committed", "Programme below what is committed"
