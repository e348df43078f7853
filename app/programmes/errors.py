"""Problem types of the programmes domain."""

# ruff: noqa: N818  (problem types are named after their problem code, as in app/core/problems.py)

from app.core.problems import AppError


class ProgrammeExists(AppError):
    status, code, title = 409, "programme_exists", "Programme exists"


class ProgrammeBelowCommitted(AppError):
    status, code, title = 409, "programme_below_committed", "Programme below what is committed"
