"""Problem types of the agreements domain (agreements, their transitions and amendments)."""

from app.core.problems import AppError


class AgreementReferenceExists(AppError):
    status, code, title = 409, "agreement_reference_exists", "Agreement reference exists"


class AgreementNotEditable(AppError):
    status, code, title = 409, "agreement_not_editable", "Agreement not editable"


class InvalidTransition(AppError):
    status, code, title = 409, "invalid_transition", "Invalid transition"


class AgreementNotSigned(AppError):
    status, code, title = 409, "agreement_not_signed", "Agreement not signed"


class AgreementHasOccupiedPositions(AppError):
    status, code, title = 409, "agreement_has_occupied_positions", "Agreement has occupied positions"


class ProgrammePositionsExceeded(AppError):
    status, code, title = 409, "programme_positions_exceeded", "Programme positions exceeded"


class ProgrammeBudgetExceeded(AppError):
    status, code, title = 409, "programme_budget_exceeded", "Programme budget exceeded"


class PositionsBelowAllocated(AppError):
    status, code, title = 409, "positions_below_allocated", "Positions below allocated"
